"""Where a checkout lives, told in a way another process can check: which host, and which
folder on it (device and inode of the inventory folder and each of its parents).

Sweep may judge a VM by its checkout's folder, state or run leases only when it sees the
same filesystem that checkout lives in. A sweep in a container that shares the host's
Docker socket, in another mount namespace, or against a remote engine may not: the
folder then looks gone while its runs are alive. :func:`judge` says whether this process
sees the folder (SAME), sees where it was and that it is gone (GONE), or cannot tell
(UNKNOWN, with the reason) — and only age may condemn a VM it cannot judge.
"""

from __future__ import annotations

import enum
import hashlib
import os
import socket
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path


class Seen(enum.Enum):
    SAME = "same"
    GONE = "gone"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Verdict:
    seen: Seen
    reason: str = ""


@lru_cache(maxsize=1)
def host_id() -> str:
    """A stable id of this machine: its machine-id where it has one (Linux), else its
    host name and hardware address (macOS)."""
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text:
            return hashlib.sha256(text.encode()).hexdigest()[:12]
    raw = f"{socket.gethostname()}-{uuid.getnode():012x}"
    return hashlib.sha256(raw.encode()).hexdigest()[:12]


def _ident(path: Path) -> str:
    st = os.stat(path)
    return f"{st.st_dev:x}:{st.st_ino:x}"


def fs_chain(folder: Path) -> str:
    """``dev:ino`` of the folder and of each parent up to ``/``, comma-separated."""
    path = Path(os.path.realpath(folder))
    chain = []
    for p in (path, *path.parents):
        try:
            chain.append(_ident(p))
        except OSError:
            chain.append("?")
    return ",".join(chain)


def judge(folder: Path, host: str, chain: str) -> Verdict:
    """Can this process judge the checkout in ``folder`` that recorded ``host``/``chain``?"""
    if not host or not chain:
        return Verdict(Seen.UNKNOWN, "no record of where it was made")
    if host != host_id():
        return Verdict(Seen.UNKNOWN, f"made on another host ({host}; this one is {host_id()})")
    recorded = chain.split(",")
    path = Path(folder)
    candidates = [path, *path.parents]
    if len(candidates) != len(recorded):
        return Verdict(Seen.UNKNOWN, "its folder's path does not match where it was made")
    for depth, p in enumerate(candidates):
        try:
            seen = _ident(p)
        except FileNotFoundError:
            continue
        except OSError as err:
            return Verdict(Seen.UNKNOWN, f"cannot look at {p} ({err.strerror})")
        if seen != recorded[depth] or any(
            _safe_ident(q) != recorded[depth + 1 + i] for i, q in enumerate(candidates[depth + 1 :])
        ):
            what = "its folder" if depth == 0 else str(p)
            return Verdict(Seen.UNKNOWN, f"{what} is not the one it was made in (another mount or filesystem)")
        if depth == 0:
            return Verdict(Seen.SAME)
        return Verdict(Seen.GONE, f"its inventory folder is gone ({folder})")
    return Verdict(Seen.UNKNOWN, "none of its folder's parents is visible here")


def _safe_ident(path: Path) -> str:
    try:
        return _ident(path)
    except OSError:
        return "?"
