"""Run leases: how sweep and the CLI tell a live pytest run from a dead one.

Every process of a pytest session (the xdist controller and each xdist worker, or the only
process without xdist) takes a lease from ``pytest_configure`` on, before collection: an
exclusive lock on ``<inventory dir>/.orch/runs/<run id>.lock`` naming the workers it will
use, held until the process ends. The operating system releases the lock when the process dies, even by
SIGKILL, so a lease that can be taken belongs to a run that is gone.

Anything else in the runs folder (a symlink, a folder, a name that is not a run id) is
not a lease: it is reported, never followed or locked.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock, Timeout

_RUN_RE = re.compile(r"^[0-9]{14}-[0-9]+-[0-9a-f]{8}$")


def new_run_id() -> str:
    return f"{time.strftime('%Y%m%d%H%M%S', time.gmtime())}-{os.getpid()}-{secrets.token_hex(4)}"


def valid_run_id(run: str) -> bool:
    return bool(_RUN_RE.match(run or ""))


def runs_dir(inventory_dir: Path) -> Path:
    return inventory_dir / ".orch" / "runs"


def lease_path(inventory_dir: Path, run: str) -> Path:
    if not valid_run_id(run):
        raise ValueError(f"invalid run id {run!r}")
    return runs_dir(inventory_dir) / f"{run}.lock"


class Lease:
    """Held by a live run; ``release`` (or process death) ends it. The file names the
    workers the run uses, so a command can tell which workers it must not break."""

    def __init__(self, inventory_dir: Path, run: str | None = None, workers: Iterable[str] = (), session: str = "") -> None:
        self.run = run or new_run_id()
        #: The pytest session this process belongs to (the controller's run id; its own
        #: when it is the controller): what tells a run's own processes from another run's.
        self.session = session or self.run
        self.path = lease_path(inventory_dir, self.run)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(str(self.path), thread_local=False)
        self._lock.acquire(timeout=0)
        self.workers: list[str] = []
        self.use(*workers)

    def use(self, *workers: str) -> None:
        """Record that this run uses ``workers`` (written while the lock is held)."""
        new = [w for w in workers if w not in self.workers]
        if new:
            self.workers.extend(new)
            self.path.write_text(json.dumps({"pid": os.getpid(), "workers": self.workers, "session": self.session}))

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release()
            with contextlib.suppress(OSError):
                self.path.unlink()


@dataclass
class Runs:
    """What a runs folder holds: the live runs (and the workers each uses), and anything
    that is not a lease."""

    live: list[str] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)
    workers: dict[str, list[str]] = field(default_factory=dict)
    sessions: dict[str, str] = field(default_factory=dict)  # run -> its pytest session
    #: Leases of runs that are gone, seen by a scan that leaves them (``tidy=False``).
    dead: list[str] = field(default_factory=list)

    def using(self, workers: list[str]) -> list[str]:
        """The live runs that use any of ``workers``."""
        return [run for run in self.live if set(self.workers.get(run, [])) & set(workers)]

    def busy(self, exclude: str = "") -> set[str]:
        """The workers live runs use, but for run ``exclude``'s."""
        return {w for run in self.live if run != exclude for w in self.workers.get(run, [])}

    def others(self, session: str, worker: str) -> list[str]:
        """The live runs of other pytest sessions than ``session`` that use ``worker``."""
        return [run for run in self.using([worker]) if self.sessions.get(run, run) != session]


def _probe(path: Path, *, tidy: bool = True) -> bool:
    """Whether the lease file at ``path`` is held (by a live run)."""
    probe = FileLock(str(path), thread_local=False)
    try:
        probe.acquire(timeout=0)
    except Timeout:
        return True
    probe.release()
    if tidy:
        with contextlib.suppress(OSError):
            path.unlink()  # a dead run's lease: tidy it away
    return False


def scan(inventory_dir: Path, *, tidy: bool = True) -> Runs:
    """The live runs of an inventory folder; a damaged entry never stops the scan. A dead
    run's lease is deleted, or with ``tidy=False`` (``orch doctor``) listed in ``dead``."""
    found = Runs()
    folder = runs_dir(inventory_dir)
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except FileNotFoundError:
        return found
    except OSError as err:
        found.damaged.append(f"{folder}: {err.strerror}")
        return found
    for entry in entries:
        if entry.name.endswith(".lock") and not entry.name.startswith("."):
            _look(found, Path(entry.path), entry.name[: -len(".lock")], tidy=tidy)
    return found


def _look(found: Runs, path: Path, run: str, *, tidy: bool = True) -> None:
    """Add the lease at ``path`` to ``found``: live, or damaged (anything orch did not
    make is reported, never followed or locked); a dead run's lease adds nothing."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return  # released while we looked
    except OSError as err:
        found.damaged.append(f"{path}: {err.strerror}")
        return
    if not valid_run_id(run) or not stat.S_ISREG(mode):
        what = "symlink" if stat.S_ISLNK(mode) else "folder" if stat.S_ISDIR(mode) else "file"
        found.damaged.append(f"{path}: not a lease (a {what} orch did not make)")
        return
    try:
        if _probe(path, tidy=tidy):
            found.live.append(run)
            found.workers[run], found.sessions[run] = _read(path, run)
        elif not tidy:
            found.dead.append(run)
    except OSError as err:
        found.damaged.append(f"{path}: {err.strerror}")


def _read(path: Path, run: str) -> tuple[list[str], str]:
    """The workers a lease names, and its session."""
    try:
        data = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return [], run
    if not isinstance(data, dict):
        return [], run
    workers, session = data.get("workers"), data.get("session")
    named = [w for w in workers if isinstance(w, str)] if isinstance(workers, list) else []
    return named, session if isinstance(session, str) else run


def run_alive(inventory_dir: Path, run: str) -> bool:
    """Whether run ``run`` of that inventory folder still holds its lease."""
    try:
        path = lease_path(inventory_dir, run)
    except ValueError:
        return False
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        return _probe(path)
    except OSError:
        return False


def live_runs(inventory_dir: Path) -> list[str]:
    return scan(inventory_dir).live
