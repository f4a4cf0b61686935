"""Settings: ``[tool.orch]`` in the project's pyproject.toml, then ``ORCH_*`` environment
variables, then command-line flags — each later source wins.

Every setting is declared once, typed, in :class:`Settings` (pydantic validates it, so a
wrong type, an unknown key or a typo inside a table is one line naming the key and
where it came from). Every setting has its variable: ``ORCH_<NAME>`` (``ORCH_WORKERS``),
and a provider's own table ``[tool.orch.<provider>]`` has ``ORCH_<PROVIDER>_<NAME>``
(``ORCH_DOCKER_RUN_ARGS``). Lists in variables are JSON (``["a", "b"]``) or words
(``a b``); tables are ``key=value,key=value``.

The project root is the nearest folder at or above the working directory that holds a
pyproject.toml (else the working directory). The inventory folder defaults to
``<root>/inventories``; the state, the locks and the generated inventories live there.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_origin

from pydantic import BaseModel, ValidationError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from orchestrator.primitives.errors import ConfigError
from orchestrator.settings.model import _INTERNAL, SETTINGS, Settings


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


def _from_env(model: type[BaseModel], name: str, text: str) -> Any:
    """An environment variable's text, shaped as the field wants it (lists, tables)."""
    field = model.model_fields[name]
    annotation = field.annotation
    if annotation is bool:
        words = {"true": True, "1": True, "false": False, "0": False}
        if text.strip().lower() not in words:
            raise ValueError(f"{name} must be true or false (or 1 or 0; got {text!r})")
        return words[text.strip().lower()]
    if get_origin(annotation) is list:
        if text.lstrip().startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError as err:
                raise ValueError(f"not a JSON list ({err.msg})") from None
        return shlex.split(text)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        pairs = [p for p in text.replace(";", ",").split(",") if p.strip()]
        table: dict[str, str] = {}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep:
                raise ValueError(f"write it as key=value,key=value (got {pair!r})")
            table[key.strip()] = value.strip()
        return table
    return text


def _explain(err: ValidationError, origins: Mapping[str, str]) -> ConfigError:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    top = str(first["loc"][0]) if first["loc"] else ""
    where = origins.get(loc) or origins.get(top) or "settings"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        return ConfigError(f"{where}: unknown setting {loc!r}; see README.md, Configuration")
    bounds = _bounds(first["loc"])
    if first["type"] in ("greater_than_equal", "less_than_equal") and bounds:
        msg = f"must be between {bounds[0]} and {bounds[1]} (got {first.get('input')!r})"
    return ConfigError(f"{where}: {loc} {msg}" if msg.startswith("must") else f"{where}: {loc}: {msg}")


def _bounds(loc: tuple[Any, ...]) -> tuple[Any, Any] | None:
    """(ge, le) of an int setting, for a message that gives the whole range."""
    field = Settings.model_fields.get(str(loc[0])) if len(loc) == 1 else None
    if field is None:
        return None
    ge = next((m.ge for m in field.metadata if getattr(m, "ge", None) is not None), None)
    le = next((m.le for m in field.metadata if getattr(m, "le", None) is not None), None)
    return (ge, le) if ge is not None and le is not None else None


def provider_tables(table: Mapping[str, Any], source: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Split ``[tool.orch]`` into orch's own keys and ``[tool.orch.<provider>]`` tables."""
    from orchestrator.providers.registry import available

    own: dict[str, Any] = {}
    tables: dict[str, dict[str, Any]] = {}
    known = available()
    for key, value in table.items():
        if key in known and isinstance(value, dict) and key not in Settings.model_fields:
            tables[key] = dict(value)
        elif key in _INTERNAL:
            raise ConfigError(f"{source}: {key}: unknown setting; see README.md, Configuration")
        else:
            own[key] = value
    return own, tables


def load(
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the settings from pyproject, environment and flags (``None`` flags ignored)."""
    from orchestrator.providers.registry import settings_model

    env = os.environ if env is None else env
    here = (cwd or Path.cwd()).absolute()
    root = find_root(here)
    source = f"[tool.orch] in {root / 'pyproject.toml'}"
    own, tables = provider_tables(read_pyproject(root), source)
    origins: dict[str, str] = {key: source for key in own}
    values: dict[str, Any] = dict(own)
    for name in SETTINGS:
        var = f"ORCH_{name.upper()}"
        if env.get(var):
            try:
                values[name] = _from_env(Settings, name, env[var])
            except ValueError as err:
                raise ConfigError(f"{var}: {err}") from None
            origins[name] = var
            if name == "inventory_dir":
                # named on the command line or in the environment: relative to where the
                # user is; in [tool.orch]: relative to the project
                values[name] = here / Path(env[var]).expanduser()
    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = here / Path(value).expanduser() if name == "inventory_dir" else value
            origins[name] = f"--{name.replace('_', '-')}"
    inv = values.pop("inventory_dir", "inventories")
    if isinstance(inv, (str, Path)):
        inv = Path(inv).expanduser()
        inv = inv if inv.is_absolute() else root / inv
    try:
        settings = Settings(root=root, inventory_dir=inv, **values)
    except ValidationError as err:
        raise _explain(err, {**origins, "inventory_dir": origins.get("inventory_dir", source)}) from None
    if settings.provider:
        settings.provider_origin = origins.get("provider", source)
    else:
        settings.provider = recorded_provider(settings) or default_provider()
    settings.provider_options = _provider_options(tables, env, source, settings_model)
    return settings


def _provider_options(
    tables: dict[str, dict[str, Any]], env: Mapping[str, str], source: str, settings_model: Any
) -> dict[str, dict[str, Any]]:
    """Every installed provider's table: pyproject, then ``ORCH_<PROVIDER>_<KEY>``; each
    validated by that provider's own model, so a typo is caught even for a provider that
    is not the one in use."""
    from orchestrator.providers.registry import available

    options: dict[str, dict[str, Any]] = {}
    for name in available():
        model = settings_model(name)
        raw = dict(tables.get(name, {}))
        origins = {key: f"{source.replace('[tool.orch]', f'[tool.orch.{name}]')}" for key in raw}
        for field in model.model_fields:
            var = f"ORCH_{name.upper()}_{field.upper()}"
            if env.get(var):
                try:
                    raw[field] = _from_env(model, field, env[var])
                except ValueError as err:
                    raise ConfigError(f"{var}: {err}") from None
                origins[field] = var
        try:
            model(**raw)
        except ValidationError as err:
            first = err.errors()[0]
            key = str(first["loc"][0]) if first["loc"] else ""
            where = origins.get(key, f"[tool.orch.{name}]")
            raise _explain(err, {key: where}) from None
        if raw:
            options[name] = raw
    return options


def recorded_provider(settings: Settings) -> str:
    """The provider this checkout's VMs are on, as its state records it; empty when the
    state records no VM (or cannot be read: the command that reads it says why).

    A command that names no provider uses it, so that a checkout brought up with
    ``--provider podman`` (or on OrbStack, whose ``orbctl`` may later be off PATH) is not
    looked at through the default provider, which would find none of its VMs."""
    from orchestrator.primitives.errors import OrchError
    from orchestrator.state.store import StateStore

    try:
        data = StateStore(settings.inventory_dir, settings.checkout).read()
    except (OrchError, OSError):
        return ""
    return data.provider if data.all_vms() else ""


def check_provider(settings: Settings) -> None:
    """A provider named for a command (flag, variable, ``[tool.orch]``) that is not the
    one this checkout's VMs are on is refused: the command would see none of them, call
    them missing, forget them, or make a second set beside them."""
    recorded = recorded_provider(settings) if settings.provider_origin else ""
    if not recorded or recorded == settings.provider:
        return
    origin = settings.provider_origin
    if origin == "--provider":
        fix = f"drop --provider (or pass --provider {recorded})"
    elif origin.startswith("ORCH_"):
        fix = f"unset {origin} (or pass --provider {recorded})"
    else:
        fix = f'set [tool.orch] provider = "{recorded}" (or pass --provider {recorded})'
    raise ConfigError(
        f"this checkout's VMs are on {recorded}, not {settings.provider} ({origin}): {fix}; "
        f"to move them to {settings.provider}, run `orch --provider {recorded} down` first"
    )


def default_provider() -> str:
    """OrbStack where ``orbctl`` is on PATH (a Mac with OrbStack), Docker elsewhere."""
    return "orbstack" if shutil.which("orbctl") else "docker"
