"""The OrbStack provider: OrbStack machines driven through the pyinfra-orbstack package.

Lifecycle changes are pyinfra-orbstack's operations (``vm_create``, ``vm_clone``,
``vm_start``, ``vm_stop``, ``vm_delete``) run on ``@local``, so what orch does to OrbStack
is what a deploy does; reading is ``orbctl list/info -f json``, parsed. Work inside a
machine goes through pyinfra-orbstack's ``@orbstack`` connector (host data ``vm_name``).

Bring-up: one golden machine per checkout is created and provisioned, then stopped;
workers are ``orbctl clone``s of it (far faster than create on OrbStack). A clone comes
back stopped: it is started and waited for until it runs and has an ip4. Reset deletes
the worker and clones it again from the golden machine.

OrbStack has no labels: ownership is the name (orch's prefix and the checkout id) and
the state file. ``orbctl stop`` without a name stops OrbStack itself, so stop and delete
refuse an empty name before anything runs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import shutil
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone

import gevent
from gevent import subprocess as gsubprocess
from typing import Any, Callable

from .. import naming
from ..config import Settings
from ..errors import (
    ConfigError,
    DeployError,
    EngineUnavailable,
    PermanentProviderError,
    ProviderError,
    ProviderTimeout,
    TransientProviderError,
    VMNotFound,
)
from .base import RUNNING, STOPPED, Provider, VMInfo, WaitStrategy

log = logging.getLogger(__name__)


@dataclass
class OrbStackSettings:
    """``[tool.orch.orbstack]``."""

    #: Architecture of new machines (arm64, amd64); OrbStack's default when empty.
    arch: str = ""
    #: Default username of new machines; OrbStack's default (yours) when empty.
    user: str = ""
    #: The orbctl command.
    orbctl: str = "orbctl"

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> "OrbStackSettings":
        unknown = set(options) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"[tool.orch.orbstack]: unknown setting(s) {', '.join(sorted(unknown))}")
        s = cls(**options)
        for key in ("arch", "user"):
            if getattr(s, key) and not re.fullmatch(r"[a-z0-9_][a-z0-9_-]*", getattr(s, key)):
                raise ConfigError(f"[tool.orch.orbstack] {key} {getattr(s, key)!r} is not valid")
        return s


# orbctl's texts, by meaning (see tests/fakes/orbctl for their sources).
_NOT_RUNNING = ("OrbStack is not running", "orbstack is not running", "not running. Start it")
_NOT_FOUND = ("not found", "does not exist", "no such machine")
_EXISTS = ("already exists",)
_TRANSIENT = (
    "timed out",
    "timeout",
    "didn't start",
    "did not start",
    "missing ip address",
    "connection refused",
    "connection reset",
    "broken pipe",
    "temporarily unavailable",
    "try again",
    "context deadline exceeded",
)
_PERMANENT = ("invalid", "unknown", "unsupported", "not supported", "usage:")

_IMAGE_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*(:[A-Za-z0-9._-]+)?$")


def classify(operation: str, vm: str, text: str) -> ProviderError:
    msg = " ".join(text.split()) or f"orbctl {operation} failed"
    low = msg.lower()
    if any(t.lower() in low for t in _NOT_RUNNING):
        return EngineUnavailable(f"OrbStack is not running ({msg}): start it with `orbctl start`", operation=operation, vm=vm)
    if any(t in low for t in _NOT_FOUND):
        return VMNotFound(msg, operation=operation, vm=vm)
    if any(t in low for t in _EXISTS):
        return PermanentProviderError(msg, operation=operation, vm=vm)
    if any(t in low for t in _TRANSIENT):
        return TransientProviderError(msg, operation=operation, vm=vm)
    return PermanentProviderError(msg, operation=operation, vm=vm)


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid_created(machine_id: str) -> str:
    """OrbStack's machine ids are ULIDs: the first 10 characters (Crockford base32) are
    the creation time in ms. orbctl reports no creation time otherwise."""
    try:
        ms = 0
        for ch in machine_id[:10].upper():
            ms = ms * 32 + _CROCKFORD.index(ch)
        return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (ValueError, OverflowError, OSError):
        return ""


def _state(raw: str) -> str:
    return {"running": RUNNING, "stopped": STOPPED}.get(raw, raw or "unknown")


class OrbStackProvider(Provider):
    name = "orbstack"
    has_labels = False
    uses_golden = True
    cooperative = True  # pyinfra's @local runs gevent subprocesses: greenlets, not threads

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.opts = OrbStackSettings.from_options(settings.provider_options.get("orbstack", {}))

    # -- orbctl, read-only ------------------------------------------------------------

    def _orbctl(self, operation: str, args: list[str], *, vm: str = "", timeout: float | None = None) -> str:
        limit = timeout if timeout is not None else self.settings.timeout(operation)
        try:
            proc = gsubprocess.run(
                [self.opts.orbctl, *args], capture_output=True, text=True, timeout=limit, stdin=subprocess.DEVNULL
            )
        except FileNotFoundError as err:
            raise EngineUnavailable(self._missing()) from err
        except (subprocess.TimeoutExpired, gsubprocess.TimeoutExpired) as err:
            raise ProviderTimeout(f"orbctl {operation} {vm} did not finish in {limit:.0f}s", operation=operation, vm=vm) from err
        if proc.returncode != 0:
            raise classify(operation, vm, proc.stderr or proc.stdout)
        return proc.stdout

    def _missing(self) -> str:
        return (
            f"{self.opts.orbctl} is not on PATH: install OrbStack (macOS, https://orbstack.dev) "
            "or use --provider docker"
        )

    def _json(self, operation: str, args: list[str], vm: str = "") -> Any:
        out = self._orbctl(operation, args, vm=vm)
        try:
            return json.loads(out)
        except json.JSONDecodeError as err:
            raise TransientProviderError(f"orbctl {' '.join(args)} printed no JSON: {out[:200]!r}", operation=operation, vm=vm) from err

    # -- lifecycle through pyinfra-orbstack's operations on @local ---------------------

    def _operation(self, operation: str, vm: str, op: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run one pyinfra-orbstack operation on @local. Arguments go positionally where
        the operation calls them ``name``: pyinfra keeps ``name=`` for the operation's title."""
        if not vm:
            raise PermanentProviderError(f"refusing to {operation} a machine with an empty name", operation=operation)
        from ..runner import PyinfraSession

        kwargs["_timeout"] = int(self.settings.timeout(operation))
        try:
            with PyinfraSession([("@local", {})]) as session:
                failed = session.operation(op, *args, **kwargs)
        except DeployError as err:
            raise classify(operation, vm, str(err)) from err
        if failed:
            message = next(iter(failed.values()))
            if message.startswith("Command timed out"):
                # pyinfra stops waiting but leaves the command running: end it, so that a
                # hung call cannot act later, behind the retry's back
                self._kill_hung(operation, vm)
                raise ProviderTimeout(f"orbctl {operation} {vm}: {message}", operation=operation, vm=vm)
            raise classify(operation, vm, message)

    def _kill_hung(self, operation: str, vm: str) -> None:
        """SIGKILL this user's ``orbctl <operation> … <vm>`` processes (found in /proc)."""
        me = os.getuid()
        for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
            if not entry.isdigit():
                continue
            try:
                argv = open(f"/proc/{entry}/cmdline", "rb").read().decode(errors="replace").split("\0")
                owner = os.stat(f"/proc/{entry}").st_uid
            except OSError:
                continue
            tool = next((i for i, a in enumerate(argv) if os.path.basename(a) == os.path.basename(self.opts.orbctl)), None)
            if owner == me and tool is not None and operation in argv[tool + 1:tool + 2] and vm in argv:
                with contextlib.suppress(OSError):
                    os.kill(int(entry), signal.SIGKILL)
                    log.warning("killed hung %s (pid %s)", " ".join(argv).strip(), entry)

    @staticmethod
    def _ops():
        from pyinfra_orbstack.operations import vm as ops

        return ops

    def check(self) -> None:
        if shutil.which(self.opts.orbctl) is None:
            raise EngineUnavailable(self._missing())
        try:
            import pyinfra_orbstack  # noqa: F401
        except ImportError as err:
            raise EngineUnavailable("the orbstack provider needs pyinfra-orbstack: pip install 'orch[orbstack]'") from err
        # `orbctl status` prints Running (exit 0) or Stopped (exit 1)
        try:
            proc = gsubprocess.run([self.opts.orbctl, "status"], capture_output=True, text=True, timeout=15, stdin=subprocess.DEVNULL)
        except (subprocess.TimeoutExpired, gsubprocess.TimeoutExpired) as err:
            raise EngineUnavailable("OrbStack does not answer (`orbctl status` timed out): restart it") from err
        status = proc.stdout.strip()
        if status.lower() != "running":
            raise EngineUnavailable(f"OrbStack is not running (orbctl status: {status or 'nothing'}): start it with `orbctl start`")

    def ensure_image(self, image: str) -> None:
        if not _IMAGE_RE.match(image):
            raise PermanentProviderError(
                f"invalid OrbStack image {image!r}: name a distro such as ubuntu:22.04 or debian:bookworm with --image"
            )

    def create_golden(self, vm: str, image: str) -> None:
        self._operation("create", vm, self._ops().vm_create, vm, image, self.opts.arch or None, self.opts.user or None)

    def create(self, vm: str, image: str, labels: dict[str, str]) -> None:
        """A worker or one-off machine: a clone of the checkout's golden machine, started."""
        golden = naming.golden_vm_name(self.settings.prefix, self.settings.checkout)
        try:
            self._operation("clone", vm, self._ops().vm_clone, source_name=golden, new_name=vm)
        except VMNotFound as err:
            if self.inspect(golden) is None:
                raise PermanentProviderError(f"golden machine {golden} is missing: run `orch up` to recreate it") from err
            raise
        self.start(vm)

    def start(self, vm: str) -> None:
        self._operation("start", vm, self._ops().vm_start, vm)

    def stop(self, vm: str) -> None:
        self._operation("stop", vm, self._ops().vm_stop, vm)

    def delete(self, vm: str) -> None:
        try:
            self._operation("delete", vm, self._ops().vm_delete, vm, force=True)
        except VMNotFound:
            pass

    def _info(self, raw: dict[str, Any], ip4: str = "") -> VMInfo:
        image = raw.get("image") or {}
        distro = ":".join(x for x in (image.get("distro", ""), image.get("version", "")) if x)
        created = str(raw.get("created") or "") or ulid_created(str(raw.get("id") or ""))
        return VMInfo(name=raw.get("name", ""), state=_state(raw.get("state", "")), created=created, image=distro)

    def inspect(self, vm: str) -> VMInfo | None:
        try:
            raw = self._json("info", ["info", vm, "-f", "json"], vm)
        except VMNotFound:
            return None
        record = raw.get("record") or raw
        return self._info(record, raw.get("ip4") or "")

    def _ip4(self, vm: str) -> str:
        try:
            return self._json("info", ["info", vm, "-f", "json"], vm).get("ip4") or ""
        except VMNotFound:
            return ""

    def list(self, *, all_vms: bool = False) -> list[VMInfo]:
        machines = self._json("list", ["list", "-f", "json"]) or []
        infos = [self._info(m) for m in machines]
        if all_vms:
            return infos
        return [i for i in infos if i.name.startswith(f"{self.settings.prefix}-")]

    def wait_ready(self, vm: str) -> float:
        def probe() -> str | None:
            raw = self._json("info", ["info", vm, "-f", "json"], vm)
            state = (raw.get("record") or {}).get("state", "")
            if state != "running":
                return f"machine state {state or 'unknown'}"
            if not raw.get("ip4"):
                return "running, no ip4 yet"
            try:
                self._orbctl("ready", ["run", "-m", vm, "true"], vm=vm, timeout=15)
            except (TransientProviderError, PermanentProviderError) as err:
                if isinstance(err, (VMNotFound, EngineUnavailable)):
                    raise
                return f"run failed: {err}"
            return None

        strategy = WaitStrategy(
            timeout=self.settings.timeout("ready"), interval=0.25, tolerate=(TransientProviderError,), sleep=gevent.sleep
        )
        return strategy.wait(f"machine {vm}", probe)

    def host(self, vm: str) -> tuple[str, dict[str, Any]]:
        return f"@orbstack/{vm}", {"vm_name": vm}

    # -- baseline: the golden machine ---------------------------------------------------

    def snapshot(self, vm: str, worker: str) -> str:
        return naming.golden_vm_name(self.settings.prefix, self.settings.checkout)

    def restore(self, vm: str, baseline: str, labels: dict[str, str]) -> None:
        self.delete(vm)
        self.create(vm, "", labels)

    def find_baseline(self, worker: str) -> str:
        golden = naming.golden_vm_name(self.settings.prefix, self.settings.checkout)
        return golden if self.inspect(golden) is not None else ""
