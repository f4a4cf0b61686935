"""``orch reset``: put workers back to their baseline.

Hard (default): the worker's VM is made again from the baseline, under the same name
and inventory, and personalized. The baseline is verified first (and rebuilt if it
changed or is stale) *before* any VM is deleted, so a reset never leaves a worker
without a VM because its baseline was missing. With a standby (``[tool.orch] standby``)
the ready standby is swapped in instead, and a new one is made in the background.
Soft (``--soft``): the reset deploy runs inside the VM, which is kept.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from orchestrator.core import baseline as B
from orchestrator.core import spares
from orchestrator.core.steps import WorkerResult, guard, timed
from orchestrator.primitives.errors import EngineUnavailable, OrchError, PermanentProviderError, UsageError
from orchestrator.primitives.kinds import Kind
from orchestrator.state.records import CREATING, READY, WorkerRecord
from orchestrator.verbs.oneoffs import forget_gone_oneoffs

if TYPE_CHECKING:
    from orchestrator.core.context import Context
    from orchestrator.providers.base import VMInfo
    from orchestrator.pyinfra.runner import DeployResult


def reset(
    ctx: Context,
    workers: Iterable[str] = (),
    *,
    soft: bool = False,
    lock: bool = True,
    wait: bool = True,
    on_wait: Callable[[], None] | None = None,
    force: bool = False,
    finish: bool = False,
) -> list[WorkerResult]:
    """Bring workers back to their baseline (all when none named).

    ``lock=False`` is for the pytest plugin, which resets only its own worker while other
    workers' tests run; the CLI takes the command lock and refuses while a pytest run
    uses the workers, unless ``force``. ``finish`` (the plugin, for its own worker) makes
    a worker that is not ready (left unfinished or failed by an earlier reset) again too.
    """
    if lock:  # the CLI's reset (the plugin's, inside a run, has no leftovers to look for)
        forget_gone_oneoffs(ctx)
    records = ctx.records(workers, ctx.store.read())
    unready = [r.worker for r in records if r.phase != READY and not finish]
    if unready:
        raise UsageError(f"{', '.join(unready)} not provisioned (see `orch status`): run `orch up` first")
    ctx.connector.setup()  # a deleted SSH key: one line naming `orch up`, before any VM is touched
    guard_lock = ctx.store.command_lock(wait=wait, on_wait=on_wait) if lock else contextlib.nullcontext()
    with guard_lock:
        if lock:  # the CLI: say at once when the engine does not answer
            ctx.refuse_live("resetting them", [r.worker for r in records], force)
            ctx.provider.check()
        if soft:
            return _soft(ctx, records)
        results = _hard(ctx, records)
        ctx.write_inventories()  # a VM made again may have another address
        return results


def _hard(ctx: Context, records: list[WorkerRecord]) -> list[WorkerResult]:
    results = [WorkerResult(r.worker, r.vm, "reset") for r in records]
    infos = _inspect_owned(ctx, results)
    live = [r for r in results if r.ok]
    if not live:
        return results
    start = time.monotonic()
    fp = B.fingerprint(ctx)
    live = _swap_standbys(ctx, live, fp, infos)
    if live:
        _restore(ctx, live, fp, start)
    return results


def _inspect_owned(ctx: Context, results: list[WorkerResult]) -> dict[str, VMInfo | None]:
    """Each worker's VM as the backend sees it (None: missing); a VM that is not orch's,
    or whose engine does not answer, fails that worker's row, and the others go on."""
    infos: dict[str, VMInfo | None] = {}
    for result in results:
        try:
            infos[result.worker] = info = ctx.provider.inspect(result.vm)
        except EngineUnavailable as err:
            result.fail(str(err))
            ctx.report(result.worker, f"failed: {result.error}")
            continue
        if info is not None and not ctx.owns(info, result.worker):
            result.fail(ctx.not_ours(result.vm))
            ctx.report(result.worker, f"failed: {result.error}")
    return infos


def _swap_standbys(
    ctx: Context, live: list[WorkerResult], fp: B.Fingerprint, infos: dict[str, VMInfo | None]
) -> list[WorkerResult]:
    """Swap each worker's ready standby in; returns the workers that had none."""
    swapped = [r for r in live if spares.swap(ctx, r, fp, infos[r.worker])]
    for r in swapped:
        ctx.report(r.worker, f"{r.vm} swapped for its standby ({r.seconds.get('total', 0):.2f}s)")
    if swapped or ctx.settings.standby:
        ctx.refill()  # a new standby, without making anyone wait
    return [r for r in live if r not in swapped]


def _restore(ctx: Context, live: list[WorkerResult], fp: B.Fingerprint, start: float) -> None:
    """Make the workers' VMs again from the baseline (verified, or rebuilt, first)."""
    baseline, _ = B.ensure(ctx, fp)
    for r in live:
        r.add("baseline", time.monotonic() - start)
        ctx.report(r.worker, f"restoring {r.vm} from the baseline")
        # before its VM is deleted: a reset killed from here on leaves a worker that is
        # not ready, which no fixture hands out and the next taker makes again
        ctx.store.update(Kind.WORKER, r.worker, phase=CREATING)
    targets = [B.worker_target(ctx, r, fp) for r in live]
    B.clone(ctx, fp, baseline, targets, replace=True)
    for r in live:
        if r.ok:
            ctx.report(r.worker, f"{r.vm} back at its baseline ({r.seconds.get('total', 0):.1f}s)")
    if ctx.settings.standby:
        # again: a maintainer that looked while these were being made skipped them (a
        # worker gets a standby only once it is ready), and may have stopped since
        ctx.refill()


def _soft(ctx: Context, records: list[WorkerRecord]) -> list[WorkerResult]:
    deploy = ctx.load(ctx.settings.reset)
    results = {r.worker: WorkerResult(r.worker, r.vm, "soft-reset") for r in records}
    ctx.provider.map(lambda r: guard(results[r.worker], ctx.report, lambda: _start_owned(ctx, results[r.worker])), records)
    live = [r for r in records if results[r.worker].ok]
    for r in live:
        ctx.report(r.worker, f"running {ctx.settings.reset} in {r.vm}")
    start = time.monotonic()
    outcomes = ctx.deploy([(r.worker, r.vm) for r in live], [deploy], f"reset deploy {ctx.settings.reset}")
    for r in live:
        results[r.worker].add("restore", time.monotonic() - start)
        _finish_soft(ctx, r, results[r.worker], outcomes[r.vm])
    return [results[r.worker] for r in records]


def _start_owned(ctx: Context, result: WorkerResult) -> None:
    """The worker's VM, orch's, running and answering (a soft reset never makes one)."""
    provider = ctx.provider
    info = provider.inspect(result.vm)
    if info is None or not ctx.owns(info, result.worker):
        raise PermanentProviderError(f"{result.vm} is missing or not orch's: run `orch up` to make it again")
    if not info.running:  # never hand a stopped VM to a connector
        provider.call(f"start {result.vm}", lambda: provider.start(result.vm))
    ctx.wait_ready(result.vm)


def _finish_soft(ctx: Context, rec: WorkerRecord, result: WorkerResult, outcome: DeployResult) -> None:
    """After the reset deploy: the VM answers again, and a reset it owed is cleared."""
    result.log = outcome.log
    if not outcome.ok:
        result.fail(outcome.error + (f" (log: {outcome.log})" if outcome.log else ""))
        ctx.report(rec.worker, f"failed: {result.error}")
        return
    try:
        with timed(result, "ready"):
            ctx.wait_ready(rec.vm)
        if rec.reset_pending:
            ctx.store.update(Kind.WORKER, rec.worker, reset_pending="")  # what it owed is done
    except OrchError as err:
        result.fail(str(err))
    ctx.report(rec.worker, result.error or f"{rec.vm} soft-reset")
