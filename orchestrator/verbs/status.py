"""``orch status``: every VM this checkout has — workers, one-offs, standbys, kept VMs and
the baseline — with its state on the backend, its phase in the state, its age and drift;
a kept VM also with the test it was kept after and the command that enters it; and the
names handed to tests (``orchestrator.vm_name``) still recorded, with their test."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from orchestrator.core.baseline import Fingerprint, fingerprint
from orchestrator.core.keeping import settle
from orchestrator.primitives import labels as L
from orchestrator.primitives import naming
from orchestrator.primitives.clock import age
from orchestrator.primitives.errors import EngineUnavailable, OrchError
from orchestrator.primitives.kinds import POOL, Kind
from orchestrator.providers.base import Baseline, VMInfo
from orchestrator.state import inventory, leases
from orchestrator.state.records import READY, BaselineRecord, StateData, WorkerRecord
from orchestrator.verbs import testvms
from orchestrator.verbs.oneoffs import forget_gone_oneoffs

if TYPE_CHECKING:
    from orchestrator.core.context import Context


@dataclass
class StatusRow:
    kind: Kind | str  # a Kind; or testvm (a VM under a name handed to a test, not orch's)
    worker: str  # the worker id; for the others their kind, or POOL (a one-off of the pool)
    vm: str
    state: str  # running, stopped, missing, unreachable (its engine does not answer), or the backend's word
    phase: str
    age_seconds: float | None
    drift: str  # what changed since it was made ("" when current)
    inventory: str
    test: str = ""  # a kept VM's: the failing test it was kept after
    enter: str = ""  # a kept VM's: the command that enters it
    #: Where it is, with several engines or on an Incus cluster: the engine, or the cluster
    #: member (its ``location``); for a VM that cannot be seen, where it was recorded.
    location: str = ""


def status(ctx: Context) -> list[StatusRow]:
    forget_gone_oneoffs(ctx)  # a dead run's one-off whose VM is gone is not "missing": it is nothing
    settle(ctx)  # keeps a dead run left halfway: carried out or forgotten
    return rows(ctx, ctx.store.read(), _current)


def _current(ctx: Context) -> Fingerprint | None:
    try:
        return fingerprint(ctx)
    except OrchError:
        return None


def rows(ctx: Context, data: StateData, current: Callable[[Context], Fingerprint | None]) -> list[StatusRow]:
    """The rows of the VMs ``data`` records, as the backend shows them now, with their
    drift from ``current(ctx)`` (the baseline's fingerprint now, asked once the backend
    answers; None: unknown); changes nothing (``orch doctor`` reads them too)."""
    if not (data.workers or data.oneoffs or data.baseline or data.standbys or data.kept or data.testvms):
        return []
    look = _Look.take(ctx, data, current)
    rows = [
        look.row(
            Kind.WORKER,
            r.worker,
            r.vm,
            _phase(r),
            r.fingerprint,
            owner=r.worker,
            inventory=_inventory(ctx, r.worker),
            recorded=r.engine,
        )
        for r in data.sorted_workers()
    ]
    for s in sorted(data.standbys.values(), key=lambda s: naming.worker_index(s.worker)):
        rows.append(look.row(Kind.STANDBY, s.worker, s.vm, s.phase, s.fingerprint, owner=s.worker, recorded=s.engine))
    for k in sorted(data.kept.values(), key=lambda k: k.vm):
        state, _ = look.state_of(k.vm, None)  # its labels' time is its worker's: its age is since kept
        rows.append(StatusRow(Kind.KEPT, k.worker, k.vm, state, k.phase, age(k.created), "", "", k.test, f"orch shell {k.vm}"))
    rows += _testvm_rows(ctx, data)
    for o in sorted(data.oneoffs.values(), key=lambda o: o.vm):
        rows.append(look.row(Kind.ONEOFF, POOL if o.pool else Kind.ONEOFF.value, o.vm, o.phase, o.fingerprint, recorded=o.engine))
    if (b := data.baseline) is not None:
        seen = (baseline_state(ctx, b), age(b.created))
        rows.append(
            look.row(Kind.BASELINE, Kind.BASELINE.value, b.seal.get("tag") or b.vm or b.ref, b.phase, b.fingerprint, seen=seen)
        )
    return rows


@dataclass
class _Look:
    """One look at the backend (its VMs) and at what the baseline should be now."""

    ctx: Context
    data: StateData
    infos: dict[str, VMInfo]
    current: Fingerprint | None

    @classmethod
    def take(cls, ctx: Context, data: StateData, current: Callable[[Context], Fingerprint | None]) -> _Look:
        ctx.provider.check()
        infos = {i.name: i for i in ctx.provider.list_vms(all_vms=not ctx.provider.has_labels)}
        return cls(ctx, data, infos, current(ctx))

    def row(
        self,
        kind: Kind,
        who: str,
        vm: str,
        phase: str,
        fp: str,
        *,
        owner: str | None = None,
        seen: tuple[str, float | None] | None = None,
        inventory: str = "",
        recorded: str = "",
    ) -> StatusRow:
        """The row of one VM; ``owner``: the worker its labels must name; ``seen``: its
        state and age, when the backend's list is not where they come from; ``recorded``:
        the engine or member the state says it is on (shown when the backend does not)."""
        state, seconds = seen or self.state_of(vm, owner)
        info = self.infos.get(vm)
        where = info.engine if info is not None and info.engine else recorded
        return StatusRow(kind, who, vm, state, phase, seconds, self.drift(fp), inventory, location=where)

    def state_of(self, vm: str, worker: str | None) -> tuple[str, float | None]:
        info, provider = self.infos.get(vm), self.ctx.provider
        if info is None and provider.unreachable_engines():
            try:  # it may be on an engine that does not answer: not missing, unknown
                provider.engine_of(vm)
            except EngineUnavailable as err:
                return f"unreachable ({str(err)[:160]})", None
        if info is None or not self.ctx.owns(info, worker):
            return "missing", None
        return info.state, age(info.labels.get(L.CREATED) or info.created)

    def drift(self, fp: str) -> str:
        if self.current is None or fp == self.current.value:
            return ""
        baseline = self.data.baseline
        parts = baseline.parts if baseline is not None and baseline.fingerprint == fp else {}
        return self.current.drift(parts) + " changed"


def _testvm_rows(ctx: Context, data: StateData) -> list[StatusRow]:
    """A row per name handed to a test (``orchestrator.vm_name``) and still recorded: what
    is under it now, whether its run is alive, and the test."""
    rows = []
    for rec in sorted(data.testvms.values(), key=lambda r: r.vm):
        try:
            info = ctx.provider.inspect(rec.vm) if testvms.mine(rec, ctx.provider.name) else None
            state = info.state if info is not None else "missing"
        except OrchError as err:
            state = f"unknown ({str(err)[:120]})"
        alive = leases.run_alive(ctx.settings.inventory_dir, rec.run)
        phase = "its run is alive" if alive else "its run is gone: `orch sweep` deletes it"
        rows.append(StatusRow(testvms.KIND, rec.worker, rec.vm, state, phase, age(rec.created), "", "", rec.test))
    return rows


def _phase(rec: WorkerRecord) -> str:
    phase = rec.phase if not rec.error else f"{rec.phase}: {rec.error[:80]}"
    if rec.reset_pending:
        phase += f", reset pending ({rec.reset_pending[:80]})"
    return phase


def _inventory(ctx: Context, worker: str) -> str:
    path = inventory.worker_path(ctx.settings.inventory_dir, worker)
    return str(path) if path.exists() else ""


def baseline_state(ctx: Context, rec: BaselineRecord) -> str:
    """The baseline's state for ``orch status``: sealed, or what is wrong with it."""
    if rec.phase != READY:
        return rec.phase
    try:
        why = ctx.provider.verify(Baseline(rec.ref, rec.seal))
    except OrchError as err:
        return f"unknown ({err})"
    return "sealed" if why is None else f"changed: {why}"
