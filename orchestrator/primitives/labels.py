"""Who a VM belongs to, and the labels that say so, in one place.

The core describes every VM it asks for with an :class:`Owner` (kind, checkout, worker or
run, and where the checkout lives). Backends with labels (Docker) write it as labels;
backends without (OrbStack) carry the checkout and worker in the name, and sweep finds
the rest through the registry. Ownership is decided in :mod:`orchestrator.core.ownership`,
never by the name alone where labels exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator.primitives.clock import now_iso
from orchestrator.primitives.kinds import Kind

MANAGED_BY = "orch.managed-by"
MANAGED_BY_VALUE = "orch"
CHECKOUT = "orch.checkout"
WORKER = "orch.worker"
CREATED = "orch.created"
KIND = "orch.kind"  # the Kind a VM was made as (its value)
RUN = "orch.run"  # the run (lease) a one-off VM belongs to
INVENTORY = "orch.inventory"  # the inventory folder that owns the VM
HOST = "orch.host"  # the host that folder is on (location.host_id)
FS = "orch.fs"  # the folder's identity on that host (location.fs_chain)
FINGERPRINT = "orch.fingerprint"  # what made the baseline this VM comes from
#: On a standby: the name it was made under. Labels cannot change after creation, but a
#: swap renames the VM (into its worker's name, later out to a trash name): a VM under a
#: standby's form of name whose label names another is one swapped out of a worker.
MADE_AS = "orch.made-as"
#: On a committed baseline image: the checkout it is the baseline of. Not MANAGED_BY:
#: a container someone starts by hand from the image must not look like orch's.
BASELINE_OF = "orch.baseline-of"

ALL = (MANAGED_BY, CHECKOUT, WORKER, CREATED, KIND, RUN, INVENTORY, HOST, FS, FINGERPRINT, MADE_AS)


@dataclass(frozen=True)
class Owner:
    """What a VM is and whose: the core's description, written by each provider its own way."""

    kind: Kind
    checkout: str
    inventory: str
    host: str = ""
    fs: str = ""
    worker: str = ""
    run: str = ""
    fingerprint: str = ""
    created: str = field(default_factory=now_iso)
    #: The host name inside the VM, where the backend sets it at creation (a standby
    #: takes its worker's VM name, which it gets when it is swapped in).
    hostname: str = ""
    #: A standby's own name (``MADE_AS``): what tells it from trash after the state is lost.
    made_as: str = ""

    def __post_init__(self) -> None:
        # a kind given as its word ("worker": a provider's or a plugin's code) is that Kind;
        # an unknown word is refused here, not when the labels are written
        object.__setattr__(self, "kind", Kind(self.kind))

    def labels(self) -> dict[str, str]:
        out = {
            MANAGED_BY: MANAGED_BY_VALUE,
            CHECKOUT: self.checkout,
            KIND: self.kind.value,
            CREATED: self.created,
            INVENTORY: self.inventory,
            HOST: self.host,
            FS: self.fs,
            WORKER: self.worker,
            RUN: self.run,
            FINGERPRINT: self.fingerprint,
            MADE_AS: self.made_as,
        }
        return {k: v for k, v in out.items() if v}


def kind(labels: dict[str, str]) -> Kind | None:
    """The kind a VM's labels say it was made as (None: no kind, or one this orch does not know)."""
    try:
        return Kind(labels.get(KIND, ""))
    except ValueError:
        return None


def is_orchs(labels: dict[str, str] | None) -> bool:
    return bool(labels) and labels.get(MANAGED_BY) == MANAGED_BY_VALUE  # type: ignore[union-attr]
