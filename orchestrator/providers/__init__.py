"""Providers are found through the ``orch.providers`` entry-point group, so a connector
package can ship its own; the built-in ones are also known without installation metadata."""

from __future__ import annotations

from importlib.metadata import entry_points

from ..config import Settings
from ..errors import UsageError
from .base import Provider, VMInfo, WaitStrategy

BUILTIN = {
    "docker": "orchestrator.providers.docker:DockerProvider",
    "orbstack": "orchestrator.providers.orbstack:OrbStackProvider",
}

__all__ = ["Provider", "VMInfo", "WaitStrategy", "available", "get_provider"]


def available() -> dict[str, str]:
    found = dict(BUILTIN)
    for ep in entry_points(group="orch.providers"):
        found[ep.name] = ep.value
    return found


def get_provider(settings: Settings) -> Provider:
    known = available()
    target = known.get(settings.provider)
    if target is None:
        raise UsageError(
            f"unknown provider {settings.provider!r}: choose one of {', '.join(sorted(known))} "
            "with --provider, ORCH_PROVIDER or [tool.orch] provider"
        )
    module_name, _, attr = target.partition(":")
    import importlib

    cls = getattr(importlib.import_module(module_name), attr)
    return cls(settings)
