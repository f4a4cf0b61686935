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
import math
import os
import shlex
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from . import naming
from .errors import ConfigError, UsageError

_STRICT = ConfigDict(extra="forbid", validate_assignment=True)


class Model(BaseModel):
    """Base of orch's settings tables: unknown keys are errors, a bool is never taken
    for a number (pydantic would read ``workers = true`` as 1), and a switch is true or
    false, nothing else (pydantic would read ``standby = "off"``, ``"yes"`` or ``1``)."""

    model_config = _STRICT

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, value: Any, info: Any) -> Any:
        field = cls.model_fields.get(info.field_name)
        if isinstance(value, bool) and field is not None and field.annotation in (int, float):
            raise ValueError("must be a number, not true/false")
        if field is not None and field.annotation is bool and not isinstance(value, bool):
            raise ValueError(f"must be true or false (got {value!r})")
        return value


Seconds = float


class Timeouts(Model):
    """Per-operation time limits in seconds (``[tool.orch] timeouts = { create = 300 }``)."""

    create: float = Field(180.0, gt=0, allow_inf_nan=False)
    clone: float = Field(180.0, gt=0, allow_inf_nan=False)
    image: float = Field(180.0, gt=0, allow_inf_nan=False, description="pull or inspect an image")
    commit: float = Field(180.0, gt=0, allow_inf_nan=False)
    delete: float = Field(60.0, gt=0, allow_inf_nan=False)
    start: float = Field(60.0, gt=0, allow_inf_nan=False)
    stop: float = Field(60.0, gt=0, allow_inf_nan=False)
    rename: float = Field(60.0, gt=0, allow_inf_nan=False)
    ready: float = Field(60.0, gt=0, allow_inf_nan=False)
    default: float = Field(30.0, gt=0, allow_inf_nan=False, description="everything else (list, inspect, exec)")

    def of(self, operation: str) -> float:
        value = getattr(self, operation, None) if operation in type(self).model_fields else None
        return float(value if value is not None else self.default)


class SSHSettings(Model):
    """``[tool.orch.ssh]``: the SSH connector (``connector = "ssh"``)."""

    #: The non-root user orch makes in every VM, with passwordless sudo.
    user: str = Field("orch", pattern=r"^[a-z_][a-z0-9_-]{0,31}$")


def _utf8_path(value: Path) -> Path:
    try:
        str(value).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"path {os.fsencode(value)!r} is not valid UTF-8: choose a folder with a UTF-8 name") from None
    return value


class Settings(Model):
    root: Path
    inventory_dir: Path
    provider: str = ""
    image: str = ""
    workers: int = Field(2, ge=1, le=naming.MAX_WORKERS)
    prefix: str = naming.DEFAULT_PREFIX
    parallel: int = Field(8, ge=1, le=64)
    provision: str = "orchestrator.deploys.provision:provision"
    personalize: str = "orchestrator.deploys.provision:personalize"
    reset: str = "orchestrator.deploys.reset:reset"
    legacy_prefixes: list[str] = Field(default_factory=list)
    timeouts: Timeouts = Field(default_factory=Timeouts)
    retries: int = Field(4, ge=0, le=20)
    #: How pyinfra reaches inside VMs: the provider's own connector, or "ssh".
    connector: str = ""
    ssh: SSHSettings = Field(default_factory=lambda: SSHSettings())
    #: Docker engines to spread VMs over (``unix://…``, ``ssh://user@host``, ``tcp://…``).
    engines: list[str] = Field(default_factory=list)
    #: The most workers one engine takes (0: no cap).
    engine_cap: int = Field(0, ge=0, le=naming.MAX_WORKERS)
    auto_up: bool = False
    pool: int = Field(0, ge=0, le=64)
    standby: bool = False
    #: ``[tool.orch.<provider>]`` tables, each validated by that provider's settings model.
    provider_options: dict[str, dict[str, Any]] = Field(default_factory=dict)

    #: Where ``provider`` was named (``--provider``, ``ORCH_PROVIDER``, ``[tool.orch]``);
    #: empty when it was not, and came from the checkout's state or the default.
    provider_origin: str = ""

    _check_paths = field_validator("root", "inventory_dir")(_utf8_path)

    @field_validator("inventory_dir")
    @classmethod
    def _a_folder(cls, value: Path) -> Path:
        if value.exists() and not value.is_dir():
            raise ValueError(f"{value} is a file, not a folder: name a folder (orch makes it if it is missing)")
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        try:
            return naming.validate_prefix(value)
        except UsageError as err:
            raise ValueError(str(err)) from None

    @field_validator("connector")
    @classmethod
    def _connector(cls, value: str) -> str:
        if value not in ("", "native", "ssh"):
            raise ValueError(f"unknown connector {value!r}: choose native or ssh")
        return value

    @field_validator("engines")
    @classmethod
    def _engines(cls, value: list[str]) -> list[str]:
        for engine in value:
            if not engine.startswith(("unix://", "ssh://", "tcp://", "npipe://")) or any(c.isspace() for c in engine):
                raise ValueError(
                    f"engine {engine!r} is not a Docker host: write unix:///path, ssh://user@host or tcp://host:port"
                )
        if len(set(value)) != len(value):
            raise ValueError("an engine is named twice")
        return value

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        if value and (value.startswith("-") or any(c.isspace() or ord(c) < 32 for c in value)):
            raise ValueError(f"invalid image name {value!r}: no spaces, newlines or leading '-'")
        return value

    @field_validator("provision", "personalize", "reset")
    @classmethod
    def _deploy(cls, value: str) -> str:
        module, sep, attr = value.partition(":")
        if not sep or not module or not attr.isidentifier() or not all(p.isidentifier() for p in module.split(".")):
            raise ValueError(f"invalid deploy {value!r}: write it as package.module:function")
        return value

    @model_validator(mode="after")
    def _legacy(self) -> Settings:
        for p in self.legacy_prefixes:
            if len(p) < 3 or not p[0].isalnum() or p[-1] not in "-_" or not all(c.isalnum() or c in "-_." for c in p):
                raise ValueError(
                    f"legacy_prefixes: {p!r} is too broad: give a whole name prefix of 3+ characters "
                    "ending in '-' or '_' (e.g. test-vm-), so that it cannot match names such as orchestra-db"
                )
            if p.startswith(f"{self.prefix}-") or f"{self.prefix}-".startswith(p):
                raise ValueError(
                    f"legacy_prefixes: {p!r} overlaps orch's own names ({self.prefix}-…), which sweep judges by their labels"
                )
        return self

    @property
    def checkout(self) -> str:
        return naming.checkout_id(self.inventory_dir)

    def timeout(self, operation: str) -> float:
        return self.timeouts.of(operation)


#: Settings that are not read from pyproject or the environment by name.
_INTERNAL = {"root", "provider_options", "provider_origin"}
SETTINGS = [name for name in Settings.model_fields if name not in _INTERNAL]


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
    from .providers import available

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
    from .providers import settings_model

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
    from .providers import available

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
    from .errors import OrchError
    from .state import StateStore

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


def finite(value: float) -> bool:
    return not (math.isnan(value) or math.isinf(value))
