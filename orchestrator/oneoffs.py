"""One-off VMs for lifecycle tests (the ``fresh_vm`` fixture): recorded in the state before
they are made, labelled with the run that owns them (sweep deletes them once that run is
gone), cloned from the baseline and personalized like a worker."""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

from . import baseline as B
from . import inventory, naming, spares
from .clock import now_iso
from .errors import DeployError, OrchError
from .state import CREATING, OneoffRecord
from .steps import WorkerResult

if TYPE_CHECKING:
    from .core import Orch


def create_oneoff(orch: Orch, run: str) -> inventory.InventoryHost:
    fp = orch.fingerprint()
    claimed = spares.claim(orch, run, fp)
    if claimed is not None or orch.settings.pool:
        orch.maintain_later()  # refill the pool behind the test's back
    if claimed is not None:
        return claimed
    name = naming.oneoff_vm_name(orch.settings.prefix, orch.checkout)
    with orch.store.transaction() as state:
        state.oneoffs[name] = OneoffRecord(name, run, now_iso(), os.getpid(), CREATING)

    def record(**changes: object) -> None:
        with orch.store.transaction() as state:
            rec = state.oneoffs.get(name)
            for key, value in changes.items():
                if rec is not None and hasattr(rec, key):
                    setattr(rec, key, value)

    result = WorkerResult("oneoff", name, "created")
    target = B.Target(result, orch.owner(naming.ONEOFF, run=run, fingerprint=fp.value), "oneoff", record)
    try:
        baseline, _ = B.ensure(orch, fp)
        B.clone(orch, fp, baseline, [target])
        if not result.ok:
            raise DeployError(f"fresh VM {name}: {result.error}")
    except BaseException:
        with contextlib.suppress(OrchError):
            delete_oneoff(orch, name)
        raise
    return orch.host("oneoff", name)


def delete_oneoff(orch: Orch, name: str) -> None:
    orch.provider.call(f"delete {name}", lambda: orch.provider.delete(name))
    with orch.store.transaction() as state:
        state.oneoffs.pop(name, None)
