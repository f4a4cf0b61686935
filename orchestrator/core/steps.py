"""The per-VM step, written once: a result row per worker (or one-off, or baseline), the
time each phase took, and an orch error turned into a failed row that is reported —
never an exception that stops the other workers."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from orchestrator.primitives.errors import OrchError

log = logging.getLogger(__name__)

Reporter = Callable[[str, str], None]


@dataclass
class WorkerResult:
    worker: str
    vm: str
    action: str  # reused, started, created, recreated, reset, deleted, forgotten, failed, …
    seconds: dict[str, float] = field(default_factory=dict)
    error: str = ""
    log: str = ""  # the VM's deploy log, when a deploy ran

    @property
    def ok(self) -> bool:
        return not self.error

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds
        self.seconds["total"] = self.seconds.get("total", 0.0) + seconds

    def fail(self, error: str) -> None:
        self.action, self.error = "failed", error


@contextlib.contextmanager
def timed(result: WorkerResult, phase: str) -> Iterator[None]:
    """Add the block's duration to ``result.seconds[phase]`` (and to the total)."""
    start = time.monotonic()
    try:
        yield
    finally:
        result.add(phase, time.monotonic() - start)


def guard(result: WorkerResult, report: Reporter, step: Callable[[], object], *, what: str = "") -> WorkerResult:
    """Run one VM's step unless it already failed; an orch error fails just this row."""
    if not result.ok:
        return result
    try:
        step()
    except OrchError as err:
        result.fail(f"{what}{err}")
        report(result.worker, f"failed: {result.error}")
    return result
