"""Ownership: is this VM orch's, of which kind, and whose? One judge, used by up, down,
reset, repair and sweep alike.

A VM is orch's only when its name has orch's form (``<prefix>-<checkout>-<suffix>``)
*and*, on a backend with labels, its labels say the same thing as its name: managed by
orch, the same checkout, and for a worker the same worker id. A container with gw0's
labels under gw2's name is nobody's worker: down, reset and sweep all leave it alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.primitives import labels as L
from orchestrator.primitives import naming
from orchestrator.primitives.kinds import Kind
from orchestrator.providers.base import VMInfo

#: Labels a VM may carry under a name of another kind: a swap renames a standby into its
#: worker's name, and the worker's old VM out to a standby's form of name (trash); a keep
#: renames a worker's VM (made as the worker, or as its standby) to a kept name.
_COMPATIBLE = {Kind.WORKER: {Kind.STANDBY}, Kind.STANDBY: {Kind.WORKER}, Kind.KEPT: {Kind.WORKER, Kind.STANDBY}}


@dataclass(frozen=True)
class Identity:
    """What orch's name and labels say a VM is."""

    checkout: str
    kind: Kind
    worker: str  # for kinds named after a worker
    suffix: str


def identify(info: VMInfo, prefix: str, has_labels: bool) -> tuple[Identity | None, str]:
    """(what it is, "") for orch's VMs; (None, why it is not orch's) for anything else."""
    parsed = naming.parse_vm_name(prefix, info.name)
    if parsed is None:
        return None, "not an orch name"
    checkout, suffix = parsed
    kind, worker = naming.kind_of(suffix), naming.worker_of(suffix)
    if has_labels:
        labels = info.labels or {}
        if not L.is_orchs(labels):
            return None, "no orch labels"
        if labels.get(L.CHECKOUT) != checkout:
            return None, f"labels say checkout {labels.get(L.CHECKOUT) or 'none'}, the name says {checkout}"
        said = labels.get(L.KIND, "")
        if said and said != kind.value and said not in {k.value for k in _COMPATIBLE.get(kind, ())}:
            return None, f"labels say {said}, the name says {kind}"
        if worker and labels.get(L.WORKER, worker) != worker:
            return None, f"labels say worker {labels.get(L.WORKER)}, the name says {worker}"
    return Identity(checkout, kind, worker, suffix), ""


def owned(info: VMInfo | None, prefix: str, has_labels: bool, checkout: str, worker: str | None = None) -> bool:
    """Is this VM orch's, of this checkout (and, if given, this worker's)?"""
    if info is None:
        return False
    found, _ = identify(info, prefix, has_labels)
    return found is not None and found.checkout == checkout and (worker is None or found.worker == worker)
