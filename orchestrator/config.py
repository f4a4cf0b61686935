"""Settings: ``[tool.orch]`` in the project's pyproject.toml, then ``ORCH_*`` environment
variables, then command-line flags — each later source wins.

The project root is the nearest folder at or above the working directory that holds a
pyproject.toml (else the working directory). The inventory folder defaults to
``<root>/inventories``; the state, the lock and the generated inventories live there.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from . import naming
from .errors import ConfigError

#: Per-operation timeouts in seconds (the seed's values).
DEFAULT_TIMEOUTS: dict[str, float] = {
    "create": 180.0,
    "clone": 180.0,
    "import": 180.0,
    "commit": 180.0,
    "delete": 60.0,
    "start": 60.0,
    "stop": 60.0,
    "restart": 60.0,
    "ready": 60.0,
    "default": 30.0,
}


@dataclass
class Settings:
    root: Path
    inventory_dir: Path
    provider: str = ""
    image: str = ""
    workers: int = 2
    prefix: str = naming.DEFAULT_PREFIX
    parallel: int = 4
    provision: str = "orchestrator.deploys.provision:provision"
    reset: str = "orchestrator.deploys.reset:reset"
    legacy_prefixes: list[str] = field(default_factory=list)
    timeouts: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_TIMEOUTS))
    retries: int = 4
    #: ``[tool.orch.<provider>]`` tables, handed to the provider's own typed settings.
    provider_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def checkout(self) -> str:
        return naming.checkout_id(self.inventory_dir)

    def timeout(self, operation: str) -> float:
        return self.timeouts.get(operation, self.timeouts["default"])


_SCALARS = {
    "provider": str,
    "image": str,
    "workers": int,
    "prefix": str,
    "parallel": int,
    "provision": str,
    "reset": str,
    "retries": int,
}
_ENV = {
    "ORCH_PROVIDER": "provider",
    "ORCH_IMAGE": "image",
    "ORCH_WORKERS": "workers",
    "ORCH_PREFIX": "prefix",
    "ORCH_PARALLEL": "parallel",
    "ORCH_PROVISION": "provision",
    "ORCH_RESET": "reset",
    "ORCH_RETRIES": "retries",
    "ORCH_INVENTORY_DIR": "inventory_dir",
}
KNOWN_PROVIDERS_WITH_TABLES = ("docker", "orbstack")


def find_root(start: Path) -> Path:
    start = start.resolve()
    for folder in (start, *start.parents):
        if (folder / "pyproject.toml").is_file():
            return folder
    return start


def read_pyproject(root: Path) -> dict[str, Any]:
    path = root / "pyproject.toml"
    if not path.is_file():
        return {}
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"cannot read {path}: {err}; fix the file or run orch from another folder") from err
    section = data.get("tool", {}).get("orch", {})
    if not isinstance(section, dict):
        raise ConfigError(f"[tool.orch] in {path} must be a table")
    return section


def _coerce(key: str, value: Any, source: str) -> Any:
    kind = _SCALARS[key]
    if kind is int:
        try:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: {key} must be a whole number (got {value!r})") from None
    if not isinstance(value, str):
        raise ConfigError(f"{source}: {key} must be a string (got {value!r})")
    return value


def load(
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the settings from pyproject, environment and flags (``None`` flags ignored)."""
    env = os.environ if env is None else env
    here = (cwd or Path.cwd()).absolute()
    root = find_root(here)
    values: dict[str, Any] = {}
    table = read_pyproject(root)
    source = f"[tool.orch] in {root / 'pyproject.toml'}"
    provider_options: dict[str, dict[str, Any]] = {}
    timeouts = dict(DEFAULT_TIMEOUTS)
    for key, value in table.items():
        if key in _SCALARS:
            values[key] = _coerce(key, value, source)
        elif key == "inventory_dir":
            values[key] = value
        elif key == "legacy_prefixes":
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise ConfigError(f"{source}: legacy_prefixes must be a list of strings")
            values[key] = list(value)
        elif key == "timeouts":
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: timeouts must be a table of operation = seconds")
            for op, secs in value.items():
                if isinstance(secs, bool) or not isinstance(secs, (int, float)) or secs <= 0:
                    raise ConfigError(f"{source}: timeouts.{op} must be a positive number of seconds")
                timeouts[op] = float(secs)
        elif key in KNOWN_PROVIDERS_WITH_TABLES and isinstance(value, dict):
            provider_options[key] = dict(value)
        else:
            raise ConfigError(f"{source}: unknown setting {key!r}; see README.md, Configuration")
    for var, key in _ENV.items():
        if env.get(var):
            # a folder named on the command line or in the environment is relative to
            # where the user is; one in [tool.orch] is relative to the project
            values[key] = here / Path(env[var]).expanduser() if key == "inventory_dir" else _coerce(key, env[var], var)
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = here / Path(value).expanduser() if key == "inventory_dir" else value
    inv = Path(values.pop("inventory_dir", "inventories")).expanduser()
    if not inv.is_absolute():
        inv = root / inv
    settings = Settings(root=root, inventory_dir=inv, timeouts=timeouts, provider_options=provider_options, **values)
    if not settings.provider:
        settings.provider = default_provider()
    settings.image = settings.image or ""
    naming.validate_prefix(settings.prefix)
    if not 1 <= settings.parallel <= 64:
        raise ConfigError(f"parallel must be between 1 and 64 (got {settings.parallel})")
    if not 0 <= settings.retries <= 20:
        raise ConfigError(f"retries must be between 0 and 20 (got {settings.retries})")
    return settings


def default_provider() -> str:
    """OrbStack where ``orbctl`` is on PATH (a Mac with OrbStack), Docker elsewhere."""
    return "orbstack" if shutil.which("orbctl") else "docker"


def replace(settings: Settings, **changes: Any) -> Settings:
    return dataclasses.replace(settings, **changes)
