"""Keeping the worker of a failing test (``--orch-keep-failed``): swapped out as it was at
the failure, for ``orch shell``; the next test gets a clean worker.

In the failing test's teardown (first of orch's teardown steps, see ``plugin.py``), when
the test used its worker (``orch_worker``, or a fixture made from it, or the
``orch_reset`` marker): the core keeps the worker's VM under a kept name
(:func:`orchestrator.core.keeping.keep`, at most ``keep_failed_max`` per run, decided in
one state transaction across xdist workers), and the worker is reset at once (its
standby swapped in when it has a ready one, else made again from the baseline). The
test's report carries the kept name and the command to enter it; the terminal summary
lists them.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from orchestrator.primitives.errors import OrchError
from orchestrator.pytest_plugin import handout
from orchestrator.pytest_plugin.report import attach, section
from orchestrator.pytest_plugin.run import RUN_KEY, OrchRun
from orchestrator.pytest_plugin.worker import current_worker_id

log = logging.getLogger(__name__)

#: The report's section (and the key of its entries in the JSON report).
SECTION = "kept"
#: Set on a test whose worker's VM was kept: the kept name (the worker has another VM
#: since, so what was checked on the worker before the test is now that VM's).
KEPT_KEY = pytest.StashKey[str]()

#: The fixtures that hand a test its worker (the others are made from ``orch_worker``).
_USES_WORKER = "orch_worker"


def _lines(entries: list[dict[str, Any]]) -> list[str]:
    lines = []
    for e in entries:
        if e.get("vm"):
            lines.append(f"{e['test']} ({e['worker']}): kept as {e['vm']}; enter it: {e['shell']}")
        else:
            lines.append(f"{e['test']} ({e['worker']}): not kept: {e['why']}")
    if any(e.get("vm") for e in entries):
        lines.append("`orch status` lists them; `orch down` (or `orch sweep --older-than AGE`) deletes them")
    return lines


section(SECTION, "workers of failing tests, kept (--orch-keep-failed)", _lines)


def kept_vm(item: pytest.Item) -> str:
    """The name the test's worker VM was kept under ("" if it was not kept)."""
    return item.stash.get(KEPT_KEY, "")


def _wanted(item: pytest.Item) -> bool:
    """The test failed, keeping is on, and the test used this process's worker."""
    if not handout.failed(item):
        return False
    run = item.config.stash.get(RUN_KEY, None)
    if run is None or not run.settings.keep_failed or run.worker is None:
        return False
    if item.stash.get(handout.REACHED_KEY, False):  # orchestrator.current_worker()
        return True
    return _USES_WORKER in getattr(item, "fixturenames", ()) or item.get_closest_marker("orch_reset") is not None


def after_test(item: pytest.Item) -> None:
    """Called by the switchboard in each test's teardown (see ``plugin.py`` for the order)."""
    if not _wanted(item):
        return
    from orchestrator.core.keeping import keep  # noqa: PLC0415  (on first use: not at plugin load)

    run = item.config.stash[RUN_KEY]
    worker_id = current_worker_id(run.workerinput)
    kept = keep(
        run.ctx,
        worker_id,
        test=item.nodeid,
        session=run.lease.session,
        by=run.lease.run,
        cap=run.settings.keep_failed_max,
    )
    entry: dict[str, Any] = {"test": item.nodeid, "worker": worker_id}
    if not kept.kept:
        log.info("orch: %s's worker not kept: %s", item.nodeid, kept.why)
        attach(item, SECTION, {**entry, "why": kept.why})
        if not kept.owes_reset:
            return  # nothing changed: the worker goes on as it is
    else:
        item.stash[KEPT_KEY] = kept.vm
    start = time.monotonic()
    reset_error = _reset(run, worker_id, f"after {item.nodeid}" + (f", kept as {kept.vm}" if kept.kept else ""))
    if kept.kept:
        seconds = {"keep": round(kept.seconds, 3), "reset": round(time.monotonic() - start, 3)}
        more = {"reset_error": reset_error} if reset_error else {}
        attach(item, SECTION, {**entry, "vm": kept.vm, "shell": f"orch shell {kept.vm}", "seconds": seconds, **more})


def _reset(run: OrchRun, worker_id: str, why: str) -> str:
    """The worker reset for the next test; a reset that fails is tried again by the next
    test's setup (which fails in one line if it fails again): its error, or ""."""
    try:
        handout.reset_worker(run, worker_id)
    except OrchError as err:
        run.owes_reset = why
        log.warning("orch: %s", err)
        return str(err)
    return ""
