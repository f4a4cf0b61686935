"""The OrbStack provider: OrbStack machines, driven through the ``orbctl`` command line and
reached inside through pyinfra-orbstack's ``@orbstack`` connector (host data ``vm_name``).

One channel to the backend: every lifecycle change and every read is one ``orbctl``
process started by orch (argv list, JSON parsed), whose time limit kills that process
on macOS as on Linux. The connector under test, pyinfra-orbstack's ``@orbstack``, is
used for everything inside a machine: provisioning, the fixtures, the inventories.

Baseline: the provisioned baseline machine (``…-zbaseline-…``, named to sort after the
workers) is marked sealed inside, stopped, and its record (id, image, config) kept.
Workers are ``orbctl clone``s of it, started. Before every clone orch verifies that the
baseline is still stopped and still the same machine; every fresh clone is checked for
files changed after the seal (tests that start the first machine in the list and push
files into it). A baseline found changed is rebuilt, and orch says so. The baseline cache
(``orch baseline export/import``, ``--baseline-cache``) is refused in one line: see
``export_baseline``.

OrbStack has no labels: ownership is the name (orch's prefix and the checkout id) and
the state file. ``orbctl stop`` without a name stops OrbStack itself, so stop and delete
refuse an empty name before anything runs.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import threading
import types
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import field_validator

from orchestrator.primitives.errors import (
    EngineUnavailable,
    OrchError,
    PermanentProviderError,
    ProviderError,
    TransientProviderError,
    VMExists,
    VMNotFound,
)
from orchestrator.primitives.results import ExecResult
from orchestrator.providers import command
from orchestrator.providers.base import (
    RUNNING,
    STOPPED,
    About,
    Baseline,
    BaselineTainted,
    Provider,
    ProviderSettings,
    VMInfo,
    WaitStrategy,
)

if TYPE_CHECKING:
    from pathlib import Path

    from orchestrator.primitives.labels import Owner

log = logging.getLogger(__name__)

SEAL_MARKER = "/var/lib/orch/baseline/sealed"

#: Why ``orch baseline export/import`` (and ``--baseline-cache``) are refused here, one line.
NO_CACHE = (
    "the baseline cache is not available on the orbstack provider: orch does not drive OrbStack's "
    "machine export/import (orbctl export/import, OrbStack 2.0+) yet; build the baseline with `orch up`"
)

#: Paths a machine changes by running (boot, logs, caches, the network): not a sign that
#: someone changed the baseline.
_VOLATILE = (
    "/proc",
    "/sys",
    "/dev",
    "/run",
    "/tmp",
    "/var/tmp",
    "/var/log",
    "/var/cache",
    "/var/lib/orch",
    "/var/lib/systemd",
    "/var/lib/dhcp",
    "/var/lib/apt/periodic",
    "/etc/hostname",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/machine-id",
    "/mnt",
    "/opt/orbstack-guest",
    "/Users",
    "/.dockerenv",
)
CHANGED_SINCE_SEAL = (
    f"[ -f {SEAL_MARKER} ] || {{ echo 'no seal marker {SEAL_MARKER}'; exit 3; }}; "
    "find / -xdev \\( " + " -o ".join(f"-path {p}" for p in _VOLATILE) + " \\) -prune "
    f"-o -type f -newer {SEAL_MARKER} -print 2>/dev/null | head -n 5"
)


class OrbStackSettings(ProviderSettings):
    """``[tool.orch.orbstack]``."""

    client_fields: ClassVar[tuple[str, ...]] = ("orbctl",)

    #: Architecture of new machines (arm64, amd64); OrbStack's default when empty.
    arch: str = ""
    #: Default username of new machines; OrbStack's default (yours) when empty.
    user: str = ""
    #: The orbctl command.
    orbctl: str = "orbctl"

    @field_validator("arch", "user")
    @classmethod
    def _word(cls, value: str) -> str:
        if value and not re.fullmatch(r"[a-z0-9_][a-z0-9_-]*", value):
            raise ValueError(f"{value!r} is not valid")
        return value


# orbctl's texts, by meaning (see tests/fakes/orbctl for their sources).
_NOT_RUNNING = ("orbstack is not running", "not running. start it")
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

_IMAGE_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*(:[A-Za-z0-9._-]+)?$")


def classify(operation: str, vm: str, returncode: int, text: str) -> ProviderError:
    msg = " ".join(text.split()) or f"orbctl {operation} failed (exit code {returncode})"
    low = msg.lower()
    if any(t in low for t in _NOT_RUNNING):
        return EngineUnavailable(f"OrbStack is not running ({msg}): start it with `orbctl start`", operation=operation, vm=vm)
    if any(t in low for t in _NOT_FOUND):
        return VMNotFound(msg, operation=operation, vm=vm)
    if any(t in low for t in _EXISTS):
        return VMExists(msg, operation=operation, vm=vm)
    if any(t in low for t in _TRANSIENT):
        return TransientProviderError(msg, operation=operation, vm=vm)
    return PermanentProviderError(msg, operation=operation, vm=vm)


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid_created(machine_id: str) -> str:
    """OrbStack's machine ids are ULIDs: the first 10 characters (Crockford base32) are
    the creation time in ms (kept: it tells apart two machines made in one second).
    orbctl reports no creation time otherwise."""
    try:
        ms = 0
        for ch in machine_id[:10].upper():
            ms = ms * 32 + _CROCKFORD.index(ch)
        return datetime.fromtimestamp(ms // 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"
    except (ValueError, OverflowError, OSError):
        return ""


def _state(raw: str) -> str:
    return {"running": RUNNING, "stopped": STOPPED}.get(raw, raw or "unknown")


def _signature(record: dict[str, Any]) -> dict[str, str]:
    """What must not change in a sealed machine's record: its id, image and config."""
    return {key: json.dumps(record.get(key), sort_keys=True) for key in ("id", "image", "config")}


def _cooperative_run(*popenargs: Any, **kwargs: Any) -> subprocess.CompletedProcess[Any]:
    """``subprocess.run`` as the standard library does it (same arguments, timeout kill,
    ``TimeoutExpired``, a ``CompletedProcess``), through ``gevent.subprocess``: the caller's
    greenlet waits and pyinfra's other hosts run meanwhile. gevent's processes need its
    default loop (the main thread's): anywhere else, the standard library's call."""
    try:
        import gevent  # noqa: PLC0415  (pyinfra's: there whenever pyinfra-orbstack is)
        import gevent.subprocess  # noqa: PLC0415  (the same)

        usable = threading.current_thread() is threading.main_thread() and bool(gevent.get_hub().loop.default)
    except (ImportError, AttributeError):  # no usable gevent: the package's own call
        usable = False
    if not usable:
        return subprocess.run(*popenargs, **kwargs)
    done = gevent.subprocess.run(*popenargs, **kwargs)
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout, done.stderr)


#: The ``subprocess`` that pyinfra-orbstack's own code sees in orch's copy of it: the
#: standard library's, but ``run`` is :func:`_cooperative_run`.
_SUBPROCESS = types.ModuleType("subprocess", "subprocess with a cooperative run (orch)")
_SUBPROCESS.__dict__.update({k: v for k, v in vars(subprocess).items() if not k.startswith("__")})
_SUBPROCESS.run = _cooperative_run  # type: ignore[attr-defined]

_COPIES: dict[Any, Any] = {}
_unexpected: list[str] = []


def _cooperative(execute: Any) -> Any | None:
    """pyinfra-orbstack's ``_execute_with_retry`` (bound to its connector), its own code
    run unchanged (retries, backoff, error handling) with one name resolved differently:
    ``subprocess``, whose ``run`` yields to pyinfra's gevent loop instead of blocking it
    (the package calls the standard library's, so the hosts of one deploy ran one after
    another). None, logged once, where the package is not the one this was written
    against (0.11): then the package's own call is used."""
    func: Any = getattr(execute, "__func__", None)
    code: Any = getattr(func, "__code__", None)
    names = getattr(code, "co_names", ())
    globs: Any = getattr(func, "__globals__", None)
    why = ""
    if func is None or code is None or not isinstance(globs, dict):
        why = "it is not a plain method"
    elif globs.get("subprocess") is not subprocess or "subprocess" not in names or "run" not in names:
        why = "it does not call the standard library's subprocess.run"
    elif func.__closure__:
        why = "it is a closure"
    if why:
        if not _unexpected:
            _unexpected.append(why)
            log.debug("pyinfra-orbstack's _execute_with_retry kept as it is (orbctl runs block pyinfra's loop): %s", why)
        return None
    copy = _COPIES.get(func)
    if copy is None:
        copy = types.FunctionType(code, {**globs, "subprocess": _SUBPROCESS}, func.__name__, func.__defaults__)
        copy.__kwdefaults__ = func.__kwdefaults__
        copy.__doc__ = func.__doc__
        _COPIES[func] = copy
    return types.MethodType(copy, execute.__self__)


class OrbStackProvider(Provider):
    name = "orbstack"
    settings_model = OrbStackSettings
    has_labels = False
    can_rename = True
    clone_ready = True  # clone waits until the machine runs and answers `orbctl run`
    default_image = "debian:bookworm"
    #: OrbStack's VMs are machines already (a distro with systemd): the same image.
    machine_image = "debian:bookworm"
    opts: OrbStackSettings

    # -- orbctl ----------------------------------------------------------------------

    def _missing(self) -> str:
        return f"{self.opts.orbctl} is not on PATH: install OrbStack (macOS, https://orbstack.dev) or use --provider docker"

    def _orbctl(self, operation: str, args: list[str], *, vm: str = "", timeout: float | None = None, check: bool = True) -> Any:
        limit = timeout if timeout is not None else self.settings.timeout(operation)
        return command.run(
            [self.opts.orbctl, *args],
            operation=operation,
            timeout=limit,
            classify=classify,
            vm=vm,
            missing=self._missing(),
            check=check,
        )

    def _json(self, operation: str, args: list[str], vm: str = "") -> Any:
        out = self._orbctl(operation, args, vm=vm).stdout
        try:
            return json.loads(out)
        except json.JSONDecodeError as err:
            raise TransientProviderError(
                f"orbctl {' '.join(args)} printed no JSON: {out[:200]!r}", operation=operation, vm=vm
            ) from err

    @staticmethod
    def _named(operation: str, vm: str) -> str:
        if not vm:
            # `orbctl stop` without a name stops OrbStack itself
            raise PermanentProviderError(f"refusing to {operation} a machine with an empty name", operation=operation)
        return vm

    def check(self) -> None:
        if shutil.which(self.opts.orbctl) is None:
            raise EngineUnavailable(self._missing())
        try:
            import pyinfra_orbstack  # noqa: F401, PLC0415  optional (pyinfra-orch[orbstack]): the @orbstack connector inside machines
        except ImportError as err:
            raise EngineUnavailable("the orbstack provider needs pyinfra-orbstack: pip install 'pyinfra-orch[orbstack]'") from err
        # `orbctl status` prints Running (exit 0) or Stopped (exit 1)
        proc = self._orbctl("status", ["status"], timeout=15, check=False)
        status = proc.stdout.strip()
        if status.lower() != "running":
            raise EngineUnavailable(
                f"OrbStack is not running (orbctl status: {status or 'nothing'}): start it with `orbctl start`"
            )

    def about(self) -> list[About]:
        """OrbStack's version (``orbctl version``: "Version: X (N)"), once it runs."""
        client = shutil.which(self.opts.orbctl) or ""
        try:
            self.check()
            out = self._orbctl("info", ["version"], timeout=15, check=False).stdout
        except OrchError as err:
            return [About(self.name, "this Mac", error=str(err), client=client)]
        words = [line.split(":", 1)[1].split() for line in out.splitlines() if line.startswith("Version:")]
        version = words[0][0] if words and words[0] else "(version unknown)"
        return [About(f"{self.name} {version}", "this Mac", client=f"{client} {version}")]

    def image_id(self, image: str) -> str:
        if not _IMAGE_RE.match(image):
            raise PermanentProviderError(
                f"invalid OrbStack image {image!r}: name a distro such as ubuntu:22.04 or debian:bookworm with --image"
            )
        return image  # OrbStack reports no image id: the distro name is what identifies it

    # -- lifecycle ---------------------------------------------------------------------

    def create(self, vm: str, image: str, owner: Owner) -> None:
        args = ["create"]
        if self.opts.arch:
            args += ["--arch", self.opts.arch]
        if self.opts.user:
            args += ["--user", self.opts.user]
        try:
            self._orbctl("create", [*args, image, self._named("create", vm)], vm=vm)
        except (VMExists, VMNotFound):
            raise
        except PermanentProviderError as err:
            if "invalid distro" in str(err).lower() or "invalid image" in str(err).lower():
                raise PermanentProviderError(
                    f"cannot create {vm} from image {image!r} ({err}): name another with --image / ORCH_IMAGE"
                ) from err
            raise

    def start(self, vm: str) -> None:
        self._orbctl("start", ["start", self._named("start", vm)], vm=vm)

    def stop(self, vm: str) -> None:
        self._orbctl("stop", ["stop", self._named("stop", vm)], vm=vm)

    def delete(self, vm: str) -> None:
        try:
            self._orbctl("delete", ["delete", "-f", self._named("delete", vm)], vm=vm)
        except VMNotFound:
            pass

    def rename(self, vm: str, new: str) -> None:
        self._orbctl("rename", ["rename", self._named("rename", vm), self._named("rename", new)], vm=vm)

    def _info(self, raw: dict[str, Any]) -> VMInfo:
        image = raw.get("image") or {}
        distro = ":".join(x for x in (image.get("distro", ""), image.get("version", "")) if x)
        return VMInfo(
            name=raw.get("name", ""),
            state=_state(raw.get("state", "")),
            created=ulid_created(str(raw.get("id") or "")),
            image=distro,
        )

    def _raw_info(self, vm: str) -> dict[str, Any] | None:
        try:
            info: dict[str, Any] = self._json("info", ["info", vm, "-f", "json"], vm)
            return info
        except VMNotFound:
            return None

    def inspect(self, vm: str) -> VMInfo | None:
        raw = self._raw_info(vm)
        return None if raw is None else self._info(raw.get("record") or raw)

    def list_vms(self, *, all_vms: bool = False) -> list[VMInfo]:
        machines = self._json("list", ["list", "-f", "json"]) or []
        infos = [self._info(m) for m in machines]
        return infos if all_vms else [i for i in infos if i.name.startswith(f"{self.settings.prefix}-")]

    def exec_argv(self, vm: str, argv: list[str], *, interactive: bool = False) -> list[str]:
        return [self.opts.orbctl, "run", "-m", vm, "-u", "root", *argv]

    def exec(self, vm: str, argv: list[str], *, timeout: float | None = None) -> ExecResult:
        limit = timeout if timeout is not None else self.settings.timeout("default")
        proc = command.run(self.exec_argv(vm, argv), operation="exec", timeout=limit, classify=classify, vm=vm, check=False)
        return ExecResult(proc.returncode, proc.stdout, proc.stderr)

    def wait_ready(self, vm: str) -> float:
        def probe() -> str | None:
            raw = self._raw_info(vm)
            if raw is None:
                raise VMNotFound(f"machine {vm} disappeared while waiting for it", operation="ready", vm=vm)
            state = (raw.get("record") or {}).get("state", "")
            if state != "running":
                return f"machine state {state or 'unknown'}"
            if not raw.get("ip4"):
                return "running, no ip4 yet"
            result = self.exec(vm, ["true"], timeout=15)
            return None if result.ok else f"run failed (exit code {result.rc}): {result.stderr.strip()[:200]}"

        strategy = WaitStrategy(timeout=self.settings.timeout("ready"), interval=0.25, tolerate=(TransientProviderError,))
        return strategy.wait(f"machine {vm}", probe)

    def host(self, vm: str) -> tuple[str, dict[str, Any]]:
        return f"@orbstack/{vm}", {"vm_name": vm}

    @classmethod
    def watch_exit_codes(cls, host: Any, record: Callable[[int], None]) -> None:
        """pyinfra-orbstack's connector keeps the exit code to itself: wrap its one place
        that runs ``orbctl run``, so failures can say what the command exited with. The
        same place runs ``orbctl`` with the standard library's blocking ``subprocess.run``,
        which stops pyinfra's gevent loop (every host of a deploy waits for the others'
        commands): orch runs the package's own code there with a cooperative ``run``
        (see :func:`_cooperative`)."""
        connector: Any = getattr(host, "connector", None)
        execute = getattr(connector, "_execute_with_retry", None)
        if execute is None or getattr(execute, "_orch", False):
            return
        inner = _cooperative(execute) or execute

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            result = inner(*args, **kwargs)
            returncode = getattr(result, "returncode", None)
            if isinstance(returncode, int):
                record(returncode)
            return result

        wrapped._orch = True  # type: ignore[attr-defined]
        connector._execute_with_retry = wrapped

    @classmethod
    def testinfra_host(cls, host: str, data: dict[str, Any]) -> Any:
        """``orbctl run -m NAME -u root`` (testinfra has no OrbStack backend)."""
        from testinfra.backend import base  # noqa: PLC0415  optional (pyinfra-orch[testinfra]): only orch_host needs it
        from testinfra.host import Host  # noqa: PLC0415  (the same)

        connector, _, target = host.partition("/")
        if connector != "@orbstack":
            return super().testinfra_host(host, data)
        machine = data.get("vm_name", target)

        class OrbctlBackend(base.BaseBackend):
            NAME = "orbctl"

            def run(self, command: str, *args: str, **kwargs: Any) -> base.CommandResult:
                cmd = self.get_command(command, *args)
                out = self.run_local("orbctl run -m %s -u root /bin/sh -c %s", machine, cmd)
                out.command = self.encode(cmd)
                return out

        return Host(OrbctlBackend(target))

    # -- baseline: a stopped, sealed machine to clone -------------------------------------

    def seal(self, vm: str, owner: Owner) -> Baseline:
        marked = self.exec(vm, ["sh", "-c", f"mkdir -p {SEAL_MARKER.rsplit('/', 1)[0]} && date -u > {SEAL_MARKER}"])
        if not marked.ok:
            raise PermanentProviderError(f"cannot mark {vm} as sealed: {marked.stderr.strip()}", operation="seal", vm=vm)
        self.stop(vm)
        raw = self._raw_info(vm) or {}
        return Baseline(vm, _signature(raw.get("record") or {}))

    def verify(self, baseline: Baseline) -> str | None:
        raw = self._raw_info(baseline.ref)
        if raw is None:
            return f"the baseline machine {baseline.ref} is gone"
        record = raw.get("record") or {}
        if record.get("state") != "stopped":
            return f"the baseline machine {baseline.ref} was started outside orch (it is {record.get('state', 'unknown')})"
        changed = [k for k, v in _signature(record).items() if baseline.seal.get(k) != v]
        if changed:
            return f"the baseline machine {baseline.ref} was replaced or reconfigured ({', '.join(changed)} changed)"
        return None

    def clone(self, baseline: Baseline, vm: str, owner: Owner) -> None:
        self._orbctl("clone", ["clone", self._named("clone", baseline.ref), self._named("clone", vm)], vm=vm)
        self.start(vm)  # a clone comes back stopped
        self.wait_ready(vm)
        found = self.exec(vm, ["sh", "-c", CHANGED_SINCE_SEAL])
        if not found.ok or found.stdout.strip():
            what = found.stdout.strip().replace("\n", ", ") or found.stderr.strip()
            self.delete(vm)
            raise BaselineTainted(
                f"the baseline {baseline.ref} was changed after it was sealed ({what})", operation="clone", vm=vm
            )

    def drop(self, baseline: Baseline) -> bool:
        self.delete(baseline.ref)
        return True

    # -- the baseline as a file: not on OrbStack ---------------------------------------------

    def export_baseline(self, baseline: Baseline, path: Path) -> None:
        """Refused in one line. OrbStack 2.0 exports and imports machines, but its orbctl
        command line for that (and what an imported machine keeps) is documented nowhere
        orch could read, nor emulated by tests/fakes/orbctl: orch would drive it blind."""
        raise PermanentProviderError(NO_CACHE, operation="export", vm=baseline.ref)

    def import_baseline(self, path: Path, name: str, owner: Owner) -> Baseline:
        """Refused in one line (see ``export_baseline``); nothing is made."""
        raise PermanentProviderError(NO_CACHE, operation="import", vm=name)
