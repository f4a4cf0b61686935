"""The baseline, from the core's side: what made it (its fingerprint), whether it is still
the one provisioning made, and making VMs — the baseline itself, and VMs from it.

One baseline per checkout. Building it creates a VM from the image, runs the provision
deploy in it and asks the provider to seal it; VMs made the same moment (the first
workers) are created from the image beside it and provisioned in the same pyinfra run.
Every later VM (a worker added, a hard reset, a one-off, a standby) is cloned from the
baseline and personalized (the personalize deploy gives it its own worker id).

Before a clone the baseline is verified: a changed provision deploy, image, orch version
or provider setting (the fingerprint), or a baseline that was started or changed outside
orch, is rebuilt first, and orch says why.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orchestrator.core.steps import WorkerResult, guard, timed
from orchestrator.primitives import naming
from orchestrator.primitives.clock import now_iso
from orchestrator.primitives.errors import DeployError, OrchError, PermanentProviderError, VMExists
from orchestrator.primitives.kinds import Kind
from orchestrator.primitives.labels import Owner
from orchestrator.providers.base import Baseline, BaselineTainted
from orchestrator.pyinfra.loading import source_hash
from orchestrator.state.records import CREATING, FAILED, PROVISIONING, READY, BaselineRecord

if TYPE_CHECKING:
    from orchestrator.core.context import Context

log = logging.getLogger(__name__)


@dataclass
class Fingerprint:
    """What a baseline is made of, hashed: the deploys' source, the image, orch's version
    and the provider settings that change a VM."""

    value: str
    parts: dict[str, str]

    def drift(self, recorded: dict[str, str]) -> str:
        """What changed since ``recorded`` was taken, in words ("" when nothing)."""
        words = {
            "deploy": "the provision deploy",
            "image": "the image",
            "orch": "orch's version",
            "provider": "the provider settings",
        }
        changed = [words.get(k, k) for k, v in self.parts.items() if recorded.get(k) != v]
        if not recorded:
            return "its fingerprint is unknown (made by an older orch)"
        return " and ".join(changed)


def fingerprint(ctx: Context) -> Fingerprint:
    settings, provider = ctx.settings, ctx.provider
    provision, personalize = ctx.load(settings.provision), ctx.load(settings.personalize)
    image_id = ctx.image_id()
    vm_settings = json.dumps([provider.name, provider.vm_settings()], sort_keys=True)
    parts = {
        "deploy": _short(f"{settings.provision}={source_hash(provision)};{settings.personalize}={source_hash(personalize)}"),
        "image": _short(f"{ctx.image}={image_id}"),
        "orch": ctx.version,
        "provider": _short(f"{vm_settings};connector={ctx.connector.name};{ctx.connector.vm_settings()}"),
    }
    return Fingerprint(_short(json.dumps(parts, sort_keys=True)), parts)


def _short(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass
class Target:
    """A VM the core is about to make: its result row, owner, deploy id, and how to record
    its progress in the state (``record(phase=…, **fields)``)."""

    result: WorkerResult
    owner: Owner
    ident: str
    record: Callable[..., None]
    tainted: bool = field(default=False)

    @property
    def vm(self) -> str:
        return self.result.vm


def _create(ctx: Context, target: Target, make: Callable[[], None]) -> None:
    """Create, tolerating that an earlier attempt that timed out already did: a VM of
    that name that is ours is deleted and made again; anyone else's is an error."""
    provider = ctx.provider
    attempts = ctx.settings.retries + 2
    for attempt in range(attempts):
        try:
            provider.call(f"create {target.vm}", make)
            return
        except VMExists as err:
            info = provider.inspect(target.vm)
            if info is not None and not ctx.owns(info, target.owner.worker or None):
                raise PermanentProviderError(ctx.not_ours(target.vm)) from err
            if attempt == attempts - 1:
                raise
            provider.call(f"delete {target.vm}", lambda: provider.delete(target.vm))


def _ready(ctx: Context, target: Target) -> None:
    target.record(phase=PROVISIONING, engine=ctx.provider.engine_of(target.vm))
    with timed(target.result, "ready"):
        ctx.wait_ready(target.vm)


def _finish(ctx: Context, targets: list[Target], funcs: list[Callable[..., object]], title: str, fp: str) -> None:
    """Run the deploys on the targets that got this far; record each as ready or failed."""
    live = [t for t in targets if t.result.ok]
    if not live:
        return
    for t in live:
        ctx.report(t.result.worker, f"{title} in {t.vm}")
    # lazy: the deploy imports pyinfra, which a command that builds no baseline need not pay for
    from orchestrator.deploys.provision import mark  # noqa: PLC0415

    with timed(live[0].result, "provision"):
        results = ctx.deploy([(t.ident, t.vm) for t in live], [*funcs, mark], title, orch_fingerprint=fp)
    took = live[0].result.seconds.get("provision", 0.0)
    for t in live:
        if t is not live[0]:
            t.result.add("provision", took)
        outcome = results[t.vm]
        t.result.log = outcome.log
        if outcome.ok:
            t.record(phase=READY, fingerprint=fp, error="")
        else:
            error = outcome.error + (f" (log: {outcome.log})" if outcome.log else "")
            t.result.fail(error)
            t.record(phase=FAILED, error=error)
            ctx.report(t.result.worker, f"failed: {error}")


def ensure(ctx: Context, fp: Fingerprint, *, first: list[Target] | None = None) -> tuple[Baseline, bool]:
    """A baseline that is current and intact, rebuilt if it is not (say why). With
    ``first``, VMs that need making anyway are made from the image beside a rebuilt
    baseline; returns (baseline, whether they were)."""
    with ctx.baseline_lock():
        rec = ctx.store.read().baseline
        why = _unusable(ctx, fp, rec)
        if why is None and rec is not None:
            return Baseline(rec.ref, rec.seal), False
        ctx.report(Kind.BASELINE.value, f"building the baseline: {why}")
        return build(ctx, fp, first or []), True


def _unusable(ctx: Context, fp: Fingerprint, rec: BaselineRecord | None) -> str | None:
    if rec is None:
        return "there is none yet"
    if rec.phase != READY or not rec.ref:
        return "the last one was not finished"
    if rec.fingerprint != fp.value:
        return f"{fp.drift(rec.parts)} changed since it was made"
    return ctx.provider.call("verify the baseline", lambda: ctx.provider.verify(Baseline(rec.ref, rec.seal)))


def build(ctx: Context, fp: Fingerprint, first: list[Target]) -> Baseline:
    """Make the baseline (and ``first``) from the image, provision, seal; caller holds
    the baseline lock. Raises when the baseline could not be made."""
    settings = ctx.settings
    base = _baseline_target(ctx, fp)
    everyone = [base, *first]
    for t in first:
        t.owner = ctx.owner(t.owner.kind, worker=t.owner.worker, run=t.owner.run, fingerprint=fp.value)
    ctx.report(Kind.BASELINE.value, f"creating {base.vm} and {len(first)} more from {ctx.image}")
    ctx.provider.map(lambda t: guard(t.result, ctx.report, lambda: _from_image(ctx, t)), everyone)
    _finish(
        ctx,
        everyone,
        [ctx.load(settings.provision), ctx.load(settings.personalize)],
        f"provisioning with {settings.provision}",
        fp.value,
    )
    if not base.result.ok:
        raise DeployError(f"the baseline could not be made: {base.result.error}")
    sealed = _seal(ctx, base)
    ctx.report(Kind.BASELINE.value, f"{base.vm} sealed ({base.result.seconds.get('total', 0):.1f}s)")
    drop_retired(ctx)
    return sealed


def _baseline_target(ctx: Context, fp: Fingerprint) -> Target:
    """The baseline about to be built, recorded as the current one (the one it replaces
    retired)."""
    name = naming.baseline_vm_name(ctx.settings.prefix, ctx.checkout, fp.value)
    with ctx.store.transaction() as data:
        if data.baseline is not None:
            data.retired.append(data.baseline)
        data.baseline = BaselineRecord(name, fp.value, dict(fp.parts), CREATING, created=now_iso())

    def record(**changes: object) -> None:
        ctx.store.update(Kind.BASELINE, name, vm=name, **changes)

    owner = ctx.owner(Kind.BASELINE, fingerprint=fp.value)
    return Target(WorkerResult(Kind.BASELINE.value, name, "created"), owner, Kind.BASELINE.value, record)


def _from_image(ctx: Context, t: Target) -> None:
    with timed(t.result, "create"):
        _create(ctx, t, lambda: ctx.provider.create(t.vm, ctx.image, t.owner))
        ctx.provider.wait_ready(t.vm)
        ctx.connector.prepare(t.vm)
    _ready(ctx, t)


def _seal(ctx: Context, base: Target) -> Baseline:
    provider, name, owner = ctx.provider, base.vm, base.owner
    with timed(base.result, "seal"):
        if tag := provider.seal_name(name, owner):  # recorded before it exists: a sweep meanwhile keeps it
            base.record(seal={"tag": tag})
        sealed = provider.call(f"seal {name}", lambda: provider.seal(name, owner))
    base.record(phase=READY, ref=sealed.ref, seal=sealed.seal)
    return sealed


def worker_target(ctx: Context, result: WorkerResult, fp: Fingerprint) -> Target:
    """A worker's VM about to be made (by ``orch up`` or a reset): a worker made again is
    clean, so its owed reset is cleared with the record that says it is ready."""

    def record(**changes: Any) -> None:
        if changes.get("phase") == READY:
            changes["reset_pending"] = ""
        ctx.store.update(Kind.WORKER, result.worker, **changes)

    return Target(result, ctx.owner(Kind.WORKER, worker=result.worker, fingerprint=fp.value), result.worker, record)


def clone(ctx: Context, fp: Fingerprint, baseline: Baseline, targets: list[Target], *, replace: bool = False) -> None:
    """Make ``targets`` from the baseline (``replace``: in place of VMs of the same name)
    and personalize them. A baseline found changed after its seal is rebuilt once."""
    provider = ctx.provider

    why: list[str] = []

    def make(t: Target) -> None:
        with timed(t.result, "create"):
            if replace:
                provider.call(f"delete {t.vm}", lambda: provider.delete(t.vm))
            try:
                _create(ctx, t, lambda: provider.clone(baseline, t.vm, t.owner))
            except BaselineTainted as err:
                t.tainted = True
                why.append(str(err))
                return
        _ready(ctx, t)

    provider.map(lambda t: guard(t.result, ctx.report, lambda: make(t)), targets)
    tainted = [t for t in targets if t.tainted]
    if tainted:
        with ctx.baseline_lock():
            ctx.report(Kind.BASELINE.value, f"rebuilding the baseline: {why[0]}")
            baseline = build(ctx, fp, [])
        for t in tainted:
            t.tainted = False
        provider.map(lambda t: guard(t.result, ctx.report, lambda: make(t)), tainted)
        for t in tainted:
            if t.tainted:
                t.result.fail(f"the rebuilt baseline is still changed after its seal: {why[-1]}")
    _finish(ctx, targets, [ctx.load(ctx.settings.personalize)], "personalizing", fp.value)


def drop_retired(ctx: Context) -> None:
    """Delete replaced baselines (and unfinished baseline VMs) that nothing needs."""
    data = ctx.store.read()
    current = {data.baseline.vm, data.baseline.ref} - {""} if data.baseline is not None else set()
    kept = []
    for rec in data.retired:
        if {rec.vm, rec.ref} & current:
            continue  # rebuilt under the same name: that is the current one now
        try:
            if rec.vm and rec.vm != rec.ref:
                ctx.provider.call(f"delete {rec.vm}", functools.partial(ctx.provider.delete, rec.vm))
            if rec.ref and not ctx.provider.drop(Baseline(rec.ref, rec.seal)):
                kept.append(rec)
        except OrchError as err:
            log.warning("cannot delete the old baseline %s yet: %s", rec.ref or rec.vm, err)
            kept.append(rec)
    with ctx.store.transaction() as state:
        state.retired = [r for r in state.retired if r in kept or r not in data.retired]
