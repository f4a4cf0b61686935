"""The warm pool and standbys as a user runs them: `pytest -n 4` with many fresh_vm tests
and reset markers, on the real engine; no VM is handed out twice, resets swap standbys
in, a refill never makes a test wait, and `orch down` leaves nothing."""

from __future__ import annotations

import json
import time
from pathlib import Path

from backends import both_providers, run_orch, run_pytest

SUITE = """
import os
import pytest


@pytest.mark.parametrize("n", range({fresh}))
def test_fresh(n, fresh_vm):
    vm = fresh_vm()
    assert vm.run("cat /etc/orch-worker").stdout.strip() == "oneoff"
    with open(os.path.join(os.path.dirname(__file__), "handed-out"), "a") as fh:
        fh.write(vm.vm + "\\n")


@pytest.mark.orch_reset
@pytest.mark.parametrize("n", range({resets}))
def test_pollutes(n, orch_worker):
    orch_worker.run("echo dirty > /root/dirty")


@pytest.mark.parametrize("n", range({resets}))
def test_clean(n, orch_worker):
    orch_worker.run("test ! -e /root/dirty")  # every polluting test was reset after it
"""


def spares(project: Path) -> dict[str, list[dict]]:
    rows = json.loads(run_orch(project, "status", "--json").stdout)
    return {kind: [r for r in rows if r["kind"] == kind] for kind in ("worker", "oneoff", "standby")}


#: docker: -n 4; orbstack's emulator (a process per call) runs a smaller
#: share of the same on 2 workers: what differs there is its clone and rename.
SIZES = {"docker": {"n": 4, "fresh": 16, "resets": 4, "pool": 3}, "orbstack": {"n": 2, "fresh": 6, "resets": 2, "pool": 2}}


@both_providers
def test_pool_and_standby_under_pytest_n_4(project: Path, backend, prefix: str) -> None:
    size = SIZES[backend.name]
    n, pool = size["n"], size["pool"]
    with (project / "pyproject.toml").open("a") as fh:
        fh.write(f"pool = {pool}\nstandby = true\n")
    (project / "test_spares.py").write_text(SUITE.format(**size))
    up = run_orch(project, "up", "--workers", str(n))
    assert up.returncode == 0, up.stderr
    before = spares(project)
    assert len([r for r in before["oneoff"] if r["worker"] == "pool"]) == pool and len(before["standby"]) == n
    tests = run_pytest(project, "-n", str(n), "-p", "no:randomly")
    assert tests.returncode == 0, tests.stdout + tests.stderr
    handed = (project / "handed-out").read_text().split()
    assert len(handed) == len(set(handed)) == size["fresh"]  # never the same VM twice
    pooled = {r["vm"] for r in before["oneoff"]}
    assert pooled & set(handed)  # the pool was used
    deadline = time.time() + 180  # the background maintainer refills the pool and the standbys
    while time.time() < deadline:
        now = spares(project)
        ready = [r for r in now["oneoff"] if r["worker"] == "pool" and r["phase"] == "ready"]
        if len(ready) == pool and len([s for s in now["standby"] if s["phase"] == "ready"]) == n:
            break
        time.sleep(1)
    else:
        raise AssertionError(
            f"spares not refilled: {spares(project)}\n{(project / 'inventories/.orch/logs/maintain.log').read_text()}"
        )
    assert not {r["vm"] for r in now["oneoff"]} & set(handed)
    reset = run_orch(project, "reset", "gw1", "--json")
    assert reset.returncode == 0 and json.loads(reset.stdout)[0]["action"] == "swapped", reset.stderr
    down = run_orch(project, "down")
    assert down.returncode == 0, down.stderr
    assert backend.names(prefix) == []
