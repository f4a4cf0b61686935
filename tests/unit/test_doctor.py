"""``orch doctor`` on the FakeProvider: each check's ok line and its broken setup (a
missing image, an engine that does not answer, a corrupt state file, a deploy that does
not import, a stale baseline, a maintainer that is not running though spares are
missing, a dead run's lease), a check that raises, the exit codes and ``--json``, and
that doctor changes nothing (a fresh project stays without state or registry entry)."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from fakes_core import fake_orch
from filelock import FileLock

from orchestrator.cli import cli
from orchestrator.core.context import Context
from orchestrator.state import checkouts, leases
from orchestrator.verbs import doctor
from orchestrator.verbs.doctor import FAIL, OK, WARN, Check, diagnose
from orchestrator.verbs.up import up


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A registry of this test's own; no ORCH_* setting from outside."""
    for var in [v for v in os.environ if v.startswith(("ORCH_", "PYTEST_XDIST"))]:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ORCH_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def run(orch: Context) -> list[Check]:
    return diagnose(lambda: orch.settings, make=lambda settings: orch)


def lines(checks: list[Check], name: str) -> list[Check]:
    return [c for c in checks if c.check == name]


def one(checks: list[Check], name: str) -> Check:
    found = lines(checks, name)
    assert len(found) == 1, found
    return found[0]


def failing(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.status == FAIL]


def snapshot(orch: Context, home: Path) -> dict[str, bytes]:
    """Every file in the checkout's inventory folder and in the registry, with its bytes."""
    found = {}
    for root in (orch.settings.inventory_dir, home):
        for path in sorted(root.rglob("*")) if root.exists() else []:
            if path.is_file():
                found[str(path)] = path.read_bytes()
    return found


def dead_lease(orch: Context, run: str) -> Path:
    """The lease file a killed pytest run leaves: there, but held by no process."""
    path = leases.lease_path(orch.settings.inventory_dir, run)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": 999999, "workers": ["gw0"]}))
    return path


# -- a healthy checkout -----------------------------------------------------------------------


def test_a_healthy_checkout_is_all_ok(tmp_path: Path, home: Path) -> None:
    orch = fake_orch(tmp_path / "p")
    assert all(r.ok for r in up(orch, 2))
    checks = run(orch)
    assert not failing(checks), failing(checks)
    assert not [c for c in checks if c.status == WARN], [c for c in checks if c.status == WARN]
    assert one(checks, "engine").detail.startswith("fake 1.0")
    assert "fake:bookworm: sha256:" in one(checks, "image").detail
    assert [c.detail.split(":")[0] for c in lines(checks, "deploy")] == ["provision", "personalize", "reset"]
    assert "orchestrator/deploys/provision.py" in lines(checks, "deploy")[0].detail
    assert "current and sealed" in one(checks, "baseline").detail
    assert one(checks, "workers").detail == "2 ready: gw0 gw1"
    assert "provider fake, 2 workers" in one(checks, "state").detail
    assert one(checks, "maintainer").detail.startswith("not running")
    assert one(checks, "leases").detail == "no live pytest run"
    assert "is registered" in one(checks, "checkouts").detail
    assert {c.check for c in checks} >= {"settings", "connector", "tools"}


def test_doctor_changes_nothing(tmp_path: Path, home: Path) -> None:
    orch = fake_orch(tmp_path / "p")
    up(orch, 1)
    dead = dead_lease(orch, leases.new_run_id())
    before, vms = snapshot(orch, home), {k: (v.state, dict(v.files)) for k, v in orch.provider.vms.items()}  # type: ignore[attr-defined]
    run(orch)
    assert snapshot(orch, home) == before
    assert {k: (v.state, dict(v.files)) for k, v in orch.provider.vms.items()} == vms  # type: ignore[attr-defined]
    assert dead.exists()  # reported, not tidied


def test_in_a_fresh_project_no_state_is_made_and_nothing_registered(tmp_path: Path, home: Path) -> None:
    project = tmp_path / "fresh"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        f'[tool.orch]\nprovider = "fake"\nimage = "fake:bookworm"\n[tool.orch.fake]\npath = "{tmp_path / "fake.json"}"\n'
    )
    result = CliRunner().invoke(cli, ["--inventory-dir", str(project / "inventories"), "doctor"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "warn  state" in result.stdout and "orch up --workers N" in result.stdout
    assert not (project / "inventories").exists()
    assert not list(home.rglob("*.json")) and not [p for p in home.rglob("*") if p.is_file()]


# -- each broken setup: one line naming the fix -------------------------------------------------


def test_an_engine_that_does_not_answer_fails_and_the_rest_still_runs(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path / "p")
    up(orch, 1)
    orch.provider.up = False  # type: ignore[attr-defined]
    checks = run(orch)
    engine = one(checks, "engine")
    assert engine.status == FAIL and "the fake backend is down" in engine.detail
    assert one(checks, "workers").status == FAIL and "no engine answers" in one(checks, "workers").detail
    assert all(c.status == OK for c in lines(checks, "deploy"))
    assert one(checks, "state").status == OK


def test_a_missing_image_names_the_fix(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path / "p", image="nope:1")
    image = one(run(orch), "image")
    assert image.status == FAIL and "'nope:1' is not available here" in image.detail and "--image" in image.detail


def test_a_corrupt_state_file_names_orch_repair(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path / "p")
    up(orch, 1)
    orch.store.path.write_text("{not json")
    checks = run(orch)
    state = one(checks, "state")
    assert state.status == FAIL and "corrupt" in state.detail and "`orch repair`" in state.detail
    assert orch.store.path.read_text() == "{not json"


def test_a_deploy_that_does_not_import_is_named(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "brokendeploy.py").write_text("import no_such_module_here\n")
    orch = fake_orch(tmp_path / "p", provision="brokendeploy:provision")
    checks = run(orch)
    provision = lines(checks, "deploy")[0]
    assert provision.status == FAIL and provision.detail.startswith("provision: ")
    assert "'brokendeploy' failed to import" in provision.detail and "no_such_module_here" in provision.detail
    assert lines(checks, "deploy")[1].status == OK
    assert not lines(checks, "baseline")  # no fingerprint without the deploy


def test_a_stale_baseline_says_what_changed(tmp_path: Path) -> None:
    project = tmp_path / "p"
    (project / "driftdeploys").mkdir(parents=True)
    source = "from pyinfra.api import deploy\n\n@deploy('mine')\ndef provision():\n    pass\n"
    (project / "driftdeploys" / "__init__.py").write_text(source)
    orch = fake_orch(project, provision="driftdeploys:provision")
    up(orch, 1)
    assert one(run(orch), "baseline").status == OK
    (project / "driftdeploys" / "__init__.py").write_text(source + "# changed\n")
    sys.modules.pop("driftdeploys", None)
    importlib.invalidate_caches()
    checks = run(fake_orch(project, provider=orch.provider, provision="driftdeploys:provision"))  # type: ignore[arg-type]
    baseline = one(checks, "baseline")
    assert baseline.status == WARN and "the provision deploy changed" in baseline.detail and "`orch up`" in baseline.fix
    worker = one(checks, "workers")
    assert worker.status == WARN and "older baseline" in worker.detail


def test_a_failed_and_a_missing_worker_are_named_with_the_fix(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path / "p")
    orch.deployer.fail["gw1"] = "apt broke"  # type: ignore[attr-defined]
    up(orch, 3)
    orch.provider.vms.pop(orch.vm_name("gw2"))  # type: ignore[attr-defined]
    checks = run(orch)
    details = {c.detail.split()[0]: c for c in lines(checks, "workers")}
    assert details["1"].detail == "1 ready: gw0"
    assert details["gw1"].status == FAIL and "apt broke" in details["gw1"].detail and "`orch up`" in details["gw1"].fix
    assert details["gw2"].status == FAIL and "missing" in details["gw2"].detail


def test_a_maintainer_that_is_not_running_while_spares_are_missing_warns(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path / "p", pool=2)
    up(orch, 1)
    for vm in list(orch.store.read().oneoffs):
        with orch.store.transaction() as data:
            data.oneoffs.pop(vm)
    orch.logs_dir.mkdir(parents=True, exist_ok=True)
    (orch.logs_dir / "maintain.log").write_text("started\norch: WARNING: spare failed: engine gone\n")
    maintainer = one(run(orch), "maintainer")
    assert maintainer.status == WARN and "not running" in maintainer.detail
    assert "2 of 2 pool VMs are missing" in maintainer.detail and "spare failed: engine gone" in maintainer.detail
    assert "orch up" in maintainer.fix


def test_a_running_maintainer_is_ok(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path / "p")
    up(orch, 1)
    lock = FileLock(str(orch.store.dir / "maintain.lock"))
    with lock:
        maintainer = one(run(orch), "maintainer")
    assert maintainer.status == OK and maintainer.detail.startswith("running")


def test_leases_live_and_stale(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path / "p")
    up(orch, 2)
    live = leases.Lease(orch.settings.inventory_dir, workers=["gw1", "gw0"])
    dead = dead_lease(orch, leases.new_run_id()).name.removesuffix(".lock")
    try:
        found = lines(run(orch), "leases")
    finally:
        live.release()
    assert found[0].status == OK and found[0].detail == f"live pytest run {live.run} (pid {os.getpid()}) uses gw0 gw1"
    assert found[1].status == WARN and dead in found[1].detail and "harmless" in found[1].fix


def test_doctor_does_not_wait_for_a_command_holding_the_lock(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path / "p")
    up(orch, 1)
    with orch.store.command_lock():
        checks = run(orch)
    said = [c for c in lines(checks, "state") if c.status == WARN]
    assert said and "another orch command is running" in said[0].detail


def test_checkouts_whose_folder_is_gone_are_named_with_sweep(tmp_path: Path) -> None:
    gone = fake_orch(tmp_path / "gone")
    up(gone, 1)
    orch = fake_orch(tmp_path / "p", provider=gone.provider)  # type: ignore[arg-type]
    up(orch, 1)
    inventory = gone.settings.inventory_dir
    for path in sorted(inventory.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    inventory.rmdir()
    found = lines(run(orch), "checkouts")
    assert found[0].status == OK and "is registered" in found[0].detail
    assert found[1].status == WARN and gone.checkout in found[1].detail and "`orch sweep`" in found[1].fix
    assert checkouts.lookup(gone.checkout) is not None  # named, not forgotten


def test_a_check_that_raises_is_one_failing_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    orch = fake_orch(tmp_path / "p")

    def boom(*args: object, **kwargs: object) -> list[str]:
        raise RuntimeError("surprise")

    monkeypatch.setattr(doctor.leases, "scan", boom)
    checks = run(orch)
    leases_line = one(checks, "leases")
    assert leases_line.status == FAIL and "RuntimeError: surprise" in leases_line.detail
    assert lines(checks, "checkouts")  # the checks after it still ran


def test_an_unusable_setting_is_one_failing_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.orch]\nworkerz = 3\n")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["doctor"], catch_exceptions=False)
    assert result.exit_code == 1
    assert "FAIL  settings" in result.stdout and "unknown setting 'workerz'" in result.stdout
    assert "Traceback" not in result.output


# -- the command: lines, exit codes, --json -------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "pyproject.toml").write_text(
        f'[tool.orch]\nprovider = "fake"\nimage = "fake:bookworm"\n[tool.orch.fake]\npath = "{tmp_path / "fake.json"}"\n'
    )
    monkeypatch.chdir(tmp_path)
    return tmp_path


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_exit_code_0_when_healthy_and_1_with_the_fix_when_broken(project: Path) -> None:
    assert invoke("up", "--workers", "1").exit_code == 0
    healthy = invoke("doctor")
    assert healthy.exit_code == 0, healthy.output
    assert "FAIL" not in healthy.stdout and healthy.stdout.startswith("ok    settings")
    assert "doctor: " in healthy.stderr and " 0 failing" in healthy.stderr
    state = project / "inventories" / ".orch" / "state.json"
    before = state.read_bytes()
    assert invoke("doctor").exit_code == 0 and state.read_bytes() == before

    (project / "pyproject.toml").write_text((project / "pyproject.toml").read_text().replace("fake:bookworm", "gone:1"))
    broken = invoke("doctor")
    assert broken.exit_code == 1
    image = [line for line in broken.stdout.splitlines() if line.startswith("FAIL  image")]
    assert image and "'gone:1' is not available here: name another" in image[0]


def test_json_is_a_list_of_checks(project: Path) -> None:
    result = invoke("doctor", "--json")
    assert result.exit_code == 0, result.output
    checks = json.loads(result.stdout)
    assert isinstance(checks, list) and checks
    for c in checks:
        assert set(c) == {"check", "status", "detail", "fix"}
        assert c["status"] in ("ok", "warn", "fail")
        assert c["status"] == "ok" or c["fix"] or c["status"] == "fail"
    assert [c["check"] for c in checks][:2] == ["settings", "engine"]


def test_help_explains_the_checks() -> None:
    result = CliRunner().invoke(cli, ["doctor", "--help"])
    assert result.exit_code == 0
    for word in ("engine", "image", "deploy", "baseline", "maintainer", "leases", "checkouts", "--json", "Exit code 1"):
        assert word in result.stdout
    assert "doctor" in CliRunner().invoke(cli, ["--help"]).stdout


def test_the_fake_image_id_is_what_the_line_shows(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path / "p")
    expected = "sha256:" + hashlib.sha256(b"fake:bookworm").hexdigest()
    assert one(run(orch), "image").detail.endswith(expected[:19])


def test_a_provider_that_is_not_the_checkouts_is_one_failing_line(project: Path) -> None:
    assert invoke("up", "--workers", "1").exit_code == 0
    result = invoke("doctor", "--provider", "docker")
    assert result.exit_code == 1
    [line] = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert line.startswith("FAIL  provider") and "this checkout's VMs are on fake, not docker" in line
    assert "drop --provider" in line
