"""The checkout's settings as the front ends load them: the settings loader given the
installed providers (``orchestrator.providers.registry``) and the connectors' tables
(``[tool.orch.ssh]``), which the settings layer below cannot import itself."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orchestrator.core import connectors
from orchestrator.providers import registry
from orchestrator.settings import loader
from orchestrator.settings.model import Settings

__all__ = ["Settings", "load"]


def load(
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """``[tool.orch]``, then ``ORCH_*`` variables (``env``, default ``os.environ``), then
    flags (``overrides``; ``None`` values ignored), from the project at or above ``cwd``."""
    return loader.load(cwd, env, overrides, providers=registry, tables=connectors.TABLES)
