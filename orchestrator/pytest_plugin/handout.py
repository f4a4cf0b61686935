"""The worker side of orch's pytest plugin: handing this process its worker's VM, and
the resets the ``orch_reset`` marker owes it.

A worker reaches a test only ready and clean: one left unfinished, or owing a reset a
killed run never did, is made again from the baseline first. A marked test records the
reset it owes before it runs, so a run killed before its teardown leaves a worker that
the next taker resets first, whatever the test or its fixtures did to it.
"""

from __future__ import annotations

import logging
import time

import pytest

from orchestrator.primitives import naming
from orchestrator.primitives.errors import OrchError
from orchestrator.pytest_plugin.report import waited
from orchestrator.pytest_plugin.run import RUN_KEY, OrchRun, orch_run, workers_needed
from orchestrator.pytest_plugin.worker import Worker, WorkerMissing, current_worker_id, find_worker
from orchestrator.state import inventory, leases
from orchestrator.state.records import FAILED, READY, StateData

log = logging.getLogger(__name__)


def fail(err: OrchError) -> None:
    """Fail the test in one line (no traceback): an orch error names its fix."""
    pytest.fail(str(err), pytrace=False)


def get_worker(config: pytest.Config) -> Worker:
    """This process's worker (made once): what ``orch_worker`` and ``current_worker()`` give."""
    run = orch_run(config)
    if run.worker is None:
        worker_id = current_worker_id(run.workerinput)
        start, why = time.monotonic(), "not handed out"
        try:
            run.lease.use(worker_id)  # a lease that says which worker this process uses
            run.ctx.connector.setup()  # a deleted SSH key: one line naming `orch up`
            why = _take(run, worker_id)
            run.worker = find_worker(
                run.settings.inventory_dir,
                worker_id,
                workers_hint=run.workerinput.get("workercount"),
                resetter=lambda: reset_worker(run, worker_id, cause="orch_worker.reset()"),
                ensure_running=lambda: _ensure(run, worker_id),
                ready=(lambda: _ready(run, worker_id)) if run.ctx.provider.machine else None,
            )
        finally:
            kind = "failed" if run.worker is None else "remade" if why else "ready"
            waited("handout", kind, time.monotonic() - start, worker_id, why)
    return run.worker


def unfit(data: StateData, worker_id: str) -> str | None:
    """Why the worker's record must not reach a test as it is, or None."""
    rec = data.workers.get(worker_id)
    if rec is None or rec.phase == FAILED:
        return None  # find_worker names the fix
    if rec.phase != READY:
        return f"was left unfinished ({rec.phase}) by a reset or `orch up` that stopped halfway"
    if rec.reset_pending:
        return f"owes a reset ({rec.reset_pending}) that its run never did"
    return None


def _take(run: OrchRun, worker_id: str) -> str:
    """Before a test first gets its worker: one that is unfinished or owes a reset is made
    again from the baseline (or the run stops in one line naming `orch up`). Returns why
    it was made again, or "" (taken as it is)."""
    why = unfit(run.ctx.store.read(), worker_id)
    if why is None:
        return ""
    with run.ctx.store.command_lock():  # an `orch up` or `orch reset` at work finishes it: wait
        why = unfit(run.ctx.store.read(), worker_id)
    if why is None:
        return ""
    others = leases.scan(run.settings.inventory_dir).others(run.lease.session, worker_id)
    if others:  # another pytest run is at it (its marked test, its reset): never under its feet
        raise WorkerMissing(f"orch: {worker_id} {why}, and another pytest run uses it (run {others[0]}): wait for it to end")
    log.warning("orch: %s %s: making it again from its baseline", worker_id, why)
    from orchestrator.verbs.reset import reset  # noqa: PLC0415  (on first use: not at plugin load)

    [result] = reset(run.ctx, [worker_id], lock=False, finish=True)
    if not result.ok:
        raise WorkerMissing(f"orch: {worker_id} {why}, and making it again failed ({result.error}): run `orch up`")
    return why


def _ensure(run: OrchRun, worker_id: str) -> None:
    assert run.worker is not None
    if run.ctx.ensure_running(run.worker.vm, worker_id):
        log.warning("orch: %s's VM %s was stopped; started it", worker_id, run.worker.vm)
        run.worker.refresh()


def _ready(run: OrchRun, worker_id: str) -> None:
    """A machine after a reboot: running again under its name (one its backend restarts is
    waited for, one that stayed down is started), booted, and read again from its inventory."""
    assert run.worker is not None
    vm = run.worker.vm
    if not run.ctx.ensure_running(vm, worker_id):  # started: it waited already
        run.ctx.wait_ready(vm)
    run.worker.refresh()


def reset_worker(run: OrchRun, worker_id: str, *, cause: str = "") -> None:
    """Reset this process's worker (``orch_worker.reset()``, the marker's teardown, the
    isolation policy's, a kept worker's); the test running now waited for it, and the
    run's report says how long and whether a standby was swapped in (``cause``: why the
    reset, for the report)."""
    if run.worker is not None:
        run.worker.close()  # its connection points at the VM being replaced
    from orchestrator.verbs.reset import reset  # noqa: PLC0415  (on first use: not at plugin load)

    start, kind, why = time.monotonic(), "failed", ""
    try:
        # finish: its own worker, whatever a reset that failed before left of it
        [result] = reset(run.ctx, [worker_id], lock=False, finish=True)
        if not result.ok:
            raise OrchError(f"reset of {worker_id} failed: {result.error}")
        kind = "swapped" if result.action == "swapped" else "hard"
        if kind == "hard":
            why = "no standby ready" if run.settings.standby else "no standby (standby = false)"
        run.owes_reset = ""
        if run.marking:  # `orch_worker.reset()` inside a marked test: the test goes on dirtying it
            _owe(run)
        if run.worker is not None:
            run.worker.refresh()
    finally:  # made again or not, it is not the VM it was: what knew that one forgets it
        for replaced in run.on_replace:
            replaced()
        waited("reset", kind, time.monotonic() - start, worker_id, why, cause=cause)


def _owe(run: OrchRun) -> None:
    """Record the reset this process's marked test will owe its worker."""
    worker_id = current_worker_id(run.workerinput)
    with run.ctx.store.transaction() as state:
        if worker_id in state.workers:
            state.workers[worker_id].reset_pending = run.marking


def owe(run: OrchRun, why: str) -> None:
    """Before a test: record the reset it owes its worker (``why``: "after <test>") unless
    it is found clean, so that a run killed before the test's teardown leaves a worker the
    next taker resets first."""
    run.marking = why
    _owe(run)


def forgive(run: OrchRun) -> None:
    """The test found its worker clean: the reset it owed is not owed (the record is
    cleared only if it is still the one this test made)."""
    why, run.marking = run.marking, ""
    if not why:
        return
    worker_id = current_worker_id(run.workerinput)
    with run.ctx.store.transaction() as state:
        rec = state.workers.get(worker_id)
        if rec is not None and rec.reset_pending == why:
            rec.reset_pending = ""


def before_test(item: pytest.Item) -> None:
    """Before the test's fixtures: a worker whose last reset failed is reset now; a marked
    test takes its worker (finishing one that is unfinished or owes a reset), then records
    the reset it will owe."""
    run = item.config.stash.get(RUN_KEY, None)
    if run is not None and run.owes_reset:
        try:
            reset_worker(run, current_worker_id(run.workerinput), cause="retried: the last one failed")
        except OrchError as err:
            fail(OrchError(f"{err} (it still owes a reset {run.owes_reset})"))
    if item.get_closest_marker("orch_reset") is None:
        return
    run = orch_run(item.config)
    try:
        get_worker(item.config)
        run.marking = f"after {item.nodeid}"
        _owe(run)
    except OrchError as err:
        fail(err)


#: Set on a test whose setup or call failed (``saw``), for what is done after a failure.
FAILED_KEY = pytest.StashKey[bool]()
#: Set on a test that reached its worker through ``orchestrator.current_worker()``: it used
#: its worker as one naming ``orch_worker`` does (isolation checks it, a failure keeps it).
REACHED_KEY = pytest.StashKey[bool]()


def saw(item: pytest.Item, report: pytest.TestReport) -> None:
    """Each phase's report, as it is made: a test whose setup or call failed is marked."""
    if report.failed and report.when in ("setup", "call"):
        item.stash[FAILED_KEY] = True


def failed(item: pytest.Item) -> bool:
    """Whether the test's setup or call failed (known from its teardown on)."""
    return item.stash.get(FAILED_KEY, False)


def after_test(item: pytest.Item) -> None:
    """``@pytest.mark.orch_reset``: reset this worker's VM after the test."""
    if item.get_closest_marker("orch_reset") is None:
        return
    run = orch_run(item.config)
    run.marking = ""  # the reset it owes is being done
    try:
        reset_worker(run, current_worker_id(run.workerinput), cause="orch_reset")
    except OrchError as err:
        run.owes_reset = f"after {item.nodeid}"
        fail(err)


# -- a run none of whose workers has a VM --------------------------------------------------

#: This process's verdict on the run's workers: the line that stops it, or "" (found some VM).
_NO_VMS = pytest.StashKey[str]()


def _needs_worker(node: object) -> bool:
    """A collected test that takes its worker (``orch_worker`` or a fixture made from it,
    ``orch_reset``): one that cannot run unless its worker has a VM."""
    if not isinstance(node, pytest.Item):
        return False
    return "orch_worker" in getattr(node, "fixturenames", ()) or node.get_closest_marker("orch_reset") is not None


def no_vms(config: pytest.Config) -> str:
    """The one line that stops a run none of whose workers has a VM ("" when one has a VM,
    or a record of a failed one: each test says what is wrong with its own worker). Asked
    once per process, at the first collected test that takes its worker: a bring-up
    (``--orch-up``) made them before any collection."""
    if _NO_VMS not in config.stash:
        config.stash[_NO_VMS] = ""
        try:
            run = orch_run(config)
        except pytest.UsageError:
            return ""  # bad settings: the first test's fixture says so in one line
        count = int(run.workerinput.get("workercount") or workers_needed(config))
        folder = run.settings.inventory_dir
        if not any(inventory.worker_path(folder, w).exists() for w in naming.worker_ids(count)):
            config.stash[_NO_VMS] = (
                f"orch: no worker of this run has a VM (no inventory in {folder}): "
                f"run `orch up --workers {count}` before pytest, or `pytest --orch-up`"
            )
    return config.stash[_NO_VMS]


def check_collected(report: pytest.CollectReport, *, worker: bool) -> None:
    """At collection: when no worker of the run has a VM, the first module with a test that
    takes its worker stops the run in one line (``pytest.UsageError``; on an xdist worker,
    where a usage error would be an internal error, each such module fails to collect with
    that line, which the controller shows once). A run whose tests never take a worker
    (plain tests, ``vm_name``, one-offs, a project that only has orch installed) is not
    stopped."""
    first = next((n for n in report.result or () if _needs_worker(n)), None)
    if not isinstance(first, pytest.Item) or getattr(first.config.option, "collectonly", False):
        return  # `--collect-only` (an IDE's discovery) uses no worker
    why = no_vms(first.config)
    if not why:
        return
    if not worker:
        raise pytest.UsageError(why)
    report.outcome = "failed"
    report.longrepr = why
    report.result = []


def drop_all_if_no_vms(config: pytest.Config, items: list[pytest.Item]) -> None:
    """After collection on an xdist worker whose run has no VM at all: no test runs (every
    worker collected the same, so every one drops them all), the one line stays the run's
    only output."""
    if config.stash.get(_NO_VMS, ""):
        items[:] = []
