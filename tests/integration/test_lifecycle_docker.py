"""orch up / status / down against the real Docker engine, through the core API."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from orchestrator import config, inventory, labels as L
from orchestrator.errors import UsageError
from orchestrator.lifecycle import Orch


def make(project: Path, **overrides) -> Orch:
    return Orch(config.load(cwd=project, env={}, overrides=overrides))


def docker_inspect(name: str) -> dict | None:
    proc = subprocess.run(["docker", "inspect", "--type", "container", name], capture_output=True, text=True)
    return json.loads(proc.stdout)[0] if proc.returncode == 0 else None


def container_id(name: str) -> str:
    return docker_inspect(name)["Id"]


def test_up_creates_labelled_provisioned_workers_and_inventories(project: Path) -> None:
    orch = make(project)
    results = orch.up(2)
    assert [(r.worker, r.action, r.error) for r in results] == [("gw0", "created", ""), ("gw1", "created", "")]
    for r in results:
        raw = docker_inspect(r.vm)
        assert raw["State"]["Running"]
        labels = raw["Config"]["Labels"]
        assert labels[L.MANAGED_BY] == "orch"
        assert labels[L.CHECKOUT] == orch.checkout
        assert labels[L.WORKER] == r.worker
        assert labels[L.CREATED].endswith("Z")
        # the provision deploy ran inside
        out = subprocess.run(["docker", "exec", r.vm, "cat", "/etc/orch-worker"], capture_output=True, text=True)
        assert out.stdout.strip() == r.worker
        host = inventory.read_worker(project / "inventories", r.worker)
        assert host.name == f"@docker/{r.vm}" and host.vm == r.vm
    everyone = inventory.parse((project / "inventories" / "workers.py").read_text())
    assert [h.worker for h in everyone] == ["gw0", "gw1"]
    state = json.loads((project / "inventories" / ".orch" / "state.json").read_text())
    assert {w: rec["phase"] for w, rec in state["workers"].items()} == {"gw0": "ready", "gw1": "ready"}


def test_names_are_stable_and_unique_per_checkout(project: Path, tmp_path_factory) -> None:
    other = tmp_path_factory.mktemp("other")
    a, b = make(project), make(other)
    assert a.vm_name("gw0") == make(project).vm_name("gw0")
    assert a.vm_name("gw0") != b.vm_name("gw0")


def test_up_is_idempotent_reuses_starts_and_recreates(project: Path) -> None:
    orch = make(project)
    orch.up(3)
    ids = {w: container_id(orch.vm_name(w)) for w in ("gw0", "gw1", "gw2")}
    # nothing changes on a second up
    again = orch.up(3)
    assert [r.action for r in again] == ["reused"] * 3
    assert {w: container_id(orch.vm_name(w)) for w in ids} == ids
    # stopped -> started (same container), missing -> recreated
    subprocess.run(["docker", "stop", "-t", "1", orch.vm_name("gw1")], check=True, capture_output=True)
    subprocess.run(["docker", "rm", "-f", orch.vm_name("gw2")], check=True, capture_output=True)
    third = {r.worker: r.action for r in orch.up(3)}
    assert third == {"gw0": "reused", "gw1": "started", "gw2": "recreated"}
    assert container_id(orch.vm_name("gw1")) == ids["gw1"]
    assert docker_inspect(orch.vm_name("gw1"))["State"]["Running"]
    assert container_id(orch.vm_name("gw2")) != ids["gw2"]


def test_more_workers_adds_fewer_leaves_extras_unless_prune(project: Path) -> None:
    orch = make(project)
    orch.up(1)
    grown = {r.worker: r.action for r in orch.up(3)}
    assert grown == {"gw0": "reused", "gw1": "created", "gw2": "created"}
    fewer = {r.worker: r.action for r in orch.up(2)}
    assert fewer == {"gw0": "reused", "gw1": "reused"}
    assert docker_inspect(orch.vm_name("gw2")) is not None  # left alone
    assert (project / "inventories" / "gw2.py").exists()
    pruned = {r.worker: r.action for r in orch.up(2, prune=True)}
    assert pruned == {"gw0": "reused", "gw1": "reused", "gw2": "deleted"}
    assert docker_inspect(orch.vm_name("gw2")) is None
    assert not (project / "inventories" / "gw2.py").exists()


def test_unfinished_worker_from_a_crash_is_recreated(project: Path) -> None:
    orch = make(project)
    orch.up(1)
    before = container_id(orch.vm_name("gw0"))
    orch.store.update_worker("gw0", phase="provisioning")  # as if up died before the baseline
    assert [r.action for r in orch.up(1)] == ["recreated"]
    assert container_id(orch.vm_name("gw0")) != before


def test_status_reports_state_and_age(project: Path) -> None:
    orch = make(project)
    orch.up(2)
    subprocess.run(["docker", "stop", "-t", "1", orch.vm_name("gw1")], check=True, capture_output=True)
    rows = {r.worker: r for r in orch.status()}
    assert rows["gw0"].state == "running" and rows["gw1"].state == "stopped"
    assert rows["gw0"].vm == orch.vm_name("gw0")
    assert rows["gw0"].age_seconds is not None and rows["gw0"].age_seconds < 600
    subprocess.run(["docker", "rm", "-f", orch.vm_name("gw1")], check=True, capture_output=True)
    assert {r.worker: r.state for r in orch.status()} == {"gw0": "running", "gw1": "missing"}


def test_down_deletes_only_what_is_asked_and_nothing_foreign(project: Path) -> None:
    orch = make(project)
    orch.up(3)
    # A foreign container that merely carries an orch-like name, and one with another checkout's name.
    p = orch.settings.prefix
    foreign = [f"{p}-{orch.checkout}-gw9", f"gw0-{p}", f"{p}stra-db"]
    for name in foreign:
        subprocess.run(["docker", "run", "-d", "--name", name, "orch-base:bookworm", "sleep", "infinity"], check=True, capture_output=True)
    try:
        assert {r.worker: r.action for r in orch.down(["gw1"])} == {"gw1": "deleted"}
        assert docker_inspect(orch.vm_name("gw1")) is None
        assert not (project / "inventories" / "gw1.py").exists()
        assert docker_inspect(orch.vm_name("gw0")) and docker_inspect(orch.vm_name("gw2"))
        with pytest.raises(UsageError, match="gw7: not a worker of this checkout"):
            orch.down(["gw7"])
        orch.down()
        for w in ("gw0", "gw2"):
            assert docker_inspect(orch.vm_name(w)) is None
        assert not list((project / "inventories").glob("*.py"))
        for name in foreign:
            assert docker_inspect(name) is not None, f"{name} was deleted but is not orch's"
    finally:
        subprocess.run(["docker", "rm", "-f", *foreign], capture_output=True)


def test_a_foreign_container_holding_a_worker_name_is_not_taken_over(project: Path) -> None:
    orch = make(project)
    name = orch.vm_name("gw0")
    subprocess.run(["docker", "run", "-d", "--name", name, "orch-base:bookworm", "sleep", "infinity"], check=True, capture_output=True)
    try:
        [result] = orch.up(1)
        assert result.action == "failed" and "is not orch's" in result.error
        assert docker_inspect(name)["Config"]["Labels"] in (None, {})  # untouched
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def test_generated_inventory_works_with_the_pyinfra_cli(project: Path) -> None:
    orch = make(project)
    orch.up(2)
    pyinfra = Path(__import__("sys").executable).with_name("pyinfra")
    proc = subprocess.run(
        [str(pyinfra), "-y", str(project / "inventories" / "gw1.py"), "exec", "--", "hostname"],
        capture_output=True, text=True, cwd=project, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert orch.vm_name("gw1") in proc.stdout + proc.stderr


def test_missing_image_fails_at_once_with_the_fix(project: Path) -> None:
    orch = make(project, image="orch-no-such-image:never")
    with pytest.raises(Exception, match="--image") as err:
        orch.up(1)
    assert "orch-no-such-image" in str(err.value)
    assert orch.store.read().workers == {}  # nothing recorded, nothing created
