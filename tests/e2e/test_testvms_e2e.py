"""VMs that tests make themselves, as a connector's own suite makes them: with the backend's
command line from inside the tests (``docker run``, ``podman create``, ``orbctl create``,
``incus init``), under ``pytest -n 2`` in a project of their own. Names orch hands out
(``orchestrator.vm_name``, ``orch_vm_name``) never collide and what a test leaves under
them is gone after it; a VM a test leaves under a name of its own is named at the end of
the run with the test; ``--orch-reap-leaks`` deletes exactly that one; ``orch sweep``
deletes what a dead run left under its recorded names, and nothing named alike.

``--orch-reap-leaks`` runs on the second Docker engine only: on the shared engine it would
delete what other tests running at the same moment make without orch's labels."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from backends import remove_incus, remove_podman, run_orch, run_pytest

from orchestrator.primitives import naming
from orchestrator.state.leases import new_run_id
from orchestrator.state.store import StateStore
from orchestrator.verbs import testvms

#: The connector's suite: every VM made with the backend's own command line.
SUITE = """
import os
import subprocess
import time
from pathlib import Path

import pytest

from orchestrator import vm_name

BASE = os.environ["SUITE_BASE"]
IMAGE = os.environ["SUITE_IMAGE"]
CLI = os.environ["SUITE_CLI"]


def cli(*args):
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=120)


def exists(name):
    return cli("inspect", "--type", "container", name).returncode == 0


@pytest.mark.parametrize("n", range(4))
def test_lifecycle(n, orch_vm_name):
    name = orch_vm_name(BASE)
    assert cli("run", "-d", "--name", name, IMAGE, "sleep", "infinity").returncode == 0
    assert cli("stop", "-t", "0", name).returncode == 0
    assert cli("start", name).returncode == 0  # left running: orch deletes it after the test


def test_create_that_fails_leaves_a_container():
    name = vm_name(BASE)
    proc = cli("run", "--name", name, IMAGE, "/no/such/command")
    assert proc.returncode != 0 and exists(name)  # made, then it could not start
    Path("failed-create.txt").write_text(name)


def test_leaks_a_container_under_a_name_of_its_own():
    name = f"{BASE}leak-{int(time.time())}"
    assert cli("run", "-d", "--name", name, IMAGE, "sleep", "infinity").returncode == 0
    Path("leaked.txt").write_text(name)


def test_meanwhile_another_checkouts_run_makes_one():
    from orchestrator.primitives import naming

    assert cli("run", "-d", "--name", naming.named_vm_name(BASE, "0badc0de"), IMAGE, "sleep", "infinity").returncode == 0
"""


def docker(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120, env=env)


def names(prefix: str, env: dict[str, str] | None = None) -> set[str]:
    return {n for n in docker("ps", "-a", "--format", "{{.Names}}", env=env).stdout.split() if n.startswith(prefix)}


def run_report(project: Path) -> dict:
    [path] = (project / "inventories" / ".orch" / "reports").glob("*.json")
    return json.loads(path.read_text())


def suite(project: Path, base: str, image: str = "orch-base:bookworm", cli: str = "docker") -> dict[str, str]:
    (project / "test_connector.py").write_text(SUITE)
    return {"SUITE_BASE": base, "SUITE_IMAGE": image, "SUITE_CLI": cli}


def test_a_connector_suite_on_docker(project: Path, prefix: str) -> None:
    base = f"{prefix}-vm"
    env = suite(project, base)
    result = run_pytest(project, "-n", "2", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "7 passed" in result.stdout
    failed, leaked = (project / "failed-create.txt").read_text(), (project / "leaked.txt").read_text()
    assert "test_connector.py::test_create_that_fails_leaves_a_container (gw" in result.stdout
    assert f"left {failed}: deleted after the test" in result.stdout
    assert "test_connector.py::test_leaks_a_container_under_a_name_of_its_own" in result.stdout
    assert f"left {leaked} (made 20" in result.stdout and "still there" in result.stdout
    other = {n for n in names(prefix) if naming.parse_named_vm_name(n) == (base, "0badc0de")}
    assert names(prefix) == {leaked, *other} and len(other) == 1  # every handed-out name deleted
    handed = run_report(project)["testvms"]
    assert {e["vm"] for e in handed if e["result"] == "deleted"} >= {failed}
    assert len({e["vm"] for e in handed}) == 5 and all(naming.parse_named_vm_name(e["vm"]) for e in handed)
    [leak] = [e for e in run_report(project)["leaks"] if e["vm"] == leaked]
    assert "test_connector.py::test_leaks_a_container_under_a_name_of_its_own" in leak["tests"]

    # a run that died left a container under its recorded name: sweep deletes it, and only it
    store = StateStore(project / "inventories", naming.checkout_id(project / "inventories"))
    dead = testvms.hand_out(store, "docker", base, run=new_run_id(), test="test_connector.py::test_killed")
    alike = naming.named_vm_name(base, store.checkout)  # this checkout's form, never handed out
    for name in (dead, alike):
        assert docker("run", "-d", "--name", name, "orch-base:bookworm", "sleep", "infinity").returncode == 0
    swept = run_orch(project, "sweep", "--json")
    assert swept.returncode == 0, swept.stderr
    decisions = {d["vm"]: d for d in json.loads(swept.stdout)}
    assert decisions[dead]["result"] == "deleted" and "test_killed" in decisions[dead]["reason"]
    assert decisions[alike]["result"] == "kept" and decisions[other.pop()]["result"] == "kept"
    assert dead not in names(prefix) and alike in names(prefix) and leaked in names(prefix)
    assert store.read().testvms == {}


@pytest.fixture
def engine2_env(second_engine, prefix: str) -> Iterator[dict[str, str]]:
    """An environment whose ``docker`` is the second engine (nothing else makes unlabelled
    containers there while the test runs); what the test made there is removed after it."""
    from engines import shared_use

    with shared_use():
        env = second_engine.docker_env("unix")
        yield env
        doomed = names(prefix, env)
        if doomed:
            docker("rm", "-f", *doomed, env=env)


def test_reap_leaks_deletes_exactly_what_a_test_left(project: Path, prefix: str, engine2_env: dict[str, str]) -> None:
    base = f"{prefix}-vm"
    before = f"{base}leak-1698765432"  # made before the run, named like the leak
    assert docker("run", "-d", "--name", before, "orch-base:bookworm", "sleep", "infinity", env=engine2_env).returncode == 0
    env = {**suite(project, base), "DOCKER_HOST": engine2_env["DOCKER_HOST"]}
    result = run_pytest(project, "-n", "2", "--orch-reap-leaks", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    leaked = (project / "leaked.txt").read_text()
    assert f"left {leaked} (made 20" in result.stdout and "deleted (--orch-reap-leaks)" in result.stdout
    left = names(prefix, engine2_env)
    other = {n for n in left if naming.parse_named_vm_name(n) == (base, "0badc0de")}
    assert left == {before, *other} and len(other) == 1
    reaped = [e for e in run_report(project)["leaks"] if e["result"].startswith("deleted")]
    assert [e["vm"] for e in reaped] == [leaked]


#: The same on the other backends, smaller: a VM under a handed-out name is gone after its
#: test, one under a name of the test's own is named at the end.
SMALL = """
import os
import subprocess
import time
from pathlib import Path

CREATE = os.environ["SUITE_CREATE"].split()
BASE = os.environ["SUITE_BASE"]


def create(name):
    proc = subprocess.run([w.replace("{name}", name) for w in CREATE], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr


def test_handed_a_name(orch_vm_name):
    name = orch_vm_name(BASE)
    create(name)
    Path("handed.txt").write_text(name)


def test_leaks_one():
    name = f"{BASE}leak-{int(time.time())}"
    create(name)
    Path("leaked.txt").write_text(name)
"""

OTHERS = {
    "podman": ("podman_engine", "podman create --name {name} localhost/orch-base:bookworm sleep infinity"),
    "orbstack": ("docker_engine", "orbctl create debian {name}"),
    "incus": ("incus_engine", "incus init orch-machine/bookworm {name}"),
}
LIST = {
    "podman": ["podman", "ps", "-a", "--format", "{{.Names}}"],
    "orbstack": ["orbctl", "list", "-q"],
    "incus": ["incus", "list", "--format", "csv", "--columns", "n"],
}


@pytest.mark.parametrize("provider_name", sorted(OTHERS))
def test_named_and_leaked_vms_on_other_backends(
    provider_name: str, tmp_path: Path, prefix: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, create = OTHERS[provider_name]
    request.getfixturevalue(engine)
    fakes = Path(__file__).resolve().parents[1] / "fakes"
    monkeypatch.setenv("PATH", f"{fakes}{os.pathsep}{os.environ.get('PATH', '')}")  # orbctl: the emulator
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text(f'[tool.orch]\nprovider = "{provider_name}"\nprefix = "{prefix}"\n')
    (project / "test_small.py").write_text(SMALL)

    def on_backend() -> set[str]:
        return {
            n for n in subprocess.run(LIST[provider_name], capture_output=True, text=True).stdout.split() if n.startswith(prefix)
        }

    try:
        result = run_pytest(project, "-n", "2", env={"SUITE_CREATE": create, "SUITE_BASE": f"{prefix}-vm"})
        assert result.returncode == 0, result.stdout + result.stderr
        handed, leaked = (project / "handed.txt").read_text(), (project / "leaked.txt").read_text()
        assert f"left {handed}: deleted after the test" in result.stdout
        assert "test_small.py::test_leaks_one" in result.stdout and f"left {leaked} (made 20" in result.stdout
        assert on_backend() == {leaked}
    finally:
        doomed = on_backend()
        if provider_name == "podman":
            remove_podman(prefix, project)
        elif provider_name == "incus":
            remove_incus(prefix)
        elif doomed:
            subprocess.run(["orbctl", "delete", "-f", *doomed], capture_output=True)
    assert on_backend() == set()
