"""Deploys named in ``[tool.orch]`` (``package.module:function``): imported from the project
root first, as the pyinfra CLI finds a deploy file next to it (no install, no PYTHONPATH),
then from the installed packages; and the hash of their source, for fingerprints."""

from __future__ import annotations

import hashlib
import importlib
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.primitives.errors import ConfigError


def load_callable(spec: str, root: Path | None = None) -> Callable[..., Any]:
    """Import ``package.module:function``, looking in the project root first."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr.isidentifier():
        raise ConfigError(f"invalid deploy {spec!r}: write it as package.module:function")
    if root is not None and str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and module_name.startswith(err.name):
            where = f"the project root {root} and " if root is not None else ""
            raise ConfigError(
                f"cannot find deploy module {module_name!r} (looked in {where}the installed packages): "
                "check the name in [tool.orch] / ORCH_PROVISION / ORCH_RESET"
            ) from err
        raise ConfigError(f"deploy module {module_name!r} failed to import: {err}") from err
    except Exception as err:  # the user's module raised while importing
        raise ConfigError(f"deploy module {module_name!r} failed to import: {type(err).__name__}: {err}") from err
    func = getattr(module, attr, None)
    if not callable(func):
        raise ConfigError(f"{module_name} has no deploy function {attr!r}")
    deploy: Callable[..., Any] = func
    return deploy


def source_hash(func: Callable[..., Any]) -> str:
    """A hash of the source a deploy comes from: its module and the modules beside it (a
    deploy package's helpers), so editing any of them changes the baseline's fingerprint."""
    digest = hashlib.sha256(getattr(func, "__qualname__", repr(func)).encode())
    target = inspect.unwrap(func)
    try:
        path = Path(inspect.getsourcefile(target) or "")
    except TypeError:
        path = Path()
    if path.is_file():
        for sibling in sorted(path.parent.glob("*.py"))[:200]:
            digest.update(sibling.name.encode())
            digest.update(sibling.read_bytes())
    return digest.hexdigest()[:16]


def deploy_name(func: Callable[..., Any]) -> str:
    return str(getattr(func, "deploy_name", None) or getattr(func, "__name__", "deploy"))
