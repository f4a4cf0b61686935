"""The small interface every VM backend implements, and what providers share.

A provider knows one backend: how to create, start, stop, rename, list and delete its
VMs, how to run a command in one, which pyinfra connector reaches inside it, and how it
keeps a baseline. The core asks it to *seal* a provisioned VM as the baseline, to
*clone* VMs from that baseline and to *verify* that the baseline is still the one
provisioning made; committed images (Docker), a stopped golden machine (OrbStack) or a
backend's snapshots are each a provider's own business, and the core never branches on
which. A provider also owns how its calls are retried and run in parallel (``call``,
``map``), and everything else about its backend: how it is made from the settings
(``from_settings``), a connector's quirks (``watch_exit_codes``) and the testinfra host
of its VMs (``testinfra_host``). Settings are declared once, typed, in
``settings_model``; orch validates the project's ``[tool.orch.<name>]`` table with it.
"""

from __future__ import annotations

import abc
import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from orchestrator.primitives.errors import OrchError, PermanentProviderError, ProviderTimeout, UsageError
from orchestrator.primitives.results import ExecResult
from orchestrator.providers import retry
from orchestrator.settings.model import Model

if TYPE_CHECKING:
    from orchestrator.primitives.changes import Checker, Ignore
    from orchestrator.primitives.labels import Owner
    from orchestrator.settings.model import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

RUNNING = "running"
STOPPED = "stopped"
#: A VM its backend is restarting by itself (a machine that rebooted: Docker's restart
#: policy between two boots). It comes back under the same name: wait for it, never start
#: it or make it again.
RESTARTING = "restarting"


@dataclass
class VMInfo:
    name: str
    state: str  # RUNNING, STOPPED, or the backend's own word for anything else
    labels: dict[str, str] = field(default_factory=dict)
    created: str = ""  # ISO 8601, UTC
    image: str = ""
    engine: str = ""  # which engine holds it, with several engines

    @property
    def running(self) -> bool:
        return self.state == RUNNING


@dataclass
class Baseline:
    """A sealed baseline: the provider's reference and what it saw when sealing it."""

    ref: str
    seal: dict[str, str] = field(default_factory=dict)


@dataclass
class StoredBaseline:
    """A baseline the backend keeps apart from its VMs (a committed image), for sweep."""

    ref: str
    name: str
    checkout: str
    created: str = ""
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class About:
    """One engine a provider reaches, as ``orch doctor`` shows it."""

    what: str  # the backend and its version: "docker 20.10.24"
    where: str = ""  # how it is reached: "unix:///var/run/docker.sock", a remote's name
    error: str = ""  # why it does not answer, naming the fix ("" when it answers)
    client: str = ""  # the command orch runs, where it was found (and its version)


class BaselineTainted(PermanentProviderError):
    """A VM made from the baseline shows changes made after it was sealed."""


class ProviderSettings(Model):
    """Base of a provider's ``[tool.orch.<name>]`` table. Fields listed in ``client_fields``
    say how to reach the backend and do not change the VMs (not in fingerprints)."""

    client_fields: ClassVar[tuple[str, ...]] = ()


@dataclass
class WaitStrategy:
    """Readiness as a poll: ``probe`` returns None when ready, else what it saw.

    Exceptions in ``tolerate`` count as "not ready yet"; others end the wait. The timeout
    message says what was last seen, so a stuck VM is diagnosable from the error alone.
    """

    timeout: float = 60.0
    interval: float = 0.1
    tolerate: tuple[type[BaseException], ...] = ()
    sleep: Callable[[float], None] = time.sleep

    def wait(self, what: str, probe: Callable[[], str | None]) -> float:
        start = time.monotonic()
        last = "nothing yet"
        while True:
            try:
                seen = probe()
            except self.tolerate as err:
                seen = f"{type(err).__name__}: {err}"
            if seen is None:
                return time.monotonic() - start
            last = seen
            if time.monotonic() - start >= self.timeout:
                raise ProviderTimeout(f"{what} not ready after {self.timeout:.0f}s; last seen: {last}", operation="ready")
            self.sleep(self.interval)


#: What ``systemctl is-system-running`` says once a machine has booted: ``degraded`` is
#: booted with failed units (reported, not waited on: they may never recover).
BOOTED = ("running", "degraded")


def systemd_probe(vm: str, run: Callable[[list[str]], ExecResult]) -> Callable[[], str | None]:
    """A ``WaitStrategy`` probe for a machine: ready once systemd says it has booted.

    ``run`` runs a command in ``vm``. A degraded machine is ready, and its failed units
    are logged once; anything else (``starting``, ``initializing``, no answer yet) is
    what the time limit's message shows as last seen.
    """

    def probe() -> str | None:
        result = run(["systemctl", "is-system-running"])
        state = result.stdout.strip() or result.stderr.strip() or f"exit code {result.rc}"
        if state not in BOOTED:
            return f"systemctl is-system-running: {state}"
        if state == "degraded":
            failed = run(["systemctl", "list-units", "--failed", "--plain", "--no-legend", "--no-pager"]).stdout
            units = ", ".join(line.split()[0] for line in failed.splitlines() if line.split()) or "none listed"
            log.warning("%s: systemd is degraded; failed units: %s", vm, units)
        return None

    return probe


class Provider(abc.ABC):
    """One VM backend. Methods raise ``ProviderError`` subclasses, classified as
    transient or permanent from the backend's own signals."""

    name: ClassVar[str]
    settings_model: ClassVar[type[ProviderSettings]] = ProviderSettings
    #: Whether VMs carry labels (ownership by name and labels) or only names.
    has_labels: ClassVar[bool] = True
    #: The image used when the project names none.
    default_image: ClassVar[str] = ""
    #: The image used with ``machine = true`` when the project names none (systemd as
    #: PID 1); "" where this provider makes no machines.
    machine_image: ClassVar[str] = ""
    #: Whether ``rename`` works (standbys are swapped in by renaming).
    can_rename: ClassVar[bool] = False
    #: First retry delay in seconds (doubled each attempt, with jitter).
    retry_delay: ClassVar[float] = 0.5
    #: Whether ``clone`` returns only once the clone answers through the backend (it
    #: waited itself): then orch asks only the connector, not the backend a second time.
    clone_ready: ClassVar[bool] = False

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.opts = self.settings_model(**settings.tables.get(self.name, {}))
        if settings.machine and not self.machine_image:
            raise UsageError(
                f"the {self.name} provider makes no machines (machine = true): use docker, podman or incus, "
                "or set machine = false"
            )

    @property
    def machine(self) -> bool:
        """Whether this checkout's VMs are machines (systemd as PID 1): ``machine = true``,
        or always, where the backend's VMs boot their own init (Incus)."""
        return self.settings.machine

    @classmethod
    def from_settings(cls, settings: Settings) -> Provider:
        """The provider a checkout with these settings uses: by default one of this class."""
        return cls(settings)

    # -- what pyinfra and testinfra need of the backend ----------------------------------

    @classmethod  # noqa: B027 (most connectors log their exit codes: nothing to watch)
    def watch_exit_codes(cls, host: Any, record: Callable[[int], None]) -> None:
        """For a connected pyinfra ``host``: have ``record`` called with the exit code of
        each command it runs, where its connector keeps them to itself (pyinfra's local and
        SSH connectors log theirs, and orch reads the log)."""

    @classmethod
    def testinfra_host(cls, host: str, data: dict[str, Any]) -> Any:
        """A testinfra ``Host`` that reaches, as root, the VM this provider's connector
        reaches as pyinfra host ``host`` with host data ``data`` (pytest-testinfra is
        installed: the caller checked)."""
        raise UsageError(f"orch_host: testinfra cannot reach {host} (the {cls.name} provider gives no testinfra host)")

    # -- how calls run: retries with backoff, bounded parallelism ---------------------

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """Call ``fn``, retrying transient errors with backoff; after a timeout the
        backend's health is checked first, so a dead backend fails at once."""
        return retry.call(
            fn, what=what, attempts=self.settings.retries + 1, health_check=self.check, initial_delay=self.retry_delay
        )

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """``fn`` over ``items``, at most ``parallel`` at once, results in order."""
        items = list(items)
        if len(items) <= 1:
            return [fn(i) for i in items]
        with ThreadPoolExecutor(max_workers=min(self.settings.parallel, len(items))) as pool:
            return list(pool.map(fn, items))

    def deployer(self) -> Any:
        """What runs deploys in this provider's VMs; None: pyinfra, through ``host()``."""
        return None

    def vm_settings(self) -> dict[str, Any]:
        """The settings that change what a VM is (part of the baseline's fingerprint)."""
        found = self.opts.model_dump(exclude=set(self.opts.client_fields))
        return {**found, "machine": True} if self.machine else found

    # -- the backend -------------------------------------------------------------------

    @abc.abstractmethod
    def check(self) -> None:
        """Raise ``EngineUnavailable`` with the fix when the backend cannot be reached."""

    @abc.abstractmethod
    def image_id(self, image: str) -> str:
        """Make sure ``image`` can be used and return what identifies its content (an
        image id where the backend has one), or raise a permanent error naming the fix."""

    def about(self) -> list[About]:
        """For ``orch doctor``: each engine this provider reaches, with its version and
        where it is, or why it does not answer; changes nothing, never raises an
        ``OrchError``. Default: ``check``, with no version."""
        try:
            self.check()
        except OrchError as err:
            return [About(self.name, error=str(err))]
        return [About(self.name)]

    def image_here(self, image: str) -> str | None:
        """For ``orch doctor``, which changes nothing: what ``image_id`` returns, without
        pulling: None when the backend has no such image yet but ``image_id`` could pull
        it; the error ``image_id`` raises (naming the fix) when it cannot have it at all.
        Default: ``image_id``, for a backend whose ``image_id`` only looks."""
        return self.image_id(image)

    # -- VMs ---------------------------------------------------------------------------

    @abc.abstractmethod
    def create(self, vm: str, image: str, owner: Owner) -> None:
        """Create ``vm`` from ``image`` and start it. An existing VM of that name raises
        ``VMExists``."""

    @abc.abstractmethod
    def start(self, vm: str) -> None: ...

    @abc.abstractmethod
    def stop(self, vm: str) -> None:
        """Stop ``vm`` (refuse an empty name)."""

    @abc.abstractmethod
    def delete(self, vm: str) -> None:
        """Delete ``vm``; a VM that does not exist is success (refuse an empty name)."""

    def locate(self, where: dict[str, str]) -> None:  # noqa: B027 (one engine: nothing to locate)
        """Hints from the state: which engine each VM is on (several engines only)."""

    def engine_of(self, vm: str) -> str:
        """The engine that holds ``vm`` ("" with a single engine)."""
        return ""

    #: What one of ``unreachable_engines()`` is called in messages.
    engine_word: ClassVar[str] = "engine"

    def unreachable_engines(self) -> dict[str, str]:
        """Engines that did not answer: {engine: why} (several engines only)."""
        return {}

    def address(self, vm: str) -> str:
        """The VM's network address, for connectors that reach it over the network (SSH)."""
        raise PermanentProviderError(f"{self.name} VMs have no network address orch can use", operation="address", vm=vm)

    def rename(self, vm: str, new: str) -> None:
        """Rename ``vm`` (only where ``can_rename``)."""
        raise PermanentProviderError(f"{self.name} cannot rename VMs", operation="rename", vm=vm)

    def keep(self, vm: str, new: str) -> None:
        """Keep ``vm`` as it is now under the name ``new`` (a failing test's worker VM, for
        ``orch shell``), with the labels it has; ``new`` must not exist. Default: a rename,
        where the backend can (the VM keeps running, its processes too). A backend that
        cannot rename may copy instead: ``vm`` then still exists, and the core makes the
        worker again either way."""
        if not self.can_rename:
            raise PermanentProviderError(f"{self.name} cannot keep a VM under another name", operation="rename", vm=vm)
        self.rename(vm, new)

    @abc.abstractmethod
    def inspect(self, vm: str) -> VMInfo | None:
        """The VM, or None when it does not exist."""

    @abc.abstractmethod
    def list_vms(self, *, all_vms: bool = False) -> list[VMInfo]:
        """orch's VMs (by labels or name prefix); ``all_vms`` lists every VM."""

    def pollution_checker(self, vm: str, ignore: Ignore) -> Checker | None:
        """A checker of what tests change on ``vm`` that this backend answers cheaply
        (without a command inside the VM), or None: orch then runs one inside it."""
        return None

    @abc.abstractmethod
    def wait_ready(self, vm: str) -> float:
        """Block until ``vm`` runs and answers commands; return the seconds waited."""

    @abc.abstractmethod
    def exec(self, vm: str, argv: list[str], *, timeout: float | None = None) -> ExecResult:
        """Run ``argv`` in ``vm`` (as root) and return its exit code and output."""

    @abc.abstractmethod
    def exec_argv(self, vm: str, argv: list[str], *, interactive: bool = False) -> list[str]:
        """The local command line that runs ``argv`` in ``vm`` (``orch exec``/``shell``)."""

    @abc.abstractmethod
    def host(self, vm: str) -> tuple[str, dict[str, Any]]:
        """The pyinfra host name and connector data that reach inside ``vm``."""

    # -- the baseline ------------------------------------------------------------------

    @abc.abstractmethod
    def seal(self, vm: str, owner: Owner) -> Baseline:
        """Keep the provisioned ``vm`` as the baseline that ``clone`` makes VMs from."""

    def seal_name(self, vm: str, owner: Owner) -> str:
        """The name ``seal`` will give the baseline where it is not ``vm``'s (an image tag),
        for the core to record before it exists (a sweep meanwhile then keeps it); ""
        where the sealed baseline keeps ``vm``'s name (OrbStack's stopped machine)."""
        return ""

    @abc.abstractmethod
    def clone(self, baseline: Baseline, vm: str, owner: Owner) -> None:
        """Make ``vm`` from ``baseline`` and start it. Raises ``BaselineTainted`` when the
        copy shows that the baseline was changed after it was sealed."""

    @abc.abstractmethod
    def verify(self, baseline: Baseline) -> str | None:
        """None while the baseline is the one sealed; else what changed (missing,
        started outside orch, replaced)."""

    @abc.abstractmethod
    def drop(self, baseline: Baseline) -> bool:
        """Delete the baseline (missing is success); False when the backend still needs
        it for VMs made from it (then it is dropped later)."""

    def restore(self, baseline: Baseline, vm: str, owner: Owner) -> None:
        """Put ``vm`` back to the baseline under the same name (default: delete, clone)."""
        self.delete(vm)
        self.clone(baseline, vm, owner)

    def export_baseline(self, baseline: Baseline, path: Path) -> None:
        """Write ``baseline`` to the file ``path`` (which must not exist), for ``orch baseline
        export`` and a CI cache: one file ``import_baseline`` loads again, here or on another
        machine. The caller writes to a temporary name and renames it when this returns."""
        raise PermanentProviderError(f"the {self.name} provider cannot export baselines", operation="export")

    def import_baseline(self, path: Path, name: str, owner: Owner) -> Baseline:
        """Load the file ``export_baseline`` wrote as this checkout's baseline: owned by
        ``owner`` (its labels, re-written: the file may come from another checkout or
        machine) under ``name`` where the backend names it (``seal_name(name, owner)``, or
        ``name``); sealed, as ``seal`` returns it. Another checkout's baseline the backend
        holds is never changed or taken."""
        raise PermanentProviderError(f"the {self.name} provider cannot import baselines", operation="import")

    def stored_baselines(self) -> list[StoredBaseline]:
        """Baselines kept apart from VMs (images), of every checkout, for sweep."""
        return []

    def dangling(self) -> list[str]:
        """Leftovers of orch's VMs that nothing references (e.g. untagged images that a
        connector committed), for sweep to delete with ``drop_dangling``."""
        return []

    def drop_dangling(self, ref: str) -> None:  # noqa: B027 (only providers with leftovers need it)
        """Delete one leftover listed by ``dangling``."""
