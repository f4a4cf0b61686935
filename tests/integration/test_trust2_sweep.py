"""On the real Docker engine: what a pytest run killed during its
background deletions of one-offs leaves, and what sweep and the next command make of it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from backends import clean_env, run_orch

KILLED_WHILE_DELETING = """
import os, signal, time

def test_1_makes_a_fresh_vm(fresh_vm):
    vm = fresh_vm()
    with open(os.path.join(os.path.dirname(__file__), "oneoff"), "w") as fh:
        fh.write(vm.vm)

def test_2_is_killed_while_the_one_off_is_deleted():
    # fresh_vm deletes its VM in the background after test 1: kill -9 this run while the
    # engine's delete of it runs (the delete itself, a child process, goes on)
    vm = open(os.path.join(os.path.dirname(__file__), "oneoff")).read().encode()
    deadline = time.time() + 60
    while time.time() < deadline:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    argv = fh.read().split(b"\\0")
            except OSError:
                continue
            if b"rm" in argv and vm in argv:
                os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("never saw the one-off being deleted")
"""


def state(project: Path) -> dict:
    return json.loads((project / "inventories" / ".orch" / "state.json").read_text())


@pytest.mark.parametrize("command", ["status", "sweep"])
def test_a_run_killed_while_deleting_its_oneoffs_leaves_no_missing_records(project: Path, backend, command: str) -> None:
    """A run killed while its background deletions ran: the deletions finished but the state kept the records, and `orch status`
    listed them `missing` until `orch down`. Sweep, and the next command, forget them."""
    (project / "test_killed.py").write_text(KILLED_WHILE_DELETING)
    assert run_orch(project, "up", "--workers", "1").returncode == 0
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly", "test_killed.py"],
        cwd=project,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == -9, run.stdout + run.stderr  # killed by SIGKILL, as planned
    vm = (project / "oneoff").read_text()
    deadline = time.time() + 60
    while backend.exists(vm) and time.time() < deadline:
        time.sleep(0.2)  # the engine's delete, orphaned by the kill, finishes
    assert not backend.exists(vm)
    assert vm in state(project)["oneoffs"]  # the run died before it could forget it

    if command == "status":
        listed = run_orch(project, "status", "--json")
        assert listed.returncode == 0, listed.stderr
        rows = {r["vm"]: r for r in json.loads(listed.stdout)}
        assert vm not in rows, rows.get(vm, "")
    else:
        swept = run_orch(project, "sweep", "--json")
        assert swept.returncode == 0, swept.stderr
        report = {d["vm"]: d for d in json.loads(swept.stdout)}
        assert report[vm]["result"] == "forgotten" and "VM is gone" in report[vm]["reason"]
    assert state(project)["oneoffs"] == {}
    assert [r["kind"] for r in json.loads(run_orch(project, "status", "--json").stdout)] == ["worker", "baseline"]


def test_a_standby_swapped_in_during_a_sweep_is_left_alone_and_not_reported_deleted(project: Path) -> None:
    """Sweep planned to delete gw0 and its standby (older than --older-than), a
    reset then swapped the standby in under gw0's name (two renames); Docker's delete of
    the standby's old name does nothing, and sweep said `deleted`. It must say `gone`, and
    the name gw0 (now the former standby) is not deleted."""
    from orchestrator.core import settings as config
    from orchestrator.core.context import Context
    from orchestrator.verbs.reset import reset
    from orchestrator.verbs.sweep import Sweeper
    from orchestrator.verbs.up import up

    orch = Context(config.load(cwd=project, env={}, overrides={"standby": True}))  # no refill: this test looks at every VM
    assert all(r.ok for r in up(orch, 1))
    worker, standby = orch.vm_name("gw0"), orch.store.read().standbys["gw0"].vm
    standby_id = subprocess.run(["docker", "inspect", "-f", "{{.Id}}", standby], capture_output=True, text=True).stdout
    time.sleep(1.1)  # older than --older-than 1s
    sweeper = Sweeper(orch.settings, orch.provider)
    decisions = {d.vm: d for d in sweeper.plan(older_than=1)}
    assert decisions[worker].delete and decisions[standby].delete
    assert reset(orch, ["gw0"])[0].action == "swapped"
    sweeper.execute(list(decisions.values()))
    now = subprocess.run(["docker", "inspect", "-f", "{{.Id}}", worker], capture_output=True, text=True).stdout
    assert now == standby_id  # gw0 is the former standby, still there
    assert decisions[standby].result == "gone" and "already gone" in decisions[standby].reason
    assert decisions[worker].result == "kept" and "now another VM" in decisions[worker].reason
