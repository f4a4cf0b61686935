"""orch's cheap personalize on real backends: VMs cloned from the baseline (workers added,
one-offs) get their worker id, the baseline's fingerprint and their name written by one
exec, with no pyinfra session; a project's own personalize deploy still runs; and
`orch repair` reads what the cheap path wrote (OrbStack has no labels: repair goes by
those files)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from backends import BACKENDS, PodmanBackend, both_providers, remove_incus, remove_podman, write_pyproject

from orchestrator.core import settings as config
from orchestrator.core.context import Context
from orchestrator.state.records import READY
from orchestrator.verbs.down import down
from orchestrator.verbs.oneoffs import create_oneoff, delete_oneoff
from orchestrator.verbs.repair import repair
from orchestrator.verbs.up import up


def make(project: Path, **overrides: object) -> Context:
    return Context(config.load(cwd=project, env={}, overrides=overrides))


def inside(backend, vm: str, path: str) -> str:
    got = backend.sh(vm, f"cat {path}")
    assert got.returncode == 0, got.stderr
    return got.stdout


def assert_marked(backend, vm: str, worker: str, fingerprint: str) -> None:
    assert inside(backend, vm, "/etc/orch-worker") == f"{worker}\n"
    assert inside(backend, vm, "/var/lib/orch/fingerprint") == f"{fingerprint}\n"
    assert inside(backend, vm, "/var/lib/orch/made-as") == f"{vm}\n"
    assert backend.sh(vm, "stat -c %a /var/lib/orch").stdout.strip() == "755"


def test_workers_added_and_oneoffs_are_personalized(project: Path, backend) -> None:
    orch = make(project)
    up(orch, 1)  # gw0 beside the baseline, provisioned with it
    results = up(orch, 3)  # gw1, gw2 cloned: the cheap path
    assert [(r.worker, r.ok, r.error) for r in results] == [("gw0", True, ""), ("gw1", True, ""), ("gw2", True, "")]
    data = orch.store.read()
    fp = data.baseline.fingerprint
    for worker in ("gw0", "gw1", "gw2"):
        rec = data.workers[worker]
        assert rec.phase == READY and rec.fingerprint == fp
        assert_marked(backend, rec.vm, worker, fp)
    logged = (project / "inventories" / ".orch" / "logs" / "gw1.log").read_text()  # what `orch logs gw1` shows
    assert "=== personalizing: ok" in logged and "through the provider's exec" in logged  # no pyinfra session
    host = create_oneoff(orch, "run-cheap")
    vm = host.data["orch_vm"]
    assert_marked(backend, vm, "oneoff", fp)
    delete_oneoff(orch, vm)
    assert not backend.exists(vm)


def test_a_projects_own_personalize_deploy_still_runs(project: Path, backend) -> None:
    # a module name of its own: a process imports a module once, and the unit tests' own
    # `mypersonalize` (another deploy) may be imported in this one already
    (project / "backend_personalize.py").write_text(
        "from pyinfra.api import deploy\n"
        "from pyinfra.operations import server\n"
        "from orchestrator.deploys.provision import personalize as orch_personalize\n\n"
        "@deploy('mine: personalize')\n"
        "def personalize():\n"
        "    orch_personalize()\n"
        "    server.shell(name='mine', commands=['echo mine > /etc/mine'])\n"
    )
    orch = make(project, personalize="backend_personalize:personalize")
    up(orch, 1)
    assert all(r.ok for r in up(orch, 2))
    vm = orch.vm_name("gw1")
    assert inside(backend, vm, "/etc/mine") == "mine\n"  # through pyinfra
    assert "through the provider's exec" not in (project / "inventories" / ".orch" / "logs" / "gw1.log").read_text()
    assert_marked(backend, vm, "gw1", orch.store.read().baseline.fingerprint)


@both_providers
def test_repair_reads_what_the_cheap_path_wrote(project: Path, backend) -> None:
    orch = make(project)
    up(orch, 1)
    up(orch, 2)  # gw1 personalized cheaply
    orch.store.path.unlink()  # the state file is lost
    data = repair(orch)
    assert {w: r.phase for w, r in data.workers.items()} == {"gw0": READY, "gw1": READY}
    assert data.workers["gw1"].vm == orch.vm_name("gw1")
    assert [r.action for r in up(orch, 2)] == ["reused", "reused"]


@pytest.fixture(params=["podman", "incus"])
def other(request: pytest.FixtureRequest, tmp_path: Path, prefix: str) -> Iterator[tuple[Path, object]]:
    """A project on podman or Incus (each exec is its own: podman exec, incus exec), its
    prefix its own; what is named with it is deleted afterwards."""
    project = tmp_path / "other"
    project.mkdir()
    if request.param == "podman":
        write_pyproject(project, "podman", prefix, request.getfixturevalue("podman_engine"))
        backend: object = PodmanBackend()
    else:
        request.getfixturevalue("incus_engine")
        (project / "pyproject.toml").write_text(f'[tool.orch]\nprovider = "incus"\nprefix = "{prefix}"\n')
        backend = BACKENDS["incus"]
    try:
        yield project, backend
    finally:
        with contextlib.suppress(Exception):
            down(make(project), force=True)
        if request.param == "podman":
            remove_podman(prefix, tmp_path)
        else:
            remove_incus(prefix)


def test_a_worker_added_on_podman_and_incus_is_personalized(other: tuple[Path, object]) -> None:
    project, backend = other
    orch = make(project)
    up(orch, 1)
    [_, gw1] = up(orch, 2)
    assert gw1.ok, gw1.error
    assert_marked(backend, gw1.vm, "gw1", orch.store.read().baseline.fingerprint)
    assert "through the provider's exec" in Path(gw1.log).read_text()
