"""VMs that tests make themselves (a connector's own suite creates, stops and deletes VMs
through the connector under test), under names orch hands out: ``orchestrator.vm_name``.

Such a VM is not orch's: the test makes it with its own tools, so it carries no label of
orch's and orch never sees it made. What orch has is the name, recorded in the state
(:class:`NamedVMRecord`: the run's lease, the worker, the test) *before* the test gets it,
in one transaction that refuses a name already recorded, so no two tests (on any xdist
worker, in any run of the checkout) are ever handed the same one. Then:

- after its test (or at the end of its session, ``scope="session"``), whatever exists under
  the name is deleted and the record dropped once it is gone (:func:`delete_named`);
- a run that dies leaves its records behind: once its lease is gone, ``orch sweep`` and
  ``orch down`` delete what exists under them (:func:`judge`, :func:`delete_dead`).

Only recorded names of this checkout, judged through the provider they were handed out
for, are ever deleted: a VM named alike but not recorded, or recorded by another checkout
(its id is in the name), is never touched.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from orchestrator.core.steps import WorkerResult
from orchestrator.primitives import labels as L
from orchestrator.primitives import naming
from orchestrator.primitives.clock import now_iso
from orchestrator.primitives.errors import OrchError, StateError, UsageError
from orchestrator.state import leases
from orchestrator.state.records import NamedVMRecord
from orchestrator.state.store import StateStore

if TYPE_CHECKING:
    from orchestrator.core.context import Context
    from orchestrator.settings.model import Settings

log = logging.getLogger(__name__)

#: When a handed-out name's VM is deleted: after the test that asked, or at the session's end.
SCOPES = ("test", "session")
#: Names tried before giving up (each differs in its random part; a clash is a retry).
ATTEMPTS = 20
#: What the run's kind column says of these VMs (they have no Kind: they are not orch's).
KIND = "testvm"


def hand_out(
    store: StateStore,
    provider: str,
    base: str = "test-vm",
    *,
    run: str,
    session: str = "",
    worker: str = "",
    test: str = "",
    scope: str = "test",
) -> str:
    """A name for a VM the caller will make, recorded first (never handed out twice)."""
    naming.validate_vm_base(base)
    if scope not in SCOPES:
        raise UsageError(f"invalid scope {scope!r}: use {' or '.join(repr(s) for s in SCOPES)}")
    if not leases.valid_run_id(run):
        raise UsageError(f"invalid run id {run!r}: a name is handed out only to a process holding a run lease")
    for _ in range(ATTEMPTS):
        name = naming.named_vm_name(base, store.checkout)
        with store.transaction() as state:
            if name in state.testvms:
                continue  # the transaction writes nothing new: try another random part
            state.testvms[name] = NamedVMRecord(name, run, session or run, worker, test, scope, provider, now_iso())
            return name
    raise StateError(f"no free name for {base!r} after {ATTEMPTS} tries: is the random source broken?")


@dataclass
class Deleted:
    """What became of one handed-out name: ``deleted`` (a VM was there), ``absent`` (its
    test deleted it, or never made it), ``left`` (an orch VM has that name: never touched),
    ``failed`` (the record stays: ``orch sweep`` deletes it once its run is gone)."""

    vm: str
    result: str
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.result != "failed"


def delete_named(ctx: Context, names: Iterable[str]) -> list[Deleted]:
    """Delete whatever exists under these recorded names, and drop each record once its
    name is free. A name that is not recorded (any more) is not looked at."""
    recorded = ctx.store.read().testvms
    done = [_delete(ctx, name) for name in names if name in recorded]
    forget(ctx.store, [d.vm for d in done if d.ok])
    return done


def _delete(ctx: Context, name: str) -> Deleted:
    provider = ctx.provider
    try:
        info = provider.call(f"look for {name}", lambda: provider.inspect(name))
        if info is None:
            return Deleted(name, "absent")
        if L.is_orchs(info.labels):
            log.warning("%s carries orch's labels: not a VM its test made; left alone", name)
            return Deleted(name, "left")
        provider.call(f"delete {name}", lambda: provider.delete(name))
    except OrchError as err:
        log.warning("could not delete %s (left to `orch sweep` once its run is gone): %s", name, err)
        return Deleted(name, "failed", str(err))
    return Deleted(name, "deleted")


def forget(store: StateStore, names: Iterable[str]) -> None:
    """Drop these names' records (their VMs are gone)."""
    names = set(names)
    if not names:
        return
    with store.transaction() as state:
        for name in names & set(state.testvms):
            state.testvms.pop(name)


def session_names(store: StateStore, run: str) -> list[NamedVMRecord]:
    """The ``scope="session"`` names the process holding lease ``run`` still has recorded."""
    return sorted((r for r in store.read().testvms.values() if r.run == run and r.scope == "session"), key=lambda r: r.vm)


def dead(ctx: Context, *, since: str = "") -> list[NamedVMRecord]:
    """Recorded names, handed out for this provider (at ``since`` or later), whose run is gone."""
    data = ctx.store.read()
    inventory_dir = ctx.settings.inventory_dir
    found = [
        r
        for r in data.testvms.values()
        if mine(r, ctx.provider.name) and r.created >= since and not leases.run_alive(inventory_dir, r.run)
    ]
    return sorted(found, key=lambda r: r.vm)


def mine(rec: NamedVMRecord, provider: str) -> bool:
    """Handed out for this provider (its VM can be looked for through it)."""
    return not rec.provider or rec.provider == provider


def delete_dead(ctx: Context) -> list[WorkerResult]:
    """``orch down``: what exists under the names of runs that are gone, deleted."""
    results = []
    for d in delete_named(ctx, [r.vm for r in dead(ctx)]):
        action = {"absent": "forgotten", "left": "forgotten"}.get(d.result, d.result)
        result = WorkerResult(KIND, d.vm, action, error=d.error)
        ctx.report(KIND, f"{d.vm} {action}" + (f": {d.error}" if d.error else ""))
        results.append(result)
    return results


@dataclass
class Verdict:
    """Sweep's judgement of one name of a test VM's form (``delete``: its run is gone)."""

    vm: str
    delete: bool
    reason: str
    checkout: str = ""


def judge(settings: Settings, provider: str, listed: Iterable[str]) -> list[Verdict]:
    """Sweep: the listed VMs named like test VMs, and this checkout's recorded names whose
    run is gone (listed or not: a record whose VM is gone is forgotten). Only this
    checkout's state decides; another checkout's names are its own business."""
    named = {name: parsed for name in listed if (parsed := naming.parse_named_vm_name(name)) is not None}
    store = StateStore(settings.inventory_dir, settings.checkout, existing_only=True)
    try:
        recorded = store.read().testvms
    except StateError as err:
        return [Verdict(n, False, f"kept: this checkout's state cannot be read ({err})", c) for n, (_, c) in named.items()]
    verdicts = []
    for name, (_, checkout) in sorted(named.items()):
        rec = recorded.get(name)
        if checkout != settings.checkout:
            verdicts.append(Verdict(name, False, f"test VM of checkout {checkout}: judged only by that checkout", checkout))
        elif rec is None or not mine(rec, provider):
            verdicts.append(
                Verdict(name, False, "named like this checkout's test VMs, but not recorded: never touched", checkout)
            )
        else:
            verdicts.append(_judge_recorded(settings, rec))
    for rec in sorted(recorded.values(), key=lambda r: r.vm):
        if rec.vm not in named and mine(rec, provider):
            verdict = _judge_recorded(settings, rec)
            if verdict.delete:
                verdict.reason += "; its VM is not listed: the record is forgotten"
                verdicts.append(verdict)
    return verdicts


def _judge_recorded(settings: Settings, rec: NamedVMRecord) -> Verdict:
    who = f"{rec.test or 'a test'} ({rec.worker or 'no worker'})"
    if leases.run_alive(settings.inventory_dir, rec.run):
        return Verdict(rec.vm, False, f"test VM handed to {who} of run {rec.run}, which is alive", settings.checkout)
    return Verdict(rec.vm, True, f"test VM handed to {who} of run {rec.run}, which is gone", settings.checkout)
