"""Time helpers shared by the core and sweep: ISO timestamps and ages, durations."""

from __future__ import annotations

import re
from datetime import datetime, timezone

from orchestrator.primitives.errors import UsageError

_DURATION_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([smhd]?)$")


def now_iso() -> str:
    """Now, as orch writes times in labels and the state (UTC, seconds)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


_RFC3339_RE = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2})(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})?")


def iso_ms(text: str) -> str:
    """A backend's RFC 3339 time (any fraction of a second, ``Z`` or an offset) as orch
    keeps a VM's creation time: UTC to the millisecond, ``2024-05-01T12:00:00.123Z`` (to
    the second where the backend gives no fraction)
    (what tells apart two VMs made in one second, and the tests that made them); "" when
    it cannot be read. :func:`age` reads it as it reads any of orch's times."""
    m = _RFC3339_RE.fullmatch(text.strip()) if isinstance(text, str) else None
    if m is None:
        return ""
    try:
        then = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return ""
    zone = m.group(3) or "Z"
    offset = timezone.utc if zone == "Z" else datetime.strptime(zone.replace(":", ""), "%z").tzinfo
    then = then.replace(tzinfo=offset).astimezone(timezone.utc)
    if not m.group(2):
        return then.strftime("%Y-%m-%dT%H:%M:%SZ")  # to the second: said so, not padded
    return then.strftime("%Y-%m-%dT%H:%M:%S") + f".{int(float(m.group(2)) * 1000):03d}Z"


def epoch(text: str) -> tuple[float, float] | None:
    """(seconds since the epoch, how precise) of one of orch's UTC times: to the second, or
    as finely as its fraction says; None when it cannot be read."""
    m = _RFC3339_RE.fullmatch(text.strip()) if isinstance(text, str) else None
    if m is None or m.group(3) not in (None, "Z"):
        return None
    try:
        then = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None
    fraction = m.group(2) or ""
    return then + float(fraction or "0"), 10.0 ** -(len(fraction) - 1) if fraction else 1.0


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
