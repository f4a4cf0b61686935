"""A seed-style suite on the real Docker engine: its lifecycle tests get VMs from one plain
helper, ``create_test_vm(reuse_worker_vm=False)``, called from tests and from another
helper, routed to orch by two lines of its conftest. Under ``pytest -n 2 --orch-up`` with
a warm pool, the helper's one-offs come from the pool and are gone after the run."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from backends import run_orch, run_pytest

#: The seed's conftest after the change: the import line and the helper's return line.
CONFTEST = """
import os

from orchestrator import current_worker, fresh_vm


def create_test_vm(reuse_worker_vm=False):
    return current_worker() if reuse_worker_vm else fresh_vm()


def create_and_note():
    vm = create_test_vm()
    with open(os.path.join(os.path.dirname(__file__), "handed-out"), "a") as fh:
        fh.write(vm.vm + "\\n")
    return vm
"""

SUITE = """
import pytest
from conftest import create_and_note, create_test_vm


@pytest.mark.parametrize("n", range(3))
def test_lifecycle(n):
    vm = create_and_note()
    assert vm.run("cat /etc/orch-worker").stdout.strip() == "oneoff"
    vm.run("touch /root/made-by-the-test")


def test_reuses_the_worker():
    worker = create_test_vm(reuse_worker_vm=True)
    assert worker.run("cat /etc/orch-worker").stdout.strip().startswith("gw")
    assert create_test_vm(reuse_worker_vm=True) is worker
"""


def oneoffs(project: Path) -> dict[str, str]:
    """The one-offs ``orch status --json`` lists: name -> who holds it ("pool" or a run)."""
    rows = json.loads(run_orch(project, "status", "--json").stdout)
    return {r["vm"]: r["worker"] for r in rows if r["kind"] == "oneoff"}


def test_a_seed_style_helper_gets_pool_vms_deleted_after_the_run(project: Path) -> None:
    with (project / "pyproject.toml").open("a") as fh:
        fh.write("pool = 2\n")
    (project / "conftest.py").write_text(CONFTEST)
    (project / "test_seed.py").write_text(SUITE)
    up = run_orch(project, "up", "--workers", "2")
    assert up.returncode == 0, up.stderr
    pooled = {vm for vm, holder in oneoffs(project).items() if holder == "pool"}
    assert len(pooled) == 2
    tests = run_pytest(project, "-n", "2", "--orch-up")
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "gw0 reused, gw1 reused" in tests.stdout
    handed = (project / "handed-out").read_text().split()
    assert len(handed) == len(set(handed)) == 3
    assert pooled & set(handed), f"none of {handed} came from the pool {pooled}"
    assert not set(oneoffs(project)) & set(handed)  # not recorded any more
    for vm in handed:  # and gone from the engine (the session waited for the deletions)
        assert subprocess.run(["docker", "inspect", vm], capture_output=True).returncode != 0, vm
    down = run_orch(project, "down")
    assert down.returncode == 0, down.stderr
