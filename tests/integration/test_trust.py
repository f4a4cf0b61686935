"""Trust: never destroy a live VM, never hand out a dirty or stale baseline. Each test
reproduces a defect found by using orch as a real user would, on the real Docker engine
(or the emulated OrbStack), and checks that it no longer happens."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from backends import both_providers, clean_env, gone_checkout, run_orch, run_pytest, write_pyproject

from orchestrator.core import settings as config
from orchestrator.core.context import Context
from orchestrator.core.maintainer import spawn_maintainer
from orchestrator.verbs.oneoffs import create_oneoff
from orchestrator.verbs.up import up

IMAGE = "orch-base:bookworm"


def make(project: Path, **overrides) -> Context:
    return Context(config.load(cwd=project, env={}, overrides=overrides), refill=spawn_maintainer)


def docker(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)


def dangling_orch_images() -> set[str]:
    return set(
        docker("images", "-q", "--no-trunc", "--filter", "dangling=true", "--filter", "label=orch.managed-by=orch").stdout.split()
    )


WORKER_SUITE = """
def test_a(orch_worker):
    assert orch_worker.run("cat /etc/orch-worker").stdout.strip() == orch_worker.worker_id

def test_b(orch_worker):
    assert orch_worker.run("true").rc == 0
"""


# -- 1. a stopped worker is never handed to a connector ------------------------------------


@both_providers
def test_stopped_workers_survive_the_next_pytest_run(project: Path, backend) -> None:
    (project / "test_w.py").write_text(WORKER_SUITE)
    assert run_orch(project, "up", "--workers", "2").returncode == 0
    orch = make(project)
    vms = [orch.vm_name(w) for w in ("gw0", "gw1")]
    ids = {vm: backend.identity(vm) for vm in vms}
    images = dangling_orch_images()
    for vm in vms:
        backend.stop(vm)
    for attempt in (1, 2):
        result = run_pytest(project, "-n", "2")
        assert result.returncode == 0, result.stdout + result.stderr
        assert {vm: backend.identity(vm) for vm in vms} == ids, f"run {attempt} lost a worker"
        assert all(backend.running(vm) for vm in vms)
    assert dangling_orch_images() <= images  # pyinfra committed nothing
    create_oneoff(orch, "20260101000000-1-0123abcd")  # a one-off of a run that is gone
    assert run_orch(project, "down").returncode == 0
    assert backend.names(orch.settings.prefix) == []  # the baseline (machine or image) too


def test_workers_restart_with_the_engine(project: Path) -> None:
    orch = make(project)
    up(orch, 1)
    policy = docker("inspect", "-f", "{{.HostConfig.RestartPolicy.Name}}", orch.vm_name("gw0")).stdout.strip()
    assert policy == "unless-stopped"


# -- 2. a sweep that cannot see a checkout judges it by age only ---------------------------

HOLD = """
import os, time

def test_hold(orch_worker, fresh_vm):
    vm = fresh_vm()
    here = os.path.dirname(__file__)
    open(os.path.join(here, "holding"), "w").write(vm.vm)
    deadline = time.time() + 240
    while not os.path.exists(os.path.join(here, "release")) and time.time() < deadline:
        time.sleep(0.2)
    assert orch_worker.run("true").rc == 0 and vm.run("true").rc == 0
"""


@both_providers
def test_sweep_in_a_mount_namespace_that_hides_the_checkout_deletes_nothing_of_it(
    project: Path, backend, provider_name: str, tmp_path_factory: pytest.TempPathFactory, prefix: str
) -> None:
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is needed")
    (project / "test_hold.py").write_text(HOLD)
    assert run_orch(project, "up", "--workers", "1").returncode == 0
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "1", "test_hold.py"],
        cwd=project,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.time() + 240
        while not (project / "holding").exists() and time.time() < deadline and run.poll() is None:
            time.sleep(0.2)
        assert (project / "holding").exists(), run.stdout.read() if run.stdout else ""
        oneoff = (project / "holding").read_text()
        other = tmp_path_factory.mktemp("sweeper")
        write_pyproject(other, provider_name, prefix)
        orch_bin = Path(sys.executable).with_name("orch")
        hide = f"mount -t tmpfs none {project} && cd {other} && exec {orch_bin} sweep --json"
        env = clean_env()
        sweep = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", hide],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert sweep.returncode == 0, sweep.stderr
        rows = {r["vm"]: r for r in json.loads(sweep.stdout)}
        orch = make(project)
        for vm in (orch.vm_name("gw0"), oneoff):
            assert rows[vm]["result"] == "kept", rows[vm]
            assert "cannot be seen from here" in rows[vm]["reason"]
            assert backend.exists(vm)
    finally:
        (project / "release").write_text("")
        out, _ = run.communicate(timeout=300)
    assert run.returncode == 0, out


# -- 3. name and labels together ---------------------------------------------------------------


def test_a_container_with_another_workers_labels_is_kept_by_sweep_and_refused_by_reset(project: Path) -> None:
    orch = make(project)
    up(orch, 3)
    gw2 = orch.vm_name("gw2")
    labels = json.loads(docker("inspect", "-f", "{{json .Config.Labels}}", orch.vm_name("gw0")).stdout)
    baseline = orch.store.read().baseline.ref
    docker("rm", "-f", gw2)
    args = [a for k, v in labels.items() for a in ("--label", f"{k}={v}")]
    assert docker("run", "-d", "--name", gw2, *args, baseline, "sleep", "infinity").returncode == 0
    sweep = run_orch(project, "sweep", "--dry-run", "--json")
    rows = {r["vm"]: r for r in json.loads(sweep.stdout)}
    assert rows[gw2]["result"] == "kept" and "labels say worker gw0, the name says gw2" in rows[gw2]["reason"]
    reset = run_orch(project, "reset", "gw2")
    assert reset.returncode == 1 and "is not orch's" in reset.stderr and "No such image" not in reset.stderr
    assert docker("inspect", gw2).returncode == 0  # left alone
    docker("rm", "-f", gw2)


def test_a_container_run_by_hand_from_a_baseline_is_not_orchs(project: Path) -> None:
    orch = make(project)
    up(orch, 1)
    name = f"{orch.settings.prefix}-{orch.checkout}-gw5"
    assert docker("run", "-d", "--name", name, orch.store.read().baseline.ref, "sleep", "infinity").returncode == 0
    rows = {r["vm"]: r for r in json.loads(run_orch(project, "sweep", "--json").stdout)}
    assert rows[name]["result"] == "kept" and "no orch labels" in rows[name]["reason"]
    docker("rm", "-f", name)


# -- 4. one checkout's bad file never stops the sweep -------------------------------------------


def test_a_bad_lease_file_keeps_that_checkout_and_the_sweep_goes_on(project: Path, tmp_path_factory, prefix: str) -> None:
    orch = make(project)
    up(orch, 1)
    runs = project / "inventories" / ".orch" / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    (runs / "20260101000000-1-0123abcd.lock").symlink_to("/etc/hostname")
    (runs / "20260101000000-2-0123abcd.lock").mkdir()
    gone = tmp_path_factory.mktemp("gone")
    name = f"{prefix}-0badf00d-gw0"
    args = [a for k, v in gone_checkout(gone, "0badf00d").items() for a in ("--label", f"{k}={v}")]
    assert docker("run", "-d", "--name", name, *args, IMAGE, "sleep", "infinity").returncode == 0
    sweep = run_orch(project, "sweep", "--dry-run", "--json")
    assert sweep.returncode == 0, sweep.stderr
    assert "Traceback" not in sweep.stderr
    rows = {r["vm"]: r for r in json.loads(sweep.stdout)}
    mine = rows[orch.vm_name("gw0")]
    assert mine["result"] == "kept" and "damaged" in mine["reason"] and "symlink" in mine["reason"]
    assert rows[name]["result"] == "would delete"
    docker("rm", "-f", name)


# -- 5. a user's own inventory file is never overwritten ------------------------------------


@pytest.mark.parametrize("mine", ["gw1.py", "workers.py"])
def test_a_users_own_inventory_file_is_never_overwritten(project: Path, mine: str) -> None:
    (project / "inventories").mkdir()
    own = project / "inventories" / mine
    own.write_text("# my own inventory\nhosts = ['db.example.com']\n")
    up = run_orch(project, "up", "--workers", "2")
    assert up.returncode == 1
    assert f"{own} exists and was not written by orch" in up.stderr and "--inventory-dir" in up.stderr
    assert len([line for line in up.stderr.splitlines() if line.startswith("Error:")]) == 1
    assert own.read_text() == "# my own inventory\nhosts = ['db.example.com']\n"
    own.unlink()
    assert run_orch(project, "up", "--workers", "2").returncode == 0


# -- 6. the baseline cannot be dirtied behind orch's back (OrbStack) --------------------------


@pytest.mark.parametrize("provider_name", ["orbstack"])
def test_a_baseline_started_and_changed_outside_orch_is_rebuilt_before_cloning(project: Path, backend) -> None:
    orch = make(project)
    up(orch, 1)
    golden = orch.store.read().baseline.vm
    listed = json.loads(subprocess.run(["orbctl", "list", "-f", "json"], capture_output=True, text=True).stdout)
    mine = sorted(m["name"] for m in listed if m["name"].startswith(orch.settings.prefix))
    assert mine[0] != golden  # "the first machine orbctl list shows" is a worker, not the baseline
    assert mine[-1] == golden and not backend.running(golden)  # a provisioned machine, stopped, sorting last
    # a test acting on the baseline: starts it and pushes a file into it (and stops it again)
    assert subprocess.run(["orbctl", "start", golden], capture_output=True).returncode == 0
    assert backend.sh(golden, "echo pushed > /root/pushed-file").returncode == 0
    assert subprocess.run(["orbctl", "stop", golden], capture_output=True).returncode == 0
    reset = run_orch(project, "reset", "gw0")
    assert reset.returncode == 0, reset.stderr
    assert "rebuilding the baseline" in reset.stderr and "changed after it was sealed" in reset.stderr
    assert backend.sh(orch.vm_name("gw0"), "test -e /root/pushed-file").returncode != 0
    # started and left running: orch up sees it and rebuilds it, stopped
    subprocess.run(["orbctl", "start", golden], capture_output=True)
    again = run_orch(project, "up", "--workers", "1")
    assert again.returncode == 0 and "started outside orch" in again.stderr
    assert not backend.running(orch.store.read().baseline.vm)


# -- 7. a changed provision deploy re-provisions ----------------------------------------------

DEPLOY = """
from pyinfra.api import deploy
from pyinfra.operations import server


@deploy("project provision")
def provision():
    server.shell(name="mark", commands=["echo {mark} > /etc/project-mark"])
"""


def test_a_changed_provision_deploy_re_provisions_and_status_shows_drift(project: Path) -> None:
    (project / "deploys").mkdir()
    (project / "deploys" / "__init__.py").write_text("")
    (project / "deploys" / "provision.py").write_text(DEPLOY.format(mark="one"))
    with (project / "pyproject.toml").open("a") as fh:
        fh.write('provision = "deploys.provision:provision"\n')
    assert run_orch(project, "up", "--workers", "1").returncode == 0
    orch = make(project)
    vm = orch.vm_name("gw0")
    assert docker("exec", vm, "cat", "/etc/project-mark").stdout.strip() == "one"
    old_baseline = orch.store.read().baseline.ref
    (project / "deploys" / "provision.py").write_text(DEPLOY.format(mark="two"))
    status = json.loads(run_orch(project, "status", "--json").stdout)
    assert [r["drift"] for r in status if r["kind"] == "worker"] == ["the provision deploy changed"]
    up = run_orch(project, "up", "--workers", "1", "--json")
    assert up.returncode == 0, up.stderr
    assert "re-provisioning: the provision deploy changed since it was made" in up.stderr
    assert docker("exec", vm, "cat", "/etc/project-mark").stdout.strip() == "two"
    assert docker("image", "inspect", old_baseline).returncode != 0  # the stale baseline is gone
    again = run_orch(project, "up", "--workers", "1", "--reprovision", "--json")
    assert [r["action"] for r in json.loads(again.stdout)] == ["recreated"]


# -- 8. hung orbctl calls are killed without /proc ---------------------------------------------

KILL_WITHOUT_PROC = r"""
import os, sys, time
from pathlib import Path
from orchestrator.core import settings as config
from orchestrator.primitives.errors import ProviderTimeout
from orchestrator.providers.orbstack import OrbStackProvider
assert not os.path.exists("/proc/self"), "/proc must be hidden for this test"
s = config.load(cwd=Path(sys.argv[1]), env={})
s.timeouts.default = 2.0
p = OrbStackProvider(s)
start = time.monotonic()
try:
    p.inspect("hung-machine")
except ProviderTimeout as err:
    print("timeout", round(time.monotonic() - start, 1), err)
pid = int(Path(sys.argv[2]).read_text())
time.sleep(0.5)
try:
    os.kill(pid, 0)
    print("alive", pid)
except ProcessLookupError:
    print("killed", pid)
"""

PID_SHIM = """#!/bin/sh
echo $$ > "{pidfile}"
exec "{fake}" "$@"
"""


@pytest.mark.parametrize("provider_name", ["orbstack"])
def test_a_hung_orbctl_is_killed_without_proc(project: Path, tmp_path: Path) -> None:
    shim_dir = tmp_path / "shim"
    shim_dir.mkdir()
    pidfile = tmp_path / "orbctl.pid"
    fake = Path(__file__).resolve().parents[1] / "fakes" / "orbctl"
    (shim_dir / "orbctl").write_text(PID_SHIM.format(pidfile=pidfile, fake=fake))
    (shim_dir / "orbctl").chmod(0o755)
    (tmp_path / "probe.py").write_text(KILL_WITHOUT_PROC)
    env = clean_env(
        PATH=f"{shim_dir}{os.pathsep}{clean_env()['PATH']}",
        ORBCTL_FAKE_HANG="info",
        ORBCTL_FAKE_HANG_SECONDS="60",
        ORBCTL_FAKE_STATE_DIR=str(tmp_path / "fake-state"),
    )
    script = f"mount -t tmpfs none /proc && exec {sys.executable} {tmp_path / 'probe.py'} {project} {pidfile}"
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "timeout" in proc.stdout and "killed" in proc.stdout, proc.stdout + proc.stderr


# -- 9. nothing of orch's is left that sweep and down could know about ------------------------


def test_sweep_deletes_baselines_of_gone_checkouts_and_committed_leftovers(
    project: Path, tmp_path_factory, provider_name: str, prefix: str
) -> None:
    gone = tmp_path_factory.mktemp("gone")
    write_pyproject(gone, provider_name, prefix)
    other = make(gone)
    up(other, 1)
    baseline = other.store.read().baseline.ref
    docker("rm", "-f", other.vm_name("gw0"))  # containers removed by hand...
    shutil.rmtree(gone / "inventories")  # ...and the checkout deleted
    orch = make(project)
    up(orch, 1)
    committed = docker("commit", orch.vm_name("gw0")).stdout.strip()  # as pyinfra's @docker does
    sweep = run_orch(project, "sweep", "--json")
    assert sweep.returncode == 0, sweep.stderr
    assert docker("image", "inspect", baseline).returncode != 0
    assert docker("image", "inspect", committed).returncode != 0
    assert docker("image", "inspect", orch.store.read().baseline.ref).returncode == 0  # a live checkout's stays
    from orchestrator.state import checkouts as registry

    assert registry.lookup(other.checkout) is None  # its registry entry is gone too


def test_down_leaves_nothing_and_forgets_the_checkout(project: Path, backend, prefix: str) -> None:
    from orchestrator.state import checkouts as registry

    orch = make(project)
    up(orch, 2)
    create_oneoff(orch, "20260101000000-1-0123abcd")  # a one-off of a run that is gone
    assert registry.lookup(orch.checkout) is not None
    assert run_orch(project, "down").returncode == 0
    assert backend.names(prefix) == []
    assert docker("images", "-q", "--filter", f"reference={prefix}-*").stdout.strip() == ""
    assert registry.lookup(orch.checkout) is None


# -- 10. a live run is not broken without a word -------------------------------------------------

LIVE = """
import os, time

def test_live(orch_worker):
    here = os.path.dirname(__file__)
    open(os.path.join(here, "running"), "w").write("")
    deadline = time.time() + 120
    while not os.path.exists(os.path.join(here, "release")) and time.time() < deadline:
        time.sleep(0.2)
    assert orch_worker.run("true").rc == 0
"""


def test_reset_all_and_down_refuse_while_a_run_is_live(project: Path) -> None:
    (project / "test_live.py").write_text(LIVE)
    assert run_orch(project, "up", "--workers", "1").returncode == 0
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "test_live.py"],
        cwd=project,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.time() + 120
        while not (project / "running").exists() and time.time() < deadline:
            time.sleep(0.1)
        for args in (["reset", "--all"], ["down"]):
            refused = run_orch(project, *args)
            assert refused.returncode == 2, refused.stderr
            assert refused.stderr.count("\n") == 1 and "pytest run is using" in refused.stderr and "--force" in refused.stderr
    finally:
        (project / "release").write_text("")
        out, _ = run.communicate(timeout=120)
    assert run.returncode == 0, out
    assert run_orch(project, "down").returncode == 0


# -- 11. one line, never a traceback ------------------------------------------------------------


@pytest.mark.parametrize(
    "table, needle",
    [
        ("inventory_dir = 5", "inventory_dir"),
        ('inventory_dir = ["a"]', "inventory_dir"),
        ("timeouts = { default = nan }", "timeouts.default"),
        ("timeouts = { default = inf }", "timeouts.default"),
        ("timeouts = { craete = 300 }", "timeouts.craete"),
        ('legacy_prefixes = ["orch"]', "too broad"),
        ('image = "orch-base:bookworm\\nx"', "invalid image name"),
    ],
)
def test_bad_settings_are_one_line(project: Path, table: str, needle: str) -> None:
    text = (project / "pyproject.toml").read_text()
    key = table.split(" = ", 1)[0]
    lines = [line for line in text.splitlines() if not line.startswith(f"{key} =")]
    (project / "pyproject.toml").write_text("\n".join([*lines, table]) + "\n")
    proc = run_orch(project, "status")
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and needle in proc.stderr and "Traceback" not in proc.stderr


def test_files_orch_did_not_make_are_refused_in_one_line(project: Path) -> None:
    orch = make(project)
    up(orch, 1)
    lock = project / "inventories" / ".orch" / "command.lock"
    lock.unlink(missing_ok=True)
    lock.symlink_to("/etc/hostname")
    proc = run_orch(project, "up", "--workers", "1")
    assert proc.returncode == 1 and "is not a plain file" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    lock.unlink()
    state = project / "inventories" / ".orch" / "state.json"
    saved = state.read_bytes()
    state.unlink()
    os.mkfifo(state)
    proc = run_orch(project, "status", timeout=30)  # must not hang on the FIFO
    assert proc.returncode == 1 and "is not a plain file" in proc.stderr
    state.unlink()
    state.write_bytes(saved)
    bad = subprocess.run(
        [str(Path(sys.executable).with_name("orch")), "--inventory-dir", b"/tmp/\xff\xfe", "status"],
        cwd=project,
        env=clean_env(),
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "UTF-8" in bad.stderr and "Traceback" not in bad.stderr


def test_a_full_disk_while_writing_state_is_one_line_and_the_next_command_repairs(project: Path, tmp_path: Path) -> None:
    inv = tmp_path / "small"
    inv.mkdir()
    assert subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(inv)]).returncode == 0
    try:
        assert run_orch(project, "--inventory-dir", str(inv), "up", "--workers", "2").returncode == 0
        filler = inv / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=4k", "count=1000"], capture_output=True)
        down = run_orch(project, "--inventory-dir", str(inv), "down")
        assert down.returncode == 1
        errors = [line for line in down.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and "No space left on device" in down.stderr and "Traceback" not in down.stderr
        filler.unlink()
        again = run_orch(project, "--inventory-dir", str(inv), "down")
        assert again.returncode == 0, again.stderr
        assert make(project, inventory_dir=str(inv)).store.read().workers == {}
    finally:
        subprocess.run(["umount", str(inv)])


def test_reset_without_baseline_or_image_leaves_the_vm(project: Path, prefix: str) -> None:
    image = f"{prefix}-img:1"
    docker("tag", IMAGE, image)
    text = (project / "pyproject.toml").read_text().replace(f'image = "{IMAGE}"', f'image = "{image}"')
    (project / "pyproject.toml").write_text(text)
    orch = make(project)
    up(orch, 1)
    vm = orch.vm_name("gw0")
    before = docker("inspect", "-f", "{{.Id}}", vm).stdout
    with orch.store.transaction() as state:  # the baseline is gone behind orch's back...
        state.baseline.ref = "sha256:" + "0" * 64
    docker("rmi", image)  # ...and the image it was made from, too
    reset = run_orch(project, "reset", "gw0")
    assert reset.returncode != 0 and "Traceback" not in reset.stderr
    assert f"image '{image}' is not available" in reset.stderr
    assert docker("inspect", "-f", "{{.Id}}", vm).stdout == before  # the VM was left
