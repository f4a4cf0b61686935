"""The core that both front ends (the CLI and the pytest plugin) call: bring workers up,
report their status, delete them.

Order of every change: record in the state, then act on the backend, then record the
outcome. A crash between any two steps leaves a state the next ``orch up`` repairs:
a record in phase "creating" or "provisioning" is never trusted — its VM, if any, is
deleted and made again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, TypeVar

from . import inventory, labels as L, naming, retry
from .concurrency import parallel_map, sleeper
from .config import Settings
from .errors import DeployError, OrchError, PermanentProviderError, ProviderError, UsageError
from .providers import Provider, VMInfo, get_provider
from .runner import PyinfraSession, load_callable
from .state import CREATING, PROVISIONING, READY, OneoffRecord, StateData, StateStore, WorkerRecord

log = logging.getLogger(__name__)
T = TypeVar("T")

Reporter = Callable[[str, str], None]


@dataclass
class WorkerResult:
    worker: str
    vm: str
    action: str  # reused, started, created, recreated, deleted, failed
    seconds: dict[str, float] = field(default_factory=dict)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


@dataclass
class WorkerStatus:
    worker: str
    vm: str
    state: str  # running, stopped, missing, or the backend's word
    phase: str
    age_seconds: float | None
    inventory: str


def _age(created: str) -> float | None:
    try:
        then = datetime.strptime(created[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    except ValueError:
        return None
    return max(0.0, (datetime.now(timezone.utc) - then).total_seconds())


class Orch:
    """One checkout's workers on one provider."""

    def __init__(self, settings: Settings, provider: Provider | None = None, report: Reporter | None = None) -> None:
        self.settings = settings
        self.checkout = settings.checkout
        self.provider = provider or get_provider(settings)
        self.store = StateStore(settings.inventory_dir, self.checkout)
        self.report: Reporter = report or (lambda worker, message: log.info("%s: %s", worker, message))

    # -- helpers ---------------------------------------------------------------------

    def vm_name(self, worker: str) -> str:
        return naming.worker_vm_name(self.settings.prefix, self.checkout, worker)

    def worker_labels(self, worker: str) -> dict[str, str]:
        return L.worker_labels(self.checkout, worker, str(self.settings.inventory_dir))

    def inventory_host(self, rec: WorkerRecord) -> inventory.InventoryHost:
        name, data = self.provider.host(rec.vm)
        data = {
            **data,
            "orch_worker_id": rec.worker,
            "orch_vm": rec.vm,
            "orch_provider": self.provider.name,
            "orch_checkout": self.checkout,
        }
        return inventory.InventoryHost(name, data)

    def _retry(self, what: str, fn: Callable[[], T]) -> T:
        return retry.call(
            fn,
            what=what,
            attempts=self.settings.retries + 1,
            health_check=self.provider.check,
            sleep=sleeper(self.provider.cooperative),
        )

    def _pool(self, items: list, fn: Callable) -> list:
        return parallel_map(fn, items, self.settings.parallel, cooperative=self.provider.cooperative)

    def _owned(self, info: VMInfo | None, worker: str | None = None) -> bool:
        """Is this VM orch's, of this checkout? (labels where the backend has them)"""
        if info is None:
            return False
        if not self.provider.has_labels:
            # no labels (OrbStack): the name carries orch's prefix and this checkout's id
            parsed = naming.parse_vm_name(self.settings.prefix, info.name)
            return parsed is not None and parsed[0] == self.checkout and (worker is None or parsed[1] == worker)
        ok = L.is_orchs(info.labels) and info.labels.get(L.CHECKOUT) == self.checkout
        return ok and (worker is None or info.labels.get(L.WORKER) == worker)

    def _run_deploy(self, records: list[WorkerRecord], deploy: Callable) -> dict[str, str]:
        """Run a deploy on these VMs at once (pyinfra runs the hosts in parallel);
        return {worker id: error} for those it failed on."""
        hosts = [self.inventory_host(r) for r in records]
        try:
            with PyinfraSession([(h.name, h.data) for h in hosts]) as session:
                failed = session.deploy(deploy)
        except OrchError as err:
            failed = {h.name: str(err) for h in hosts}
        return {h.worker: failed[h.name] for h in hosts if h.name in failed}

    def _deploy_one(self, rec: WorkerRecord, deploy: Callable) -> None:
        failed = self._run_deploy([rec], deploy)
        if failed:
            name = getattr(deploy, "deploy_name", getattr(deploy, "__name__", "deploy"))
            raise DeployError(f"deploy {name!r} failed on {rec.vm}: {failed[rec.worker]}")

    @staticmethod
    def _records(workers: Iterable[str], data: StateData) -> list[WorkerRecord]:
        """The records of the named workers (all when none are named); a malformed id or
        one this checkout does not have is a usage error that names the fix."""
        asked = [naming.validate_worker_id(w) for w in workers]
        unknown = [w for w in asked if w not in data.workers]
        if unknown:
            have = " ".join(w.worker for w in data.sorted_workers()) or "none"
            raise UsageError(f"{', '.join(unknown)}: not a worker of this checkout (workers: {have}); see `orch status`")
        return [data.workers[w] for w in asked] if asked else data.sorted_workers()

    def write_inventories(self, data: StateData | None = None) -> list[Path]:
        data = data or self.store.read()
        hosts = [self.inventory_host(r) for r in data.sorted_workers() if r.phase == READY]
        return inventory.write_all(self.settings.inventory_dir, hosts, self.checkout)

    # -- up --------------------------------------------------------------------------

    def up(self, count: int, *, prune: bool = False, wait: bool = True, on_wait: Callable[[], None] | None = None) -> list[WorkerResult]:
        wanted = naming.worker_ids(count)
        image = self.settings.image
        if not image:
            raise UsageError("no image to create workers from: pass --image, set ORCH_IMAGE or [tool.orch] image")
        provision = load_callable(self.settings.provision)
        self.store.ensure_dir()
        with self.store.command_lock(wait=wait, on_wait=on_wait):
            self.provider.check()
            self.provider.ensure_image(image)
            existing = {info.name: info for info in self.provider.list()}
            with self.store.transaction() as data:
                if data.workers and data.provider and data.provider != self.provider.name:
                    raise UsageError(
                        f"this checkout's workers run on {data.provider}, not {self.provider.name}: "
                        f"run `orch down` first, or pass --provider {data.provider}"
                    )
                if data.workers and data.image and data.image != image:
                    raise UsageError(
                        f"this checkout's workers were made from image {data.image}, not {image} "
                        "(--image / ORCH_IMAGE / [tool.orch] image): run `orch down` first to switch images"
                    )
                data.provider, data.image, data.prefix = self.provider.name, image, self.settings.prefix
            if self.provider.uses_golden and any(self._needs_create(data.workers.get(w), existing) for w in wanted):
                self._ensure_golden(image, provision, existing.get(naming.golden_vm_name(self.settings.prefix, self.checkout)))
            with self.store.transaction() as data:
                for worker in wanted:
                    if worker not in data.workers:
                        data.workers[worker] = WorkerRecord(worker, self.vm_name(worker), CREATING, L.now_iso())
                records = [data.workers[w] for w in wanted]
            results = self._pool(records, lambda rec: self._bring_up(rec, image, existing.get(rec.vm)))
            fresh = [r for r in results if r.ok and r.action in ("created", "recreated")]
            self._provision(fresh, provision)
            self._pool(fresh, self._keep_baseline)
            if prune:
                extra = [w for w in self.store.read().workers if w not in wanted]
                results += self._delete_workers(extra)
            self.write_inventories()
        return results

    def _bring_up(self, rec: WorkerRecord, image: str, info: VMInfo | None) -> WorkerResult:
        result = WorkerResult(rec.worker, rec.vm, "reused")
        start = time.monotonic()
        try:
            if info is not None and not self._owned(info, rec.worker):
                raise PermanentProviderError(
                    f"a VM named {rec.vm} exists but is not orch's (no orch labels): remove or rename it"
                )
            if info is not None and rec.phase == READY and info.running:
                try:
                    result.seconds["ready"] = self.provider.wait_ready(rec.vm)
                    self.report(rec.worker, f"{rec.vm} is up, reused")
                    return result
                except ProviderError as err:
                    self.report(rec.worker, f"{rec.vm} does not answer ({err}); recreating")
            elif info is not None and rec.phase == READY and info.state == "stopped":
                self.report(rec.worker, f"starting stopped {rec.vm}")
                self._retry(f"start {rec.vm}", lambda: self.provider.start(rec.vm))
                result.action = "started"
                result.seconds["ready"] = self.provider.wait_ready(rec.vm)
                self.report(rec.worker, f"{rec.vm} started and ready")
                return result
            result.action = "created" if info is None and rec.phase == CREATING else "recreated"
            if info is not None:
                self.report(rec.worker, f"deleting unfinished or broken {rec.vm} ({rec.phase}, {info.state})")
                self._retry(f"delete {rec.vm}", lambda: self.provider.delete(rec.vm))
            if rec.phase != CREATING:
                self.store.update_worker(rec.worker, phase=CREATING)
            self.report(rec.worker, f"creating {rec.vm}")
            t = time.monotonic()
            self._retry(f"create {rec.vm}", lambda: self._create(rec, image))
            result.seconds["create"] = time.monotonic() - t
            self.store.update_worker(rec.worker, phase=PROVISIONING, created=L.now_iso())
            result.seconds["ready"] = self.provider.wait_ready(rec.vm)
            self.report(rec.worker, f"{rec.vm} ready in {result.seconds['create'] + result.seconds['ready']:.1f}s")
        except OrchError as err:
            result.action, result.error = "failed", str(err)
            self.report(rec.worker, f"failed: {err}")
        finally:
            result.seconds["total"] = time.monotonic() - start
        return result

    @staticmethod
    def _needs_create(rec: WorkerRecord | None, existing: dict[str, VMInfo]) -> bool:
        if rec is None or rec.phase != READY or rec.vm not in existing:
            return True
        return existing[rec.vm].state not in ("running", "stopped")

    def _ensure_golden(self, image: str, provision: Callable, info: VMInfo | None) -> None:
        """Create and provision the checkout's golden machine, which workers are cloned
        from; recorded in the state first, and trusted only once provisioned."""
        name = naming.golden_vm_name(self.settings.prefix, self.checkout)
        data = self.store.read()
        if data.golden == name and data.golden_ready and info is not None:
            return
        with self.store.transaction() as state:
            state.golden, state.golden_ready = name, False
        t = time.monotonic()
        if info is not None:
            self.report("golden", f"deleting unfinished golden machine {name}")
            self._retry(f"delete {name}", lambda: self.provider.delete(name))
        self.report("golden", f"creating golden machine {name} from {image}")
        try:
            self._retry(f"create {name}", lambda: self._create_golden(name, image))
        except PermanentProviderError as err:
            raise PermanentProviderError(
                f"cannot create {name} from image {image!r} ({err}): name another with --image / ORCH_IMAGE"
            ) from err
        self.provider.wait_ready(name)
        self.report("golden", f"provisioning {name} with {self.settings.provision}")
        self._deploy_one(WorkerRecord(naming.GOLDEN, name), provision)
        self._retry(f"stop {name}", lambda: self.provider.stop(name))
        with self.store.transaction() as state:
            state.golden_ready = True
        self.report("golden", f"{name} ready to clone ({time.monotonic() - t:.1f}s)")

    def _create_golden(self, name: str, image: str) -> None:
        try:
            self.provider.create_golden(name, image)
        except PermanentProviderError:
            info = self.provider.inspect(name)
            if info is None or not self._owned(info):
                raise
            self.provider.delete(name)  # a create that timed out but happened
            self.provider.create_golden(name, image)

    def _create(self, rec: WorkerRecord, image: str) -> None:
        """Create, tolerating that an earlier attempt (timed out, say) already did."""
        try:
            self.provider.create(rec.vm, image, self.worker_labels(rec.worker))
        except PermanentProviderError as err:
            info = self.provider.inspect(rec.vm)
            if info is None:
                raise
            if not self._owned(info, rec.worker):
                raise PermanentProviderError(
                    f"a VM named {rec.vm} exists but is not orch's (no orch labels): remove or rename it"
                ) from err
            # Our own VM from an attempt that timed out: delete it and try again.
            self.provider.delete(rec.vm)
            self.provider.create(rec.vm, image, self.worker_labels(rec.worker))

    def _provision(self, results: list[WorkerResult], provision: Callable) -> None:
        if not results:
            return
        t = time.monotonic()
        data = self.store.read()
        for r in results:
            self.report(r.worker, f"provisioning with {self.settings.provision}")
        failed = self._run_deploy([data.workers[r.worker] for r in results], provision)
        took = time.monotonic() - t
        for r in results:
            r.seconds["provision"] = took
            r.seconds["total"] += took
            if r.worker in failed:
                r.action, r.error = "failed", f"provision deploy failed: {failed[r.worker]}"
                self.report(r.worker, r.error)

    def _keep_baseline(self, result: WorkerResult) -> None:
        if not result.ok:
            return
        t = time.monotonic()
        try:
            baseline = self._retry(f"snapshot {result.vm}", lambda: self.provider.snapshot(result.vm, result.worker))
        except OrchError as err:
            result.action, result.error = "failed", f"could not keep a baseline: {err}"
            self.report(result.worker, result.error)
            return
        self.store.update_worker(result.worker, phase=READY, baseline=baseline)
        result.seconds["baseline"] = time.monotonic() - t
        result.seconds["total"] += result.seconds["baseline"]
        self.report(result.worker, f"{result.vm} provisioned ({result.seconds['total']:.1f}s)")

    # -- status ----------------------------------------------------------------------

    def status(self) -> list[WorkerStatus]:
        data = self.store.read()
        if not data.workers:
            return []
        self.provider.check()
        infos = {i.name: i for i in self.provider.list()}
        rows = []
        for rec in data.sorted_workers():
            info = infos.get(rec.vm)
            state = info.state if info is not None and self._owned(info, rec.worker) else "missing"
            created = (info.labels.get(L.CREATED) if info is not None else "") or rec.created
            path = inventory.worker_path(self.settings.inventory_dir, rec.worker)
            rows.append(
                WorkerStatus(rec.worker, rec.vm, state, rec.phase, _age(created) if info else None, str(path) if path.exists() else "")
            )
        return rows

    # -- reset ---------------------------------------------------------------------

    def reset(
        self,
        workers: Iterable[str] = (),
        *,
        soft: bool = False,
        lock: bool = True,
        wait: bool = True,
        on_wait: Callable[[], None] | None = None,
    ) -> list[WorkerResult]:
        """Bring workers back to their baseline (all when none named).

        Hard (default): the VM is recreated from its baseline snapshot under the same name,
        labels and inventory. Soft: the reset deploy runs inside the VM. Both end with a
        readiness check. ``lock=False`` is for the pytest plugin, which resets only its own
        worker while other workers' tests run; the CLI takes the command lock.
        """
        records = self._records(workers, self.store.read())
        unready = [r.worker for r in records if r.phase != READY]
        if unready:
            raise UsageError(f"{', '.join(unready)} not provisioned yet: run `orch up` first")
        deploy = load_callable(self.settings.reset) if soft else None
        guard = self.store.command_lock(wait=wait, on_wait=on_wait) if lock else contextlib.nullcontext()
        with guard:
            self.provider.check()
            if soft:
                return self._soft_reset(records, deploy)
            return self._pool(records, self._hard_reset)

    def _hard_reset(self, rec: WorkerRecord) -> WorkerResult:
        result = WorkerResult(rec.worker, rec.vm, "reset")
        t = time.monotonic()
        try:
            if not rec.baseline:
                raise UsageError(f"{rec.worker} has no baseline on {self.provider.name}: use `orch reset --soft`")
            info = self.provider.inspect(rec.vm)
            if info is not None and not self._owned(info, rec.worker):
                raise PermanentProviderError(f"a VM named {rec.vm} exists but is not orch's: remove or rename it")
            self.report(rec.worker, f"restoring {rec.vm} from its baseline")
            self._retry(f"restore {rec.vm}", lambda: self.provider.restore(rec.vm, rec.baseline, self.worker_labels(rec.worker)))
            result.seconds["restore"] = time.monotonic() - t
            result.seconds["ready"] = self.provider.wait_ready(rec.vm)
            if self.provider.uses_golden:
                # a clone of the golden machine: give it its own worker id back
                p = time.monotonic()
                self._deploy_one(rec, load_callable(self.settings.provision))
                result.seconds["provision"] = time.monotonic() - p
            self.report(rec.worker, f"{rec.vm} back at its baseline")
        except OrchError as err:
            result.action, result.error = "failed", str(err)
            self.report(rec.worker, f"reset failed: {err}")
        result.seconds["total"] = time.monotonic() - t
        return result

    def _soft_reset(self, records: list[WorkerRecord], deploy: Callable) -> list[WorkerResult]:
        t = time.monotonic()
        for r in records:
            self.report(r.worker, f"running {self.settings.reset} in {r.vm}")
        failed = self._run_deploy(records, deploy)
        results = []
        for r in records:
            result = WorkerResult(r.worker, r.vm, "soft-reset", {"restore": time.monotonic() - t})
            if r.worker in failed:
                result.action, result.error = "failed", f"reset deploy failed: {failed[r.worker]}"
            else:
                try:
                    result.seconds["ready"] = self.provider.wait_ready(r.vm)
                except OrchError as err:
                    result.action, result.error = "failed", str(err)
            result.seconds["total"] = time.monotonic() - t
            self.report(r.worker, result.error or f"{r.vm} soft-reset")
            results.append(result)
        return results

    # -- one-off VMs -------------------------------------------------------------------

    def create_oneoff(self, run: str) -> inventory.InventoryHost:
        """A fresh VM for a lifecycle test: recorded in the state first, labelled with the
        run that owns it (sweep deletes it once that run is gone), provisioned like a worker."""
        data = self.store.read()
        image = data.image or self.settings.image
        if not image:
            raise UsageError("no image for a fresh VM: run `orch up` first or set [tool.orch] image")
        if self.provider.uses_golden and not data.golden_ready:
            raise UsageError(f"fresh VMs on {self.provider.name} are cloned from the golden machine: run `orch up` first")
        name = naming.oneoff_vm_name(self.settings.prefix, self.checkout)
        with self.store.transaction() as state:
            state.oneoffs[name] = OneoffRecord(name, run, L.now_iso(), os.getpid())
        try:
            labels = L.oneoff_labels(self.checkout, run, str(self.settings.inventory_dir))
            self._retry(f"create {name}", lambda: self.provider.create(name, image, labels))
            self.provider.wait_ready(name)
            record = WorkerRecord("oneoff", name)
            self._deploy_one(record, load_callable(self.settings.provision))
            host = self.inventory_host(record)
        except BaseException:
            with contextlib.suppress(OrchError):
                self.delete_oneoff(name)
            raise
        return host

    def delete_oneoff(self, name: str) -> None:
        self._retry(f"delete {name}", lambda: self.provider.delete(name))
        with self.store.transaction() as state:
            state.oneoffs.pop(name, None)

    # -- repair --------------------------------------------------------------------

    def repair(self, *, wait: bool = True, on_wait: Callable[[], None] | None = None) -> StateData:
        """Rebuild the state from the backend: every VM labelled (or, without labels, named)
        as this checkout's. The damaged file is kept beside it as ``state.json.damaged``.

        A worker VM whose baseline exists is taken as ready; any other is recorded as
        unfinished, so the next ``orch up`` recreates it.
        """
        with self.store.command_lock(wait=wait, on_wait=on_wait):
            self.provider.check()
            mine = [i for i in self.provider.list() if self._owned(i)]
            if self.store.path.exists():
                try:
                    self.store.read()
                except OrchError:
                    self.store.path.replace(self.store.path.with_name("state.json.damaged"))
            with self.store.transaction(repair=True) as data:
                data.workers.clear()
                data.provider, data.prefix = self.provider.name, self.settings.prefix
                for info in mine:
                    parsed = naming.parse_vm_name(self.settings.prefix, info.name)
                    if parsed is None or parsed[0] != self.checkout:
                        continue
                    worker = info.labels.get(L.WORKER) or parsed[1]
                    if worker == naming.GOLDEN:
                        # stopped only after provisioning finished; running means unfinished
                        data.golden, data.golden_ready = info.name, info.state == "stopped"
                    elif worker.startswith("gw"):
                        baseline = self.provider.find_baseline(worker)
                        phase = READY if baseline else PROVISIONING
                        created = info.labels.get(L.CREATED, info.created)
                        data.workers[worker] = WorkerRecord(worker, info.name, phase, created, baseline)
                        data.image = data.image or self.settings.image or info.image
                        self.report(worker, f"found {info.name} ({info.state}), recorded as {phase}")
            self.write_inventories()
            return self.store.read()

    # -- down ------------------------------------------------------------------------

    def down(self, workers: Iterable[str] = (), *, wait: bool = True, on_wait: Callable[[], None] | None = None) -> list[WorkerResult]:
        asked = [naming.validate_worker_id(w) for w in workers]
        with self.store.command_lock(wait=wait, on_wait=on_wait):
            targets = [r.worker for r in self._records(asked, self.store.read())]
            if targets:
                self.provider.check()
            results = self._delete_workers(targets)
            self._drop_golden_if_unused()
            self.write_inventories()
        return results

    def _drop_golden_if_unused(self) -> None:
        data = self.store.read()
        if data.workers or data.oneoffs or not data.golden:
            return
        golden = data.golden
        self._retry(f"delete {golden}", lambda: self.provider.delete(golden))
        with self.store.transaction() as state:
            state.golden, state.golden_ready = "", False
        self.report("golden", f"{golden} deleted")

    def _delete_workers(self, workers: list[str]) -> list[WorkerResult]:
        data = self.store.read()
        records = [data.workers[w] for w in workers if w in data.workers]

        def delete(rec: WorkerRecord) -> WorkerResult:
            result = WorkerResult(rec.worker, rec.vm, "deleted")
            t = time.monotonic()
            try:
                info = self.provider.inspect(rec.vm)
                if info is not None and not self._owned(info, rec.worker):
                    self.report(rec.worker, f"{rec.vm} is not orch's (no orch labels): left alone")
                    result.action = "forgotten"
                elif info is not None:
                    self._retry(f"delete {rec.vm}", lambda: self.provider.delete(rec.vm))
                self.provider.forget_baseline(rec.baseline)
                with self.store.transaction() as state:
                    state.workers.pop(rec.worker, None)
                self.report(rec.worker, f"{rec.vm} deleted")
            except OrchError as err:
                result.action, result.error = "failed", str(err)
                self.report(rec.worker, f"delete failed: {err}")
            result.seconds["total"] = time.monotonic() - t
            return result

        return self._pool(records, delete)
