"""What a test changed on its worker, and the protocol of what finds it out.

A :class:`Checker` answers for one VM: ``arm()`` takes the VM's state now as the state
before the next test, ``check()`` says what changed since (and arms again, so the state
after one test is the state before the next). Where a backend can tell cheaply (an
overlay's upper directory read from the host), its provider makes the checker; elsewhere
one command inside the VM does (``orchestrator.core.isolation``). Both answer with the
same :class:`Changes`, filtered by the same :class:`Ignore`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol

from orchestrator.primitives.errors import OrchError

#: What the check never reports: the kernel's and the runtime's own file systems, and the
#: places where orch and the baseline's own daemons write (on machines, journald, systemd,
#: and the units Debian's timers start: dpkg-db-backup's copies in /var/backups,
#: apt-daily's lock, stamps and caches, and the dpkg locks it takes).
DEFAULT_IGNORE: tuple[str, ...] = ("/proc", "/sys", "/dev", "/run")
MACHINE_IGNORE: tuple[str, ...] = (
    "/var/log/journal",
    "/var/lib/systemd",
    "/var/backups",
    "/var/lib/apt/daily_lock",
    "/var/lib/apt/periodic",
    "/var/cache/apt/pkgcache.bin",
    "/var/cache/apt/srcpkgcache.bin",
    "/var/lib/dpkg/lock",
    "/var/lib/dpkg/lock-frontend",
)


@dataclass(frozen=True)
class Ignore:
    """Paths whose changes are not reported: each covers itself and what is under it."""

    paths: tuple[str, ...] = DEFAULT_IGNORE

    @classmethod
    def of(cls, extra: list[str] | tuple[str, ...] = (), *, machine: bool = False) -> Ignore:
        base = DEFAULT_IGNORE + (MACHINE_IGNORE if machine else ())
        return cls(tuple(dict.fromkeys((*base, *extra))))

    def covers(self, path: str) -> bool:
        return any(path == p or path.startswith(p.rstrip("/") + "/") for p in self.paths)


@dataclass(frozen=True)
class Changes:
    """What changed on a worker between two checks; empty (falsy) when nothing did.
    Paths are absolute; packages are ``name version``; processes ``pid command``."""

    created: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()
    users_added: tuple[str, ...] = ()
    users_removed: tuple[str, ...] = ()
    groups_added: tuple[str, ...] = ()
    groups_removed: tuple[str, ...] = ()
    packages_installed: tuple[str, ...] = ()
    packages_removed: tuple[str, ...] = ()
    processes: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))

    def as_dict(self) -> dict[str, list[str]]:
        """The non-empty fields, as lists (the JSON report's form)."""
        return {k: list(v) for k, v in asdict(self).items() if v}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Changes:
        known = {f.name for f in fields(cls)}
        return cls(**{k: tuple(str(x) for x in v) for k, v in data.items() if k in known})

    def lines(self, limit: int = 3) -> list[str]:
        """A few lines a person reads: one per kind of change, at most ``limit`` items each
        (and how many more)."""
        out = []
        for f in fields(self):
            items: tuple[str, ...] = getattr(self, f.name)
            if items:
                shown = ", ".join(items[:limit])
                more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
                out.append(f"{f.name.replace('_', ' ')}: {shown}{more}")
        return out


class CheckFailed(OrchError):
    """The check could not tell what changed (the VM is gone or did not answer, the
    command failed, its earlier state was lost with a restart): never taken for clean."""


class Checker(Protocol):
    """Tells what changed on one VM between two moments."""

    def arm(self) -> None:
        """Take the VM's state now as the state before the next test."""
        ...

    def check(self) -> Changes:
        """What changed since ``arm`` (or the last check), reported through the checker's
        ``Ignore``; arms again. Raises :class:`CheckFailed` when it cannot tell."""
        ...
