"""Names of worker ids and VMs, and their validation.

Everything a user types that ends up in a VM name, a path or a command passes through
here first. Worker VMs are named ``{prefix}-{checkout}-{worker}``: stable (the same
checkout always gets the same names, so ``orch up`` is idempotent), unique per checkout
(two clones on one machine never share a VM) and recognisable as orch's.
One-off VMs are named prefix, checkout, timestamp, pid, random suffix.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import time
from pathlib import Path

from orchestrator.primitives.errors import UsageError
from orchestrator.primitives.kinds import WORKER_ID, Kind

#: The most workers one checkout may have; ``--workers`` above it is refused.
MAX_WORKERS = 256
DEFAULT_PREFIX = "orch"

_WORKER_RE = re.compile(WORKER_ID)
_PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,15}$")
_CHECKOUT_RE = re.compile(r"^[0-9a-f]{8}$")


def validate_worker_id(worker: str) -> str:
    """Return ``worker`` if it is a valid worker id (``gw0`` … ``gw255``), else raise."""
    if not isinstance(worker, str) or not _WORKER_RE.fullmatch(worker) or int(worker[2:]) >= MAX_WORKERS:
        shown = repr(worker) if isinstance(worker, str) else type(worker).__name__
        raise UsageError(f"invalid worker id {shown}: use gw0 … gw{MAX_WORKERS - 1}, as pytest-xdist names its workers")
    return worker


def worker_index(worker: str) -> int:
    return int(validate_worker_id(worker)[2:])


def worker_ids(count: int) -> list[str]:
    """``gw0`` … ``gw{count-1}``, the ids pytest-xdist gives ``-n count`` workers."""
    validate_worker_count(count)
    return [f"gw{i}" for i in range(count)]


def validate_worker_count(count: int) -> int:
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_WORKERS:
        raise UsageError(f"--workers must be between 1 and {MAX_WORKERS} (got {count!r})")
    return count


def validate_prefix(prefix: str) -> str:
    if not isinstance(prefix, str) or not _PREFIX_RE.fullmatch(prefix):
        raise UsageError(f"invalid prefix {prefix!r}: use 1-16 lowercase letters or digits, starting with a letter")
    return prefix


def checkout_id(inventory_dir: Path) -> str:
    """A short, stable id of one checkout: a hash of its inventory folder's real path."""
    real = os.path.realpath(inventory_dir)
    return hashlib.sha256(real.encode()).hexdigest()[:8]


def validate_checkout_id(checkout: str) -> str:
    if not _CHECKOUT_RE.fullmatch(checkout):
        raise UsageError(f"invalid checkout id {checkout!r}")
    return checkout


def worker_vm_name(prefix: str, checkout: str, worker: str) -> str:
    return f"{validate_prefix(prefix)}-{validate_checkout_id(checkout)}-{validate_worker_id(worker)}"


def oneoff_vm_name(prefix: str, checkout: str) -> str:
    """A one-off VM name: ``{prefix}-{checkout}-x{timestamp}-{pid}-{random}``.

    Timestamp and pid alone collide under ``pytest -n`` (the seed's bug); the random
    suffix (48 bits) makes a collision between processes vanishingly unlikely.
    """
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    return f"{validate_prefix(prefix)}-{validate_checkout_id(checkout)}-x{stamp}-{os.getpid()}-{secrets.token_hex(6)}"


def baseline_vm_name(prefix: str, checkout: str, fingerprint: str) -> str:
    """The per-checkout VM that provisioning makes into the baseline (kept as a machine to
    clone on OrbStack, committed to an image on Docker). ``z`` makes it sort after the
    workers: tests that take "the first machine in the list" never get it."""
    if not re.fullmatch(r"[0-9a-f]{8,}", fingerprint):
        raise UsageError(f"invalid baseline fingerprint {fingerprint!r}")
    return f"{validate_prefix(prefix)}-{validate_checkout_id(checkout)}-zbaseline-{fingerprint[:8]}"


def standby_vm_name(prefix: str, checkout: str, worker: str) -> str:
    """A worker's standby (or a VM swapped out of a worker's name, on its way out)."""
    return f"{worker_vm_name(prefix, checkout, worker)}-s{secrets.token_hex(4)}"


def kept_vm_name(prefix: str, checkout: str, worker: str, *, now: float | None = None) -> str:
    """The name a failing test's worker VM is kept under: ``{worker VM}-kept-{UTC time}-{random}``.
    The time is when it was kept (its labels say when its worker was made): what
    ``orch sweep --older-than`` judges it by, even where its checkout cannot be seen."""
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(now))
    return f"{worker_vm_name(prefix, checkout, worker)}-kept-{stamp}-{secrets.token_hex(2)}"


def kept_at(suffix: str) -> str:
    """When a kept VM was kept (ISO 8601, UTC), from its name's suffix ("" for another kind)."""
    m = re.fullmatch(rf"{WORKER_ID}-kept-([0-9]{{14}})-[0-9a-f]{{4}}", suffix)
    if m is None:
        return ""
    t = m.group(1)
    return f"{t[:4]}-{t[4:6]}-{t[6:8]}T{t[8:10]}:{t[10:12]}:{t[12:14]}Z"


def parse_vm_name(prefix: str, name: str) -> tuple[str, str] | None:
    """Split an orch VM name into (checkout id, suffix): the suffix has one kind's form (a
    worker id, a standby ``gw1-s…``, a kept VM ``gw1-kept-…``, a baseline ``zbaseline-…``,
    a one-off ``x…``); None if the name has none."""
    m = re.fullmatch(rf"{re.escape(prefix)}-([0-9a-f]{{8}})-({Kind.suffixes()})", name)
    return (m.group(1), m.group(2)) if m else None


def kind_of(suffix: str) -> Kind:
    """What a parsed name's suffix says the VM is."""
    kind = Kind.of_suffix(suffix)
    if kind is None:
        raise UsageError(f"{suffix!r} is not the end of an orch VM name")
    return kind


def worker_of(suffix: str) -> str:
    """The worker id a name of a kind named after its worker carries ("" for other kinds)."""
    return suffix.split("-", 1)[0] if kind_of(suffix).of_worker else ""


# -- names for VMs that tests make themselves ----------------------------------------------

#: The longest base a test may give ``orchestrator.vm_name``: with the rest of the name
#: (checkout, 10-digit time, a pid of up to 7 digits, 6 random hex digits) it stays within
#: 63 characters, the longest name Incus and OrbStack take (a hostname's label).
VM_BASE_MAX = 28
_VM_BASE_RE = re.compile(rf"[a-z](?:[a-z0-9-]{{0,{VM_BASE_MAX - 2}}}[a-z0-9])?")
_NAMED_VM_RE = re.compile(r"([a-z][a-z0-9-]*)-([0-9a-f]{8})-[0-9]{10}-[0-9]{1,7}-[0-9a-f]{6}")


def validate_vm_base(base: str) -> str:
    """Return ``base`` if a VM name may begin with it on every backend, else raise: what
    reaches ``docker run --name``, ``orbctl create`` or ``incus launch`` is checked here."""
    if not isinstance(base, str) or not _VM_BASE_RE.fullmatch(base) or "--" in base:
        shown = repr(base) if isinstance(base, str) else type(base).__name__
        raise UsageError(
            f"invalid VM name base {shown}: use 1-{VM_BASE_MAX} lowercase letters, digits or single hyphens, "
            'starting with a letter and ending with a letter or digit (e.g. "test-vm")'
        )
    return base


def named_vm_name(base: str, checkout: str, *, now: float | None = None, pid: int | None = None) -> str:
    """A name for a VM a test makes itself: the seed's ``{base}-{timestamp}-{pid}-{random}``
    with the checkout after the base, ``test-vm-1a2b3c4d-1698765432-12345-9f0e1d``.

    Letters, digits and hyphens, starting with a letter, at most 63 characters: a name
    Docker, podman, OrbStack and Incus all take. The checkout tells whose it is (sweep and
    the leak check never judge another checkout's); the state's record, made before the
    name is handed out, is what makes it unique (the random part only spares a retry).
    """
    stamp = int(time.time() if now is None else now)
    return f"{validate_vm_base(base)}-{validate_checkout_id(checkout)}-{stamp:010d}-{pid or os.getpid()}-{secrets.token_hex(3)}"


def parse_named_vm_name(name: str) -> tuple[str, str] | None:
    """(base, checkout id) of a name :func:`named_vm_name` makes; None for any other name."""
    m = _NAMED_VM_RE.fullmatch(name)
    return (m.group(1), m.group(2)) if m else None


def orch_form(name: str) -> bool:
    """Whether ``name`` has the form of an orch VM's name under any prefix (another
    checkout's, with a prefix of its own): on a backend without labels, all that tells
    orch's VMs from the ones tests make."""
    return re.fullmatch(rf"[a-z][a-z0-9]{{0,15}}-[0-9a-f]{{8}}-(?:{Kind.suffixes()})", name) is not None
