"""Which inventory folder each checkout id belongs to, on this machine.

Backends with labels (Docker) carry the inventory folder on every VM. Backends without
(OrbStack) only have the name, whose checkout id is a hash; sweep looks the folder up
here to judge such a VM by its checkout's state. One small file per checkout under
``$ORCH_HOME`` (default ``~/.local/state/orch``), written whenever a state is written.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from .errors import OrchError
from .naming import validate_checkout_id


def home() -> Path:
    return Path(os.environ.get("ORCH_HOME") or Path.home() / ".local" / "state" / "orch")


def register(checkout: str, inventory_dir: Path) -> None:
    path = home() / "checkouts" / validate_checkout_id(checkout)
    target = str(Path(inventory_dir).absolute())
    with contextlib.suppress(OSError):
        if path.read_text() == target:
            return
    with contextlib.suppress(OSError):  # best effort: sweep then keeps such VMs
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(target)
        os.replace(tmp, path)


def lookup(checkout: str) -> Path | None:
    try:
        return Path((home() / "checkouts" / validate_checkout_id(checkout)).read_text())
    except (OSError, OrchError):
        return None
