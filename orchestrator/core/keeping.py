"""Keeping a failing test's worker VM as it was at the failure (``pytest
--orch-keep-failed``), for ``orch shell <name>``; the worker is made again for the next test.

The order is the core's: record, act, record.

1. One state transaction decides and records: the worker is ready, and the run (the
   pytest session, across its xdist workers) has kept fewer than ``keep_failed_max``
   VMs; then a :class:`KeptRecord` (phase ``keeping``) under the kept name
   (:func:`naming.kept_vm_name`), and on the worker the reset it now owes. A kept VM
   counts against the cap from this moment, even if the run dies.
2. The provider keeps the worker's VM under that name (``Provider.keep``: a rename; a
   copy on Incus). A rename keeps it running, processes and all.
3. The record is ready. The caller then gives the worker a clean VM (a reset: the
   standby swapped in when it is ready, else made again from the baseline).

A process killed between the steps leaves a state the next ``orch up``, ``orch status``
or ``orch down`` settles (:func:`settle`): a keep recorded but not carried out is carried
out while the worker's VM is still the one it recorded (nothing reset it since), or
forgotten (the worker owes its reset: no test gets it as it is); a kept VM whose record
still says ``keeping`` is ready; a record whose VM is gone is forgotten. Sweep never
deletes a kept VM but by age (``--older-than``, from the time in its name).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from orchestrator.core.steps import WorkerResult, guard, timed
from orchestrator.primitives import naming
from orchestrator.primitives.clock import now_iso
from orchestrator.primitives.errors import OrchError
from orchestrator.primitives.kinds import Kind
from orchestrator.state import leases
from orchestrator.state.records import KEEPING, READY, KeptRecord

if TYPE_CHECKING:
    from orchestrator.core.context import Context

log = logging.getLogger(__name__)


def owed(vm: str, test: str) -> str:
    """The reset a worker owes once its VM is kept (``reset_pending``): also what tells a
    keep left halfway that the worker is still that VM."""
    return f"after {test}, kept as {vm}" if test else f"kept as {vm}"


@dataclass
class Kept:
    """What a keep did: ``vm`` is the kept name when it kept the worker's VM; else
    ``why`` says why not (the cap, a worker that is not ready, a backend error).
    ``owes_reset``: the keep was recorded, so the worker owes a reset (kept or not)."""

    worker: str
    vm: str = ""
    why: str = ""
    seconds: float = 0.0
    owes_reset: bool = False

    @property
    def kept(self) -> bool:
        return bool(self.vm) and not self.why


def keep(ctx: Context, worker: str, *, test: str, session: str, by: str, cap: int) -> Kept:
    """Keep ``worker``'s VM as it is under a kept name, unless ``session`` has kept
    ``cap`` already (decided in one transaction: across xdist workers, never more). After
    a keep the worker owes a reset, which the caller does (``verbs.reset`` with
    ``finish``: it copes with the worker's VM being gone)."""
    start = time.monotonic()
    name = naming.kept_vm_name(ctx.settings.prefix, ctx.checkout, worker)
    rec, why = _claim(ctx, worker, name, test=test, session=session, by=by, cap=cap)
    if rec is None:
        return Kept(worker, why=why)
    provider = ctx.provider
    try:
        provider.call(f"keep {rec.source} as {name}", lambda: provider.keep(rec.source, name))
    except OrchError as err:
        if not _exists(ctx, name):  # not kept: forgotten; the worker still owes its reset
            _forget(ctx, [name])
            return Kept(worker, why=f"keeping {rec.source} failed: {err}", owes_reset=True)
    ctx.store.update(Kind.KEPT, name, vm=name, phase=READY)
    log.info("%s: %s kept as %s after %s", worker, rec.source, name, test)
    return Kept(worker, name, seconds=time.monotonic() - start, owes_reset=True)


def _claim(ctx: Context, worker: str, name: str, *, test: str, session: str, by: str, cap: int) -> tuple[KeptRecord | None, str]:
    """The keep decided and recorded in one transaction (the cap counts this session's
    kept VMs, whatever became of the processes that kept them)."""
    with ctx.store.transaction() as state:
        rec = state.workers.get(worker)
        if rec is None or rec.phase != READY:
            return None, f"{worker} is not ready ({rec.phase if rec else 'no record'}): nothing to keep"
        held = sorted(k.vm for k in state.kept.values() if session and k.session == session)
        if len(held) >= cap:
            return None, f"this run kept {len(held)} already (keep_failed_max = {cap})"
        kept = KeptRecord(name, worker, test, session, by, rec.vm, KEEPING, now_iso(), rec.engine, rec.fingerprint)
        state.kept[name] = kept
        rec.reset_pending = owed(name, test)  # before its VM is renamed: no test gets it as it is
    return kept, ""


def _exists(ctx: Context, vm: str) -> bool:
    try:
        return ctx.provider.inspect(vm) is not None
    except OrchError:
        return True  # cannot tell: kept recorded, settled later


def _forget(ctx: Context, names: list[str]) -> None:
    with ctx.store.transaction() as state:
        for name in names:
            state.kept.pop(name, None)


# -- what a dead process left -------------------------------------------------------------


def settle(ctx: Context) -> None:
    """Keeps left halfway by a process that is gone: carried out or forgotten; kept
    records whose VM is gone: forgotten (a keep in flight is left to its process). One
    listing of the backend; only a VM it does not show is looked up by name."""
    data = ctx.store.read()
    if not data.kept:
        return
    try:
        listed = {info.name for info in ctx.provider.list_vms()}
    except OrchError as err:
        log.info("kept VMs not settled now (%s)", err)
        return
    inventory_dir = ctx.settings.inventory_dir
    gone = []
    for rec in list(data.kept.values()):
        if rec.phase == KEEPING and leases.run_alive(inventory_dir, rec.by):
            continue
        try:
            there = rec.vm in listed or ctx.provider.inspect(rec.vm) is not None
        except OrchError:
            continue  # its engine does not answer: judged when it does
        if there:
            if rec.phase == KEEPING:
                ctx.store.update(Kind.KEPT, rec.vm, vm=rec.vm, phase=READY)
            continue
        if rec.phase == KEEPING and _finish(ctx, rec):
            continue
        gone.append(rec.vm)
    if gone:
        log.info("forgetting kept VMs that are gone: %s", ", ".join(gone))
        _forget(ctx, gone)


def _finish(ctx: Context, rec: KeptRecord) -> bool:
    """A keep recorded by a process that died before its VM was renamed: carried out now,
    while the worker is still that VM (ready, owing this keep's reset, used by no live
    run); False when it is not (reset since, or in a live run's hands)."""
    worker = ctx.store.read().workers.get(rec.worker)
    if worker is None or worker.vm != rec.source or worker.phase != READY or worker.reset_pending != owed(rec.vm, rec.test):
        return False
    if rec.worker in leases.scan(ctx.settings.inventory_dir).busy():
        return False
    provider = ctx.provider
    try:
        info = provider.inspect(rec.source)
        if info is None or not ctx.owns(info, rec.worker):
            return False
        provider.call(f"keep {rec.source} as {rec.vm}", lambda: provider.keep(rec.source, rec.vm))
    except OrchError as err:
        log.warning("could not finish keeping %s as %s: %s", rec.source, rec.vm, err)
        return _exists(ctx, rec.vm)
    ctx.store.update(Kind.KEPT, rec.vm, vm=rec.vm, phase=READY)
    ctx.report(rec.worker, f"{rec.source} kept as {rec.vm} (the keep its run left halfway)")
    return True


# -- deleting kept VMs --------------------------------------------------------------------


def in_flight(ctx: Context, rec: KeptRecord) -> bool:
    """A keep its process (alive) is still carrying out."""
    return rec.phase == KEEPING and leases.run_alive(ctx.settings.inventory_dir, rec.by)


def delete_kept(ctx: Context, names: list[str]) -> list[WorkerResult]:
    """Delete these kept VMs and forget them; one that is not orch's is only forgotten,
    and a keep still in flight is left to its process."""
    provider = ctx.provider
    data = ctx.store.read()
    records = [data.kept[n] for n in names if n in data.kept]

    def delete(rec: KeptRecord) -> WorkerResult:
        result = WorkerResult(Kind.KEPT.value, rec.vm, "deleted")
        if in_flight(ctx, rec):
            result.action = "kept"
            ctx.report(Kind.KEPT.value, f"{rec.vm}: its run is keeping it right now; left alone")
            return result

        def step() -> None:
            with timed(result, "delete"):
                info = provider.inspect(rec.vm)
                if info is not None and not ctx.owns(info):
                    ctx.report(Kind.KEPT.value, f"{rec.vm} is not orch's: left alone")
                    result.action = "forgotten"
                elif info is not None:
                    provider.call(f"delete {rec.vm}", lambda: provider.delete(rec.vm))
                _forget(ctx, [rec.vm])
            ctx.report(Kind.KEPT.value, f"{rec.vm} {result.action}")

        return guard(result, ctx.report, step, what="delete failed: ")

    return provider.map(delete, records)
