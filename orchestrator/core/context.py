"""One checkout's context, at the bottom of the core.

:class:`Context` is one checkout's view: its settings, its provider, its state, its
connector and deployer, how progress is reported and spares are refilled, and the
helpers every verb uses. It knows no verb: the verbs (:mod:`orchestrator.verbs`) are
functions of a ``Context``, which the front ends (the CLI, the pytest plugin) call.

Order of every change: record in the state, then act on the backend, then record the
outcome. A crash between any two steps leaves a state the next command repairs: a
record in phase "creating" or "provisioning" is never trusted — its VM, if any, is
deleted and made again.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

from filelock import FileLock

from orchestrator.core.connectors import connector_for
from orchestrator.core.ownership import owned
from orchestrator.core.steps import Reporter
from orchestrator.primitives import naming
from orchestrator.primitives.errors import LiveRunError, OrchError, UsageError
from orchestrator.primitives.kinds import Kind
from orchestrator.primitives.labels import Owner
from orchestrator.primitives.version import __version__
from orchestrator.providers.base import RESTARTING, Provider, VMInfo
from orchestrator.providers.registry import get_provider
from orchestrator.pyinfra.loading import load_callable
from orchestrator.pyinfra.runner import DeployResult, HostSpec, PyinfraDeployer
from orchestrator.settings.loader import check_provider
from orchestrator.settings.model import Settings
from orchestrator.state import checkouts as registry
from orchestrator.state import inventory, leases
from orchestrator.state.records import READY, StateData, WorkerRecord
from orchestrator.state.store import StateStore

log = logging.getLogger(__name__)


class Deployer(Protocol):
    def run(self, hosts: list[HostSpec], funcs: list[Callable[..., Any]], *, title: str = "") -> dict[str, DeployResult]: ...


Refill = Callable[["Context"], None]


class Context:
    """One checkout's VMs on one provider."""

    def __init__(
        self,
        settings: Settings,
        provider: Provider | None = None,
        *,
        report: Reporter | None = None,
        deployer: Deployer | None = None,
        refill: Refill | None = None,
        remember_image: bool = False,
        own_run: str = "",
    ) -> None:
        """``refill``: how spares are refilled after a claim or a swap (the front ends pass
        the background maintainer; tests of the core run it inline, or not at all).
        ``remember_image``: a long-lived context (the pytest plugin's, one per test
        session) remembers the image's id after the first look, so a reset inside a run
        costs one backend call less (the next ``orch up`` still sees an image rebuilt
        meanwhile). ``own_run``: the lease of the pytest run this context serves
        (``--orch-up``): the run's own bring-up may re-make the workers its lease names."""
        self.settings = settings
        self.checkout = settings.checkout
        if provider is None:  # an injected provider (tests, a conformance kit) is the caller's choice
            provider = get_provider(settings)  # first: an unknown name is that mistake, not a mismatch
            check_provider(settings)
        registry.check_home()
        self.provider = provider
        self.where = registry.CheckoutRef.here(settings.inventory_dir) if settings.inventory_dir.exists() else None
        self.store = StateStore(settings.inventory_dir, self.checkout, on_write=self._register)
        self.report: Reporter = report or (lambda worker, message: log.info("%s: %s", worker, message))
        self.deployer: Deployer = (
            deployer or self.provider.deployer() or PyinfraDeployer(exit_codes=self.provider.watch_exit_codes)
        )
        self.connector = connector_for(self)
        with contextlib.suppress(OrchError):  # where the state says its VMs are (several engines)
            self.provider.locate(self.store.read().engines())
        self.version = __version__
        self._refill = refill
        self.remember_image = remember_image
        self._image_id: str | None = None
        self.own_run = own_run

    def refill(self) -> None:
        """Have the spares refilled (after a claim or a swap), as the front end chose."""
        if self._refill is not None:
            self._refill(self)

    # -- names, owners, hosts ---------------------------------------------------------

    @property
    def image(self) -> str:
        if self.settings.image:
            return self.settings.image
        return self.provider.machine_image if self.settings.machine else self.provider.default_image

    @property
    def logs_dir(self) -> Path:
        return self.store.dir / "logs"

    def vm_name(self, worker: str) -> str:
        return naming.worker_vm_name(self.settings.prefix, self.checkout, worker)

    def _register(self) -> None:
        registry.register(self.checkout, self.location())

    def location(self) -> registry.CheckoutRef:
        if self.where is None:
            self.where = registry.CheckoutRef.here(self.settings.inventory_dir)
        return self.where

    def owner(self, kind: Kind, *, worker: str = "", run: str = "", fingerprint: str = "") -> Owner:
        where = self.location()
        return Owner(kind, self.checkout, where.inventory, where.host, where.fs, worker, run, fingerprint)

    def owns(self, info: VMInfo | None, worker: str | None = None) -> bool:
        return owned(info, self.settings.prefix, self.provider.has_labels, self.checkout, worker)

    def not_ours(self, vm: str) -> str:
        why = "no orch labels, or labels that do not match its name" if self.provider.has_labels else "not made by this checkout"
        return f"a VM named {vm} exists but is not orch's ({why}): remove or rename it"

    def host(self, ident: str, vm: str, **extra: Any) -> inventory.InventoryHost:
        """The pyinfra host of a VM, with orch's host data (``orch_worker_id`` is the worker
        id, or ``oneoff``/``baseline``)."""
        name, data = self.connector.host(vm)
        log_name = ident if ident.startswith("gw") else vm
        data = {
            **data,
            "orch_worker_id": ident,
            "orch_vm": vm,
            "orch_provider": self.provider.name,
            "orch_checkout": self.checkout,
            "orch_log": str(self.logs_dir / f"{log_name}.log"),
            **extra,
        }
        return inventory.InventoryHost(name, data)

    def load(self, spec: str) -> Callable[..., Any]:
        return load_callable(spec, self.settings.root)

    def deploy(
        self, targets: list[tuple[str, str]], funcs: list[Callable[..., Any]], title: str, **extra: Any
    ) -> dict[str, DeployResult]:
        """Run deploys, in order, on [(ident, vm)] at once; {vm: result}."""
        if not targets:
            return {}
        hosts = [self.host(ident, vm, **self.connector.deploy_data(), **extra) for ident, vm in targets]
        results = self.deployer.run([(h.name, h.data) for h in hosts], funcs, title=title)
        return {h.vm: results.get(h.name, DeployResult(False, f"{title}: no result for {h.name}")) for h in hosts}

    # -- records, runs, inventories ---------------------------------------------------

    @staticmethod
    def records(workers: Iterable[str], data: StateData) -> list[WorkerRecord]:
        """The records of the named workers (all when none are named); a malformed id or
        one this checkout does not have is a usage error that names the fix."""
        asked = [naming.validate_worker_id(w) for w in workers]
        unknown = [w for w in asked if w not in data.workers]
        if unknown:
            have = " ".join(w.worker for w in data.sorted_workers()) or "none"
            raise UsageError(f"{', '.join(unknown)}: not a worker of this checkout (workers: {have}); see `orch status`")
        return [data.workers[w] for w in asked] if asked else data.sorted_workers()

    def refuse_live(self, doing: str, workers: Iterable[str], force: bool) -> None:
        """A command that would break workers a live pytest run uses says so and stops."""
        runs = leases.scan(self.settings.inventory_dir)
        using = [run for run in runs.using(list(workers)) if run != self.own_run]
        if using and not force:
            used = sorted(set(runs.workers[using[0]]) & set(workers), key=naming.worker_index)
            raise LiveRunError(
                f"a pytest run is using {', '.join(used)} (run {using[0]}): {doing} would break it; "
                "wait for it to end, or pass --force"
            )

    def write_inventories(self, data: StateData | None = None) -> list[Path]:
        data = data or self.store.read()
        hosts = []
        for r in data.sorted_workers():
            if r.phase == READY:
                hosts.append(self.host(r.worker, r.vm))
            elif r.error:  # failed provisioning: reachable, so it can be looked into
                hosts.append(self.host(r.worker, r.vm, orch_failed=r.error))
        return inventory.write_all(self.settings.inventory_dir, hosts, self.checkout)

    def wait_ready(self, vm: str) -> float:
        """Until the VM answers through the backend and through the connector."""
        return self.provider.wait_ready(vm) + self.connector.ready(vm)

    def ensure_running(self, vm: str, worker: str | None = None) -> bool:
        """Start ``vm`` if it is stopped (after a host or engine restart), before anything
        hands it to a pyinfra connector; True if it had to be started."""
        info = self.provider.inspect(vm)
        if info is None or not self.owns(info, worker):
            raise UsageError(f"{vm} is missing or not orch's: run `orch up` to make it again")
        if info.running:
            self.connector.ready(vm)
            return False
        if info.state == RESTARTING:  # a machine rebooting: its backend brings it back
            self.wait_ready(vm)
            self.write_inventories()  # its address may have changed
            return False
        log.warning("%s was %s: starting it", vm, info.state)
        self.provider.call(f"start {vm}", lambda: self.provider.start(vm))
        self.wait_ready(vm)
        self.write_inventories()  # its address may have changed
        return True

    @contextlib.contextmanager
    def baseline_lock(self) -> Iterator[None]:
        """Held while the baseline is checked or rebuilt (a reset from a pytest worker and
        an ``orch up`` may both want to)."""
        self.store.ensure_dir()
        with FileLock(str(self.store.dir / "baseline.lock")):
            yield

    def image_id(self) -> str:
        if self._image_id is not None:
            return self._image_id
        image_id = self.provider.call(f"inspect image {self.image}", lambda: self.provider.image_id(self.image))
        if self.remember_image:
            self._image_id = image_id
        return image_id
