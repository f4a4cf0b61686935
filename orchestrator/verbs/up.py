"""``orch up``: bring the checkout's workers to what is asked, idempotently.

Each wanted worker is reused (running and answering), started (stopped), or made:
missing, unfinished after a crash, failed last time (retried, and said so), or made from
a baseline that is no longer current (the provision deploy, the image, orch or the
provider settings changed: re-provisioned, and said so). New workers are cloned from the
baseline; when the baseline itself must be (re)built, they are made beside it from the
image and provisioned in the same pyinfra run.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orchestrator.core import baseline as B
from orchestrator.core import spares
from orchestrator.core.keeping import settle
from orchestrator.core.maintainer import maintaining
from orchestrator.core.steps import WorkerResult, guard, timed
from orchestrator.primitives import naming
from orchestrator.primitives.clock import now_iso
from orchestrator.primitives.errors import OrchError, ProviderError, UsageError
from orchestrator.primitives.kinds import Kind
from orchestrator.providers.base import RESTARTING, VMInfo
from orchestrator.state import leases
from orchestrator.state.records import CREATING, FAILED, READY, WorkerRecord
from orchestrator.verbs.down import delete_workers
from orchestrator.verbs.oneoffs import forget_gone_oneoffs

if TYPE_CHECKING:
    from orchestrator.core.context import Context


@dataclass
class Plan:
    worker: str
    action: str  # reuse, start, create, recreate
    why: str = ""


def decide(
    ctx: Context, rec: WorkerRecord | None, info: VMInfo | None, fp: B.Fingerprint, reprovision: bool, busy: Collection[str] = ()
) -> Plan:
    """What to do with one wanted worker; ``busy``: the workers live pytest runs use (a
    reset such a run owes is its own business)."""
    if rec is None:
        return Plan("", "create")
    if info is not None and not ctx.owns(info, rec.worker):
        return Plan(rec.worker, "fail", ctx.not_ours(rec.vm))
    down = ctx.provider.unreachable_engines()
    if rec.engine in down:
        return Plan(
            rec.worker,
            "fail",
            f"its {ctx.provider.engine_word} {rec.engine} does not answer ({down[rec.engine][:160]}): left as it is",
        )
    if rec.phase == FAILED:
        return Plan(rec.worker, "recreate", f"retrying: it failed last time ({rec.error[:120]})")
    if rec.phase != READY:
        return Plan(rec.worker, "recreate", f"unfinished ({rec.phase}) after an earlier `orch up` stopped")
    if info is None:
        return Plan(rec.worker, "recreate", "its VM is missing")
    if rec.reset_pending and rec.worker not in busy:
        return Plan(rec.worker, "recreate", f"it owes a reset ({rec.reset_pending}): its run ended before the reset")
    if reprovision:
        return Plan(rec.worker, "recreate", "re-provisioning (--reprovision)")
    if rec.fingerprint != fp.value:
        baseline = ctx.store.read().baseline
        recorded = baseline.parts if baseline is not None and baseline.fingerprint == rec.fingerprint else {}
        return Plan(rec.worker, "recreate", f"re-provisioning: {fp.drift(recorded)} changed since it was made")
    if info.running or info.state == RESTARTING:  # a machine rebooting: waited for when reused
        return Plan(rec.worker, "reuse")
    if info.state == "stopped":
        return Plan(rec.worker, "start")
    return Plan(rec.worker, "recreate", f"its VM is {info.state}")


def up(
    ctx: Context,
    count: int,
    *,
    prune: bool = False,
    wait: bool = True,
    on_wait: Callable[[], None] | None = None,
    reprovision: bool = False,
    force: bool = False,
) -> list[WorkerResult]:
    forget_gone_oneoffs(ctx)
    wanted = naming.worker_ids(count)
    ctx.load(ctx.settings.provision), ctx.load(ctx.settings.personalize)  # a bad name fails before any work
    ctx.store.ensure_dir()  # a folder orch cannot make: one line naming --inventory-dir
    settle(ctx)  # a keep a dead run left halfway: carried out before its worker is made again
    with ctx.store.command_lock(wait=wait, on_wait=on_wait):
        ctx.provider.check()
        ctx.connector.setup(repair=True)  # a missing SSH key made again (the VMs take it when made ready)
        fp = B.fingerprint(ctx)
        existing = {info.name: info for info in ctx.provider.list_vms()}
        plans = _plan(ctx, wanted, existing, fp, reprovision=reprovision, prune=prune, force=force)
        _record_wanted(ctx, wanted)
        results = {w: WorkerResult(w, ctx.vm_name(w), "reused") for w in wanted}
        ctx.provider.map(lambda w: _keep(ctx, results[w], plans[w], existing.get(ctx.vm_name(w))), wanted)
        todo = [w for w in wanted if results[w].ok and plans[w].action in ("create", "recreate")]
        extra = _make(ctx, fp, [results[w] for w in todo], {w: existing.get(ctx.vm_name(w)) for w in todo})
        if prune:
            extra += delete_workers(ctx, [w for w in ctx.store.read().workers if w not in wanted])
        extra += _spares(ctx, fp)
        ctx.write_inventories()
    return [results[w] for w in wanted] + extra


def _plan(
    ctx: Context,
    wanted: list[str],
    existing: dict[str, VMInfo],
    fp: B.Fingerprint,
    *,
    reprovision: bool,
    prune: bool,
    force: bool,
) -> dict[str, Plan]:
    """What to do with each wanted worker; refused when it would break a live pytest run."""
    data = ctx.store.read()
    _consistent(ctx, data)
    busy = leases.scan(ctx.settings.inventory_dir).busy(exclude=ctx.own_run)
    plans = {w: decide(ctx, data.workers.get(w), existing.get(ctx.vm_name(w)), fp, reprovision, busy) for w in wanted}
    breaking = [  # a worker a live run uses may be in its hands (its test, its reset), whatever its phase
        w
        for w, p in plans.items()
        if p.action == "recreate" and (w in busy or (data.workers[w].phase == READY and existing.get(data.workers[w].vm)))
    ]
    pruned = [w for w in data.workers if w not in wanted] if prune else []
    if breaking or pruned:
        ctx.refuse_live(f"re-making {', '.join(breaking)}" if breaking else "--prune", breaking + pruned, force)
    return plans


def _record_wanted(ctx: Context, wanted: list[str]) -> None:
    """The checkout's provider, image and prefix, and a record for each new worker."""
    with ctx.store.transaction() as state:
        state.provider, state.image, state.prefix = ctx.provider.name, ctx.image, ctx.settings.prefix
        for worker in wanted:
            if worker not in state.workers:
                state.workers[worker] = WorkerRecord(worker, ctx.vm_name(worker), CREATING, now_iso())


def _consistent(ctx: Context, data: Any) -> None:
    if data.workers and data.provider and data.provider != ctx.provider.name:
        raise UsageError(
            f"this checkout's workers run on {data.provider}, not {ctx.provider.name}: "
            f"run `orch down` first, or pass --provider {data.provider}"
        )
    if data.workers and data.image and data.image != ctx.image:
        raise UsageError(
            f"this checkout's workers were made from image {data.image}, not {ctx.image} "
            "(--image / ORCH_IMAGE / [tool.orch] image): run `orch down` first to switch images"
        )


def _keep(ctx: Context, result: WorkerResult, plan: Plan, info: VMInfo | None) -> None:
    """Reuse or start what can be kept; say why the rest is made again."""
    provider, vm = ctx.provider, result.vm
    if plan.action == "fail":
        result.fail(plan.why)
        ctx.report(result.worker, f"failed: {plan.why}")
        return
    if plan.action in ("create", "recreate"):
        result.action = "created" if plan.action == "create" else "recreated"
        if plan.why:
            ctx.report(result.worker, f"{vm}: {plan.why}")
        return
    if plan.action == "reuse" and info is not None and info.running and not provider.machine:
        # warm: recorded ready from this baseline and seen running by the list just made: no
        # probe (a test's first use starts one that stopped since, asks the connector, finds
        # one gone); a machine is still waited for (systemd may be booting after a restart)
        ctx.report(result.worker, f"{vm} is up, {result.action}")
        return
    try:
        if plan.action == "start":
            ctx.report(result.worker, f"starting stopped {vm}")
            with timed(result, "start"):
                provider.call(f"start {vm}", lambda: provider.start(vm))
            result.action = "started"
        with timed(result, "ready"):
            ctx.wait_ready(vm)
        ctx.report(result.worker, f"{vm} is up, {result.action}")
    except ProviderError as err:
        result.action = "recreated"
        ctx.report(result.worker, f"{vm} does not answer ({err}); making it again")
        ctx.store.update(Kind.WORKER, result.worker, phase=CREATING)
    except OrchError as err:
        result.fail(str(err))


def _make(ctx: Context, fp: B.Fingerprint, results: list[WorkerResult], infos: dict[str, VMInfo | None]) -> list[WorkerResult]:
    """Make the workers of ``results`` (and the baseline if it must be); extra rows to
    report (a baseline that failed when no worker needed it)."""
    if not results:
        return _baseline_only(ctx, fp)
    provider = ctx.provider

    def clear(result: WorkerResult) -> None:
        if infos.get(result.worker) is not None:
            provider.call(f"delete {result.vm}", lambda: provider.delete(result.vm))
        ctx.store.update(Kind.WORKER, result.worker, phase=CREATING, error="")
        ctx.report(result.worker, f"making {result.vm}")

    provider.map(lambda r: guard(r, ctx.report, lambda: clear(r)), results)
    targets = [B.worker_target(ctx, r, fp) for r in results if r.ok]
    try:
        baseline, made = B.ensure(ctx, fp, first=targets)
    except OrchError as err:
        for t in targets:
            if t.result.ok:
                t.result.fail(str(err))
        return []
    if not made:
        B.clone(ctx, fp, baseline, targets)
    for t in targets:
        if t.result.ok:
            ctx.report(t.result.worker, f"{t.vm} ready ({t.result.seconds.get('total', 0):.1f}s)")
    return []


def _spares(ctx: Context, fp: B.Fingerprint) -> list[WorkerResult]:
    """The pool and the standbys, made now so the run that follows finds them ready."""
    data = ctx.store.read()
    if not (
        ctx.settings.pool or ctx.settings.standby or data.standbys or data.trash or any(o.pool for o in data.oneoffs.values())
    ):
        return []
    with maintaining(ctx):
        try:
            baseline, _ = B.ensure(ctx, fp)
        except OrchError:
            return []  # already reported by the workers that needed it
        made = spares.fill(ctx, fp, baseline)
    for r in made:
        if r.ok:
            ctx.report(r.worker, f"{r.action} {r.vm} ready")
    return made


def _baseline_only(ctx: Context, fp: B.Fingerprint) -> list[WorkerResult]:
    """Nothing to make: still leave a usable baseline behind (resets and one-offs need it)."""
    try:
        B.ensure(ctx, fp)
    except OrchError as err:
        ctx.report(Kind.BASELINE.value, f"failed: {err}")
        row = WorkerResult(Kind.BASELINE.value, "", "failed")
        row.fail(str(err))
        return [row]
    return []
