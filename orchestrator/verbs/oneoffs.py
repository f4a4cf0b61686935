"""One-off VMs for lifecycle tests (the ``fresh_vm`` fixture): recorded in the state before
they are made, labelled with the run that owns them (sweep deletes them once that run is
gone), cloned from the baseline and personalized like a worker.

A run killed while its background deletions ran leaves records of VMs that are gone;
:func:`forget_gone` drops them (sweep and the next up, status, down or reset call it)."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.core import baseline as B
from orchestrator.core import spares
from orchestrator.core.steps import WorkerResult
from orchestrator.primitives import naming
from orchestrator.primitives.clock import now_iso
from orchestrator.primitives.errors import DeployError, OrchError
from orchestrator.primitives.kinds import Kind
from orchestrator.state import inventory, leases
from orchestrator.state.records import CREATING, OneoffRecord
from orchestrator.state.store import StateStore

if TYPE_CHECKING:
    from orchestrator.core.context import Context
    from orchestrator.providers.base import Provider

log = logging.getLogger(__name__)


def create_oneoff(ctx: Context, run: str) -> inventory.InventoryHost:
    fp = B.fingerprint(ctx)
    claimed = spares.take_pooled(ctx, run, fp)
    if claimed is not None or ctx.settings.pool:
        ctx.refill()  # refill the pool behind the test's back
    if claimed is not None:
        return claimed
    name = naming.oneoff_vm_name(ctx.settings.prefix, ctx.checkout)
    with ctx.store.transaction() as state:
        state.oneoffs[name] = OneoffRecord(name, run, now_iso(), os.getpid(), CREATING)

    def record(**changes: object) -> None:
        ctx.store.update(Kind.ONEOFF, name, vm=name, **changes)

    result = WorkerResult(Kind.ONEOFF.value, name, "created")
    target = B.Target(result, ctx.owner(Kind.ONEOFF, run=run, fingerprint=fp.value), Kind.ONEOFF.value, record)
    try:
        baseline, _ = B.ensure(ctx, fp)
        B.clone(ctx, fp, baseline, [target])
        if not result.ok:
            raise DeployError(f"fresh VM {name}: {result.error}")
    except BaseException:
        with contextlib.suppress(OrchError):
            delete_oneoff(ctx, name)
        raise
    return ctx.host(Kind.ONEOFF.value, name)


def delete_oneoff(ctx: Context, name: str) -> None:
    ctx.provider.call(f"delete {name}", lambda: ctx.provider.delete(name))
    with ctx.store.transaction() as state:
        state.oneoffs.pop(name, None)


def forget_gone(store: StateStore, inventory_dir: Path, provider: Provider, *, dry_run: bool = False) -> list[OneoffRecord]:
    """Drop (unless ``dry_run``) and return the records of one-offs whose run is dead and
    whose VM is gone: what a run killed during its background deletions leaves.

    Only what is known to be gone goes: a live run's record stays (its VM may be being
    made, or deleted, right now; a dead run never comes back), so does a pool VM's (the
    maintainer's), one on an engine that does not answer, and every record of a state
    written by another provider than this one (it cannot see their VMs). Costs no
    backend call when no dead run's one-off is recorded."""
    try:
        data = store.read()
    except OrchError:
        return []  # the command itself says what is wrong with the state
    if data.provider and data.provider != provider.name:
        return []
    dead = [o for o in data.oneoffs.values() if not o.pool and not leases.run_alive(inventory_dir, o.run)]
    if not dead:
        return []
    try:
        provider.check()
        unreachable = provider.unreachable_engines()
        gone = [
            o for o in dead if not (unreachable and (not o.engine or o.engine in unreachable)) and provider.inspect(o.vm) is None
        ]
    except OrchError as err:
        log.debug("could not look for gone one-offs of %s: %s", inventory_dir, err)  # the command says why
        return []
    if gone and not dry_run:
        with store.transaction() as state:
            for rec in gone:
                if state.oneoffs.get(rec.vm) == rec:  # unchanged since it was looked at
                    state.oneoffs.pop(rec.vm)
    return gone


def forget_gone_oneoffs(ctx: Context) -> list[OneoffRecord]:
    """:func:`forget_gone` for this checkout (the first step of up, status, down, reset)."""
    return forget_gone(ctx.store, ctx.settings.inventory_dir, ctx.provider)
