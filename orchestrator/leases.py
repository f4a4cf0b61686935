"""Run leases: how sweep tells a live pytest run from a dead one.

A pytest session (the xdist controller, or the only process without xdist) takes a lease
for its run: an exclusive lock on ``<inventory dir>/.orch/runs/<run id>.lock``, held until
the session ends. The operating system releases the lock when the process dies, even by
SIGKILL, so a lease that can be taken belongs to a run that is gone.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from pathlib import Path

from filelock import FileLock, Timeout

_RUN_RE = re.compile(r"^[0-9]{14}-[0-9]+-[0-9a-f]{8}$")


def new_run_id() -> str:
    return f"{time.strftime('%Y%m%d%H%M%S', time.gmtime())}-{os.getpid()}-{secrets.token_hex(4)}"


def valid_run_id(run: str) -> bool:
    return bool(_RUN_RE.match(run or ""))


def lease_path(inventory_dir: Path, run: str) -> Path:
    if not valid_run_id(run):
        raise ValueError(f"invalid run id {run!r}")
    return inventory_dir / ".orch" / "runs" / f"{run}.lock"


class Lease:
    """Held by a live run; ``release`` (or process death) ends it."""

    def __init__(self, inventory_dir: Path, run: str | None = None) -> None:
        self.run = run or new_run_id()
        self.path = lease_path(inventory_dir, self.run)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(str(self.path), thread_local=False)
        self._lock.acquire(timeout=0)

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release()
            with contextlib.suppress(OSError):
                self.path.unlink()


def run_alive(inventory_dir: Path, run: str) -> bool:
    """Whether run ``run`` of that inventory folder still holds its lease."""
    try:
        path = lease_path(inventory_dir, run)
    except ValueError:
        return False
    if not path.exists():
        return False
    probe = FileLock(str(path), thread_local=False)
    try:
        probe.acquire(timeout=0)
    except Timeout:
        return True
    probe.release()
    with contextlib.suppress(OSError):
        path.unlink()  # a dead run's lease: tidy it away
    return False


def live_runs(inventory_dir: Path) -> list[str]:
    folder = inventory_dir / ".orch" / "runs"
    if not folder.is_dir():
        return []
    return [p.stem for p in folder.glob("*.lock") if run_alive(inventory_dir, p.stem)]
