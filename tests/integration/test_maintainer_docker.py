"""On the real Docker engine: with ``pool = "auto"`` a burst of ``fresh_vm`` claims is
refilled in parallel by the one background maintainer (``orch maintain``, started by
the claims), while a run is alive; the pool is back at the size the claims ask for,
every container with this checkout's labels is recorded in the state, and ``orch down``
(which the idle maintainer lets have its lock) leaves nothing."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from backends import run_orch

from orchestrator.core import maintainer, spares
from orchestrator.core import settings as config
from orchestrator.core.context import Context
from orchestrator.state.leases import Lease
from orchestrator.state.records import READY
from orchestrator.verbs.oneoffs import create_oneoff, delete_oneoff
from orchestrator.verbs.up import up


def make(project: Path) -> Context:
    return Context(config.load(cwd=project, env={}), refill=maintainer.spawn_maintainer)


def labelled(checkout: str) -> set[str]:
    """Every container (running or not) that carries this checkout's label."""
    out = subprocess.run(
        ["docker", "ps", "-a", "--filter", f"label=orch.checkout={checkout}", "--format", "{{.Names}}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return set(out.split())


def ready_pool(orch: Context) -> list[str]:
    return [o.vm for o in orch.store.read().oneoffs.values() if o.pool and o.phase == READY]


def maintainer_alive(orch: Context) -> bool:
    with maintainer.maintaining(orch, wait=False) as free:
        return not free


def test_a_burst_of_fresh_vm_claims_is_refilled_in_parallel_and_down_leaves_nothing(project: Path) -> None:
    with (project / "pyproject.toml").open("a") as fh:
        fh.write('pool = "auto"\npool_min = 1\npool_max = 6\nstandby = true\n')
    orch = make(project)
    assert all(r.ok for r in up(orch, 1))
    assert len(ready_pool(orch)) == 1  # pool_min: no claims seen yet
    lease = Lease(orch.settings.inventory_dir)  # a live run: the maintainer stays for it
    try:
        claimed = [create_oneoff(orch, lease.run).vm for _ in range(4)]  # one from the pool, three made
        assert len(set(claimed)) == 4
        wanted = spares.wanted_pool(orch)
        assert 1 < wanted <= 6  # the claims made the pool grow
        log = orch.store.dir / "logs" / "maintain.log"
        deadline = time.monotonic() + 240
        while len(ready_pool(orch)) < spares.wanted_pool(orch) or orch.store.read().standbys.get("gw0") is None:
            assert time.monotonic() < deadline, f"pool not refilled: {ready_pool(orch)}\n{log.read_text()}"
            time.sleep(0.5)
        # at least the size wanted now: the rate, and so the size, falls as the burst ages,
        # and an auto pool does not shrink below what it made (the next burst finds it)
        assert spares.wanted_pool(orch) <= len(ready_pool(orch)) <= 6
        assert len(orch.store.read().demand.makes) >= wanted - 1  # the maintainer timed its makes
        assert maintainer_alive(orch)  # still there for the live run
        assert labelled(orch.checkout) <= orch.store.read().all_vms()  # every VM of ours recorded
        for vm in claimed:
            delete_oneoff(orch, vm)
        done = run_orch(project, "down", timeout=120)  # the idle maintainer lets go of its lock
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        lease.release()
    assert labelled(orch.checkout) == set()
    data = make(project).store.read()
    assert data.all_vms() == set() and not data.workers
    deadline = time.monotonic() + 30
    while maintainer_alive(orch):  # it saw no workers left, and went
        assert time.monotonic() < deadline, "the maintainer did not exit after orch down"
        time.sleep(0.2)
