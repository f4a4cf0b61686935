"""Fault injection for the FakeProvider: what the next calls do instead of succeeding."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field


class Crash(BaseException):
    """Stands for the process dying (SIGKILL) in the middle of a command."""


@dataclass
class Faults:
    """What the next calls do instead of succeeding (thread-safe)."""

    rate: float = 0.0  # fraction of lifecycle calls that fail transiently
    seed: int = 0
    _plan: dict[str, list[str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def fail(self, operation: str, *, times: int = 1, permanent: bool = False) -> None:
        with self._lock:
            self._plan.setdefault(operation, []).extend(["permanent" if permanent else "transient"] * times)

    def hang(self, operation: str, *, times: int = 1) -> None:
        """The next calls of ``operation`` time out (and the command is killed)."""
        with self._lock:
            self._plan.setdefault(operation, []).extend(["hang"] * times)

    def crash(self, operation: str, *, after: bool = False) -> None:
        """The next call of ``operation`` kills the caller (raises ``Crash``, which is no
        error orch catches), before the backend acts, or ``after`` it did."""
        with self._lock:
            self._plan.setdefault(operation, []).append("crash-after" if after else "crash")

    def created_but_failed(self, operation: str = "create", *, times: int = 1) -> None:
        """The next creates make the VM and then report a transient failure."""
        with self._lock:
            self._plan.setdefault(operation, []).extend(["after"] * times)

    def next(self, operation: str) -> str:
        with self._lock:
            planned = self._plan.get(operation)
            if planned:
                return planned.pop(0)
            if self.rate and operation in LIFECYCLE and self._random.random() < self.rate:
                return "transient"
        return ""


LIFECYCLE = ("create", "clone", "start", "stop", "delete", "rename", "seal")
