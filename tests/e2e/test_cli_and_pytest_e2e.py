"""End to end, as a user runs it: the `orch` CLI and `pytest -n N` as subprocesses in a
project of their own, against the real Docker engine."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from backends import run_orch, run_pytest

from orchestrator.primitives import naming

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


orch = run_orch
pytest_run = run_pytest


def worker_names(backend, prefix: str) -> list[str]:
    return [n for n in backend.names(prefix + "-") if "-gw" in n]


def proofs(backend, vm: str) -> dict[str, str]:
    """The proof files the example suite leaves in a VM: {test name: worker id it ran under}."""
    out = backend.sh(vm, "cd /var/lib/orch/proofs 2>/dev/null && grep -H . * || true").stdout
    return dict(line.split(":", 1) for line in out.split())


@pytest.fixture
def example_project(project: Path) -> Path:
    shutil.copy(ROOT / "examples" / "test_example.py", project / "test_example.py")
    return project


def test_up_pytest_up_down(example_project: Path, backend, prefix: str) -> None:
    project = example_project
    checkout = naming.checkout_id(project / "inventories")

    up = orch(project, "up", "--workers", "2")
    assert up.returncode == 0, up.stderr
    assert "gw0: making" in up.stderr and "provisioning with" in up.stderr  # progress per worker
    assert f"orch up: 2 worker(s) on {backend.name} in" in up.stderr  # summary with timings
    vms = worker_names(backend, prefix)
    assert vms == [f"{prefix}-{checkout}-gw0", f"{prefix}-{checkout}-gw1"]

    tests = pytest_run(project, "-n", "2", "-v")
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "12 passed" in tests.stdout
    # Every test ran on its own worker's VM: the worker id it wrote inside the VM is
    # the worker that VM belongs to, and all 12 tests left a proof.
    seen = {}
    for vm in vms:
        label = vm.rsplit("-", 1)[1]
        for test, worker in proofs(backend, vm).items():
            assert worker == label, f"{test} ran as {worker} but wrote into {vm}"
            seen[test] = worker
    assert len(seen) == 12
    assert set(seen.values()) == {"gw0", "gw1"}  # both workers did work

    again = orch(project, "up", "--workers", "2", "--json")
    assert again.returncode == 0, again.stderr
    assert [r["action"] for r in json.loads(again.stdout)] == ["reused", "reused"]
    assert worker_names(backend, prefix) == vms

    status = orch(project, "status", "--json")
    rows = [r for r in json.loads(status.stdout) if r["kind"] == "worker"]
    assert [(r["worker"], r["state"], r["phase"]) for r in rows] == [("gw0", "running", "ready"), ("gw1", "running", "ready")]

    down = orch(project, "down")
    assert down.returncode == 0, down.stderr
    assert backend.names(prefix + "-") == []  # no worker, no baseline machine left
    assert not list((project / "inventories").glob("*.py"))


CRASH_SUITE = """
import os, time
import pytest

@pytest.mark.parametrize("n", range(30))  # enough work left for the replacement to get some
def test_work(n, orch_worker, worker_vm):
    marker = os.path.join(os.path.dirname(__file__), "crashed")
    if n == 5 and not os.path.exists(marker):
        with open(marker, "w") as fh:
            fh.write(os.environ["PYTEST_XDIST_WORKER"] + " " + orch_worker.worker_id)
        os._exit(1)  # the worker process dies mid-run
    time.sleep(0.3)
    xdist_id = os.environ["PYTEST_XDIST_WORKER"]
    orch_worker.run(f"echo {xdist_id} {orch_worker.worker_id} {worker_vm} >> /var/lib/orch/ran")
"""


def test_crashed_worker_vm_goes_to_its_replacement(project: Path, backend, prefix: str) -> None:
    (project / "test_crash.py").write_text(CRASH_SUITE)
    assert orch(project, "up", "--workers", "2").returncode == 0
    result = pytest_run(project, "-n", "2")
    out = result.stdout + result.stderr
    assert "replacing crashed worker" in out
    assert "29 passed" in out and "1 failed" in out  # only the test that killed its worker
    _crashed_xdist, crashed_orch = (project / "crashed").read_text().split()
    checkout = naming.checkout_id(project / "inventories")
    vm = f"{prefix}-{checkout}-{crashed_orch}"
    lines = backend.sh(vm, "cat /var/lib/orch/ran").stdout.split("\n")
    rows = [line.split() for line in lines if line]
    replacements = {x for x, o, v in rows if x not in ("gw0", "gw1")}
    assert replacements, f"no test ran on a replacement worker in {vm}: {rows}"
    # the replacement (gw2) used the dead worker's VM and no other
    assert all(o == crashed_orch and v == vm for x, o, v in rows)


def test_more_pytest_workers_than_vms_names_the_fix(example_project: Path) -> None:
    assert orch(example_project, "up", "--workers", "1").returncode == 0
    result = pytest_run(example_project, "-n", "2")
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "worker gw1 has no VM" in out and "run `orch up --workers 2`" in out
    assert "Traceback" not in out
