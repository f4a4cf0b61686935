"""``orch down``: delete workers, and what only they needed (one-offs of gone runs, the
pool, standbys and trash, kept VMs, the baseline, the registry entry). A kept VM (a
failing test's worker, ``--orch-keep-failed``) goes with a whole ``orch down``, or alone
when it is named (``orch down <kept VM>``). A whole ``orch down`` also deletes what tests
of runs that are gone left under names orch handed them (``orchestrator.vm_name``)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from orchestrator.core.baseline import drop_retired
from orchestrator.core.keeping import delete_kept, settle
from orchestrator.core.maintainer import maintaining
from orchestrator.core.spares import empty_trash
from orchestrator.core.steps import WorkerResult, guard, timed
from orchestrator.primitives import naming
from orchestrator.primitives.kinds import Kind
from orchestrator.state import checkouts as registry
from orchestrator.state import leases
from orchestrator.state.records import (
    WorkerRecord,
)
from orchestrator.verbs import testvms
from orchestrator.verbs.oneoffs import delete_oneoff, forget_gone_oneoffs

if TYPE_CHECKING:
    from orchestrator.core.context import Context


def down(
    ctx: Context,
    workers: Iterable[str] = (),
    *,
    wait: bool = True,
    on_wait: Callable[[], None] | None = None,
    force: bool = False,
) -> list[WorkerResult]:
    forget_gone_oneoffs(ctx)
    settle(ctx)
    names = list(workers)
    kept = [n for n in names if n in ctx.store.read().kept]
    asked = [naming.validate_worker_id(w) for w in names if w not in kept]
    with ctx.store.command_lock(wait=wait, on_wait=on_wait), maintaining(ctx):
        data = ctx.store.read()
        targets = [r.worker for r in ctx.records(asked, data)] if asked or not kept else []
        if targets:
            ctx.refuse_live("deleting them", targets, force)
        if targets or kept or data.oneoffs or data.baseline or data.retired or data.kept or data.testvms:
            ctx.provider.check()
        results = delete_workers(ctx, targets)
        empty_trash(ctx)
        if not names or not ctx.store.read().workers:  # a whole down: kept VMs too, before the baseline
            kept = sorted(ctx.store.read().kept)
        results += delete_kept(ctx, kept)
        if not names:  # a whole down: what tests of runs that are gone left under names orch handed out
            results += testvms.delete_dead(ctx)
        results += _leftovers(ctx)
        ctx.write_inventories()
    return results


def delete_workers(ctx: Context, workers: list[str]) -> list[WorkerResult]:
    """Delete these workers' VMs (and standbys) and forget them; a VM that is not orch's
    is left alone and only forgotten."""
    provider = ctx.provider
    data = ctx.store.read()
    records = [data.workers[w] for w in workers if w in data.workers]

    def delete(rec: WorkerRecord) -> WorkerResult:
        result = WorkerResult(rec.worker, rec.vm, "deleted")

        def step() -> None:
            with timed(result, "delete"):
                info = provider.inspect(rec.vm)
                if info is not None and not ctx.owns(info, rec.worker):
                    ctx.report(rec.worker, f"{rec.vm} is not orch's: left alone")
                    result.action = "forgotten"
                elif info is not None:
                    provider.call(f"delete {rec.vm}", lambda: provider.delete(rec.vm))
                standby = data.standbys.get(rec.worker)
                if standby is not None:
                    provider.call(f"delete {standby.vm}", lambda: provider.delete(standby.vm))
                with ctx.store.transaction() as state:
                    state.workers.pop(rec.worker, None)
                    state.standbys.pop(rec.worker, None)
            ctx.report(rec.worker, f"{rec.vm} {result.action}")

        return guard(result, ctx.report, step, what="delete failed: ")

    return provider.map(delete, records)


def _leftovers(ctx: Context) -> list[WorkerResult]:
    """Once no worker is left: one-offs of runs that are gone, the pool, then the baseline
    and the registry entry, when nothing else of this checkout remains."""
    data = ctx.store.read()
    if data.workers:
        return []
    results = []
    doomed = [o for o in data.oneoffs.values() if o.pool or not leases.run_alive(ctx.settings.inventory_dir, o.run)]
    for rec in doomed:
        result = WorkerResult(Kind.ONEOFF.value, rec.vm, "deleted")
        results.append(guard(result, ctx.report, functools.partial(delete_oneoff, ctx, rec.vm), what="delete failed: "))
    data = ctx.store.read()
    if data.oneoffs:
        return results
    with ctx.store.transaction() as state:
        if state.baseline is not None:
            state.retired.append(state.baseline)
            state.baseline = None
    drop_retired(ctx)
    data = ctx.store.read()
    if not data.retired:
        registry.unregister(ctx.checkout)
        if data.baseline is None:
            ctx.report(Kind.BASELINE.value, "deleted")
    return results
