"""The typed settings: every setting of ``[tool.orch]`` declared once, validated by
pydantic (a wrong type, an unknown key or a typo is one line naming the key). A table
``[tool.orch.<name>]`` is declared by what it configures (a provider, the SSH connector)
as a :class:`Model` of its own; ``loader`` reads pyproject, the environment and flags into
these models.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from orchestrator.primitives import naming
from orchestrator.primitives.errors import UsageError

#: The isolation policies (``[tool.orch] isolation``, ``orch_isolation`` marker).
Isolation = Literal["shared", "report", "on-dirty", "per-test"]
ISOLATIONS: tuple[str, ...] = ("shared", "report", "on-dirty", "per-test")

_STRICT = ConfigDict(extra="forbid", validate_assignment=True)


class Model(BaseModel):
    """Base of orch's settings tables: unknown keys are errors, a bool is never taken
    for a number (pydantic would read ``workers = true`` as 1), and a switch is true or
    false, nothing else (pydantic would read ``standby = "off"``, ``"yes"`` or ``1``)."""

    model_config = _STRICT

    #: Keys of ``[tool.orch]`` (and their ``ORCH_<KEY>`` variables) that this table took
    #: over: still read there, with a one-line deprecation note naming the table's key.
    moved_keys: ClassVar[tuple[str, ...]] = ()
    #: A table that was once a field of orch's own settings also reads ``ORCH_<NAME>``
    #: (``key=value,key=value``), deprecated in favour of ``ORCH_<NAME>_<KEY>``.
    whole_table_variable: ClassVar[bool] = False

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, value: Any, info: Any) -> Any:
        field = cls.model_fields.get(info.field_name)
        if isinstance(value, bool) and field is not None and field.annotation in (int, float):
            raise ValueError("must be a number, not true/false")
        if field is not None and field.annotation is bool and not isinstance(value, bool):
            raise ValueError(f"must be true or false (got {value!r})")
        return value


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
    auto_up: bool = False
    #: Pool VMs kept ready for ``fresh_vm()``: a number, or ``"auto"``: sized from the claims
    #: of this run and the last (``core.spares.wanted_pool``), between ``pool_min`` and
    #: ``pool_max``.
    pool: int | Literal["auto"] = 0
    pool_min: int = Field(1, ge=0, le=64)
    pool_max: int = Field(16, ge=1, le=64)
    standby: bool = False
    #: Workers are machines: systemd as PID 1 (Docker, podman), a system container or VM
    #: (Incus), a machine (OrbStack). With no ``image`` named, the provider's machine image.
    machine: bool = False
    #: What is checked and reset between tests on a shared worker (a marker,
    #: ``@pytest.mark.orch_isolation("per-test")``, overrides it for one test):
    #: ``shared`` nothing; ``report`` check and report; ``on-dirty`` check, and reset a
    #: worker its test changed; ``per-test`` reset after every test.
    isolation: Isolation = "shared"
    #: Paths (absolute; a folder covers what is under it) whose changes the check ignores,
    #: besides /proc, /sys, /dev, /run and orch's own.
    isolation_ignore: list[str] = Field(default_factory=list)
    #: Keep the worker of a failing test as it was (``pytest --orch-keep-failed`` turns it
    #: on for a run), at most ``keep_failed_max`` per run.
    keep_failed: bool = False
    keep_failed_max: int = Field(3, ge=1, le=100)
    #: Delete, at the end of a run, the VMs its tests made and left (``--orch-reap-leaks``).
    reap_leaks: bool = False
    #: A folder that keeps the baseline between cold runs (a CI cache): ``orch up`` imports
    #: the baseline of this fingerprint from it instead of provisioning, and writes a
    #: baseline it built to it (``--baseline-cache``; relative: to the project).
    baseline_cache: Path | None = None
    #: ``[tool.orch.<name>]`` tables (a provider's, the SSH connector's), each validated
    #: by the model its owner declares; the owner reads its own with that model.
    tables: dict[str, dict[str, Any]] = Field(default_factory=dict)

    #: Where ``provider`` was named (``--provider``, ``ORCH_PROVIDER``, ``[tool.orch]``);
    #: empty when it was not, and came from the checkout's state or the default.
    provider_origin: str = ""

    _check_paths = field_validator("root", "inventory_dir")(_utf8_path)

    @field_validator("baseline_cache")
    @classmethod
    def _cache_path(cls, value: Path | None) -> Path | None:
        return None if value is None or not str(value) else _utf8_path(value.expanduser())

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

    @field_validator("isolation_ignore")
    @classmethod
    def _ignored(cls, value: list[str]) -> list[str]:
        for path in value:
            if not path.startswith("/") or any(c in path for c in "\n\r\t\0'\"\\") or "/../" in f"{path}/":
                raise ValueError(f"{path!r} is not a plain absolute path: write it as /var/cache/myapp")
        return [p.rstrip("/") or "/" for p in value]

    @field_validator("connector")
    @classmethod
    def _connector(cls, value: str) -> str:
        if value not in ("", "native", "ssh"):
            raise ValueError(f"unknown connector {value!r}: choose native or ssh")
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

    @field_validator("pool", mode="before")
    @classmethod
    def _pool(cls, value: Any) -> Any:
        """A whole number 0-64 or "auto" (the environment gives text: "8" is 8)."""
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value.strip())
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 64):
            return value
        raise ValueError(f'must be a number between 0 and 64, or "auto" (got {value!r})')

    @field_validator("pool_max")
    @classmethod
    def _pool_bounds(cls, value: int, info: ValidationInfo) -> int:
        floor = info.data.get("pool_min", 1)
        if value < floor:
            raise ValueError(f"must not be below pool_min ({floor}; got {value}): the ceiling must not be under the floor")
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
INTERNAL = frozenset({"root", "tables", "provider_origin"})
SETTINGS = [name for name in Settings.model_fields if name not in INTERNAL]
