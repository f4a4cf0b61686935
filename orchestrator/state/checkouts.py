"""Which inventory folder each checkout id belongs to, on this machine.

Backends with labels (Docker) carry the inventory folder and its location on every VM.
Backends without (OrbStack) only have the name, whose checkout id is a hash; sweep looks
the checkout up here. One small JSON file per checkout under ``$ORCH_HOME`` (default
``~/.local/state/orch``), written when a checkout's state is written, removed when the
checkout has nothing left (``orch down``) or sweep finds its folder gone.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from orchestrator.primitives.errors import ConfigError, OrchError
from orchestrator.primitives.naming import validate_checkout_id
from orchestrator.state.location import fs_chain, host_id


@dataclass(frozen=True)
class CheckoutRef:
    """Where a checkout lives: its inventory folder, the host and the folder's identity."""

    inventory: str
    host: str = ""
    fs: str = ""

    @classmethod
    def here(cls, inventory_dir: Path) -> CheckoutRef:
        return cls(os.path.realpath(inventory_dir), host_id(), fs_chain(inventory_dir))


def home() -> Path:
    return Path(os.environ.get("ORCH_HOME") or Path.home() / ".local" / "state" / "orch")


def check_home() -> None:
    """An ``ORCH_HOME`` orch cannot keep its registry in (a file, a folder under
    ``/proc``, a read-only one) is refused in one line: registering is otherwise best
    effort, and commands would run without a registry and never say so."""
    named = os.environ.get("ORCH_HOME")
    if not named:
        return
    folder = Path(named) / "checkouts"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        usable = os.access(folder, os.W_OK | os.X_OK)
    except OSError:
        usable = False
    if not usable:
        raise ConfigError(f"ORCH_HOME={named} is not a folder orch can write: point ORCH_HOME at one (or unset it)")


def _path(checkout: str) -> Path:
    return home() / "checkouts" / validate_checkout_id(checkout)


def register(checkout: str, ref: CheckoutRef) -> None:
    path = _path(checkout)
    text = json.dumps(asdict(ref), sort_keys=True)
    with contextlib.suppress(OSError):
        if path.read_text() == text:
            return
    with contextlib.suppress(OSError):  # best effort: sweep then judges such VMs by age only
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)


def lookup(checkout: str) -> CheckoutRef | None:
    try:
        raw = _path(checkout).read_text()
    except (OSError, OrchError):
        return None
    try:
        data = json.loads(raw)
        return CheckoutRef(str(data["inventory"]), str(data.get("host", "")), str(data.get("fs", "")))
    except (ValueError, KeyError, TypeError):
        return CheckoutRef(raw.strip())  # an older plain entry: a path without a location


def unregister(checkout: str) -> None:
    with contextlib.suppress(OSError, OrchError):
        _path(checkout).unlink()


def entries() -> dict[str, CheckoutRef]:
    folder = home() / "checkouts"
    found = {}
    for p in folder.glob("*") if folder.is_dir() else []:
        if len(p.name) == 8 and (ref := lookup(p.name)) is not None:
            found[p.name] = ref
    return found
