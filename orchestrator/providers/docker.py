"""The Docker provider: containers as orch's VMs, reached with pyinfra's ``@docker``.

Lifecycle goes through the ``docker`` command line (argv lists, JSON output parsed with
``docker inspect``); work inside a container goes through pyinfra's ``@docker/NAME``
connector, which we only ever hand running containers (given a stopped one, pyinfra
starts it and removes it when it disconnects).

Baseline: after provisioning, the worker's container is committed to an image
``{prefix}-{checkout}-baseline:{worker}``; reset recreates the container from it, under
the same name and labels, which takes about a second.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any

from .. import labels as L
from ..config import Settings
from ..errors import (
    ConfigError,
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
class DockerSettings:
    """``[tool.orch.docker]``: how containers are started."""

    #: The container's main process; it must run until the container is stopped.
    command: list[str] = field(default_factory=lambda: ["sleep", "infinity"])
    #: Run an init process (``docker run --init``): quick stops, reaped zombies.
    init: bool = True
    #: Extra ``docker run`` arguments, e.g. ["--privileged"] for systemd images.
    run_args: list[str] = field(default_factory=list)
    #: The docker client.
    docker: str = "docker"

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> "DockerSettings":
        known = set(cls.__dataclass_fields__)
        unknown = set(options) - known
        if unknown:
            raise ConfigError(f"[tool.orch.docker]: unknown setting(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
        s = cls(**options)
        if not (isinstance(s.command, list) and s.command and all(isinstance(a, str) for a in s.command)):
            raise ConfigError("[tool.orch.docker] command must be a non-empty list of strings")
        if not (isinstance(s.run_args, list) and all(isinstance(a, str) for a in s.run_args)):
            raise ConfigError("[tool.orch.docker] run_args must be a list of strings")
        return s


# Docker's error texts, by what they mean. Matched against the daemon's message only
# after the exit code says the daemon (not the container) answered.
_ENGINE_DOWN = ("Cannot connect to the Docker daemon", "Is the docker daemon running", "error during connect")
_NOT_FOUND = ("No such container", "No such object")
_NO_IMAGE = ("No such image", "Unable to find image", "pull access denied", "repository does not exist", "manifest unknown", "invalid reference format")
_BAD_REQUEST = ("Invalid container name", "is not a valid", "invalid argument", "unknown flag", "Conflict.")
_TRANSIENT = (
    "context deadline exceeded",
    "i/o timeout",
    "connection reset",
    "TLS handshake timeout",
    "device or resource busy",
    "is already in progress",
    "Client.Timeout exceeded",
    "too many requests",
    "resource temporarily unavailable",
    "502 Bad Gateway",
    "503 Service Unavailable",
)


def classify(operation: str, vm: str, returncode: int, stderr: str) -> ProviderError:
    """Turn a failed docker command into a named, classified error."""
    msg = " ".join(stderr.split()) or f"docker exited with code {returncode}"
    if any(t in msg for t in _ENGINE_DOWN):
        return EngineUnavailable(
            f"the Docker engine is not reachable ({msg}): start it (dockerd, or scripts/setup.sh)",
            operation=operation,
            vm=vm,
        )
    if any(t in msg for t in _NOT_FOUND):
        return VMNotFound(msg, operation=operation, vm=vm)
    if any(t in msg for t in _NO_IMAGE):
        return PermanentProviderError(msg, operation=operation, vm=vm)
    if any(t in msg for t in _TRANSIENT):
        return TransientProviderError(msg, operation=operation, vm=vm)
    if any(t in msg for t in _BAD_REQUEST):
        return PermanentProviderError(msg, operation=operation, vm=vm)
    # Exit 125 is the docker client or daemon refusing the request: permanent unless a
    # known transient text said otherwise. Anything else is unknown: fail at once with
    # docker's own message rather than retry blindly.
    return PermanentProviderError(msg, operation=operation, vm=vm)


def _state(raw: dict[str, Any]) -> str:
    status = raw.get("State", {}).get("Status", "")
    if status == "running":
        return RUNNING
    if status in ("exited", "created", "dead"):
        return STOPPED
    return status or "unknown"


class DockerProvider(Provider):
    name = "docker"
    has_labels = True

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.opts = DockerSettings.from_options(settings.provider_options.get("docker", {}))

    # -- running docker ------------------------------------------------------------

    def _docker(self, operation: str, args: list[str], *, vm: str = "", timeout: float | None = None) -> str:
        argv = [self.opts.docker, *args]
        limit = timeout if timeout is not None else self.settings.timeout(operation)
        log.debug("run %s", argv)
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=limit, stdin=subprocess.DEVNULL)
        except FileNotFoundError as err:
            raise EngineUnavailable(
                f"the docker command ({self.opts.docker}) is not installed: install Docker (scripts/setup.sh does)",
                operation=operation,
            ) from err
        except subprocess.TimeoutExpired as err:
            raise ProviderTimeout(f"docker {operation} {vm} did not finish in {limit:.0f}s", operation=operation, vm=vm) from err
        if proc.returncode != 0:
            raise classify(operation, vm, proc.returncode, proc.stderr)
        return proc.stdout

    def check(self) -> None:
        if shutil.which(self.opts.docker) is None:
            raise EngineUnavailable(
                f"the docker command ({self.opts.docker}) is not installed: install Docker (scripts/setup.sh does)"
            )
        self._docker("info", ["version", "--format", "{{.Server.Version}}"], timeout=15)

    def ensure_image(self, image: str) -> None:
        try:
            self._docker("inspect", ["image", "inspect", "--format", "{{.Id}}", image])
            return
        except VMNotFound:
            pass
        except PermanentProviderError as err:
            if "No such image" not in str(err) and "invalid reference" not in str(err):
                raise
            if "invalid reference" in str(err):
                raise PermanentProviderError(f"invalid image name {image!r}: {err}") from err
        try:
            self._docker("import", ["pull", "--quiet", image])
        except ProviderError as err:
            raise PermanentProviderError(
                f"image {image!r} is not available here and could not be pulled ({err}): "
                "build or pull it, or name another with --image / ORCH_IMAGE"
            ) from err

    # -- lifecycle -----------------------------------------------------------------

    def _run_args(self, vm: str, image: str, labels: dict[str, str]) -> list[str]:
        args = ["run", "--detach", "--name", vm, "--hostname", vm, "--pull", "never"]
        if self.opts.init:
            args.append("--init")
        for key, value in sorted(labels.items()):
            args += ["--label", f"{key}={value}"]
        return [*args, *self.opts.run_args, image, *self.opts.command]

    def create(self, vm: str, image: str, labels: dict[str, str]) -> None:
        self._docker("create", self._run_args(vm, image, labels), vm=vm)

    def start(self, vm: str) -> None:
        self._docker("start", ["start", vm], vm=vm)

    def delete(self, vm: str) -> None:
        if not vm:
            raise PermanentProviderError("refusing to delete a VM with an empty name", operation="delete")
        try:
            self._docker("delete", ["rm", "--force", "--volumes", vm], vm=vm)
        except VMNotFound:
            pass

    def _inspect_many(self, ids: list[str]) -> list[VMInfo]:
        if not ids:
            return []
        out = self._docker("list", ["inspect", "--type", "container", *ids])
        infos = []
        for raw in json.loads(out or "[]"):
            infos.append(
                VMInfo(
                    name=raw.get("Name", "").lstrip("/"),
                    state=_state(raw),
                    labels=raw.get("Config", {}).get("Labels") or {},
                    created=raw.get("Created", "")[:19] + "Z" if raw.get("Created") else "",
                    image=raw.get("Config", {}).get("Image", ""),
                )
            )
        return infos

    def inspect(self, vm: str) -> VMInfo | None:
        try:
            found = self._inspect_many([vm])
        except VMNotFound:
            return None
        return found[0] if found else None

    def list(self, *, all_vms: bool = False) -> list[VMInfo]:
        args = ["ps", "--all", "--no-trunc", "--quiet"]
        if not all_vms:
            args += ["--filter", f"label={L.MANAGED_BY}={L.MANAGED_BY_VALUE}"]
        ids = self._docker("list", args).split()
        try:
            return self._inspect_many(ids)
        except VMNotFound:
            # A container vanished between ps and inspect: ask again, one by one.
            return [info for i in ids if (info := self.inspect(i)) is not None]

    def wait_ready(self, vm: str) -> float:
        def probe() -> str | None:
            info = self.inspect(vm)
            if info is None:
                raise VMNotFound(f"container {vm} disappeared while waiting for it", operation="ready", vm=vm)
            if not info.running:
                return f"container state {info.state}"
            try:
                self._docker("ready", ["exec", vm, "true"], vm=vm, timeout=10)
            except (TransientProviderError, PermanentProviderError) as err:
                if isinstance(err, (VMNotFound, EngineUnavailable)):
                    raise
                return f"exec failed: {err}"
            return None

        strategy = WaitStrategy(timeout=self.settings.timeout("ready"), interval=0.1, tolerate=(TransientProviderError,))
        return strategy.wait(f"container {vm}", probe)

    def host(self, vm: str) -> tuple[str, dict[str, Any]]:
        return f"@docker/{vm}", {}

    # -- baseline ------------------------------------------------------------------

    def baseline_image(self, worker: str, checkout: str | None = None) -> str:
        return f"{self.settings.prefix}-{checkout or self.settings.checkout}-baseline:{worker}"

    def sweep_baseline(self, checkout: str, worker: str) -> None:
        self.forget_baseline(self.baseline_image(worker, checkout))

    def snapshot(self, vm: str, worker: str) -> str:
        image = self.baseline_image(worker)
        self._docker("commit", ["commit", vm, image], vm=vm)
        return image

    def restore(self, vm: str, baseline: str, labels: dict[str, str]) -> None:
        self.delete(vm)
        self.create(vm, baseline, labels)

    def find_baseline(self, worker: str) -> str:
        image = self.baseline_image(worker)
        try:
            self._docker("inspect", ["image", "inspect", "--format", "{{.Id}}", image])
        except (VMNotFound, PermanentProviderError):
            return ""
        return image

    def forget_baseline(self, baseline: str) -> None:
        if not baseline:
            return
        try:
            self._docker("delete", ["image", "rm", "--force", baseline])
        except (VMNotFound, PermanentProviderError) as err:
            if "No such image" not in str(err):
                raise
