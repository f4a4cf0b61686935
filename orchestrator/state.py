"""The state file: the single source of truth of what orch has (or is about to have).

Every VM is recorded here *before* the backend is asked to create it, so a crash at any
point leaves either a record without a VM (the next ``orch up`` recreates it, ``orch
down`` forgets it) or a VM with a record — never a VM that orch does not know about.

The file is ``<inventory dir>/.orch/state.json``. Writes are atomic (temporary file,
fsync, rename) and happen under a short file lock; readers never need the lock. A
second, longer lock (the command lock) serializes whole commands such as two ``orch up``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from . import registry
from .errors import LockBusy, StateError

log = logging.getLogger(__name__)

VERSION = 1

#: Phases of a worker: recorded before create, then after create, then when provisioned.
CREATING = "creating"
PROVISIONING = "provisioning"
READY = "ready"


@dataclass
class WorkerRecord:
    worker: str
    vm: str
    phase: str = CREATING
    created: str = ""
    baseline: str = ""


@dataclass
class OneoffRecord:
    vm: str
    run: str
    created: str = ""
    pid: int = 0


@dataclass
class StateData:
    checkout: str
    provider: str = ""
    image: str = ""
    prefix: str = ""
    workers: dict[str, WorkerRecord] = field(default_factory=dict)
    oneoffs: dict[str, OneoffRecord] = field(default_factory=dict)
    #: The machine workers are cloned from (backends with cheap clones), and whether it
    #: finished provisioning; recorded before it is created, like every VM.
    golden: str = ""
    golden_ready: bool = False
    version: int = VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "StateData":
        raw = json.loads(text)
        if not isinstance(raw, dict) or raw.get("version") != VERSION or not isinstance(raw.get("checkout"), str):
            raise ValueError("not an orch state of version %d" % VERSION)
        if not isinstance(raw.get("workers", {}), dict) or not isinstance(raw.get("oneoffs", {}), dict):
            raise ValueError("workers and oneoffs must be tables")
        workers = {k: WorkerRecord(**v) for k, v in raw.get("workers", {}).items()}
        oneoffs = {k: OneoffRecord(**v) for k, v in raw.get("oneoffs", {}).items()}
        return cls(
            checkout=raw["checkout"],
            provider=raw.get("provider", ""),
            image=raw.get("image", ""),
            prefix=raw.get("prefix", ""),
            workers=workers,
            oneoffs=oneoffs,
            golden=raw.get("golden", ""),
            golden_ready=bool(raw.get("golden_ready", False)),
        )

    def sorted_workers(self) -> list[WorkerRecord]:
        return sorted(self.workers.values(), key=lambda r: int(r.worker[2:]))


class StateStore:
    """Reads and writes one checkout's state file."""

    def __init__(self, inventory_dir: Path, checkout: str) -> None:
        self.inventory_dir = inventory_dir
        self.dir = inventory_dir / ".orch"
        self.path = self.dir / "state.json"
        self.checkout = checkout
        self._lock = FileLock(str(self.dir / "state.lock"))
        self._command_lock = FileLock(str(self.dir / "command.lock"))
        self._writable = False
        self._threads = threading.Lock()  # orch's own threads update the state one at a time

    def ensure_dir(self) -> None:
        """Create the folder and prove it writable, once per store (thread-safe)."""
        if self._writable:
            return
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.dir):
                pass
            self._writable = True
        except OSError as err:
            raise StateError(
                f"cannot write to {self.inventory_dir} ({err.strerror}): make it writable or choose "
                "another folder with --inventory-dir / ORCH_INVENTORY_DIR"
            ) from err

    def exists(self) -> bool:
        return self.path.is_file()

    def read(self) -> StateData:
        """The current state; an empty one when there is no state file yet."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return StateData(checkout=self.checkout)
        except UnicodeDecodeError as err:
            raise StateError(
                f"state file {self.path} is corrupt (not text): run `orch repair` to rebuild it from the backend"
            ) from err
        except OSError as err:
            raise StateError(f"cannot read {self.path}: {err.strerror}") from err
        try:
            data = StateData.from_json(text)
        except (ValueError, TypeError, KeyError, AttributeError) as err:
            raise StateError(
                f"state file {self.path} is corrupt ({err}): run `orch repair` to rebuild it from the backend"
            ) from err
        if data.checkout != self.checkout:
            raise StateError(
                f"state file {self.path} belongs to checkout {data.checkout}, not {self.checkout} "
                "(the folder was copied or moved): run `orch repair` to rebuild it"
            )
        return data

    def write(self, data: StateData) -> None:
        """Atomically replace the state file (caller holds the state lock)."""
        self.ensure_dir()
        registry.register(self.checkout, self.inventory_dir)
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".state-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(data.to_json())
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    @contextlib.contextmanager
    def transaction(self, *, repair: bool = False) -> Iterator[StateData]:
        """Read-modify-write under the state lock; written only if the block succeeds."""
        self.ensure_dir()
        with self._threads, self._lock:
            if repair and not self._readable():
                data = StateData(checkout=self.checkout)
            else:
                data = self.read()
            yield data
            self.write(data)

    def update_worker(self, worker: str, **changes: object) -> WorkerRecord:
        """Change fields of one worker's record (it must exist)."""
        with self.transaction() as data:
            rec = data.workers[worker]
            for key, value in changes.items():
                setattr(rec, key, value)
            return rec

    def _readable(self) -> bool:
        try:
            self.read()
            return True
        except StateError:
            return False

    @contextlib.contextmanager
    def command_lock(self, *, wait: bool = True, on_wait=None) -> Iterator[None]:
        """Serialize whole commands (up, down, reset, sweep) in this checkout."""
        self.ensure_dir()
        try:
            self._command_lock.acquire(timeout=0)
        except Timeout:
            if not wait:
                raise LockBusy(
                    "another orch command is running in this checkout: wait for it, or run without --no-wait"
                ) from None
            if on_wait:
                on_wait()
            self._command_lock.acquire()
        try:
            yield
        finally:
            self._command_lock.release()
