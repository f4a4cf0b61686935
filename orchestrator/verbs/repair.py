"""``orch repair``: rebuild a lost or damaged state from the backend, trusting a VM only
as far as its name, its labels and what orch wrote inside it say. A kept VM (a failing
test's worker) is recorded again by its name, with the test the old state named, if it
could be read."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from orchestrator.core.ownership import Identity, identify
from orchestrator.core.spares import delete_spares
from orchestrator.primitives import labels as L
from orchestrator.primitives import naming
from orchestrator.primitives.errors import OrchError, StateError, UsageError
from orchestrator.primitives.kinds import Kind
from orchestrator.providers.base import StoredBaseline, VMInfo
from orchestrator.state.records import (
    PROVISIONING,
    READY,
    BaselineRecord,
    KeptRecord,
    OneoffRecord,
    StandbyRecord,
    StateData,
    WorkerRecord,
)

if TYPE_CHECKING:
    from orchestrator.core.context import Context


def repair(ctx: Context, *, wait: bool = True, on_wait: Callable[[], None] | None = None) -> StateData:
    """Rebuild the state from the backend: every VM that is this checkout's by name (and
    labels). The damaged file is kept as ``state.json.damaged``. A worker whose
    fingerprint is unknown is recorded as unfinished, so the next ``orch up`` makes it again."""
    with ctx.store.command_lock(wait=wait, on_wait=on_wait):
        ctx.provider.check()
        mine = _mine(ctx)
        down = ctx.provider.unreachable_engines()
        if down:  # their VMs are not in the listing: rebuilt without them, they would be forgotten
            where, why = next(iter(down.items()))
            raise UsageError(
                f"the {ctx.provider.engine_word} {where} does not answer ({why[:120]}): orch repair would forget "
                "its VMs; run it again once it is back"
            )
        stored = sorted((b for b in ctx.provider.stored_baselines() if b.checkout == ctx.checkout), key=lambda b: b.created)
        kept = _kept_tests(ctx)
        owed = _owed_resets(ctx)
        with ctx.store.transaction(repair=True) as data:
            _forget_all(ctx, data)
            fingerprints: set[str] = set()
            doomed: list[str] = []
            for info, found in mine:
                fp = info.labels.get(L.FINGERPRINT, "") or _marked(ctx, info)
                if found.kind is Kind.STANDBY and _trashed(ctx, data, info, found, fp):
                    doomed.append(info.name)
                    continue
                if found.kind is Kind.KEPT:
                    _record_kept(ctx, data, info, found, kept)
                    continue
                _record(ctx, data, info, found, fp, owed)
                if found.kind is Kind.WORKER:
                    fingerprints.add(fp)
            _record_baselines(data, stored, fingerprints)
        delete_spares(ctx, doomed)
        ctx.write_inventories()
        return ctx.store.read()


def _mine(ctx: Context) -> list[tuple[VMInfo, Identity]]:
    """This checkout's VMs, as their names (and labels) say."""
    mine = []
    for info in ctx.provider.list_vms():
        found, _ = identify(info, ctx.settings.prefix, ctx.provider.has_labels)
        if found is not None and found.checkout == ctx.checkout:
            mine.append((info, found))
    return mine


def _kept_tests(ctx: Context) -> dict[str, str]:
    """{kept VM: its test} as the old state says, when it can be read."""
    try:
        return {k.vm: k.test for k in ctx.store.read().kept.values()} if ctx.store.path.exists() else {}
    except StateError:
        return {}


def _record_kept(ctx: Context, data: StateData, info: VMInfo, found: Identity, tests: dict[str, str]) -> None:
    """A kept VM, recorded again (never deleted by a repair: it is kept for a person)."""
    data.kept[info.name] = KeptRecord(
        info.name, found.worker, tests.get(info.name, ""), phase=READY, created=naming.kept_at(found.suffix), engine=info.engine
    )
    ctx.report(found.worker, f"found {info.name} ({info.state}), recorded as kept")


def _owed_resets(ctx: Context) -> dict[str, str]:
    """{vm: why} of the resets the old state says are owed (never lost by a rebuild); a
    damaged state file is moved aside."""
    if not ctx.store.path.exists():
        return {}
    try:
        return {r.vm: r.reset_pending for r in ctx.store.read().workers.values() if r.reset_pending}
    except StateError:
        ctx.store.path.replace(ctx.store.path.with_name("state.json.damaged"))
        return {}


def _forget_all(ctx: Context, data: StateData) -> None:
    data.workers.clear()
    data.oneoffs.clear()
    data.standbys.clear()
    data.kept.clear()
    data.provider, data.prefix = ctx.provider.name, ctx.settings.prefix
    data.image = data.image or ctx.image
    data.baseline, data.retired = None, []


def _trashed(ctx: Context, data: StateData, info: VMInfo, found: Identity, fp: str) -> bool:
    """A VM under a standby's form of name that is not to be trusted as one is recorded as
    trash (deleted once the state is written, never handed out); True if it is."""
    why = _not_a_standby(ctx, info, fp)
    if not why and found.worker in data.standbys:
        why = f"{found.worker} already has the standby {data.standbys[found.worker].vm}"
    if not why:
        return False
    if info.name not in data.trash:
        data.trash.append(info.name)  # recorded first: a crash never leaks it
    ctx.report(found.worker, f"found {info.name} ({info.state}): not a standby ({why}); deleting it")
    return True


def _record(ctx: Context, data: StateData, info: VMInfo, found: Identity, fp: str, owed: dict[str, str]) -> None:
    """Record one VM of this checkout as what its name says it is."""
    phase = READY if fp else PROVISIONING
    created = info.labels.get(L.CREATED, info.created)
    if found.kind is Kind.WORKER:
        half = _half_made(ctx, info, found.worker)
        if half:  # in doubt, unfinished: the next taker makes it again
            phase = PROVISIONING
            ctx.report(found.worker, f"{info.name} may be half made ({half})")
        reset_pending = owed.get(info.name, "")
        data.workers[found.worker] = WorkerRecord(found.worker, info.name, phase, created, fp, reset_pending=reset_pending)
    elif found.kind is Kind.STANDBY:
        data.standbys[found.worker] = StandbyRecord(found.worker, info.name, phase, created, fp)
    elif found.kind is Kind.ONEOFF:
        data.oneoffs[info.name] = OneoffRecord(info.name, info.labels.get(L.RUN, ""), created, 0, READY, fp)
    else:  # a baseline machine whose seal orch no longer knows: rebuilt when needed
        data.retired.append(BaselineRecord(info.name, phase=PROVISIONING))
    ctx.report(found.worker or found.kind, f"found {info.name} ({info.state}), recorded as {phase}")


def _record_baselines(data: StateData, stored: list[StoredBaseline], fingerprints: set[str]) -> None:
    """The stored baselines: the one the workers were made from is current, the rest retired."""
    for b in stored:
        tag = b.name.rsplit(":", 1)[-1]
        rec = BaselineRecord("", tag, {}, READY, b.ref, {"tag": b.name}, b.created)
        if tag in fingerprints and data.baseline is None:
            data.baseline = rec
        else:
            data.retired.append(rec)


def _marked(ctx: Context, info: VMInfo) -> str:
    """The fingerprint orch wrote inside a running VM (backends without labels)."""
    return "" if ctx.provider.has_labels else _inside(ctx, info, "/var/lib/orch/fingerprint")


def _inside(ctx: Context, info: VMInfo, path: str) -> str:
    """What orch's ``mark`` wrote at ``path`` inside a running VM ("" when it cannot tell)."""
    if not info.running:
        return ""
    try:
        result = ctx.provider.exec(info.name, ["cat", path])
    except OrchError:
        return ""
    return result.stdout.strip() if result.ok else ""


def _half_made(ctx: Context, info: VMInfo, worker: str) -> str:
    """Why a running VM under a worker's name may be half made ("" when orch's last step
    ran in it). Its labels are set when it is created, and a clone inherits the baseline's
    marks: only the name orch's ``mark`` wrote at the end says it was finished, as this
    worker (its own name) or as the standby swapped in under it. A stopped VM cannot be
    looked into: its labels are all there is."""
    if not info.running:
        return ""
    made_as = _inside(ctx, info, "/var/lib/orch/made-as")
    if made_as and made_as in (info.name, info.labels.get(L.MADE_AS)):
        return ""
    parsed = naming.parse_vm_name(ctx.settings.prefix, made_as)
    swapped_in = parsed is not None and naming.kind_of(parsed[1]) is Kind.STANDBY and naming.worker_of(parsed[1]) == worker
    if not ctx.provider.has_labels and swapped_in and parsed is not None and parsed[0] == ctx.checkout:
        return ""  # its standby, swapped in
    return "orch's last step never ran in it"


def _not_a_standby(ctx: Context, info: VMInfo, fp: str) -> str:
    """Why a VM under a standby's form of name is not to be trusted as one ("" if it is).

    A swap renames the worker's old, dirty VM to that same form of name, and only the VM
    itself can tell them apart once the state is lost: a standby still has the name it
    was made under (its ``orch.made-as`` label, and the name orch's ``mark`` wrote inside
    at its last step), and is running. Anything else is trash, or was never finished."""
    if ctx.provider.has_labels and info.labels.get(L.MADE_AS) != info.name:
        return "its orch.made-as label does not name it: swapped out of its worker"
    if not info.running:
        return f"it is {info.state}"
    made_as = _inside(ctx, info, "/var/lib/orch/made-as")
    if made_as != info.name:
        return "the name inside it is another: swapped out of its worker" if made_as else "it was never finished"
    if not fp or _inside(ctx, info, "/var/lib/orch/fingerprint") != fp:
        return "it was never finished"
    return ""
