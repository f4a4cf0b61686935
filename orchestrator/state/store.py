"""The locked store of one checkout's state file (the records are in ``records``).

The file is ``<inventory dir>/.orch/state.json``. Writes are atomic (temporary file,
fsync, rename) and happen under a short file lock; readers never need the lock. A
second, longer lock (the command lock) serializes whole commands such as two ``orch up``
in one checkout; sweep does not take it (it never changes a checkout's workers).
Files orch did not make (a symlink, a FIFO, a folder where a lock or the state should
be) are refused with one line, never followed or read.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from orchestrator.primitives.errors import CheckoutGone, LockBusy, StateError
from orchestrator.primitives.kinds import Kind
from orchestrator.state.records import Record, StateData

log = logging.getLogger(__name__)


def _regular_or_missing(path: Path) -> bool:
    """False when ``path`` exists but is not a plain file (a symlink, a FIFO, a folder)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return True
    return stat.S_ISREG(st.st_mode)


def _not_a_file(path: Path) -> StateError:
    return StateError(
        f"{path} is not a plain file (a symlink, a FIFO or a folder orch did not make): remove it and run the command again"
    )


class StateStore:
    """Reads and writes one checkout's state file."""

    def __init__(
        self, inventory_dir: Path, checkout: str, *, on_write: Callable[[], None] | None = None, existing_only: bool = False
    ) -> None:
        self.inventory_dir = inventory_dir
        self.dir = inventory_dir / ".orch"
        self.path = self.dir / "state.json"
        self.checkout = checkout
        self._lock_path = self.dir / "state.lock"
        self._command_path = self.dir / "command.lock"
        self._lock = FileLock(str(self._lock_path))
        self._command_lock = FileLock(str(self._command_path))
        self._writable = False
        self._threads = threading.RLock()  # orch's own threads update the state one at a time
        self._on_write = on_write
        #: Set by a process that must never make a state from nothing (the background
        #: maintainer): a missing state file then means the checkout was deleted, and no
        #: folder, lock or state is made again for it (sweep finds its VMs gone). Sweep's
        #: stores of other checkouts are the same: it only ever changes a state that exists.
        self.existing_only = existing_only

    def _still_there(self) -> None:
        if self.existing_only and not self.path.is_file():
            raise CheckoutGone(f"{self.path} is gone (the checkout was deleted?): nothing more is made for it")

    def ensure_dir(self) -> None:
        """Create the folder and prove it writable, once per store (thread-safe)."""
        self._still_there()
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

    def _read_text(self) -> str | None:
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(self.path, flags)
        except FileNotFoundError:
            return None
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise _not_a_file(self.path) from err
            raise StateError(f"cannot read {self.path}: {err.strerror}") from err
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise _not_a_file(self.path)
            data = fh.read()
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise StateError(
                f"state file {self.path} is corrupt (not text): run `orch repair` to rebuild it from the backend"
            ) from err

    def read(self) -> StateData:
        """The current state; an empty one when there is no state file yet."""
        text = self._read_text()
        if text is None:
            return StateData(checkout=self.checkout)
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
        try:
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
        except OSError as err:
            raise StateError(
                f"cannot write {self.path} ({err.strerror}); the previous state is intact: "
                "free space or fix the folder, then run the command again (it repairs what this one left)"
            ) from err
        if self._on_write is not None:
            self._on_write()

    def _acquire(self, lock: FileLock, path: Path, timeout: float) -> None:
        if not _regular_or_missing(path):
            raise _not_a_file(path)
        try:
            lock.acquire(timeout=timeout)
        except Timeout:
            raise
        except OSError as err:
            raise StateError(f"cannot lock {path} ({err.strerror}): remove it and run the command again") from err

    @contextlib.contextmanager
    def transaction(self, *, repair: bool = False) -> Iterator[StateData]:
        """Read-modify-write under the state lock; written only if the block succeeds."""
        self.ensure_dir()
        with self._threads:
            self._acquire(self._lock, self._lock_path, -1)
            try:
                self._still_there()
                data = StateData(checkout=self.checkout) if repair and not self._readable() else self.read()
                yield data
                self.write(data)
            finally:
                self._lock.release()

    def update(self, kind: Kind, key: str, *, vm: str | None = None, **changes: object) -> Record | None:
        """Change fields of the record of one VM of ``kind`` (``key``: a worker id for
        per-worker kinds, else the VM's name), in one transaction. Fields the record does
        not have are ignored: the steps that make a VM record the same progress for every
        kind (a baseline has no engine, a spare no error).

        Without ``vm`` the record must exist (KeyError). With ``vm``, the record is changed
        only while it is still that VM's: one forgotten meanwhile (a spare deleted, a
        baseline replaced) is left alone, and None is returned."""
        with self.transaction() as data:
            rec = data.record(kind, key)
            if rec is None or (vm is not None and rec.vm != vm):
                if vm is None:
                    raise KeyError(key)
                return None
            for name, value in changes.items():
                if hasattr(rec, name):
                    setattr(rec, name, value)
            return rec

    def _readable(self) -> bool:
        try:
            self.read()
            return True
        except StateError:
            return False

    @contextlib.contextmanager
    def command_lock(self, *, wait: bool = True, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
        """Serialize whole commands that change this checkout's VMs (up, down, reset, repair)."""
        self.ensure_dir()
        try:
            self._acquire(self._command_lock, self._command_path, 0)
        except Timeout:
            if not wait:
                raise LockBusy(
                    "another orch command is running in this checkout: wait for it, or run without --no-wait"
                ) from None
            if on_wait:
                on_wait()
            self._acquire(self._command_lock, self._command_path, -1)
        try:
            yield
        finally:
            self._command_lock.release()
