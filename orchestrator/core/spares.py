"""Spare VMs made ahead of need, the warm pool of one-off VMs and the workers' standbys:
which to make, making them, taking a pooled one-off, swapping a standby in, deleting
spares and emptying the trash.

- **Pool** (``[tool.orch] pool = N``): N one-offs cloned from the baseline and
  personalized, recorded as unclaimed. ``pool = "auto"`` sizes it from the claims
  (:func:`wanted_pool`), between ``pool_min`` and ``pool_max``. ``fresh_vm()`` takes one in a single state
  transaction (atomic across xdist workers, recorded before the VM is handed out: a VM
  is never handed out twice); an empty pool falls back to making a VM.
- **Standby** (``[tool.orch] standby = true``): per worker, a VM made from the baseline
  and personalized as that worker. A hard reset swaps it in under the worker's name
  (two renames) and throws the old VM away.

Refilling never makes a test wait: it is the maintainer's (:mod:`orchestrator.core.maintainer`).
``orch up`` fills the pool and the standbys itself.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import statistics
import time
from typing import TYPE_CHECKING

from orchestrator.core import baseline as B
from orchestrator.core.steps import WorkerResult, guard
from orchestrator.primitives import naming
from orchestrator.primitives.clock import now_iso
from orchestrator.primitives.errors import EngineUnavailable, OrchError
from orchestrator.primitives.kinds import POOL, Kind
from orchestrator.state.records import CREATING, READY, OneoffRecord, StandbyRecord, StateData

if TYPE_CHECKING:
    from orchestrator.core.context import Context
    from orchestrator.providers.base import Baseline, VMInfo
    from orchestrator.settings.model import Settings
    from orchestrator.state.inventory import InventoryHost

log = logging.getLogger(__name__)

#: Seconds to make one spare before any was made (the maintainer records each make).
DEFAULT_MAKE_SECONDS = 10.0
#: Headroom over the claims expected while one spare is made.
HEADROOM = 1.5


def make_seconds(data: StateData) -> float:
    """How long a spare takes to make: the median of the maintainer's recent makes (a
    default before any)."""
    return statistics.median(data.demand.makes) if data.demand.makes else DEFAULT_MAKE_SECONDS


def wanted_pool(ctx: Context, data: StateData | None = None, now: float | None = None) -> int:
    """:func:`pool_size` of this checkout."""
    return pool_size(ctx.settings, data if data is not None else ctx.store.read(), now)


def pool_size(settings: Settings, data: StateData, now: float | None = None) -> int:
    """The pool's wanted size: ``pool`` when it is a number; with ``pool = "auto"``

        clamp(ceil(claims_per_second × seconds_to_make_one_spare × 1.5) + 1, pool_min, pool_max)

    — the claims expected while one spare is made, with half again as headroom, plus one.
    claims_per_second is the highest of this run's rate now, its peak so far and the last
    run's peak (``Demand.rate``: the claims of the last minute, spread over at least the
    time one spare takes, so a burst of n claims asks for about 1.5 n + 1);
    seconds_to_make_one_spare is :func:`make_seconds`. With no claims yet (a first run,
    or ``orch up``): pool_min, or what the last run's claims ask for."""
    if settings.pool != "auto":
        return int(settings.pool)
    took = make_seconds(data)
    demand = data.demand
    rate = max(demand.rate(time.time() if now is None else now, took), demand.peak, demand.last_peak)
    size = math.ceil(rate * took * HEADROOM) + 1 if rate > 0 else 0
    return max(settings.pool_min, min(settings.pool_max, size))


def record_claim(state: StateData) -> None:
    """Count a claim of a one-off (a pool VM taken, or none there), inside the caller's
    state transaction."""
    state.demand.claimed(time.time(), make_seconds(state))


def record_makes(ctx: Context, seconds: list[float]) -> None:
    """Remember how long spares took to make (request to ready), for :func:`wanted_pool`."""
    if not seconds:
        return
    with ctx.store.transaction() as state:
        for took in seconds:
            state.demand.made(took)


def fill(ctx: Context, fp: B.Fingerprint, baseline: Baseline) -> list[WorkerResult]:
    """Empty the trash, drop spares made from another baseline, and make the missing
    standbys and pool VMs (caller holds the maintain lock).

    Standbys first, in a batch of their own: a reset that finds no standby pays a whole
    hard reset, a claim that finds the pool empty only one VM, and a small batch is ready
    sooner than one that also makes the pool."""
    empty_trash(ctx)
    drop_stale(ctx, fp)
    data = ctx.store.read()
    standbys: list[B.Target] = []
    if ctx.settings.standby:
        for rec in data.sorted_workers():
            if rec.phase == READY and rec.worker not in data.standbys:
                standbys.append(_standby(ctx, rec.worker, rec.vm, fp))
    if standbys:
        B.clone(ctx, fp, baseline, standbys)
    data = ctx.store.read()
    missing = wanted_pool(ctx, data) - sum(1 for o in data.oneoffs.values() if o.pool)
    pooled = [_pooled(ctx, fp) for _ in range(max(0, missing))]
    shrink_pool(ctx, data)
    if pooled:
        B.clone(ctx, fp, baseline, pooled)
    return [t.result for t in (*standbys, *pooled)]


def missing_standbys(ctx: Context, data: StateData) -> list[tuple[str, str]]:
    """(worker, its VM) of the ready workers that have no standby, not even one being made.

    A worker whose swapped-out VM is still in the trash waits for it to be deleted: that
    VM has the standby's name (the swap renamed it so), and a new standby made under the
    name while the trash is emptied would be deleted as the trash."""
    if not ctx.settings.standby:
        return []
    trash = set(data.trash)
    prefix, checkout = ctx.settings.prefix, ctx.checkout
    return [
        (r.worker, r.vm)
        for r in data.sorted_workers()
        if r.phase == READY and r.worker not in data.standbys and naming.standby_vm_name(prefix, checkout, r.worker) not in trash
    ]


def missing_pool(ctx: Context, data: StateData) -> int:
    """How many pool VMs to make now: the wanted size less those recorded (ready or being made)."""
    return max(0, wanted_pool(ctx, data) - sum(1 for o in data.oneoffs.values() if o.pool))


def new_standby(ctx: Context, worker: str, worker_vm: str, fp: B.Fingerprint) -> B.Target:
    """A standby about to be made, recorded (creating) before it is."""
    return _standby(ctx, worker, worker_vm, fp)


def new_pooled(ctx: Context, fp: B.Fingerprint) -> B.Target:
    """A pool VM about to be made, recorded (creating) before it is."""
    return _pooled(ctx, fp)


def _standby(ctx: Context, worker: str, worker_vm: str, fp: B.Fingerprint) -> B.Target:
    name = naming.standby_vm_name(ctx.settings.prefix, ctx.checkout, worker)
    with ctx.store.transaction() as state:
        state.standbys[worker] = StandbyRecord(worker, name, CREATING, now_iso(), fp.value)

    def record(**changes: object) -> None:
        ctx.store.update(Kind.STANDBY, worker, vm=name, **changes)

    # made_as: a swap renames it, so after a lost state a VM under a standby's form of
    # name is a standby only while it still has the name it was made under (repair)
    owner = dataclasses.replace(ctx.owner(Kind.STANDBY, worker=worker, fingerprint=fp.value), hostname=worker_vm, made_as=name)
    return B.Target(WorkerResult(worker, name, "standby"), owner, worker, record)


def _pooled(ctx: Context, fp: B.Fingerprint) -> B.Target:
    name = naming.oneoff_vm_name(ctx.settings.prefix, ctx.checkout)
    with ctx.store.transaction() as state:
        state.oneoffs[name] = OneoffRecord(name, "", now_iso(), os.getpid(), CREATING, fp.value, pool=True)

    def record(**changes: object) -> None:
        ctx.store.update(Kind.ONEOFF, name, vm=name, **changes)

    owner = ctx.owner(Kind.ONEOFF, fingerprint=fp.value)
    return B.Target(WorkerResult(POOL, name, "pooled"), owner, Kind.ONEOFF.value, record)


def drop_stale(ctx: Context, fp: B.Fingerprint, keep: set[str] | frozenset[str] = frozenset()) -> None:
    """Spares made from another baseline, or left unfinished (a maintainer killed while it
    made them: their records say creating), are deleted; ``keep``: the spares the caller
    is making right now."""
    delete_spares(ctx, stale_spares(ctx, fp, keep))


def stale_spares(ctx: Context, fp: B.Fingerprint, keep: set[str] | frozenset[str] = frozenset()) -> list[str]:
    data = ctx.store.read()
    stale = [s.vm for s in data.standbys.values() if s.fingerprint != fp.value or s.phase != READY]
    stale += [o.vm for o in data.oneoffs.values() if o.pool and (o.fingerprint != fp.value or o.phase != READY)]
    return [vm for vm in stale if vm not in keep]


def shrink_pool(ctx: Context, data: StateData, keep: set[str] | frozenset[str] = frozenset()) -> None:
    """A pool larger than asked for gives back its newest ready VMs. A fixed pool shrinks to
    its size; a self-sized one only to ``pool_max`` (a burst's pool is kept for the next)."""
    size = ctx.settings.pool_max if ctx.settings.pool == "auto" else int(ctx.settings.pool)
    pooled = [o for o in data.oneoffs.values() if o.pool]
    extra = len(pooled) - size
    if extra <= 0:
        return
    ready = sorted((o for o in pooled if o.phase == READY and o.vm not in keep), key=lambda o: o.created, reverse=True)
    delete_spares(ctx, [o.vm for o in ready][:extra])


def delete_spares(ctx: Context, names: list[str]) -> None:
    """Delete these spares (or trash) and forget each once it is gone; one that cannot be
    deleted now stays recorded, for the next time."""

    def one(name: str) -> None:
        try:
            ctx.provider.call(f"delete {name}", lambda: ctx.provider.delete(name))
        except OrchError as err:
            log.warning("could not delete spare %s: %s", name, err)
            return
        with ctx.store.transaction() as state:
            state.oneoffs.pop(name, None)
            for worker, rec in list(state.standbys.items()):
                if rec.vm == name:
                    state.standbys.pop(worker)
            if name in state.trash:
                state.trash.remove(name)

    ctx.provider.map(one, names)


def empty_trash(ctx: Context) -> None:
    """Delete the VMs swapped out of workers. A swap records the trash name before the
    old VM takes it (so a crash never leaks it) and drops the worker's standby record
    only after both renames: a trash name whose VM is missing while that worker still has
    a standby record may be a swap in flight, and is kept for the next time (``orch
    down`` deletes the standbys first, so it forgets such a name)."""
    data = ctx.store.read()
    doomed = []
    for name in data.trash:
        parsed = naming.parse_vm_name(ctx.settings.prefix, name)
        worker = naming.worker_of(parsed[1]) if parsed else ""
        if worker in data.standbys and ctx.provider.inspect(name) is None:
            continue
        doomed.append(name)
    delete_spares(ctx, doomed)


# -- using spares ------------------------------------------------------------------------


def take_pooled(ctx: Context, run: str, fp: B.Fingerprint) -> InventoryHost | None:
    """Take a ready pool VM for ``run``, or None when the pool is empty."""
    with ctx.store.transaction() as state:
        record_claim(state)  # hit or miss: what the self-sizing pool is sized from
        ready = [o for o in state.oneoffs.values() if o.pool and o.phase == READY and o.fingerprint == fp.value]
        if not ready:
            return None
        rec = min(ready, key=lambda o: o.created)
        rec.pool, rec.run, rec.pid = False, run, os.getpid()
    try:
        info = ctx.provider.inspect(rec.vm)
    except EngineUnavailable as err:  # on an engine or cluster member that does not answer: back to the pool, untouched
        log.info("%s: not taken from the pool (%s)", rec.vm, err)
        with ctx.store.transaction() as state:
            back = state.oneoffs.get(rec.vm)
            if back is not None:
                back.pool, back.run, back.pid = True, "", 0
        return None
    if info is None or not info.running:
        delete_spares(ctx, [rec.vm])  # kept recorded if it cannot be deleted now
        return None
    return ctx.host(Kind.ONEOFF.value, rec.vm)


def swap(ctx: Context, result: WorkerResult, fp: B.Fingerprint, info: VMInfo | None) -> bool:
    """Swap the worker's ready standby in under its name; False if it has none. ``info``:
    the worker's VM as the caller just saw it (checked to be orch's), or None.

    The standby answered when it was made and is seen running just before the swap; a
    rename keeps a VM running, so after it only the connector is waited for (the reset
    a test waits for is then two renames and two looks, not a new readiness probe)."""
    standby = _ready_standby(ctx, result.worker, fp)
    if standby is None:
        return False
    start = time.monotonic()
    if not _running(ctx, result.worker, standby) or not _rename_in(ctx, result, standby, info):
        return False
    _record_swapped(ctx, result.worker, standby, fp)
    result.add("swap", time.monotonic() - start)
    guard(result, ctx.report, lambda: result.add("ready", ctx.connector.ready(result.vm)))
    result.action = "swapped"
    return True


def _ready_standby(ctx: Context, worker: str, fp: B.Fingerprint) -> StandbyRecord | None:
    """The worker's standby, when it is ready and made from this baseline (and the
    backend can rename)."""
    standby = ctx.store.read().standbys.get(worker)
    if not ctx.provider.can_rename or standby is None or standby.phase != READY or standby.fingerprint != fp.value:
        return None
    return standby


def _running(ctx: Context, worker: str, standby: StandbyRecord) -> bool:
    seen = ctx.provider.inspect(standby.vm)
    if seen is None or not seen.running:
        ctx.report(worker, f"its standby is {seen.state if seen else 'missing'}; resetting from the baseline instead")
        return False
    return True


def _rename_in(ctx: Context, result: WorkerResult, standby: StandbyRecord, info: VMInfo | None) -> bool:
    """The worker's VM (if any) renamed to a trash name, recorded first so that a crash
    never leaks it, and the standby renamed to the worker's VM name."""
    provider = ctx.provider
    trash = naming.standby_vm_name(ctx.settings.prefix, ctx.checkout, result.worker)
    with ctx.store.transaction() as state:
        state.trash.append(trash)  # recorded before the old VM takes that name
    try:
        if info is not None:
            provider.call(f"rename {result.vm}", lambda: provider.rename(result.vm, trash))
        provider.call(f"rename {standby.vm}", lambda: provider.rename(standby.vm, result.vm))
    except OrchError as err:
        ctx.report(result.worker, f"swap failed ({err}); resetting from the baseline instead")
        return False
    return True


def _record_swapped(ctx: Context, worker: str, standby: StandbyRecord, fp: B.Fingerprint) -> None:
    """After both renames: the standby record goes, and the worker is its ready, clean
    standby now (even if it was left unfinished)."""
    with ctx.store.transaction() as state:
        state.standbys.pop(worker, None)
        rec = state.workers.get(worker)
        if rec is not None:
            rec.fingerprint, rec.created, rec.reset_pending = fp.value, standby.created, ""
            rec.phase, rec.error = READY, ""
