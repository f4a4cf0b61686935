"""Settings: ``[tool.orch]`` in the project's pyproject.toml, then ``ORCH_*`` environment
variables, then command-line flags — each later source wins.

Every setting is declared once, typed, in :class:`Settings` (pydantic validates it, so a
wrong type, an unknown key or a typo inside a table is one line naming the key and
where it came from). Every setting has its variable: ``ORCH_<NAME>`` (``ORCH_WORKERS``),
and a table ``[tool.orch.<name>]`` has ``ORCH_<NAME>_<KEY>`` (``ORCH_DOCKER_RUN_ARGS``).
Lists in variables are JSON (``["a", "b"]``) or words (``a b``); tables are
``key=value,key=value``.

The tables are declared by what they configure: each installed provider (the registry
passed in as ``providers``) and the connectors (``tables``). This module knows neither;
``orchestrator.core.settings.load`` passes the real ones.

The project root is the nearest folder at or above the working directory that holds a
pyproject.toml (else the working directory). The inventory folder defaults to
``<root>/inventories``; the state, the locks and the generated inventories live there.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, get_origin

from pydantic import BaseModel, ValidationError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from orchestrator.primitives.errors import ConfigError, OrchError
from orchestrator.settings.model import INTERNAL, SETTINGS, Model, Settings
from orchestrator.state.store import StateStore

log = logging.getLogger(__name__)


class ProviderRegistry(Protocol):
    """What the loader needs of the installed providers (``orchestrator.providers.registry``)."""

    def available(self) -> Mapping[str, str]:
        """{provider name: where it is}."""
        ...

    def settings_model(self, name: str) -> type[Model]:
        """The model of ``[tool.orch.<name>]``."""
        ...

    def default_provider(self) -> str:
        """The provider of a checkout that names none and records none."""
        ...


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
        return _pairs(text)
    return text


def _pairs(text: str) -> dict[str, str]:
    """A table in a variable: ``key=value,key=value`` (or ``;``)."""
    table: dict[str, str] = {}
    for pair in (p for p in text.replace(";", ",").split(",") if p.strip()):
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"write it as key=value,key=value (got {pair!r})")
        table[key.strip()] = value.strip()
    return table


def _explain(err: ValidationError, origins: Mapping[str, str], model: type[BaseModel] = Settings) -> ConfigError:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    top = str(first["loc"][0]) if first["loc"] else ""
    where = origins.get(loc) or origins.get(top) or "settings"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        return ConfigError(f"{where}: unknown setting {loc!r}; see README.md, Configuration")
    bounds = _bounds(model, first["loc"])
    if first["type"] in ("greater_than_equal", "less_than_equal") and bounds:
        msg = f"must be between {bounds[0]} and {bounds[1]} (got {first.get('input')!r})"
    return ConfigError(f"{where}: {loc} {msg}" if msg.startswith("must") else f"{where}: {loc}: {msg}")


def _bounds(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[Any, Any] | None:
    """(ge, le) of an int setting, for a message that gives the whole range."""
    info = model.model_fields.get(str(loc[0])) if len(loc) == 1 else None
    if info is None:
        return None
    ge = next((m.ge for m in info.metadata if getattr(m, "ge", None) is not None), None)
    le = next((m.le for m in info.metadata if getattr(m, "le", None) is not None), None)
    return (ge, le) if ge is not None and le is not None else None


@dataclass
class _Table:
    """One ``[tool.orch.<name>]`` table as read so far: its values and where each came from."""

    name: str
    model: type[Model]
    values: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)
    #: Keys read from where they were orch's own (``[tool.orch] engines``, ``ORCH_ENGINES``):
    #: {key: where}. They were refused with another provider, and still are.
    moved: dict[str, str] = field(default_factory=dict)


#: Deprecated keys already named in this process (the note is given once).
_NOTED: set[str] = set()


def _deprecated(old: str, new: str) -> None:
    if old not in _NOTED:
        _NOTED.add(old)
        log.warning("%s is deprecated: write %s instead", old, new)


def split_tables(section: Mapping[str, Any], tables: Mapping[str, _Table], source: str) -> dict[str, Any]:
    """orch's own keys of ``[tool.orch]``; the ``[tool.orch.<name>]`` tables go into
    ``tables``, and so do the keys a table took over (``moved_keys``), with a note."""
    own: dict[str, Any] = {}
    moved = {key: table for table in tables.values() for key in table.model.moved_keys}
    for key, value in section.items():
        if key in tables and isinstance(value, dict) and key not in Settings.model_fields:
            table = tables[key]
            table.values.update(value)
            table.origins.update({k: source.replace("[tool.orch]", f"[tool.orch.{key}]") for k in value})
        elif key in moved:
            table = moved[key]
            _deprecated(f"[tool.orch] {key}", f"[tool.orch.{table.name}] {key}")
            table.moved[key] = source
            if key not in table.values:
                table.values[key] = value
                table.origins[key] = source
        elif key in INTERNAL:
            raise ConfigError(f"{source}: {key}: unknown setting; see README.md, Configuration")
        else:
            own[key] = value
    return own


def _own_values(
    own: dict[str, Any], env: Mapping[str, str], overrides: Mapping[str, Any], here: Path, source: str
) -> tuple[dict[str, Any], dict[str, str]]:
    """``[tool.orch]``'s own keys, then their ``ORCH_<NAME>`` variables, then the flags
    (``None`` flags ignored): the values and where each came from."""
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
    for name, value in overrides.items():
        if value is not None:
            values[name] = here / Path(value).expanduser() if name == "inventory_dir" else value
            origins[name] = f"--{name.replace('_', '-')}"
    return values, origins


def _validate(root: Path, values: dict[str, Any], origins: dict[str, str], source: str) -> Settings:
    inv = values.pop("inventory_dir", "inventories")
    if isinstance(inv, (str, Path)):
        inv = Path(inv).expanduser()
        inv = inv if inv.is_absolute() else root / inv
    try:
        return Settings(root=root, inventory_dir=inv, **values)
    except ValidationError as err:
        raise _explain(err, {**origins, "inventory_dir": origins.get("inventory_dir", source)}) from None


def _choose_provider(settings: Settings, origins: Mapping[str, str], source: str, providers: ProviderRegistry) -> None:
    """The provider named (and where), else the one the checkout's state records, else
    the registry's default."""
    if settings.provider:
        settings.provider_origin = origins.get("provider", source)
    else:
        settings.provider = recorded_provider(settings) or providers.default_provider()


def _table_env(table: _Table, env: Mapping[str, str]) -> None:
    """``ORCH_<NAME>_<KEY>`` over the table's pyproject values; a key the table took over
    from ``[tool.orch]`` is also read from ``ORCH_<KEY>`` (deprecated)."""
    _whole_table_env(table, env)
    for key in table.model.model_fields:
        var = f"ORCH_{table.name.upper()}_{key.upper()}"
        old = f"ORCH_{key.upper()}"
        if not env.get(var) and key in table.model.moved_keys and env.get(old):
            _deprecated(old, var)
            var = old
            table.moved[key] = old
        if env.get(var):
            try:
                table.values[key] = _from_env(table.model, key, env[var])
            except ValueError as err:
                raise ConfigError(f"{var}: {err}") from None
            table.origins[key] = var


def _whole_table_env(table: _Table, env: Mapping[str, str]) -> None:
    """``ORCH_<NAME>=key=value,...`` for a table that was once a field of orch's own settings
    (``ORCH_SSH=user=carol``): still read, under the per-key variables, with a note."""
    var = f"ORCH_{table.name.upper()}"
    if not table.model.whole_table_variable or not env.get(var):
        return
    try:
        pairs = _pairs(env[var])
    except ValueError as err:
        raise ConfigError(f"{var}: {err}") from None
    for key, value in pairs.items():
        _deprecated(var, f"ORCH_{table.name.upper()}_{key.upper()}")
        table.values[key] = value
        table.origins[key] = var


def _refuse_moved(tables: Mapping[str, _Table], provider: str) -> None:
    """A key that was orch's own (``[tool.orch] engines``) was refused with a provider
    that does not take it; read into its owner's table now, it must not be silently
    ignored instead."""
    for table in tables.values():
        for key, where in table.moved.items():
            if table.name != provider:
                raise ConfigError(
                    f"{where}: {key} needs the {table.name} provider, not {provider}: remove it "
                    f"(or write it in [tool.orch.{table.name}], which only the {table.name} provider reads)"
                )


def _validate_tables(tables: Mapping[str, _Table]) -> dict[str, dict[str, Any]]:
    """Every declared table validated by its own model, so that a typo is caught even in
    the table of a provider that is not the one in use; {name: values} of those given."""
    valid: dict[str, dict[str, Any]] = {}
    for name, table in tables.items():
        try:
            table.model(**table.values)
        except ValidationError as err:
            first = err.errors()[0]
            key = str(first["loc"][0]) if first["loc"] else ""
            raise _explain(err, {key: table.origins.get(key, f"[tool.orch.{name}]")}, table.model) from None
        if table.values:
            valid[name] = table.values
    return valid


def load(
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    providers: ProviderRegistry,
    tables: Mapping[str, type[Model]] | None = None,
) -> Settings:
    """Build the settings from pyproject, environment and flags (``None`` flags ignored).

    ``providers`` declares a table per installed provider; ``tables`` declares the others
    (``{"ssh": SSHSettings}``)."""
    env = os.environ if env is None else env
    here = (cwd or Path.cwd()).absolute()
    root = find_root(here)
    source = f"[tool.orch] in {root / 'pyproject.toml'}"
    declared = {name: _Table(name, providers.settings_model(name)) for name in providers.available()}
    declared.update({name: _Table(name, model) for name, model in (tables or {}).items()})
    own = split_tables(read_pyproject(root), declared, source)
    values, origins = _own_values(own, env, overrides or {}, here, source)
    settings = _validate(root, values, origins, source)
    _choose_provider(settings, origins, source, providers)
    for table in declared.values():
        _table_env(table, env)
    _refuse_moved(declared, settings.provider)
    settings.tables = _validate_tables(declared)
    return settings


def recorded_provider(settings: Settings) -> str:
    """The provider this checkout's VMs are on, as its state records it; empty when the
    state records no VM (or cannot be read: the command that reads it says why).

    A command that names no provider uses it, so that a checkout brought up with
    ``--provider NAME`` (or on a backend whose command is later off PATH) is not looked
    at through the default provider, which would find none of its VMs."""
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
