"""Time helpers shared by the core and sweep: ISO timestamps and ages, durations."""

from __future__ import annotations

import re
from datetime import datetime, timezone

from orchestrator.primitives.errors import UsageError

_DURATION_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([smhd]?)$")


def now_iso() -> str:
    """Now, as orch writes times in labels and the state (UTC, seconds)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def age(created: str) -> float | None:
    """Seconds since an ISO 8601 UTC time, or None when it cannot be read."""
    try:
        then = datetime.strptime(created[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    except (TypeError, ValueError):
        return None
    return max(0.0, (datetime.now(timezone.utc) - then).total_seconds())


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``2h``, ``7d`` → seconds."""
    m = _DURATION_RE.match(text.strip()) if isinstance(text, str) else None
    if not m:
        raise UsageError(f"invalid duration {text!r}: use a number with s, m, h or d, e.g. 2h")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def human(seconds: float) -> str:
    """A short age for tables: 42s, 5m, 3h, 2d."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"
