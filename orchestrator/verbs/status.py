"""``orch status``: every VM this checkout has — workers, one-offs, standbys and the
baseline — with its state on the backend, its phase in the state, its age and drift."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from orchestrator.core.baseline import fingerprint
from orchestrator.primitives import labels as L
from orchestrator.primitives import naming
from orchestrator.primitives.clock import age
from orchestrator.primitives.errors import EngineUnavailable, OrchError
from orchestrator.primitives.kinds import POOL, Kind
from orchestrator.providers.base import Baseline
from orchestrator.state import inventory
from orchestrator.state.records import READY, BaselineRecord
from orchestrator.verbs.oneoffs import forget_gone_oneoffs

if TYPE_CHECKING:
    from orchestrator.core.context import Context


@dataclass
class StatusRow:
    kind: Kind
    worker: str  # the worker id; for the others their kind, or POOL (a one-off of the pool)
    vm: str
    state: str  # running, stopped, missing, unreachable (its engine does not answer), or the backend's word
    phase: str
    age_seconds: float | None
    drift: str  # what changed since it was made ("" when current)
    inventory: str


def status(ctx: Context) -> list[StatusRow]:
    forget_gone_oneoffs(ctx)  # a dead run's one-off whose VM is gone is not "missing": it is nothing
    data = ctx.store.read()
    if not (data.workers or data.oneoffs or data.baseline or data.standbys):
        return []
    ctx.provider.check()
    infos = {i.name: i for i in ctx.provider.list_vms(all_vms=not ctx.provider.has_labels)}
    try:
        current = fingerprint(ctx)
    except OrchError:
        current = None

    def state_of(vm: str, worker: str | None = None) -> tuple[str, float | None]:
        info = infos.get(vm)
        if info is None and ctx.provider.unreachable_engines():
            try:  # it may be on an engine that does not answer: not missing, unknown
                ctx.provider.engine_of(vm)
            except EngineUnavailable as err:
                return f"unreachable ({str(err)[:160]})", None
        if info is None or not ctx.owns(info, worker):
            return "missing", None
        return info.state, age(info.labels.get(L.CREATED) or info.created)

    def drift(fp: str) -> str:
        if current is None or fp == current.value:
            return ""
        parts = data.baseline.parts if data.baseline is not None and data.baseline.fingerprint == fp else {}
        return current.drift(parts) + " changed"

    rows = []
    for rec in data.sorted_workers():
        state, seconds = state_of(rec.vm, rec.worker)
        path = inventory.worker_path(ctx.settings.inventory_dir, rec.worker)
        phase = rec.phase if not rec.error else f"{rec.phase}: {rec.error[:80]}"
        if rec.reset_pending:
            phase += f", reset pending ({rec.reset_pending[:80]})"
        rows.append(
            StatusRow(
                Kind.WORKER,
                rec.worker,
                rec.vm,
                state,
                phase,
                seconds,
                drift(rec.fingerprint),
                str(path) if path.exists() else "",
            )
        )
    for s in sorted(data.standbys.values(), key=lambda s: naming.worker_index(s.worker)):
        state, seconds = state_of(s.vm, s.worker)
        rows.append(StatusRow(Kind.STANDBY, s.worker, s.vm, state, s.phase, seconds, drift(s.fingerprint), ""))
    for o in sorted(data.oneoffs.values(), key=lambda o: o.vm):
        state, seconds = state_of(o.vm)
        rows.append(
            StatusRow(Kind.ONEOFF, POOL if o.pool else Kind.ONEOFF.value, o.vm, state, o.phase, seconds, drift(o.fingerprint), "")
        )
    if data.baseline is not None:
        b = data.baseline
        rows.append(
            StatusRow(
                Kind.BASELINE,
                Kind.BASELINE.value,
                b.seal.get("tag") or b.vm or b.ref,
                baseline_state(ctx, b),
                b.phase,
                age(b.created),
                drift(b.fingerprint),
                "",
            )
        )
    return rows


def baseline_state(ctx: Context, rec: BaselineRecord) -> str:
    """The baseline's state for ``orch status``: sealed, or what is wrong with it."""
    if rec.phase != READY:
        return rec.phase
    try:
        why = ctx.provider.verify(Baseline(rec.ref, rec.seal))
    except OrchError as err:
        return f"unknown ({err})"
    return "sealed" if why is None else f"changed: {why}"
