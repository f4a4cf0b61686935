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
from orchestrator.core.steps import WorkerResult, guard, timed
from orchestrator.primitives import naming
from orchestrator.primitives.clock import now_iso
from orchestrator.primitives.errors import OrchError, ProviderError, UsageError
from orchestrator.providers.base import VMInfo
from orchestrator.state import leases
from orchestrator.state.records import CREATING, FAILED, READY, WorkerRecord
from orchestrator.verbs.reset import worker_target

if TYPE_CHECKING:
    from orchestrator.core.context import Orch


@dataclass
class Plan:
    worker: str
    action: str  # reuse, start, create, recreate
    why: str = ""


def decide(
    orch: Orch, rec: WorkerRecord | None, info: VMInfo | None, fp: B.Fingerprint, reprovision: bool, busy: Collection[str] = ()
) -> Plan:
    """What to do with one wanted worker; ``busy``: the workers live pytest runs use (a
    reset such a run owes is its own business)."""
    if rec is None:
        return Plan("", "create")
    if info is not None and not orch.owns(info, rec.worker):
        return Plan(rec.worker, "fail", orch.not_ours(rec.vm))
    down = orch.provider.unreachable_engines()
    if rec.engine in down:
        return Plan(rec.worker, "fail", f"its engine {rec.engine} does not answer ({down[rec.engine][:160]}): left as it is")
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
        baseline = orch.store.read().baseline
        recorded = baseline.parts if baseline is not None and baseline.fingerprint == rec.fingerprint else {}
        return Plan(rec.worker, "recreate", f"re-provisioning: {fp.drift(recorded)} changed since it was made")
    if info.running:
        return Plan(rec.worker, "reuse")
    if info.state == "stopped":
        return Plan(rec.worker, "start")
    return Plan(rec.worker, "recreate", f"its VM is {info.state}")


def up(
    orch: Orch,
    count: int,
    *,
    prune: bool = False,
    wait: bool = True,
    on_wait: Callable[[], None] | None = None,
    reprovision: bool = False,
    force: bool = False,
) -> list[WorkerResult]:
    wanted = naming.worker_ids(count)
    orch.load(orch.settings.provision), orch.load(orch.settings.personalize)  # a bad name fails before any work
    orch.store.ensure_dir()
    with orch.store.command_lock(wait=wait, on_wait=on_wait):
        orch.provider.check()
        orch.connector.setup(repair=True)  # a missing SSH key made again (the VMs take it when made ready)
        fp = orch.fingerprint()
        existing = {info.name: info for info in orch.provider.list_vms()}
        data = orch.store.read()
        _consistent(orch, data)
        runs = leases.scan(orch.settings.inventory_dir)
        busy = runs.busy(exclude=orch.own_run)
        plans = {w: decide(orch, data.workers.get(w), existing.get(orch.vm_name(w)), fp, reprovision, busy) for w in wanted}
        breaking = [  # a worker a live run uses may be in its hands (its test, its reset), whatever its phase
            w
            for w, p in plans.items()
            if p.action == "recreate" and (w in busy or (data.workers[w].phase == READY and existing.get(data.workers[w].vm)))
        ]
        pruned = [w for w in data.workers if w not in wanted] if prune else []
        if breaking or pruned:
            orch.refuse_live(f"re-making {', '.join(breaking)}" if breaking else "--prune", breaking + pruned, force)
        with orch.store.transaction() as state:
            state.provider, state.image, state.prefix = orch.provider.name, orch.image, orch.settings.prefix
            for worker in wanted:
                if worker not in state.workers:
                    state.workers[worker] = WorkerRecord(worker, orch.vm_name(worker), CREATING, now_iso())
        results = {w: WorkerResult(w, orch.vm_name(w), "reused") for w in wanted}
        orch.provider.map(lambda w: _keep(orch, results[w], plans[w], existing.get(orch.vm_name(w))), wanted)
        todo = [w for w in wanted if results[w].ok and plans[w].action in ("create", "recreate")]
        extra = _make(orch, fp, [results[w] for w in todo], {w: existing.get(orch.vm_name(w)) for w in todo})
        if prune:
            from orchestrator.verbs.down import delete_workers

            extra += delete_workers(orch, [w for w in orch.store.read().workers if w not in wanted])
        extra += _spares(orch, fp)
        orch.write_inventories()
    return [results[w] for w in wanted] + extra


def _consistent(orch: Orch, data: Any) -> None:
    if data.workers and data.provider and data.provider != orch.provider.name:
        raise UsageError(
            f"this checkout's workers run on {data.provider}, not {orch.provider.name}: "
            f"run `orch down` first, or pass --provider {data.provider}"
        )
    if data.workers and data.image and data.image != orch.image:
        raise UsageError(
            f"this checkout's workers were made from image {data.image}, not {orch.image} "
            "(--image / ORCH_IMAGE / [tool.orch] image): run `orch down` first to switch images"
        )


def _keep(orch: Orch, result: WorkerResult, plan: Plan, info: VMInfo | None) -> None:
    """Reuse or start what can be kept; say why the rest is made again."""
    provider, vm = orch.provider, result.vm
    if plan.action == "fail":
        result.fail(plan.why)
        orch.report(result.worker, f"failed: {plan.why}")
        return
    if plan.action in ("create", "recreate"):
        result.action = "created" if plan.action == "create" else "recreated"
        if plan.why:
            orch.report(result.worker, f"{vm}: {plan.why}")
        return
    try:
        if plan.action == "start":
            orch.report(result.worker, f"starting stopped {vm}")
            with timed(result, "start"):
                provider.call(f"start {vm}", lambda: provider.start(vm))
            result.action = "started"
        with timed(result, "ready"):
            orch.wait_ready(vm)
        orch.report(result.worker, f"{vm} is up, {result.action}")
    except ProviderError as err:
        result.action = "recreated"
        orch.report(result.worker, f"{vm} does not answer ({err}); making it again")
        orch.store.update_worker(result.worker, phase=CREATING)
    except OrchError as err:
        result.fail(str(err))


def _make(orch: Orch, fp: B.Fingerprint, results: list[WorkerResult], infos: dict[str, VMInfo | None]) -> list[WorkerResult]:
    """Make the workers of ``results`` (and the baseline if it must be); extra rows to
    report (a baseline that failed when no worker needed it)."""
    if not results:
        return _baseline_only(orch, fp)
    provider = orch.provider

    def clear(result: WorkerResult) -> None:
        if infos.get(result.worker) is not None:
            provider.call(f"delete {result.vm}", lambda: provider.delete(result.vm))
        orch.store.update_worker(result.worker, phase=CREATING, error="")
        orch.report(result.worker, f"making {result.vm}")

    provider.map(lambda r: guard(r, orch.report, lambda: clear(r)), results)
    targets = [worker_target(orch, r, fp) for r in results if r.ok]
    try:
        baseline, made = B.ensure(orch, fp, first=targets)
    except OrchError as err:
        for t in targets:
            if t.result.ok:
                t.result.fail(str(err))
        return []
    if not made:
        B.clone(orch, fp, baseline, targets)
    for t in targets:
        if t.result.ok:
            orch.report(t.result.worker, f"{t.vm} ready ({t.result.seconds.get('total', 0):.1f}s)")
    return []


def _spares(orch: Orch, fp: B.Fingerprint) -> list[WorkerResult]:
    """The pool and the standbys, made now so the run that follows finds them ready."""
    from orchestrator.core import spares

    data = orch.store.read()
    if not (
        orch.settings.pool or orch.settings.standby or data.standbys or data.trash or any(o.pool for o in data.oneoffs.values())
    ):
        return []
    with spares.maintaining(orch):
        try:
            baseline, _ = B.ensure(orch, fp)
        except OrchError:
            return []  # already reported by the workers that needed it
        made = spares.fill(orch, fp, baseline)
    for r in made:
        if r.ok:
            orch.report(r.worker, f"{r.action} {r.vm} ready")
    return made


def _baseline_only(orch: Orch, fp: B.Fingerprint) -> list[WorkerResult]:
    """Nothing to make: still leave a usable baseline behind (resets and one-offs need it)."""
    try:
        B.ensure(orch, fp)
    except OrchError as err:
        orch.report("baseline", f"failed: {err}")
        row = WorkerResult("baseline", "", "failed")
        row.fail(str(err))
        return [row]
    return []
