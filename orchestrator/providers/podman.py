"""The podman provider: rootful podman containers as orch's VMs, reached with pyinfra's
``@podman`` connector (``pyinfra.connectors.docker:PodmanConnector``).

It is the Docker provider with podman's command line: the same argv (podman accepts
docker's), the same labels, the same baseline (a committed image
``{prefix}-{checkout}-baseline:{fingerprint}``, recorded by its image id). What differs:

- errors: podman's own texts (``classify`` below), read from podman 4.3 itself;
- images: podman stores unqualified names under ``localhost/`` (a baseline tag lists as
  ``localhost/orch-…-baseline:…``; short names still find them), lists image ids with
  ``sha256:`` but inspects them without, and says "image not known" where Docker says
  "No such image". The default image is fully qualified
  (``docker.io/library/debian:bookworm``), so no short-name lookup (or prompt) is involved;
- restart policy: podman has no daemon, so nothing restarts containers after a reboot
  unless systemd's ``podman-restart.service`` is enabled, and that unit starts only
  containers with ``--restart always``. Workers are therefore run with ``--restart always``
  (podman documents ``unless-stopped`` as identical to it; ``podman stop`` is honoured:
  a stopped worker stays stopped). Without that unit, workers are stopped after a reboot
  until ``orch up`` (or the pytest plugin, before it hands a worker to a connector) starts
  them again;
- delete kills at once (``podman rm --force --time 0``; podman would otherwise wait the
  container's stop timeout, as ``docker rm --force`` does not);
- ``--init`` runs catatonit (Debian's ``catatonit`` package);
- machines (``machine = true``): ``--systemd=always`` is all podman needs to run the
  image's ``/sbin/init`` as PID 1 without privileges: it sets the stop signal
  (SIGRTMIN+3), mounts tmpfs on /run, /run/lock, /tmp and /var/log/journal (so the journal
  of a boot goes with it) and the systemd cgroup, and passes ``container_uuid``. A reboot
  inside ends the container and ``--restart always`` starts it again; between the two,
  podman says "stopped" for a moment;
- one engine only: several engines are the Docker provider's (``[tool.orch.docker]
  engines``; the older ``[tool.orch] engines`` is refused with podman), as pyinfra's
  ``@podman`` reaches only this machine's containers.

Setup on Debian (``scripts/setup.sh``): the ``podman`` and ``catatonit`` packages, and
``default_ulimits = ["nofile=1024:1024", "nproc=1000:1000"]`` under ``[containers]`` in
``/etc/containers/containers.conf`` where podman's default limits are more than root may
set ("error setting rlimit type 7: operation not permitted").
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import TYPE_CHECKING, Any, ClassVar

from orchestrator.primitives.errors import (
    EngineUnavailable,
    OrchError,
    PermanentProviderError,
    ProviderError,
    TransientProviderError,
    UsageError,
    VMExists,
    VMNotFound,
)
from orchestrator.providers.base import STOPPED, About, VMInfo
from orchestrator.providers.docker import ContainerSettings, DockerProvider
from orchestrator.providers.docker_errors import by_markers

if TYPE_CHECKING:
    from orchestrator.primitives.labels import Owner
    from orchestrator.settings.model import Settings

log = logging.getLogger(__name__)


class PodmanSettings(ContainerSettings):
    """``[tool.orch.podman]``: as Docker's, with the podman client."""

    client_fields: ClassVar[tuple[str, ...]] = ("podman",)

    #: The podman client (one command, e.g. "podman-remote").
    podman: str = "podman"

    @property
    def client(self) -> str:
        return self.podman


# podman's error texts (podman 4.3), by what they mean.
#: podman --remote (and podman machine on macOS) when its service is not there.
_ENGINE_DOWN = ("Cannot connect to Podman", "unable to connect to Podman socket")
#: The runtime may not set the default ulimits (containers.conf's default_ulimits fixes it).
_RLIMIT = ("error setting rlimit",)
_NO_INIT = ("container-init binary not found",)
_NOT_FOUND = ("no such container",)
#: run/create: 'the container name "x" is already in use by <id>'; rename: "container already exists".
_EXISTS = ("is already in use by", "container already exists")
#: inspect/run/rm of a missing image: "<name>: image not known" (libpod also has "no such image").
_IMAGE_GONE = ("image not known", "no such image")
_NO_IMAGE = (
    *_IMAGE_GONE,
    "did not resolve to an alias",  # pull of a short name no registry is configured for
    "repository name must be lowercase",
    "invalid reference format",
)
#: image rm refused: a container uses it ("image is in use by a container"), or it has
#: several tags ('by ID with more than one tag'); libpod also says "image is being used".
_IMAGE_IN_USE = ("image is in use by a container", "image is being used", "more than one tag")
#: Go's network and system texts, as docker.py's (podman is a Go client of registries too).
_TRANSIENT = (
    "context deadline exceeded",
    "i/o timeout",
    "connection reset",
    "TLS handshake timeout",
    "device or resource busy",
    "Client.Timeout exceeded",
    "too many requests",
    "resource temporarily unavailable",
    "502 Bad Gateway",
    "503 Service Unavailable",
)
#: states podman reports besides docker's: made (``podman create``/``init``) but not running.
_NOT_STARTED = ("configured", "initialized", "stopped")


def classify(operation: str, vm: str, returncode: int, stderr: str) -> ProviderError:
    """Turn a failed podman command into a named, classified error, from podman's message
    (its exit codes: 125 for its own errors, 1 or 2 for some ``rm``/``image rm`` refusals,
    255 for an exec into a stopped container)."""
    msg = " ".join(stderr.split()) or f"podman exited with code {returncode}"
    if any(t in msg for t in _ENGINE_DOWN):
        return EngineUnavailable(
            f"podman's service is not reachable ({msg}): start it (podman machine start, or "
            "systemctl start podman.socket), or use the local podman",
            operation=operation,
            vm=vm,
        )
    if any(t in msg for t in _RLIMIT):
        return EngineUnavailable(
            f"podman cannot start containers here ({msg}): set default_ulimits = "
            '["nofile=1024:1024", "nproc=1000:1000"] under [containers] in /etc/containers/containers.conf '
            "(scripts/setup.sh does)",
            operation=operation,
            vm=vm,
        )
    if any(t in msg for t in _NO_INIT):
        return PermanentProviderError(
            f"{msg}: install catatonit (scripts/setup.sh does), or set init = false in [tool.orch.podman]",
            operation=operation,
            vm=vm,
        )
    return by_markers(
        msg,
        operation,
        vm,
        [
            (_NOT_FOUND, VMNotFound),
            (_EXISTS, VMExists),
            (_NO_IMAGE, PermanentProviderError),
            (_TRANSIENT, TransientProviderError),
        ],
    )


#: ``podman exec`` failing in podman, not in the command: gone, not running, no service.
_EXEC_FAILED = (*_NOT_FOUND, *_ENGINE_DOWN, "container state improper", "container has already been removed")


def _podmans_own(stderr: str) -> bool:
    """Whether a failed ``podman exec`` failed in podman rather than in the command: podman
    ends with its own "Error: " line, naming one of the failures above (a command may print
    "Error: " and exit 125 itself; a command podman cannot find is the command's 127)."""
    lines = stderr.strip().splitlines()
    last = lines[-1] if lines else ""
    return last.startswith("Error: ") and any(t in last for t in _EXEC_FAILED)


def _gone(err: ProviderError) -> bool:
    return isinstance(err, VMNotFound) or any(t in str(err) for t in _IMAGE_GONE)


class PodmanProvider(DockerProvider):
    name = "podman"
    settings_model = PodmanSettings
    classify = staticmethod(classify)
    install_hint = "install podman (scripts/setup.sh does)"
    has_labels = True
    can_rename = True
    default_image = "docker.io/library/debian:bookworm"
    #: scripts/setup.sh builds it for podman under this name (no registry involved).
    machine_image = "localhost/orch-machine:bookworm"

    def __init__(self, settings: Settings, engine: str = "") -> None:
        if engine:
            # pyinfra's @podman reaches local containers only (orch's @orchdocker is Docker's)
            raise UsageError("engines = [...] needs the docker provider: podman runs orch's containers on this machine only")
        super().__init__(settings)

    # -- running podman --------------------------------------------------------------

    def _client(self) -> list[str]:
        return [self.opts.client]

    def check(self) -> None:
        if shutil.which(self.opts.client) is None:
            raise EngineUnavailable(self._missing())
        # no daemon to ask: `podman info` opens the storage and the runtime (and reaches the
        # service where podman is remote)
        self._docker("info", ["info", "--format", "{{.Version.Version}}"], timeout=15)

    image_fix = (
        "pull it, or copy it from Docker (docker save IMAGE | podman load; scripts/setup.sh copies "
        "localhost/orch-base:bookworm), or name another with [tool.orch] image"
    )

    def where(self) -> str:
        return "this machine (no daemon)"

    def about(self) -> list[About]:
        """podman's version as ``podman info`` gives it (there is no daemon to ask)."""
        client = shutil.which(self.opts.client) or ""
        try:
            if not client:
                raise EngineUnavailable(self._missing())
            version = self._docker("info", ["info", "--format", "{{.Version.Version}}"], timeout=15).strip()
        except OrchError as err:
            return [About(self.name, self.where(), error=str(err), client=client)]
        return [About(f"{self.name} {version}", self.where(), client=f"{client} {version}")]

    def image_id(self, image: str) -> str:
        try:
            return self._image_inspect(image)
        except PermanentProviderError as err:
            msg = str(err)
            if "invalid reference format" in msg or "must be lowercase" in msg:
                raise PermanentProviderError(
                    f"invalid image name {image!r} ({err}): name another with --image / ORCH_IMAGE / [tool.orch] image"
                ) from err
            if not _gone(err):
                raise
        try:
            self._docker("image", ["pull", "--quiet", image])
        except ProviderError as err:
            raise PermanentProviderError(
                f"image {image!r} is not available to podman here and could not be pulled ({err}): pull it, "
                "copy it from Docker (docker save IMAGE | podman load; scripts/setup.sh copies "
                "localhost/orch-base:bookworm), or name another with --image / ORCH_IMAGE / [tool.orch] image"
            ) from err
        return self._image_inspect(image)

    # -- lifecycle -------------------------------------------------------------------

    def _run_args(self, vm: str, image: str, owner: Owner, *, restart: bool = True) -> list[str]:
        args = super()._run_args(vm, image, owner, restart=False)
        # "always", not "unless-stopped": the same to podman, but podman-restart.service
        # (systemd) starts only "always" containers at boot
        return [args[0], "--restart", "always", *args[1:]] if restart else args

    def _machine_args(self) -> list[str]:
        return ["--systemd=always"]

    @property
    def local_engine(self) -> bool:
        """podman runs its containers on this machine, unless the client is remote."""
        return not (self.opts.client.endswith("-remote") or os.environ.get("CONTAINER_HOST"))

    def delete(self, vm: str) -> None:
        if not vm:
            raise PermanentProviderError("refusing to delete a VM with an empty name", operation="delete")
        try:
            self._docker("delete", ["rm", "--force", "--time", "0", "--volumes", vm], vm=vm)
        except VMNotFound:
            pass

    def _inspect_many(self, ids: list[str]) -> list[VMInfo]:
        infos = super()._inspect_many(ids)
        for info in infos:
            if info.state in _NOT_STARTED:
                info.state = STOPPED
        return infos

    def host(self, vm: str) -> tuple[str, dict[str, Any]]:
        return f"@podman/{vm}", {}

    # -- baseline: a committed image (as Docker), with podman's texts and names ------------

    @staticmethod
    def image_gone(err: ProviderError) -> bool:
        return _gone(err)

    @staticmethod
    def image_in_use(err: ProviderError) -> bool:
        return any(t in str(err) for t in _IMAGE_IN_USE)

    @staticmethod
    def failed_in_engine(stderr: str) -> bool:
        return _podmans_own(stderr)

    @staticmethod
    def tag_name(tag: str) -> str:
        return tag.removeprefix("localhost/")  # orch names its baselines without a registry
