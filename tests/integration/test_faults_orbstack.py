"""Fault injection with the orbctl emulator's knobs: transient failures at 30 %, and hangs.
The CLI and pytest run as subprocesses, as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from backends import clean_env, make_orphans

pytestmark = pytest.mark.parametrize("provider_name", ["orbstack"])

ORCH = str(Path(sys.executable).with_name("orch"))


def run(project: Path, args: list[str], knobs: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    env = clean_env(**knobs, ORBCTL_FAKE_STATE_DIR=str(project / "fake-state"))
    return subprocess.run(args, cwd=project, env=env, capture_output=True, text=True, timeout=timeout)


FRESH = """
def test_lifecycle(fresh_vm):
    vm = fresh_vm()
    assert vm.run("cat /etc/orch-worker").stdout == "oneoff"
"""


def test_thirty_percent_transient_failures_up_reset_fresh_vm_and_sweep_still_succeed(
    project: Path, backend, prefix: str, tmp_path_factory
) -> None:
    knobs = {"ORBCTL_FAKE_FAIL_RATE": "0.3", "ORBCTL_FAKE_SEED": os.environ.get("ORCH_TEST_SEED", "7"), "ORCH_RETRIES": "8"}
    retried = 0
    up = run(project, [ORCH, "up", "--workers", "2"], knobs)
    assert up.returncode == 0, up.stderr
    retried += up.stderr.count("retrying")
    reset = run(project, [ORCH, "reset", "gw1"], knobs)
    assert reset.returncode == 0, reset.stderr
    retried += reset.stderr.count("retrying")
    (project / "test_fresh.py").write_text(FRESH)
    tests = run(project, [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "test_fresh.py"], knobs)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    # orphans for sweep: machines of a checkout that is gone
    gone = prefix[1:]  # a checkout id of this test's own: the registry is shared by every test
    make_orphans(backend, [f"{prefix}-{gone}-gw{i}" for i in range(6)], gone, tmp_path_factory.mktemp("gone"))
    sweep = run(project, [ORCH, "sweep", "--json"], knobs)
    assert sweep.returncode == 0, sweep.stderr
    results = {r["vm"]: (r["result"], r["reason"]) for r in json.loads(sweep.stdout)}
    assert sum(r == "deleted" for r, _ in results.values()) == 6, results
    retried += sweep.stderr.count("retrying")
    assert retried > 0, "the failure knob injected nothing: the test proved nothing"
    assert [n for n in backend.names(prefix + "-") if n.startswith(f"{prefix}-{gone}-")] == []


def test_a_hang_ends_in_a_timeout_a_retry_and_success(project: Path, backend, prefix: str) -> None:
    with (project / "pyproject.toml").open("a") as fh:
        fh.write("timeouts = { create = 3 }\n")
    knobs = {"ORBCTL_FAKE_HANG": "create", "ORBCTL_FAKE_HANG_COUNT": "1", "ORBCTL_FAKE_HANG_SECONDS": "600"}
    t = time.monotonic()
    up = run(project, [ORCH, "up", "--workers", "1"], knobs)
    assert up.returncode == 0, up.stderr
    assert time.monotonic() - t < 120
    assert "timed out after 3s" in up.stderr and "retrying" in up.stderr
    assert "the command was killed" in up.stderr  # the hung orbctl does not linger
    leftovers = subprocess.run(["pgrep", "-f", f"orbctl create .*{prefix}"], capture_output=True, text=True).stdout.split()
    assert leftovers == []


def test_a_hang_that_never_ends_is_reported_clearly(project: Path) -> None:
    with (project / "pyproject.toml").open("a") as fh:
        fh.write("timeouts = { create = 2 }\nretries = 1\n")
    knobs = {"ORBCTL_FAKE_HANG": "create", "ORBCTL_FAKE_HANG_SECONDS": "600"}
    up = run(project, [ORCH, "up", "--workers", "1"], knobs)
    assert up.returncode == 1
    last = up.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: 1 worker(s) failed") and "run `orch up` again" in last
    assert "timed out after 2s" in up.stderr  # the table says which worker and why
