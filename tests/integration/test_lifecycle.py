"""orch up / status / down through the core API, on both providers (docker: the real
engine; orbstack: the real pyinfra-orbstack package against tests/fakes/orbctl)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from backends import both_providers

from orchestrator.core import settings as config
from orchestrator.core.context import Context
from orchestrator.core.maintainer import spawn_maintainer
from orchestrator.primitives import labels as L
from orchestrator.primitives.errors import UsageError
from orchestrator.primitives.kinds import Kind
from orchestrator.state import inventory
from orchestrator.verbs.down import down
from orchestrator.verbs.status import status
from orchestrator.verbs.up import up


def make(project: Path, **overrides) -> Context:
    return Context(config.load(cwd=project, env={}, overrides=overrides), refill=spawn_maintainer)


def docker_labels(name: str) -> dict:
    proc = subprocess.run(["docker", "inspect", "--type", "container", name], capture_output=True, text=True)
    return json.loads(proc.stdout)[0]["Config"]["Labels"] or {} if proc.returncode == 0 else {}


def test_up_creates_provisioned_workers_and_inventories(project: Path, backend) -> None:
    """On Docker; OrbStack's own part (its golden machine, stopped, sorting last) is in
    test_trust.py's baseline test, and its up through pytest in the e2e tests."""
    orch = make(project)
    results = up(orch, 2)
    assert [(r.worker, r.action, r.error) for r in results] == [("gw0", "created", ""), ("gw1", "created", "")]
    for r in results:
        assert backend.running(r.vm)
        assert backend.sh(r.vm, "cat /etc/orch-worker").stdout.strip() == r.worker  # provisioned
        host = inventory.read_worker(project / "inventories", r.worker)
        assert host.name == f"@{backend.name}/{r.vm}" and host.vm == r.vm
        labels = docker_labels(r.vm)
        assert labels[L.MANAGED_BY] == "orch" and labels[L.CHECKOUT] == orch.checkout
        assert labels[L.WORKER] == r.worker and labels[L.CREATED].endswith("Z")
    everyone = inventory.parse((project / "inventories" / "workers.py").read_text())
    assert [h.worker for h in everyone] == ["gw0", "gw1"]
    state = json.loads((project / "inventories" / ".orch" / "state.json").read_text())
    assert {w: rec["phase"] for w, rec in state["workers"].items()} == {"gw0": "ready", "gw1": "ready"}
    assert state["baseline"]["phase"] == "ready"
    assert not backend.exists(state["baseline"]["vm"])  # a committed image; its container is gone


def test_names_are_stable_and_unique_per_checkout(project: Path, tmp_path_factory) -> None:
    other = tmp_path_factory.mktemp("other")
    a, b = make(project), make(other)
    assert a.vm_name("gw0") == make(project).vm_name("gw0")
    assert a.vm_name("gw0") != b.vm_name("gw0")


def test_up_is_idempotent_reuses_starts_and_recreates(project: Path, backend) -> None:
    orch = make(project)
    up(orch, 3)
    ids = {w: backend.identity(orch.vm_name(w)) for w in ("gw0", "gw1", "gw2")}
    again = up(orch, 3)
    assert [r.action for r in again] == ["reused"] * 3
    assert {w: backend.identity(orch.vm_name(w)) for w in ids} == ids
    backend.stop(orch.vm_name("gw1"))
    backend.remove(orch.vm_name("gw2"))
    third = {r.worker: r.action for r in up(orch, 3)}
    assert third == {"gw0": "reused", "gw1": "started", "gw2": "recreated"}
    assert backend.identity(orch.vm_name("gw1")) == ids["gw1"] and backend.running(orch.vm_name("gw1"))
    assert backend.identity(orch.vm_name("gw2")) != ids["gw2"]


def test_more_workers_adds_fewer_leaves_extras_unless_prune(project: Path, backend) -> None:
    orch = make(project)
    up(orch, 1)
    assert {r.worker: r.action for r in up(orch, 3)} == {"gw0": "reused", "gw1": "created", "gw2": "created"}
    assert {r.worker: r.action for r in up(orch, 2)} == {"gw0": "reused", "gw1": "reused"}
    assert backend.exists(orch.vm_name("gw2")) and (project / "inventories" / "gw2.py").exists()
    pruned = {r.worker: r.action for r in up(orch, 2, prune=True)}
    assert pruned == {"gw0": "reused", "gw1": "reused", "gw2": "deleted"}
    assert not backend.exists(orch.vm_name("gw2"))
    assert not (project / "inventories" / "gw2.py").exists()


def test_unfinished_worker_from_a_crash_is_recreated(project: Path, backend) -> None:
    orch = make(project)
    up(orch, 1)
    before = backend.identity(orch.vm_name("gw0"))
    orch.store.update(Kind.WORKER, "gw0", phase="provisioning")  # as if up died before the baseline
    assert [r.action for r in up(orch, 1)] == ["recreated"]
    assert backend.identity(orch.vm_name("gw0")) != before


def test_status_reports_state_and_age(project: Path, backend) -> None:
    orch = make(project)
    up(orch, 2)
    backend.stop(orch.vm_name("gw1"))
    rows = {r.worker: r for r in status(orch) if r.kind == "worker"}
    assert rows["gw0"].state == "running" and rows["gw1"].state == "stopped"
    assert rows["gw0"].vm == orch.vm_name("gw0")
    assert rows["gw0"].age_seconds is not None and rows["gw0"].age_seconds < 600
    backend.remove(orch.vm_name("gw1"))
    assert {r.worker: r.state for r in status(orch) if r.kind == "worker"} == {"gw0": "running", "gw1": "missing"}


def test_down_deletes_only_what_is_asked_and_nothing_else(project: Path, backend) -> None:
    orch = make(project)
    up(orch, 3)
    assert {r.worker: r.action for r in down(orch, ["gw1"])} == {"gw1": "deleted"}
    assert not backend.exists(orch.vm_name("gw1"))
    assert not (project / "inventories" / "gw1.py").exists()
    assert backend.exists(orch.vm_name("gw0")) and backend.exists(orch.vm_name("gw2"))
    with pytest.raises(UsageError, match="gw7: not a worker of this checkout"):
        down(orch, ["gw7"])
    down(orch)
    assert backend.names(orch.settings.prefix) == []  # workers and (orbstack) the baseline machine
    assert not list((project / "inventories").glob("*.py"))


def test_down_and_up_leave_unlabelled_look_alikes_alone(project: Path, foreign: list[str]) -> None:
    orch = make(project)
    p = orch.settings.prefix
    holder = orch.vm_name("gw0")  # a foreign container holding a worker's name
    foreign += [f"{p}-{orch.checkout}-gw9", f"gw0-{p}", f"{p}stra-db", holder]
    for name in foreign:
        subprocess.run(
            ["docker", "run", "-d", "--name", name, "orch-base:bookworm", "sleep", "infinity"], check=True, capture_output=True
        )
    [result] = up(orch, 1)
    assert result.action == "failed" and "is not orch's" in result.error
    assert docker_labels(holder) == {}  # untouched
    down(orch)
    for name in foreign:
        assert subprocess.run(["docker", "inspect", name], capture_output=True).returncode == 0, f"{name} was deleted"


def test_generated_inventory_works_with_the_pyinfra_cli(project: Path, provider_name: str) -> None:
    orch = make(project)
    up(orch, 2)
    pyinfra = Path(sys.executable).with_name("pyinfra")
    # `exec` prints command output, which pyinfra-orbstack 0.11.0 cannot do under pyinfra 3.10
    # (it reads OutputLine.stream, now buffer_name): read a fact through @orbstack instead.
    command = ["exec", "--", "hostname"] if provider_name == "docker" else ["fact", "server.Hostname"]
    proc = subprocess.run(
        [str(pyinfra), "-y", str(project / "inventories" / "gw1.py"), *command],
        capture_output=True,
        text=True,
        cwd=project,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert orch.vm_name("gw1") in proc.stdout + proc.stderr


@both_providers
def test_missing_image_fails_at_once_with_the_fix(project: Path, backend) -> None:
    orch = make(project, image="nosuchdistro:never")
    if backend.name == "docker":  # Docker knows at once
        with pytest.raises(Exception, match="--image") as err:
            up(orch, 1)
        assert "nosuchdistro" in str(err.value)
        assert orch.store.read().workers == {}  # nothing recorded as a worker
    else:  # OrbStack only when it is asked to create from it
        [result] = up(orch, 1)
        assert not result.ok and "nosuchdistro" in result.error and "--image" in result.error
    assert backend.names(orch.settings.prefix) == []  # nothing created
