"""The small interface every VM backend implements.

A provider knows one backend: how to create, start, list and delete its VMs, how to keep
and restore a baseline where it can, and which pyinfra connector reaches inside a VM.
Everything above it (state, inventories, the CLI, the pytest plugin) is backend-agnostic.
"""

from __future__ import annotations

import abc
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from ..config import Settings
from ..errors import ProviderTimeout

log = logging.getLogger(__name__)

RUNNING = "running"
STOPPED = "stopped"


@dataclass
class VMInfo:
    name: str
    state: str  # RUNNING, STOPPED, or the backend's own word for anything else
    labels: dict[str, str] = field(default_factory=dict)
    created: str = ""  # ISO 8601, UTC
    image: str = ""

    @property
    def running(self) -> bool:
        return self.state == RUNNING


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
            except self.tolerate as err:  # type: ignore[misc]
                seen = f"{type(err).__name__}: {err}"
            if seen is None:
                return time.monotonic() - start
            last = seen
            if time.monotonic() - start >= self.timeout:
                raise ProviderTimeout(f"{what} not ready after {self.timeout:.0f}s; last seen: {last}", operation="ready")
            self.sleep(self.interval)


class Provider(abc.ABC):
    """One VM backend. Methods raise ``ProviderError`` subclasses, classified as
    transient or permanent from the backend's own signals."""

    name: ClassVar[str]
    #: Whether VMs carry labels (ownership by labels) or only names (ownership by name).
    has_labels: ClassVar[bool] = True
    #: Whether calls must run as gevent greenlets on the main thread (see concurrency.py).
    cooperative: ClassVar[bool] = False
    #: Whether workers are cloned from one per-checkout golden machine (then a restored
    #: worker is re-provisioned, to get its own worker id back).
    uses_golden: ClassVar[bool] = False

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @abc.abstractmethod
    def check(self) -> None:
        """Raise ``EngineUnavailable`` with the fix when the backend cannot be reached."""

    @abc.abstractmethod
    def ensure_image(self, image: str) -> None:
        """Make sure ``image`` can be used, or raise a permanent error naming the fix."""

    @abc.abstractmethod
    def create(self, vm: str, image: str, labels: dict[str, str]) -> None:
        """Create and start ``vm``. An existing VM of that name is an error."""

    @abc.abstractmethod
    def start(self, vm: str) -> None: ...

    @abc.abstractmethod
    def delete(self, vm: str) -> None:
        """Delete ``vm``; a VM that does not exist is success."""

    @abc.abstractmethod
    def inspect(self, vm: str) -> VMInfo | None:
        """The VM, or None when it does not exist."""

    @abc.abstractmethod
    def list(self, *, all_vms: bool = False) -> list[VMInfo]:
        """orch's VMs (by labels where the backend has them); ``all_vms`` lists every VM."""

    @abc.abstractmethod
    def wait_ready(self, vm: str) -> float:
        """Block until ``vm`` answers commands; return the seconds waited."""

    @abc.abstractmethod
    def host(self, vm: str) -> tuple[str, dict[str, Any]]:
        """The pyinfra host name and connector data that reach inside ``vm``."""

    def create_golden(self, vm: str, image: str) -> None:
        """Create the golden machine (only for ``uses_golden`` providers)."""
        raise NotImplementedError

    def stop(self, vm: str) -> None:
        """Stop ``vm`` (never called with an empty name)."""
        raise NotImplementedError

    def snapshot(self, vm: str, worker: str) -> str:
        """Keep ``vm``'s current state as its baseline; return a reference to it ("" if the
        backend cannot, then reset uses the reset deploy)."""
        return ""

    def restore(self, vm: str, baseline: str, labels: dict[str, str]) -> None:
        """Bring ``vm`` back to ``baseline``; only called with a reference from snapshot."""
        raise NotImplementedError

    def find_baseline(self, worker: str) -> str:
        """The reference of ``worker``'s existing baseline, or "" (used to rebuild the state)."""
        return ""

    def sweep_baseline(self, checkout: str, worker: str) -> None:
        """Delete the baseline of a swept worker of any checkout (missing is success)."""

    def forget_baseline(self, baseline: str) -> None:
        """Delete a baseline made by snapshot (missing is success)."""
