"""Reset, one-off VMs and sweep, end to end: `orch` and `pytest` run as subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from backends import clean_env, make_orphans
from backends import run_orch as orch
from backends import run_pytest as pytest_run

from orchestrator.primitives import naming

RESET_SUITE_A = """
import pytest

@pytest.mark.orch_reset
def test_1_pollutes(orch_worker):
    orch_worker.run("echo dirty > /root/dirty && useradd pollutera")

def test_2_sees_the_baseline(orch_worker):
    assert not orch_worker.run("test -e /root/dirty", check=False).ok
    assert not orch_worker.run("id pollutera", check=False).ok

def test_3_reset_on_demand(orch_worker, worker_vm):
    orch_worker.run("echo again > /root/dirty")
    orch_worker.reset()
    assert orch_worker.vm == worker_vm  # same VM name after reset
    assert orch_worker.run("ls /root").stdout == ""
"""


def test_marker_and_on_demand_reset_in_pytest(project: Path) -> None:
    (project / "test_reset_a.py").write_text(RESET_SUITE_A)
    (project / "test_reset_b.py").write_text(RESET_SUITE_A.replace("pollutera", "polluterb"))
    assert orch(project, "up", "--workers", "2").returncode == 0
    result = pytest_run(project, "-n", "2", "--dist", "loadfile", "-v")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 passed" in result.stdout


FRESH_FAILING = """
def test_lifecycle_fails(fresh_vm):
    vm = fresh_vm()
    other = fresh_vm()
    assert vm.vm != other.vm
    assert vm.run("cat /etc/orch-worker").stdout == "oneoff"
    assert False, "this test fails on purpose"
"""


def oneoffs(backend, prefix: str) -> list[str]:
    return [n for n in backend.names(prefix + "-") if "-x" in n]


def test_fresh_vm_is_deleted_after_a_failing_test(project: Path, backend, prefix: str) -> None:
    (project / "test_fresh.py").write_text(FRESH_FAILING)
    assert orch(project, "up", "--workers", "1").returncode == 0
    result = pytest_run(project, "-v")
    assert result.returncode == 1 and "this test fails on purpose" in result.stdout
    assert oneoffs(backend, prefix) == []
    state = json.loads((project / "inventories" / ".orch" / "state.json").read_text())
    assert state["oneoffs"] == {}


HOLDING = """
import os, time

def test_holds_a_fresh_vm(fresh_vm):
    vm = fresh_vm()
    here = os.path.dirname(__file__)
    with open(os.path.join(here, "vm-" + os.environ["HOLDER"]), "w") as fh:
        fh.write(vm.vm)
    release = os.path.join(here, "release-" + os.environ["HOLDER"])
    deadline = time.time() + 120
    while not os.path.exists(release) and time.time() < deadline:
        time.sleep(0.2)
"""


def test_sweep_removes_a_killed_runs_oneoffs_and_keeps_a_live_runs(project: Path, backend, prefix: str) -> None:
    (project / "test_hold.py").write_text(HOLDING)
    assert orch(project, "up", "--workers", "1").returncode == 0
    runs = {}
    for holder in ("dead", "live"):
        env = {**clean_env(), "HOLDER": holder}
        runs[holder] = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "1", "test_hold.py"],
            cwd=project,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.time() + 120
    while not all((project / f"vm-{h}").exists() for h in runs) and time.time() < deadline:
        time.sleep(0.2)
    dead_vm, live_vm = (project / "vm-dead").read_text(), (project / "vm-live").read_text()
    assert set(oneoffs(backend, prefix)) == {dead_vm, live_vm}

    os.killpg(runs["dead"].pid, signal.SIGKILL)  # the whole run: controller and worker
    runs["dead"].wait()
    assert dead_vm in oneoffs(backend, prefix)  # nothing could clean up

    swept = orch(project, "sweep", "--json")
    assert swept.returncode == 0, swept.stderr
    report = {d["vm"]: d for d in json.loads(swept.stdout)}
    assert report[dead_vm]["result"] == "deleted" and "run that is gone" in report[dead_vm]["reason"]
    assert report[live_vm]["result"] == "kept" and "alive" in report[live_vm]["reason"]
    assert oneoffs(backend, prefix) == [live_vm]

    (project / "release-live").write_text("")
    assert runs["live"].wait(timeout=120) == 0
    assert oneoffs(backend, prefix) == []  # the live run deleted its own at teardown


def test_cli_reset_reports_timing_and_refuses_bad_ids(project: Path) -> None:
    assert orch(project, "up", "--workers", "2").returncode == 0
    reset = orch(project, "reset", "gw1", "--json")
    assert reset.returncode == 0, reset.stderr
    [row] = json.loads(reset.stdout)
    assert row["worker"] == "gw1" and row["action"] == "reset" and row["seconds"]["total"] > 0
    assert "orch reset in" in reset.stderr
    for bad, fix in ((["gw7"], "not a worker of this checkout"), (["../x"], "invalid worker id"), ([], "or pass --all")):
        proc = orch(project, "reset", *bad)
        assert proc.returncode == 2 and fix in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_pytest_orch_sweep_runs_once_from_the_controller(project: Path, backend, prefix: str, tmp_path_factory) -> None:
    assert orch(project, "up", "--workers", "2").returncode == 0
    gone = prefix[1:]  # a checkout id of this test's own: the registry is shared by every test
    orphan = f"{prefix}-{gone}-gw0"
    make_orphans(backend, [orphan], gone, tmp_path_factory.mktemp("gone"))
    (project / "test_uses_workers.py").write_text(
        "def test_a(worker_vm):\n    assert worker_vm\n\ndef test_b(worker_vm):\n    assert worker_vm\n"
    )
    result = pytest_run(project, "-n", "2", "--orch-sweep")
    assert result.returncode == 0, result.stdout + result.stderr
    assert not backend.exists(orphan)  # swept by the controller before the tests
    assert backend.exists(f"{prefix}-{naming.checkout_id(project / 'inventories')}-gw0")  # live workers kept
