"""Sweep: delete orphaned test VMs (and baselines and leftovers), and nothing that is not
orch's or still in use.

A VM is orch's only when its name has orch's form and its labels agree with its name
(:mod:`orchestrator.core.ownership`). Among orch's VMs, sweep judges each by its checkout's
folder, state and run leases — but only when it can tell that it sees the filesystem
that checkout lives in (:mod:`orchestrator.state.location`). When it cannot (another host,
another mount namespace, a container sharing the Docker socket), only ``--older-than``
may condemn a VM, and the decision says why. Where it can:

- a one-off VM is an orphan when the run that made it no longer holds its lease;
- a worker (or standby, or baseline) is an orphan when its checkout's inventory folder
  or state is gone, or when that state does not record it;
- with ``--older-than``, anything of orch's older than that, unless a run of its
  checkout is alive;
- a VM under a name handed to a test (``orchestrator.vm_name``, :mod:`.testvms`) when the
  run that asked is gone and *this* checkout's state records the name: never a VM named
  alike that is not recorded, nor another checkout's (even with ``--legacy``).

A kept VM (a failing test's worker, ``--orch-keep-failed``) is judged by age alone, from
the time it was kept (in its name): ``--older-than`` deletes it once it is older, and
nothing else does (not a dead run, a gone checkout or a lost state: ``orch down`` in its
checkout deletes it).

One checkout's damage (a runs folder holding what is not a lease, a state that cannot be
read) keeps that checkout's VMs and is reported; it never stops the sweep. ``--legacy``
adds VMs named with legacy prefixes, which predate labels. Sweep also deletes untagged
images committed from orch's containers, forgets one-offs it deleted in their state
(and the records of dead runs' one-offs whose VM is gone), and drops registry entries
of checkouts that are gone.

A name is deleted only while it is still the VM the plan judged: a swap may rename a
standby into its worker's name meanwhile. A VM already gone is reported ``gone``, never
``deleted``.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.core.ownership import Identity, identify
from orchestrator.primitives import labels as L
from orchestrator.primitives import naming
from orchestrator.primitives.clock import age as age_of
from orchestrator.primitives.errors import OrchError, StateError, UsageError
from orchestrator.primitives.kinds import Kind
from orchestrator.providers.base import Baseline, Provider, StoredBaseline, VMInfo
from orchestrator.settings.model import Settings
from orchestrator.state import checkouts as registry
from orchestrator.state import leases
from orchestrator.state.location import Seen, Verdict, judge
from orchestrator.state.records import StateData
from orchestrator.state.store import StateStore
from orchestrator.verbs import testvms
from orchestrator.verbs.oneoffs import forget_gone

log = logging.getLogger(__name__)

#: VM name prefixes of the per-session test VMs orch replaces, swept only with --legacy.
LEGACY_PREFIXES = ("test-vm-", "e2e-test-vm-", "e2e-ops-vm-", "deploy-test-vm-", "pytest-worker-", "pytest-test-")


@dataclass
class Decision:
    vm: str
    delete: bool
    reason: str
    kind: str = ""  # a Kind; or image, legacy, foreign, record, engine (not VMs of orch's)
    checkout: str = ""
    age_seconds: float | None = None
    #: deleted, would delete, kept, failed; gone (already, when sweep came to delete it);
    #: forgotten, would forget (a record whose VM is gone)
    result: str = ""
    error: str = ""
    ref: str = ""  # what to delete when it is not a VM (an image id)


@dataclass
class View:
    """What this sweep can see of one checkout."""

    verdict: Verdict
    inventory: Path | None = None
    state: StateData | None = None
    live: list[str] = field(default_factory=list)
    damage: str = ""


class Sweeper:
    def __init__(self, settings: Settings, provider: Provider) -> None:
        self.settings = settings
        self.provider = provider
        self._views: dict[str, View] = {}
        #: Each VM as the plan saw it: a name is deleted only while it is still that VM.
        self._seen: dict[str, VMInfo] = {}

    # -- seeing a checkout ------------------------------------------------------------

    def _ref(self, checkout: str, labels: dict[str, str]) -> registry.CheckoutRef | None:
        if labels.get(L.INVENTORY):
            return registry.CheckoutRef(labels[L.INVENTORY], labels.get(L.HOST, ""), labels.get(L.FS, ""))
        return registry.lookup(checkout)

    def view(self, checkout: str, labels: dict[str, str]) -> View:
        if checkout in self._views:
            return self._views[checkout]
        ref = self._ref(checkout, labels)
        if ref is None:
            found = View(Verdict(Seen.UNKNOWN, "no record of where its checkout is"))
        else:
            found = View(judge(Path(ref.inventory), ref.host, ref.fs), Path(ref.inventory))
        if found.verdict.seen is Seen.SAME and found.inventory is not None:
            runs = leases.scan(found.inventory)
            found.live = runs.live
            found.damage = "; ".join(runs.damaged)
            store = StateStore(found.inventory, checkout)
            try:
                found.state = store.read() if store.path.exists() or store.path.is_symlink() else None
            except StateError as err:
                found.damage = found.damage or f"{err}"
        self._views[checkout] = found
        return found

    # -- planning -----------------------------------------------------------------------

    def plan(self, *, older_than: float | None = None, legacy: bool = False) -> list[Decision]:
        prefixes = LEGACY_PREFIXES + tuple(self.settings.legacy_prefixes)
        decisions = []
        infos = self.provider.list_vms(all_vms=True)
        named = {v.vm: v for v in testvms.judge(self.settings, self.provider.name, [i.name for i in infos])}
        for info in infos:
            found, why = identify(info, self.settings.prefix, self.provider.has_labels)
            self._seen[info.name] = info
            if found is not None:
                decisions.append(self._decide(info, found, older_than))
            elif info.name in named:  # a name handed to a test (even with --legacy: judged by its record)
                decisions.append(_decide_named(named.pop(info.name)))
            elif legacy and info.name.startswith(prefixes):
                decisions.append(Decision(info.name, True, "named with a legacy prefix (--legacy)", "legacy"))
            elif info.name.startswith(f"{self.settings.prefix}-") or L.is_orchs(info.labels):
                decisions.append(Decision(info.name, False, f"not orch's ({why}): never touched", "foreign"))
        decisions += [_decide_named(v) for v in named.values()]  # records of dead runs whose VM is gone
        for stored in self.provider.stored_baselines():
            decisions.append(self._decide_baseline(stored, older_than))
        for engine, why in self.provider.unreachable_engines().items():
            decisions.append(
                Decision(
                    f"{self.provider.engine_word} {engine}",
                    False,
                    f"does not answer ({why[:120]}): its VMs are not judged",
                    "engine",
                )
            )
        for ref in self.provider.dangling():
            decisions.append(
                Decision(ref[:19], True, "untagged image committed from orch's container: nothing uses it", "image", ref=ref)
            )
        decisions += self._gone_records(dry_run=True)
        return sorted(decisions, key=lambda d: (d.kind == "image", d.vm))

    def _judge_unseen(self, d: Decision, view: View, older_than: float | None) -> Decision:
        """A checkout this sweep cannot see: only age may condemn."""
        if view.verdict.seen is Seen.GONE:
            d.delete, d.reason = True, view.verdict.reason
        elif older_than is not None and d.age_seconds is not None and d.age_seconds > older_than:
            d.delete, d.reason = (
                True,
                f"older than --older-than ({d.age_seconds / 3600:.1f}h); its checkout cannot be seen from here ({view.verdict.reason})",
            )
        else:
            d.reason = f"kept: its checkout cannot be seen from here ({view.verdict.reason}); only --older-than can delete it"
        return d

    def _judge_view(self, d: Decision, view: View, older_than: float | None) -> Decision | None:
        """The decision when the checkout cannot be judged by its folder (unseen, or
        damaged); None when it can."""
        if view.verdict.seen is not Seen.SAME:
            return self._judge_unseen(d, view, older_than)
        if view.damage:
            d.reason = f"kept: its checkout is damaged ({view.damage}); fix it there"
            return d
        return None

    def _decide(self, info: VMInfo, found: Identity, older_than: float | None) -> Decision:
        d = Decision(info.name, False, "", found.kind, found.checkout, age_of(info.labels.get(L.CREATED) or info.created))
        if found.kind is Kind.KEPT:
            self.view(found.checkout, info.labels)  # its record is forgotten there once it is deleted
            return _decide_kept(d, found, older_than)
        view = self.view(found.checkout, info.labels)
        judged = self._judge_view(d, view, older_than)
        if judged is not None:
            return judged
        if found.kind is Kind.ONEOFF:
            return _decide_oneoff(d, info, view)
        if view.state is None:
            if view.live:
                d.reason = f"its checkout has no state, but a run of it is alive ({view.live[0]})"
            else:
                d.delete, d.reason = True, f"its checkout has no state ({view.inventory})"
            return d
        return _decide_recorded(d, found, view.state, view, older_than)

    def _decide_baseline(self, stored: StoredBaseline, older_than: float | None) -> Decision:
        d = Decision(stored.name, False, "", Kind.BASELINE, stored.checkout, age_of(stored.created), ref=stored.ref)
        view = self.view(stored.checkout, stored.labels)
        judged = self._judge_view(d, view, older_than)
        if judged is not None:
            return judged
        state = view.state
        recorded = [] if state is None else [*state.retired, *([state.baseline] if state.baseline else [])]
        refs = {b.ref for b in recorded} | {b.seal.get("tag", "") for b in recorded} - {""}  # tag: named before its seal
        if stored.ref in refs or stored.name in refs:
            d.reason = f"baseline of {view.inventory}"
        elif view.live:
            d.reason = f"not recorded, but a run of its checkout is alive ({view.live[0]})"
        else:
            d.delete, d.reason = True, f"baseline image the state of {view.inventory} does not record"
        return d

    # -- carrying it out ----------------------------------------------------------------

    def _gone_records(self, *, dry_run: bool) -> list[Decision]:
        """Records of one-offs whose VM is gone and whose run is dead, in the states of the
        checkouts this sweep judged by their folder (a run killed during its background
        deletions leaves them): listed by the plan, dropped by ``execute``."""
        found = []
        for checkout, view in self._views.items():
            if view.verdict.seen is not Seen.SAME or view.state is None or view.damage or view.inventory is None:
                continue
            store = StateStore(view.inventory, checkout, existing_only=True)
            for rec in forget_gone(store, view.inventory, self.provider, dry_run=dry_run):
                reason = f"record of a one-off whose VM is gone and whose run is dead ({rec.run or 'no run recorded'})"
                found.append(Decision(rec.vm, True, reason, "record", checkout))
        return found

    def execute(self, decisions: list[Decision], *, dry_run: bool = False) -> list[Decision]:
        for d in decisions:
            d.result = "kept" if not d.delete else ("would delete" if dry_run else "")
            if d.kind == "record":
                d.result = "would forget" if dry_run else "kept"
        doomed = [d for d in decisions if d.delete and d.kind != "record"]
        if not dry_run and any(d.kind == "record" for d in decisions):
            forgotten = {(d.checkout, d.vm) for d in self._gone_records(dry_run=False)}
            for d in decisions:
                if d.kind == "record" and (d.checkout, d.vm) in forgotten:
                    d.result = "forgotten"
        if dry_run or not doomed:
            return decisions
        vms = [d for d in doomed if d.kind not in (Kind.BASELINE, "image")]
        self.provider.map(lambda d: self._delete(d, lambda: self._delete_vm(d)), vms)
        for d in doomed:
            if d.kind == Kind.BASELINE:
                self._delete(d, functools.partial(self._drop_image, d))
            elif d.kind == "image":
                self._delete(d, functools.partial(self.provider.drop_dangling, d.ref))
        self._forget(vms)
        self._prune_registry(decisions)
        return decisions

    def _drop_image(self, d: Decision) -> None:
        if not self.provider.drop(Baseline(d.ref, {"tag": d.vm})):
            raise OrchError(f"{d.vm} is still used by a container")

    def _delete_vm(self, d: Decision) -> str:
        """Delete the VM this sweep judged, by its name, only while the name is still that
        VM's: between the plan and now a swap may have renamed a standby into its worker's
        name, and the provider's delete of a missing VM is silent success."""
        now = self.provider.inspect(d.vm)
        if now is None:
            d.reason += "; already gone when sweep came to delete it (deleted, or swapped in under its worker's name)"
            return "gone"
        planned = self._seen.get(d.vm)
        if planned is not None and _identity(now) != _identity(planned):
            d.delete = False
            d.reason = f"kept: {d.vm} is now another VM (renamed into that name since sweep looked); the next sweep judges it"
            return "kept"
        self.provider.delete(d.vm)
        return "deleted"

    def _delete(self, d: Decision, action: Callable[[], str | None]) -> None:
        """Run a deletion (retried); its result is what the action says happened, or "deleted"."""
        try:
            d.result = self.provider.call(f"delete {d.vm}", action) or "deleted"
        except OrchError as err:
            d.result, d.error = "failed", str(err)

    def _forget(self, deleted: list[Decision]) -> None:
        """Remove deleted (or already gone) one-offs, standbys and kept VMs from the states
        that recorded them, by the exact name sweep judged."""
        done = [d for d in deleted if d.result in ("deleted", "gone")]
        for checkout in {d.checkout for d in done}:
            view = self._views.get(checkout)
            if view is None or view.state is None or view.inventory is None:
                continue
            gone = {d.vm for d in done if d.checkout == checkout}
            try:
                with StateStore(view.inventory, checkout, existing_only=True).transaction() as state:
                    for vm in gone & set(state.oneoffs):
                        state.oneoffs.pop(vm)
                    for worker, standby in list(state.standbys.items()):
                        if standby.vm in gone:
                            state.standbys.pop(worker)
                    for vm in gone & set(state.kept):
                        state.kept.pop(vm)
            except OrchError as err:
                log.warning("could not forget deleted one-offs in %s: %s", view.inventory, err)
        named = [d.vm for d in done if d.kind == testvms.KIND]
        try:
            testvms.forget(StateStore(self.settings.inventory_dir, self.settings.checkout, existing_only=True), named)
        except OrchError as err:
            log.warning("could not forget deleted test VMs in %s: %s", self.settings.inventory_dir, err)

    def _prune_registry(self, decisions: list[Decision]) -> None:
        """Forget checkouts whose folder is gone once this sweep took what they had here.

        A gone checkout this sweep saw nothing of keeps its entry: its VMs may be under
        another prefix, or on another provider, and on a backend without labels the
        registry is all that tells the sweep that judges them where the checkout lived."""
        left = {d.checkout for d in decisions if d.result in ("kept", "failed", "would delete", "would forget")}
        swept = {d.checkout for d in decisions if d.result in ("deleted", "gone", "forgotten")} - left
        for checkout, ref in registry.entries().items():
            # an entry without a location (older orch) can never be judged: useless
            useless = not ref.host
            if useless or (checkout in swept and judge(Path(ref.inventory), ref.host, ref.fs).seen is Seen.GONE):
                registry.unregister(checkout)


def _identity(info: VMInfo) -> tuple[object, ...]:
    """What tells one VM from another under the same name: its labels (orch's creation
    time, kind, worker, run), the backend's creation time, image and engine."""
    return (sorted(info.labels.items()), info.created, info.image, info.engine)


def _decide_named(v: testvms.Verdict) -> Decision:
    """A VM under a name orch handed a test (``orchestrator.vm_name``): deleted once the
    run that asked is gone, and only when this checkout recorded the name."""
    return Decision(v.vm, v.delete, v.reason, testvms.KIND, v.checkout)


def _decide_kept(d: Decision, found: Identity, older_than: float | None) -> Decision:
    """A kept VM goes only by age, counted from when it was kept (its labels are its
    worker's, made earlier)."""
    d.age_seconds = age_of(naming.kept_at(found.suffix))
    if older_than is not None and d.age_seconds is not None and d.age_seconds > older_than:
        d.delete, d.reason = True, f"kept VM older than --older-than ({d.age_seconds / 3600:.1f}h since it was kept)"
    else:
        d.reason = "kept VM of a failing test: deleted only by `orch down` in its checkout, or --older-than"
    return d


def _decide_oneoff(d: Decision, info: VMInfo, view: View) -> Decision:
    """A one-off is kept while it is in the pool or its run holds its lease."""
    rec = view.state.oneoffs.get(info.name) if view.state else None
    run = info.labels.get(L.RUN) or (rec.run if rec else "")
    if rec is not None and rec.pool:
        d.reason = f"pool VM of {view.inventory}"
    elif run and run in view.live:
        d.reason = f"its run {run} is alive"
    else:
        d.delete, d.reason = True, f"one-off VM of a run that is gone ({run or 'no run recorded'})"
    return d


def _decide_recorded(d: Decision, found: Identity, state: StateData, view: View, older_than: float | None) -> Decision:
    """A worker, standby or baseline VM is kept while its checkout's state records it,
    and (with ``--older-than``) while it is young enough or a run of its checkout is alive."""
    if not _records(state, d.vm, found):
        d.delete, d.reason = True, f"the state of {view.inventory} does not record it"
    elif older_than is not None and d.age_seconds is not None and d.age_seconds > older_than:
        if view.live:
            d.reason = f"older than --older-than, but a run of its checkout is alive ({view.live[0]})"
        else:
            d.delete, d.reason = True, f"older than --older-than ({d.age_seconds / 3600:.1f}h)"
    else:
        d.reason = f"{found.kind} {found.worker or ''} of {view.inventory}".replace("  ", " ")
    return d


def _records(state: StateData, name: str, found: Identity) -> bool:
    """Does the state record this VM under this name, as what its name and labels say?"""
    if found.kind is Kind.BASELINE:  # the current baseline or a retired one
        return name in {b.vm for b in [*state.retired, *([state.baseline] if state.baseline else [])]}
    rec = state.record(found.kind, found.worker if found.kind.per_worker else name)
    return rec is not None and rec.vm == name


def sweep(
    settings: Settings, provider: Provider, *, older_than: float | None = None, legacy: bool = False, dry_run: bool = False
) -> list[Decision]:
    """Plan and carry out a sweep. Refused inside a pytest-xdist worker: a slow worker
    must never judge what its siblings are using."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        raise UsageError("sweep runs from the CLI or the pytest controller (--orch-sweep), never inside an xdist worker")
    provider.check()
    sweeper = Sweeper(settings, provider)
    return sweeper.execute(sweeper.plan(older_than=older_than, legacy=legacy), dry_run=dry_run)
