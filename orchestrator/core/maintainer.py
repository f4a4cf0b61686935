"""The maintainer: the one process at a time that refills spares and empties the trash.

After a claim or a swap, the process that did it starts ``orch maintain`` in the
background (:func:`spawn_maintainer`; its own process, so pyinfra runs on its main
thread and it outlives nothing it needs): it deletes swapped-out VMs and makes the
missing spares (:func:`orchestrator.core.spares.fill`), one maintainer at a time
(``.orch/maintain.lock``, :func:`maintaining`). ``orch up`` and ``orch down`` hold the
same lock while they fill or delete spares.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock

from orchestrator.core import baseline as B
from orchestrator.core.spares import fill
from orchestrator.core.steps import WorkerResult
from orchestrator.primitives.errors import CheckoutGone

if TYPE_CHECKING:
    from orchestrator.core.context import Context

log = logging.getLogger(__name__)


@contextlib.contextmanager
def maintaining(ctx: Context, *, wait: bool = True) -> Iterator[bool]:
    """Held by the one process that makes spares and empties the trash."""
    ctx.store.ensure_dir()
    lock = FileLock(str(ctx.store.dir / "maintain.lock"))
    try:
        lock.acquire(timeout=-1 if wait else 0)
    except Exception:  # filelock.Timeout: another maintainer is at it
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


def wanted(ctx: Context) -> Path:
    """A flag: someone claimed or swapped since the maintainer last looked."""
    return ctx.store.dir / "maintain.wanted"


def maintain(ctx: Context) -> list[WorkerResult]:
    """Refill spares until nobody asked for more while it worked (what ``orch maintain``
    does); a refill asked for while it finished is never lost.

    It runs in the background, so its checkout may be deleted under it (``rm -rf``): it
    never makes a state, a folder or a lock again (``existing_only``), and stops at the
    first sign. What it made meanwhile carries the gone folder's location in its labels
    (or the registry), so sweep deletes it as an orphan of a gone checkout."""
    if not ctx.store.exists():
        return []  # no state: nothing to refill, and no folder to make for it
    ctx.store.existing_only = True
    try:
        return _refill(ctx)
    except CheckoutGone as err:
        log.warning("stopping: %s", err)
        return []


def _refill(ctx: Context) -> list[WorkerResult]:
    failed: list[WorkerResult] = []
    while True:
        with maintaining(ctx, wait=not failed) as mine:
            if not mine:
                return failed
            while True:
                wanted(ctx).unlink(missing_ok=True)
                if not ctx.store.read().workers:
                    return failed
                fp = B.fingerprint(ctx)
                baseline, _ = B.ensure(ctx, fp)
                failed = [r for r in fill(ctx, fp, baseline) if not r.ok]
                if failed or not wanted(ctx).exists():
                    break
        if failed or not wanted(ctx).exists():
            return failed


def spawn_maintainer(ctx: Context) -> None:
    """Start ``orch maintain`` in the background for this checkout (its output goes to
    ``.orch/logs/maintain.log``)."""
    if not (ctx.settings.pool or ctx.settings.standby or ctx.store.read().trash):
        return
    wanted(ctx).touch()  # first: a maintainer at work sees it before it stops
    with maintaining(ctx, wait=False) as free:
        if not free:
            return
    ctx.logs_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        *[sys.executable, "-m", "orchestrator.cli", "--inventory-dir", str(ctx.settings.inventory_dir)],
        *["--provider", ctx.settings.provider, "--prefix", ctx.settings.prefix],
        *(["--connector", ctx.settings.connector] if ctx.settings.connector else []),
        "maintain",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    with (ctx.logs_dir / "maintain.log").open("a") as out:
        subprocess.Popen(
            argv,
            cwd=ctx.settings.root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
