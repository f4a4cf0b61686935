"""Providers are found through the ``orch.providers`` entry-point group, so a connector
package can ship its own; the built-in ones are also known without installation metadata."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from orchestrator.primitives.errors import UsageError
from orchestrator.providers.base import Provider, ProviderSettings

if TYPE_CHECKING:
    from orchestrator.settings.model import Settings

BUILTIN = {
    "docker": "orchestrator.providers.docker:DockerProvider",
    "podman": "orchestrator.providers.podman:PodmanProvider",
    "orbstack": "orchestrator.providers.orbstack:OrbStackProvider",
    "fake": "orchestrator.providers.fake:FakeProvider",
}


def available() -> dict[str, str]:
    found = dict(BUILTIN)
    for ep in entry_points(group="orch.providers"):
        found[ep.name] = ep.value
    return found


def provider_class(name: str) -> type[Provider]:
    known = available()
    target = known.get(name)
    if target is None:
        raise UsageError(
            f"unknown provider {name!r}: choose one of {', '.join(sorted(known))} "
            "with --provider, ORCH_PROVIDER or [tool.orch] provider"
        )
    module_name, _, attr = target.partition(":")
    try:
        cls: type[Provider] = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise UsageError(f"provider {name!r} ({target}) cannot be loaded: {err}") from err
    return cls


def settings_model(name: str) -> type[ProviderSettings]:
    return provider_class(name).settings_model


def get_provider(settings: Settings) -> Provider:
    cls = provider_class(settings.provider)
    if not settings.engines:
        return cls(settings)
    from orchestrator.providers.docker import DockerProvider
    from orchestrator.providers.engines import Engines

    if not issubclass(cls, DockerProvider):
        raise UsageError(f"engines = [...] needs the docker provider, not {settings.provider}")
    return Engines(settings, [cls(settings, engine=engine) for engine in settings.engines])
