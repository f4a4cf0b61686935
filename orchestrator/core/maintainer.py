"""The maintainer: the one process at a time that refills spares and empties the trash.

After a claim or a swap, the process that did it asks for a refill
(:func:`spawn_maintainer`): it touches ``.orch/maintain.wanted`` and, unless a maintainer
is alive (``.orch/maintain.lock`` held, or one just started: ``maintain.starting``),
starts ``orch maintain`` in the background (its own process, so a user's pyinfra deploy
runs on its main thread and it outlives nothing it needs).

One maintainer per checkout, long-lived: a loop (:class:`_Loop`) that every tick
(:data:`TICK`) takes the requests (the flag), reads the state and submits the makes that
are missing, standbys first, then pool VMs (:func:`orchestrator.core.spares.wanted_pool`),
counting those already being made (their records, creating), to a thread pool of at most
the provider's ``parallel``: a refill starts the moment a spare is taken, never after an
earlier batch. The threads create and ready each VM (``baseline.make_clones``) and, with
orch's default personalize deploy, personalize it (one exec, no pyinfra); a project's own
personalize deploy runs pyinfra, so the loop runs it on its main thread over every spare
that became ready since the last tick (one batch).

It stays while a pytest run of this checkout is alive (its lease), and for
:data:`IDLE_GRACE` seconds after the last request, then exits; a request made while it
exits is never lost (it looks at the flag again once it has released the lock, and a
new maintainer is started by whoever finds the lock free). ``orch up`` and ``orch down``
take the same lock (:func:`maintaining`); while they wait for it they leave their pid in
``maintain.yield``, and the maintainer, at its next tick, stops submitting, finishes what
is in flight and lets them have it.

A make that fails stops the refills for a while (a back-off that doubles, up to
:data:`MAX_BACKOFF`): no busy loop of failures; after :data:`MAX_FAILED_ROUNDS` failed
rounds in a row (or the first, outside a background maintainer) it exits with them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock, Timeout

from orchestrator.core import baseline as B
from orchestrator.core import spares
from orchestrator.core.steps import WorkerResult
from orchestrator.primitives.errors import CheckoutGone
from orchestrator.settings.model import Settings
from orchestrator.state import leases

if TYPE_CHECKING:
    from orchestrator.core.context import Context
    from orchestrator.providers.base import Baseline
    from orchestrator.state.records import StateData

log = logging.getLogger(__name__)

#: How often the loop looks for requests and missing spares (seconds).
TICK = 0.15
#: How long an idle maintainer stays after the last request (when no run is alive).
IDLE_GRACE = 5.0
#: How often the loop looks at the run leases, at the fingerprint and at the baseline.
LOOK_LEASES = 1.0
REFRESH_BASELINE = 10.0
#: The back-off after a failed make: doubled per failed round, up to this.
MAX_BACKOFF = 30.0
MAX_FAILED_ROUNDS = 3
#: ``spawn_maintainer`` sets it for the process it starts: stay while runs are alive.
STAY_ENV = "ORCH_MAINTAIN_STAY"
#: A process started this long ago that has not taken the lock is not counted as alive.
STARTING_FOR = 30.0
#: The personalize deploy orch ships: personalized in the make's own thread.
DEFAULT_PERSONALIZE: str = Settings.model_fields["personalize"].default


def _lock(ctx: Context) -> FileLock:
    return FileLock(str(ctx.store.dir / "maintain.lock"), thread_local=False)


def wanted(ctx: Context) -> Path:
    """A flag: someone claimed or swapped since the maintainer last looked."""
    return ctx.store.dir / "maintain.wanted"


def _yield_path(ctx: Context) -> Path:
    return ctx.store.dir / "maintain.yield"


def _starting_path(ctx: Context) -> Path:
    return ctx.store.dir / "maintain.starting"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pid_in(path: Path) -> int:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def yield_asked(ctx: Context) -> bool:
    """Whether ``orch up`` or ``orch down`` (alive) waits for the maintain lock."""
    pid = _pid_in(_yield_path(ctx))
    return pid > 0 and _pid_alive(pid)


@contextlib.contextmanager
def maintaining(ctx: Context, *, wait: bool = True) -> Iterator[bool]:
    """Held by the one process that makes spares and empties the trash. A caller that
    waits (``orch up``, ``orch down``) asks a maintainer at work to let it have the lock
    (``maintain.yield``, its pid): it does at its next tick, once its makes in flight
    are done."""
    ctx.store.ensure_dir()
    lock = _lock(ctx)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if not wait:
            yield False
            return
        _yield_path(ctx).write_text(f"{os.getpid()}\n")
        try:
            lock.acquire(timeout=-1)
        finally:
            with contextlib.suppress(OSError):
                if _pid_in(_yield_path(ctx)) == os.getpid():
                    _yield_path(ctx).unlink()
    try:
        yield True
    finally:
        lock.release()


def maintain(ctx: Context, *, stay: bool | None = None) -> list[WorkerResult]:
    """Refill spares while they are asked for (what ``orch maintain`` does); returns the
    spares that could not be made. ``stay``: keep going while a run of this checkout is
    alive and for :data:`IDLE_GRACE` after the last request (the background maintainer:
    ``spawn_maintainer`` sets :data:`STAY_ENV`); without it, stop once nothing is missing
    (the core's tests run it inline).

    It runs in the background, so its checkout may be deleted under it (``rm -rf``): it
    never makes a state, a folder or a lock again (``existing_only``), and stops at the
    first sign. What it made meanwhile carries the gone folder's location in its labels
    (or the registry), so sweep deletes it as an orphan of a gone checkout."""
    if stay is None:
        stay = os.environ.get(STAY_ENV) == "1"
    if not ctx.store.exists():
        _forget_starting(ctx)
        return []  # no state: nothing to refill, and no folder to make for it
    ctx.store.existing_only = True
    try:
        return _serve(ctx, stay)
    except CheckoutGone as err:
        log.warning("stopping: %s", err)
        return []
    finally:
        _forget_starting(ctx)


def _forget_starting(ctx: Context) -> None:
    with contextlib.suppress(OSError):
        if _pid_in(_starting_path(ctx)) == os.getpid():
            _starting_path(ctx).unlink()


def _serve(ctx: Context, stay: bool) -> list[WorkerResult]:
    """Take the lock while a request is pending, run the loop, and after releasing the
    lock look at the flag once more: a request made while the loop ended is served."""
    lock = _lock(ctx)
    while True:
        if not _acquire_while_wanted(ctx, lock):
            return []
        try:
            _forget_starting(ctx)
            failed = _Loop(ctx, stay).run()
        finally:
            lock.release()
        if failed or not wanted(ctx).exists():
            return failed


def _acquire_while_wanted(ctx: Context, lock: FileLock) -> bool:
    """The maintain lock, waited for while a request is pending; False once another
    maintainer took the request (it holds the lock and removed the flag) or none is left."""
    while True:
        if not wanted(ctx).exists():
            return False
        if not yield_asked(ctx):
            try:
                lock.acquire(timeout=TICK)
                return True
            except Timeout:
                continue
        time.sleep(TICK)


@dataclass
class _Job:
    """One spare being made (or a chore: the trash, a shrink), and when it was asked for."""

    target: B.Target | None
    asked: float = field(default_factory=time.monotonic)


class _Loop:
    """One maintainer's work while it holds the lock (see the module's docstring)."""

    def __init__(self, ctx: Context, stay: bool) -> None:
        self.ctx = ctx
        self.stay = stay
        self.threads = ThreadPoolExecutor(max_workers=ctx.settings.parallel, thread_name_prefix="orch-maintain")
        self.flight: dict[Future[None], _Job] = {}
        self.to_personalize: list[_Job] = []
        self.failed: list[WorkerResult] = []
        self.failed_rounds = 0
        self.backoff_until = 0.0
        self.last_request = time.monotonic()
        self.leases_seen = (-LOOK_LEASES, False)
        self.state_seen: tuple[int, int] | None = None
        self.fp: B.Fingerprint | None = None
        self.baseline: Baseline | None = None
        self.refreshed = -REFRESH_BASELINE
        self.in_thread = ctx.settings.personalize == DEFAULT_PERSONALIZE and ctx.connector.name == "native"

    def run(self) -> list[WorkerResult]:
        try:
            if self.ctx.store.read().workers:
                self._baseline()  # first: the trash, and spares a killed maintainer left unfinished
            while self._tick():
                time.sleep(TICK)
        finally:
            self._drain()
            self.threads.shutdown(wait=True)
        return self.failed

    # -- one tick ----------------------------------------------------------------------

    def _tick(self) -> bool:
        """One look; False when the loop should end."""
        ctx = self.ctx
        self._reap()
        if yield_asked(ctx):
            log.info("orch up or down waits for the maintain lock: letting it have it")
            return False
        asked = wanted(ctx).exists()
        if asked:
            wanted(ctx).unlink(missing_ok=True)  # before the look: a request after it is seen next tick
            self.last_request = time.monotonic()
        seen = self._state_stamp()
        if not asked and not self.flight and seen == self.state_seen and time.monotonic() >= self.backoff_until:
            return self._staying()  # idle, and nothing changed since the last look
        self.state_seen = seen
        data = ctx.store.read()
        if not data.workers:
            return bool(self.flight)
        if self.failed and not self.stay:
            return bool(self.flight)  # inline: stop at the first failure
        if self.failed_rounds >= MAX_FAILED_ROUNDS:
            log.warning("stopping: %d rounds of spares failed in a row", self.failed_rounds)
            return bool(self.flight)
        busy = len(self.flight) + len(self.to_personalize)
        if time.monotonic() >= self.backoff_until and busy < ctx.settings.parallel:
            self._top_up(data, ctx.settings.parallel - busy)
        else:
            self.state_seen = None  # not topped up this time: look again next tick
        if self.flight or self.to_personalize:
            return True
        return self._staying()

    def _state_stamp(self) -> tuple[int, int] | None:
        try:
            st = self.ctx.store.path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def _top_up(self, state: StateData, room: int) -> None:
        """Submit what is missing, standbys first, at most ``room`` makes."""
        ctx = self.ctx
        if state.trash and not any(j.target is None for j in self.flight.values()):
            self._submit(_Job(None), lambda: spares.empty_trash(ctx))
        standbys = spares.missing_standbys(ctx, state)
        missing = spares.missing_pool(ctx, state)
        if not standbys and not missing:
            if ctx.settings.pool != "auto" and not any(j.target is None for j in self.flight.values()):
                keep = {j.target.vm for j in self.flight.values() if j.target is not None}
                if sum(1 for o in state.oneoffs.values() if o.pool) > spares.wanted_pool(ctx, state):
                    self._submit(_Job(None), lambda: spares.shrink_pool(ctx, ctx.store.read(), keep))
            return
        fp, baseline = self._baseline()
        for worker, vm in standbys[:room]:
            self._make(spares.new_standby(ctx, worker, vm, fp), fp, baseline)
        for _ in range(min(missing, room - min(room, len(standbys)))):
            self._make(spares.new_pooled(ctx, fp), fp, baseline)

    def _baseline(self) -> tuple[B.Fingerprint, Baseline]:
        """The fingerprint and a verified baseline, looked at again every
        :data:`REFRESH_BASELINE` seconds (a changed deploy or image: the next spares are
        made from the new one; those made from the old are dropped)."""
        ctx = self.ctx
        now = time.monotonic()
        if self.fp is None or self.baseline is None or now - self.refreshed >= REFRESH_BASELINE:
            fp = B.fingerprint(ctx)
            baseline, _ = B.ensure(ctx, fp)  # a rebuild runs pyinfra: here, on the main thread
            if self.fp is None or fp.value != self.fp.value or baseline != self.baseline:
                spares.empty_trash(ctx)
                spares.drop_stale(ctx, fp, keep=self._making())
            self.fp, self.baseline, self.refreshed = fp, baseline, now
        return self.fp, self.baseline

    def _making(self) -> set[str]:
        return {j.target.vm for j in [*self.flight.values(), *self.to_personalize] if j.target is not None}

    def _make(self, target: B.Target, fp: B.Fingerprint, baseline: Baseline) -> None:
        ctx = self.ctx

        def work() -> None:
            B.make_clones(ctx, fp, baseline, [target])
            if self.in_thread:
                B.personalize(ctx, fp, [target])

        self._submit(_Job(target), work)

    def _submit(self, job: _Job, work: object) -> None:
        self.flight[self.threads.submit(work)] = job  # type: ignore[arg-type]

    # -- what finished -------------------------------------------------------------------

    def _reap(self) -> None:
        """Collect the finished makes; personalize (on this thread) those that need it;
        record how long each took, and a failed round's back-off."""
        done = [f for f in self.flight if f.done()]
        for future in done:
            job = self.flight.pop(future)
            future.result()  # a crash or a gone checkout in a thread stops the loop
            if job.target is None:
                continue
            if self.in_thread or not job.target.result.ok:
                self._finished([job])
            else:
                self.to_personalize.append(job)
        if self.to_personalize:
            batch, self.to_personalize = self.to_personalize, []
            assert self.fp is not None
            B.personalize(self.ctx, self.fp, [j.target for j in batch if j.target is not None])
            self._finished(batch)

    def _finished(self, jobs: list[_Job]) -> None:
        now = time.monotonic()
        made = [now - j.asked for j in jobs if j.target is not None and j.target.result.ok]
        failed = [j.target.result for j in jobs if j.target is not None and not j.target.result.ok]
        spares.record_makes(self.ctx, made)
        if failed:  # deleted and forgotten: made again after the back-off
            names = [r.vm for r in failed]
            self._submit(_Job(None), lambda: spares.delete_spares(self.ctx, names))
            self.failed.extend(failed)
            self.failed_rounds += 1
            pause = min(MAX_BACKOFF, 2.0 ** (self.failed_rounds - 1))
            self.backoff_until = now + pause
            log.warning("%d spare(s) failed (%s): no new spares for %.0fs", len(failed), failed[0].error, pause)
        elif made:  # made again since: what failed before is no longer missing
            self.failed_rounds, self.failed = 0, []

    def _drain(self) -> None:
        """Wait for the makes in flight and finish them (a spare is never left half made
        by a loop that ends on its own)."""
        while self.flight:
            time.sleep(0.02)
            self._reap()

    # -- staying -------------------------------------------------------------------------

    def _staying(self) -> bool:
        """Idle: stay while a run of this checkout is alive, or within the idle grace."""
        if not self.stay:
            return False
        now = time.monotonic()
        if now - self.last_request < IDLE_GRACE:
            return True
        looked, alive = self.leases_seen
        if now - looked >= LOOK_LEASES:
            alive = bool(leases.live_runs(self.ctx.settings.inventory_dir))
            self.leases_seen = (now, alive)
        return alive


def spawn_maintainer(ctx: Context) -> None:
    """Ask for a refill: the flag, and ``orch maintain`` started in the background for this
    checkout unless a maintainer is alive (its output goes to ``.orch/logs/maintain.log``).
    Two callers at once start one process (``maintain.spawn.lock``, ``maintain.starting``)."""
    if not (ctx.settings.pool or ctx.settings.standby or ctx.store.read().trash):
        return
    wanted(ctx).touch()  # first: a maintainer at work sees it before it stops
    with FileLock(str(ctx.store.dir / "maintain.spawn.lock"), thread_local=False):
        if _alive(ctx):
            return
        ctx.logs_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            *[sys.executable, "-m", "orchestrator.cli", "--inventory-dir", str(ctx.settings.inventory_dir)],
            *["--provider", ctx.settings.provider, "--prefix", ctx.settings.prefix],
            *(["--connector", ctx.settings.connector] if ctx.settings.connector else []),
            "maintain",
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
        env[STAY_ENV] = "1"
        with (ctx.logs_dir / "maintain.log").open("a") as out:
            child = subprocess.Popen(
                argv,
                cwd=ctx.settings.root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _starting_path(ctx).write_text(f"{child.pid}\n")


def _alive(ctx: Context) -> bool:
    """A maintainer holds the lock, or one was started moments ago and has not yet."""
    with maintaining(ctx, wait=False) as free:
        if not free:
            return True
    path = _starting_path(ctx)
    pid = _pid_in(path)
    try:
        young = time.time() - path.stat().st_mtime < STARTING_FOR
    except OSError:
        return False
    return pid > 0 and young and _pid_alive(pid)
