"""The one registry of providers: the ``orch.providers`` entry-point group. orch's own
providers are registered there by its pyproject.toml, as a third party's package
registers its own; the registry itself names none of them."""

from __future__ import annotations

import functools
import importlib
import shutil
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, distribution, entry_points
from typing import TYPE_CHECKING, Any

from orchestrator.primitives.errors import UsageError
from orchestrator.primitives.version import DISTRIBUTION
from orchestrator.providers.base import Provider, ProviderSettings

if TYPE_CHECKING:
    from orchestrator.settings.model import Settings

GROUP = "orch.providers"


def available() -> dict[str, str]:
    """{provider name: ``module:Class``} of every installed provider."""
    found = {ep.name: ep.value for ep in entry_points(group=GROUP)}
    if not found:
        raise UsageError(
            f"no provider is registered (the {GROUP} entry points are missing): "
            "install orch with `pip install -e .` (or `pip install pyinfra-orch`)"
        )
    return found


@functools.cache
def _own() -> dict[str, str]:
    """{name: ``module:Class``} of the providers orch's own distribution registers, read
    from its metadata alone (a fraction of a millisecond; the group's scan over every
    installed distribution costs a few, in each process that makes a provider). Cached:
    they change only with a reinstall."""
    try:
        eps = distribution(DISTRIBUTION).entry_points
    except PackageNotFoundError:  # pragma: no cover (a source tree that was never installed)
        return {}
    return {ep.name: ep.value for ep in eps if ep.group == GROUP}


def _target(name: str) -> tuple[str | None, dict[str, str] | None]:
    """Where provider ``name`` lives: orch's own without a scan, any other name (a third
    party's) from the scan of the group, which is returned too when it was made."""
    own = _own().get(name)
    if own is not None:
        return own, None
    known = available()
    return known.get(name), known


def names() -> list[str]:
    return sorted(available())


def provider_class(name: str) -> type[Provider]:
    target, known = _target(name)
    if target is None:
        known = known if known is not None else available()
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


#: How ``default_provider`` chooses, for ``--help``.
DEFAULT_RULE = "orbstack if orbctl is on PATH, else docker"


def default_provider() -> str:
    """OrbStack where ``orbctl`` is on PATH (a Mac with OrbStack), Docker elsewhere."""
    return "orbstack" if shutil.which("orbctl") else "docker"


def get_provider(settings: Settings) -> Provider:
    """The checkout's provider, made by its class from the settings (a provider may make
    something else than one of itself: Docker over several engines)."""
    return provider_class(settings.provider).from_settings(settings)


def exit_codes(name: str) -> Callable[[Any, Callable[[int], None]], None] | None:
    """The ``watch_exit_codes`` hook of provider ``name``, for a pyinfra session that has
    only the provider's name (a pytest worker); None for a provider not installed."""
    try:
        return provider_class(name).watch_exit_codes if name else None
    except UsageError:
        return None
