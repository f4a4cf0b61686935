"""The labels that mark a VM as orch's, in one place.

On backends with labels (Docker), ownership is decided by these labels and never by the
name alone: a container named like orch's but without ``orch.managed-by=orch`` is not
orch's, and sweep and down leave it alone.
"""

from __future__ import annotations

from datetime import datetime, timezone

MANAGED_BY = "orch.managed-by"
MANAGED_BY_VALUE = "orch"
CHECKOUT = "orch.checkout"
WORKER = "orch.worker"
CREATED = "orch.created"
KIND = "orch.kind"  # "worker" or "oneoff"
RUN = "orch.run"  # the run (lease) a one-off VM belongs to
INVENTORY = "orch.inventory"  # the inventory folder that owns the VM (for sweep's report)


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def worker_labels(checkout: str, worker: str, inventory: str) -> dict[str, str]:
    return {
        MANAGED_BY: MANAGED_BY_VALUE,
        CHECKOUT: checkout,
        WORKER: worker,
        KIND: "worker",
        CREATED: now_iso(),
        INVENTORY: inventory,
    }


def oneoff_labels(checkout: str, run: str, inventory: str) -> dict[str, str]:
    return {
        MANAGED_BY: MANAGED_BY_VALUE,
        CHECKOUT: checkout,
        KIND: "oneoff",
        RUN: run,
        CREATED: now_iso(),
        INVENTORY: inventory,
    }


def is_orchs(labels: dict[str, str] | None) -> bool:
    return bool(labels) and labels.get(MANAGED_BY) == MANAGED_BY_VALUE
