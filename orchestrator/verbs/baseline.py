"""``orch baseline key | export DIR | import DIR``: the baseline as a CI cache entry.

- ``key``: the fingerprint of the baseline this checkout would build now (deploy
  sources, image id, orch's version, provider settings): a cache key. It makes nothing,
  needs no VM and takes no lock (it reads the deploys' sources and asks the backend for
  the image's id).
- ``export``: the current baseline, ready and verified, written to the folder as the
  entry of its key (:mod:`orchestrator.core.baseline_cache`: atomic, one entry a folder).
- ``import``: the folder's entry for this checkout's key loaded and recorded as this
  checkout's baseline, owned by this checkout (its own name and labels), so the next
  ``orch up`` clones workers from it without provisioning.

Both ``export`` and ``import`` hold the command lock (they change or read what ``orch up``
changes) and the baseline lock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.core import baseline as B
from orchestrator.core import baseline_cache
from orchestrator.primitives.errors import UsageError
from orchestrator.providers.base import Baseline
from orchestrator.state.records import READY

if TYPE_CHECKING:
    from collections.abc import Callable

    from orchestrator.core.context import Context


@dataclass
class Outcome:
    """What export or import did, for the front end to print."""

    key: str
    path: str  # the archive
    action: str  # exported, imported, present (the entry or the baseline was already there)
    seconds: float = 0.0
    size: int = 0


def key(ctx: Context) -> B.Fingerprint:
    """The fingerprint of the baseline this checkout would build now."""
    return B.fingerprint(ctx)


def export(ctx: Context, directory: Path, *, wait: bool = True, on_wait: Callable[[], None] | None = None) -> Outcome:
    """Write the current baseline to ``directory``; refused in one line when there is
    none, it is unfinished, or it is not what this checkout would build now."""
    baseline_cache.writable(directory)
    with ctx.store.command_lock(wait=wait, on_wait=on_wait):
        ctx.provider.check()
        fp = B.fingerprint(ctx)
        with ctx.baseline_lock():
            current = _current(ctx, fp)
            try:
                entry, archive = baseline_cache.find(directory, fp.value, ctx.provider.name)
                return Outcome(fp.value, str(archive), "present", size=entry.size)
            except (baseline_cache.CacheMiss, baseline_cache.CacheEntryError):
                pass  # none, or one that cannot be used: written (again) below
            took, entry = B.timed_export(ctx, fp, current, directory)
    return Outcome(fp.value, str(baseline_cache.archive_path(directory, fp.value)), "exported", took, entry.size)


def _current(ctx: Context, fp: B.Fingerprint) -> Baseline:
    rec = ctx.store.read().baseline
    if rec is None:
        raise UsageError("this checkout has no baseline yet: run `orch up` first, then export it")
    if rec.phase != READY or not rec.ref:
        raise UsageError("this checkout's baseline is not finished: run `orch up` to make it, then export it")
    if rec.fingerprint != fp.value:
        raise UsageError(
            f"this checkout's baseline drifted ({fp.drift(rec.parts)} changed since it was made): "
            "run `orch up` to rebuild it, then export it"
        )
    sealed = Baseline(rec.ref, rec.seal)
    why = ctx.provider.call("verify the baseline", lambda: ctx.provider.verify(sealed))
    if why is not None:
        raise UsageError(f"this checkout's baseline cannot be exported ({why}): run `orch up` to rebuild it, then export it")
    return sealed


def import_(ctx: Context, directory: Path, *, wait: bool = True, on_wait: Callable[[], None] | None = None) -> Outcome:
    """Load the folder's entry for this checkout's key as its baseline. Raises
    ``CacheMiss`` when the folder has none, ``CacheEntryError`` when it cannot be used
    (nothing is recorded ready then)."""
    with ctx.store.command_lock(wait=wait, on_wait=on_wait):
        ctx.provider.check()
        fp = B.fingerprint(ctx)
        entry, archive = baseline_cache.find(directory, fp.value, ctx.provider.name)
        with ctx.baseline_lock():
            rec = ctx.store.read().baseline
            if rec is not None and B.unusable(ctx, fp, rec) is None:
                return Outcome(fp.value, str(archive), "present", size=entry.size)
            started = time.monotonic()
            B.adopt(ctx, fp, archive)
            return Outcome(fp.value, str(archive), "imported", time.monotonic() - started, entry.size)
