"""The Docker provider: containers as orch's VMs, reached with pyinfra's ``@docker``.

Lifecycle goes through the ``docker`` command line (argv lists, JSON output of ``docker
inspect`` parsed); work inside a container goes through pyinfra's ``@docker/NAME``
connector, which orch only ever hands running containers (given a stopped one, pyinfra
starts it, then commits and removes it when it disconnects). Workers restart with the
engine (``--restart unless-stopped``), so a host or engine restart leaves them running.

Baseline: the provisioned baseline container is committed to an image
``{prefix}-{checkout}-baseline:{fingerprint}``, recorded by its image id (a tag can be
moved, an id cannot), and the container is deleted; VMs are created from the image.
The image carries no ``orch.managed-by`` label: a container someone runs from it by hand
is not orch's.

Machines (``machine = true``): systemd is the container's PID 1 (the image's
``/sbin/init``; no ``--init`` shim, under which systemd does not start), with the fewest
privileges it boots with: no ``--privileged``, no added capability. What Docker needs, and
what fails without it (seen on this cgroup v1 host):

- ``--tmpfs /run --tmpfs /run/lock``: systemd mounts them itself only with CAP_SYS_ADMIN
  ("Failed to mount tmpfs at /run: Operation not permitted", PID 1 exits); as tmpfs,
  every boot (and every clone) starts with an empty /run;
- a writable systemd cgroup: on cgroup v1 the ``name=systemd`` hierarchy bind-mounted
  read-write (without it, or read-only: "Failed to create .../init.scope control group",
  PID 1 exits; the controllers stay read-only, as Docker mounts them); on cgroup v2
  (untested here) the whole tree, in the host's cgroup namespace;
- ``--stop-signal SIGRTMIN+3``: systemd's signal to halt. Without it ``docker stop`` sends
  SIGTERM, which systemd as PID 1 does not stop on: killed after the stop timeout (exit 137);
- lxcfs's ``/proc/uptime`` (where lxcfs runs on this machine): pyinfra's ``server.reboot``
  confirms a reboot by the uptime going down; a container's is the host's, so it would
  fail ("Server did not reboot in time").

A reboot inside (``systemctl reboot``) ends PID 1 and the restart policy starts it again
under the same name; meanwhile Docker says "restarting", which orch waits through.
``seal`` empties ``/etc/machine-id`` before the commit, so each clone's systemd makes its own.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, field_validator

from orchestrator.primitives import labels as L
from orchestrator.primitives.clock import iso_ms
from orchestrator.primitives.errors import (
    EngineUnavailable,
    OrchError,
    PermanentProviderError,
    ProviderError,
    TransientProviderError,
    UsageError,
    VMNotFound,
)
from orchestrator.primitives.results import ExecResult
from orchestrator.providers import command, image_archive, overlay
from orchestrator.providers.base import (
    RESTARTING,
    RUNNING,
    STOPPED,
    About,
    Baseline,
    Provider,
    ProviderSettings,
    VMInfo,
    WaitStrategy,
    systemd_probe,
)
from orchestrator.providers.docker_errors import classify
from orchestrator.providers.docker_images import DockerImages
from orchestrator.providers.engines import Engines, EngineSettings

if TYPE_CHECKING:
    from orchestrator.primitives.changes import Checker, Ignore
    from orchestrator.primitives.labels import Owner
    from orchestrator.settings.model import Settings

log = logging.getLogger(__name__)

#: lxcfs's view of /proc/uptime (scripts/setup.sh starts lxcfs on /var/lib/lxcfs): mounted
#: over a machine's /proc/uptime, it says how long the container has run, not the host.
LXCFS_UPTIME = Path("/var/lib/lxcfs/proc/uptime")
#: The engines already warned that machines there have the host's uptime (once each).
_WARNED: set[str] = set()
#: What a machine runs as PID 1.
INIT = "/sbin/init"
#: A machine's first-boot identity, emptied by ``seal`` (systemd makes a new one at boot;
#: dbus's tmpfiles link its copy to it again), and the journal of the baseline's boot
#: (kept in /var/log/journal/<machine id>), so that a clone's journal starts with its own.
CLEAR_MACHINE_ID = "( : > /etc/machine-id ) && rm -f /var/lib/dbus/machine-id && rm -rf /var/log/journal/*"


class ContainerSettings(ProviderSettings):
    """What Docker-style providers share: how containers are started."""

    #: The container's main process; it must run until the container is stopped.
    command: list[str] = Field(default_factory=lambda: ["sleep", "infinity"], min_length=1)
    #: Run an init process (``run --init``): quick stops, reaped zombies.
    init: bool = True
    #: Extra ``run`` arguments, e.g. ["--cap-add", "NET_ADMIN"].
    run_args: list[str] = Field(default_factory=list)

    @field_validator("command")
    @classmethod
    def _command(cls, value: list[str]) -> list[str]:
        if not all(value):
            raise ValueError("command words must not be empty")
        return value

    @property
    def client(self) -> str:
        raise NotImplementedError


class DockerSettings(ContainerSettings, EngineSettings):
    """``[tool.orch.docker]``: a container's settings, the client, and the engines
    (``engines``, ``engine_cap``: how to reach the backend, not what a VM is)."""

    client_fields: ClassVar[tuple[str, ...]] = ("docker", "engines", "engine_cap")

    #: The docker client.
    docker: str = "docker"

    @property
    def client(self) -> str:
        return self.docker


def _baseline_labels(owner: Owner, *, kept_from_container: bool = False) -> dict[str, str]:
    """A baseline image's labels: not orch's as a container (no managed-by: every label
    of a VM emptied), but sweep can tell whose it is (baseline-of) and where its checkout
    is (inventory, host, fs). A commit keeps the container's own values of those."""
    kept = (L.INVENTORY, L.HOST, L.FS)
    mine = owner.labels()
    labels = {key: ("" if key not in kept else mine.get(key, "")) for key in L.ALL if not (kept_from_container and key in kept)}
    labels[L.BASELINE_OF] = owner.checkout
    return labels


def _state(raw: dict[str, Any]) -> str:
    status = raw.get("State", {}).get("Status", "")
    if status == "running":
        return RUNNING
    if status in ("exited", "created", "dead"):
        return STOPPED
    if status == "restarting":  # the restart policy at work (a machine rebooted itself)
        return RESTARTING
    return status or "unknown"


class DockerProvider(DockerImages, Provider):
    name = "docker"
    settings_model: ClassVar[type[ContainerSettings]] = DockerSettings
    has_labels = True
    can_rename = True
    default_image = "debian:bookworm"
    #: systemd on the same debootstrap rootfs as orch-base (scripts/setup.sh builds it).
    machine_image = "orch-machine:bookworm"
    opts: ContainerSettings
    #: This backend's error texts, by meaning (podman has its own).
    classify = staticmethod(classify)
    #: How to get the client when it is missing.
    install_hint = "install Docker (scripts/setup.sh does)"

    def __init__(self, settings: Settings, engine: str = "") -> None:
        super().__init__(settings)
        #: The Docker engine (``--host``: unix://…, ssh://…, tcp://…); "" for the one the
        #: docker command uses by default. Several engines: see providers/engines.py.
        self.engine = engine
        self._cgroup = ""  # the engine's cgroup version, asked once (machines only)
        if self.machine and "command" in self.opts.model_fields_set:
            raise UsageError(
                f"[tool.orch.{self.name}] command is not used with machine = true (systemd, {INIT}, is PID 1): "
                "remove it, or set machine = false"
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> Provider:
        """One engine, or with ``[tool.orch.docker] engines = [...]`` one provider over
        several (:class:`~orchestrator.providers.engines.Engines`)."""
        opts = cls.settings_model(**settings.tables.get(cls.name, {}))
        if not isinstance(opts, DockerSettings) or not opts.engines:
            return cls(settings)
        return Engines(settings, [cls(settings, engine=engine) for engine in opts.engines])

    @classmethod
    def testinfra_host(cls, host: str, data: dict[str, Any]) -> Any:
        connector, _, target = host.partition("/")
        if connector != f"@{cls.name}":  # @orchdocker (another engine): testinfra reaches the default one only
            raise UsageError(f"orch_host: testinfra reaches only the default engine, not {host} (a worker on another engine)")
        import testinfra  # noqa: PLC0415  optional (pyinfra-orch[testinfra]): only the orch_host fixture needs it

        return testinfra.get_host(f"{cls.name}://{target}")

    @property
    def default_engine(self) -> bool:
        """Whether this is the engine plain ``docker`` (and pyinfra's ``@docker``) reaches."""
        return self.engine in ("", os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock")

    def _client(self) -> list[str]:
        return [self.opts.client, *(["--host", self.engine] if self.engine else [])]

    @staticmethod
    def image_gone(err: ProviderError) -> bool:
        """Does this error say the image does not exist?"""
        return isinstance(err, VMNotFound) or "no such image" in str(err).lower()

    @staticmethod
    def image_in_use(err: ProviderError) -> bool:
        """Does this error say a container still uses the image?"""
        return "being used" in str(err) or "conflict" in str(err).lower()

    @staticmethod
    def failed_in_engine(stderr: str) -> bool:
        """Did ``exec`` fail in the engine (no container, engine down), not in the command?"""
        return stderr.startswith(("Error response from daemon", "Error: No such container"))

    @staticmethod
    def tag_name(tag: str) -> str:
        """An image tag as orch names it (podman prefixes ``localhost/``)."""
        return tag

    def _missing(self) -> str:
        return f"the {self.name} command ({self.opts.client}) is not installed: {self.install_hint}"

    # -- running docker ------------------------------------------------------------

    def _docker(self, operation: str, args: list[str], *, vm: str = "", timeout: float | None = None) -> str:
        limit = timeout if timeout is not None else self.settings.timeout(operation)
        return command.run(
            [*self._client(), *args],
            operation=operation,
            timeout=limit,
            classify=self.classify,
            vm=vm,
            missing=self._missing(),
        ).stdout

    def check(self) -> None:
        if shutil.which(self.opts.client) is None:
            raise EngineUnavailable(self._missing())
        self._docker("info", ["version", "--format", "{{.Server.Version}}"], timeout=15)

    #: What to do about an image this backend has not and cannot pull (``orch doctor``).
    image_fix = "build or pull it (scripts/setup.sh builds orch-base:bookworm), or name another with [tool.orch] image"

    def where(self) -> str:
        """The engine as a user names it: ``--host``, DOCKER_HOST, or the docker command's default."""
        return self.engine or os.environ.get("DOCKER_HOST") or "the default engine (unix:///var/run/docker.sock)"

    def about(self) -> list[About]:
        """The engine's server version (``docker version``), where it is, and the client."""
        client = shutil.which(self.opts.client) or ""
        try:
            if not client:
                raise EngineUnavailable(self._missing())
            out = self._docker("info", ["version", "--format", "{{.Client.Version}} {{.Server.Version}}"], timeout=15)
        except OrchError as err:
            return [About(self.name, self.where(), error=str(err), client=client)]
        words = out.split()
        client_version, version = [*words, "?", "?"][:2]
        return [About(f"{self.name} {version}", self.where(), client=f"{client} {client_version}")]

    def image_here(self, image: str) -> str | None:
        """Inspected; when missing, the registry asked (``manifest inspect``: no pull)
        whether ``image_id`` could pull it."""
        if self.has_image(image):
            return self._image_inspect(image)
        try:
            self._docker("image", ["manifest", "inspect", image], timeout=15)
        except ProviderError as err:
            text = " ".join(str(err).split()) or type(err).__name__
            why = text if len(text) <= 220 else "…" + text[-200:]
            raise PermanentProviderError(
                f"image {image!r} is not on {self.name} here and cannot be pulled ({why}): {self.image_fix}"
            ) from err
        return None

    def _image_inspect(self, image: str) -> str:
        return self._docker("image", ["image", "inspect", "--format", "{{.Id}}", image]).strip()

    def image_id(self, image: str) -> str:
        try:
            return self._image_inspect(image)
        except (VMNotFound, PermanentProviderError) as err:
            if "invalid reference" in str(err):
                raise PermanentProviderError(f"invalid image name {image!r}: {err}") from err
            if "No such image" not in str(err) and not isinstance(err, VMNotFound):
                raise
        try:
            self._docker("image", ["pull", "--quiet", image])
        except ProviderError as err:
            raise PermanentProviderError(
                f"image {image!r} is not available here and could not be pulled ({err}): "
                "build or pull it (scripts/setup.sh builds orch-base:bookworm), or name another "
                "with --image / ORCH_IMAGE / [tool.orch] image"
            ) from err
        return self._image_inspect(image)

    # -- lifecycle -----------------------------------------------------------------

    def _run_args(self, vm: str, image: str, owner: Owner, *, restart: bool = True) -> list[str]:
        args = ["run", "--detach", "--name", vm, "--hostname", owner.hostname or vm, "--pull", "never"]
        if restart:
            args += ["--restart", "unless-stopped"]
        if self.opts.init and not self.machine:
            args.append("--init")
        for key, value in sorted(owner.labels().items()):
            args += ["--label", f"{key}={value}"]
        if self.machine:
            return [*args, *self._machine_args(), *self._uptime_args(), *self.opts.run_args, image, INIT]
        return [*args, *self.opts.run_args, image, *self.opts.command]

    # -- machines: systemd as PID 1 ------------------------------------------------------

    def _machine_args(self) -> list[str]:
        """What systemd needs of Docker, and no more (why each: the module's docstring)."""
        args = ["--stop-signal", "SIGRTMIN+3", "--tmpfs", "/run", "--tmpfs", "/run/lock"]
        if self.cgroup_version() == "2":  # documented recipe; untested here (a cgroup v1 host)
            return [*args, "--cgroupns=host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw"]
        # v1: only the name=systemd hierarchy, read-write; the controllers stay read-only
        return [*args, "-v", "/sys/fs/cgroup/systemd:/sys/fs/cgroup/systemd"]

    def cgroup_version(self) -> str:
        """The engine's cgroup version ("1" or "2"), asked once."""
        if not self._cgroup:
            said = self._docker("info", ["info", "--format", "{{.CgroupVersion}}"], timeout=15).strip()
            self._cgroup = "2" if said == "2" else "1"
        return self._cgroup

    @property
    def local_engine(self) -> bool:
        """Whether the engine runs on this machine (so this machine's files are its host's)."""
        where = self.engine or os.environ.get("DOCKER_HOST", "")
        return not where or where.startswith("unix://")

    def _uptime_args(self) -> list[str]:
        """lxcfs's uptime over /proc/uptime, where lxcfs runs on the engine's host; else
        one warning per engine: pyinfra's ``server.reboot`` would wait for an uptime that
        never goes down (the host's) and fail after its time limit."""
        stale = False
        if self.local_engine:
            try:
                if LXCFS_UPTIME.is_file():
                    return ["-v", f"{LXCFS_UPTIME}:/proc/uptime:ro"]
            except OSError:  # mounted, but its lxcfs is gone: the engine could not bind it
                stale = True
        where = self.engine or "local"
        if where not in _WARNED:
            _WARNED.add(where)
            fix = (
                f"lxcfs died and left its mount: umount -l {LXCFS_UPTIME.parents[1]} and start lxcfs again"
                if stale
                else "run lxcfs on the engine's host"
            )
            log.warning(
                "%s machines on the %s engine see the host's uptime, so pyinfra's server.reboot cannot see "
                "them reboot: %s (lxcfs /var/lib/lxcfs; scripts/setup.sh does)",
                self.name,
                where,
                fix,
            )
        return []

    def create(self, vm: str, image: str, owner: Owner) -> None:
        self._docker("create", self._run_args(vm, image, owner), vm=vm)

    def start(self, vm: str) -> None:
        self._docker("start", ["start", vm], vm=vm)

    def stop(self, vm: str) -> None:
        if not vm:
            raise PermanentProviderError("refusing to stop a VM with an empty name", operation="stop")
        # a machine's systemd waits up to 10 s for processes that ignore its SIGTERM before
        # it halts (a busy host): given more, the stop stays a clean shutdown, not a kill
        grace = "15" if self.machine else "5"
        self._docker("stop", ["stop", "--time", grace, vm], vm=vm)

    def delete(self, vm: str) -> None:
        if not vm:
            raise PermanentProviderError("refusing to delete a VM with an empty name", operation="delete")
        try:
            self._docker("delete", ["rm", "--force", "--volumes", vm], vm=vm)
        except VMNotFound:
            pass

    def address(self, vm: str) -> str:
        out = self._docker("inspect", ["inspect", "--type", "container", "--format", "{{json .NetworkSettings}}", vm], vm=vm)
        networks = (json.loads(out or "{}") or {}).get("Networks") or {}
        for net in networks.values():
            if net.get("IPAddress"):
                return str(net["IPAddress"])
        raise TransientProviderError(f"container {vm} has no IP address (is it running?)", operation="address", vm=vm)

    def rename(self, vm: str, new: str) -> None:
        self._docker("rename", ["rename", vm, new], vm=vm)

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
                    created=iso_ms(str(raw.get("Created") or "")),
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

    def list_vms(self, *, all_vms: bool = False) -> list[VMInfo]:
        args = ["ps", "--all", "--no-trunc", "--quiet"]
        if not all_vms:
            args += ["--filter", f"label={L.MANAGED_BY}={L.MANAGED_BY_VALUE}"]
        ids = self._docker("list", args).split()
        try:
            return self._inspect_many(ids)
        except VMNotFound:
            # A container vanished between ps and inspect: ask again, one by one.
            return [info for i in ids if (info := self.inspect(i)) is not None]

    def pollution_checker(self, vm: str, ignore: Ignore) -> Checker | None:
        """On an engine of this machine with overlay storage, the container's changes read
        from the host (``providers/overlay.py``: no command inside, a few ms a check); else
        None (the in-VM check)."""
        if not self.local_engine:
            overlay.fall_back(self.name, f"the engine {self.engine or os.environ.get('DOCKER_HOST', '')} is not on this machine")
            return None
        return overlay.make(self.name, lambda: self._container_json(vm), ignore)

    def _container_json(self, vm: str) -> dict[str, Any] | None:
        """``inspect`` of one container, as its JSON; None when there is none."""
        try:
            out = self._docker("inspect", ["inspect", "--type", "container", vm], vm=vm)
        except VMNotFound:
            return None
        found = json.loads(out or "[]")
        return found[0] if found else None

    def exec(self, vm: str, argv: list[str], *, timeout: float | None = None) -> ExecResult:
        limit = timeout if timeout is not None else self.settings.timeout("default")
        proc = command.run(self.exec_argv(vm, argv), operation="exec", timeout=limit, classify=self.classify, vm=vm, check=False)
        if proc.returncode != 0 and self.failed_in_engine(proc.stderr):
            raise self.classify("exec", vm, proc.returncode, proc.stderr)
        return ExecResult(proc.returncode, proc.stdout, proc.stderr)

    def exec_argv(self, vm: str, argv: list[str], *, interactive: bool = False) -> list[str]:
        return [*self._client(), "exec", *(["-it"] if interactive else ["-i"]), vm, *argv]

    def wait_ready(self, vm: str) -> float:
        """Until the container runs and answers; a machine, until systemd says it has booted
        (a machine rebooting, "restarting" or not answering yet, is waited for)."""
        systemd = systemd_probe(vm, lambda argv: self.exec(vm, argv, timeout=10)) if self.machine else None

        def probe() -> str | None:
            info = self.inspect(vm)
            if info is None:
                raise VMNotFound(f"container {vm} disappeared while waiting for it", operation="ready", vm=vm)
            if not info.running:
                return f"container state {info.state}"
            try:
                if systemd is not None:
                    return systemd()
                self._docker("ready", ["exec", vm, "true"], vm=vm, timeout=10)
            except (VMNotFound, EngineUnavailable):
                raise
            except ProviderError as err:
                return f"exec failed: {err}"
            return None

        strategy = WaitStrategy(timeout=self.settings.timeout("ready"), interval=0.1, tolerate=(TransientProviderError,))
        return strategy.wait(f"container {vm}", probe)

    def host(self, vm: str) -> tuple[str, dict[str, Any]]:
        if self.default_engine:
            return f"@docker/{vm}", {}
        return f"@orchdocker/{vm}", {"docker_host": self.engine}  # orch's @docker for another engine

    # -- baseline: a committed image ------------------------------------------------

    def _baseline_repo(self, checkout: str) -> str:
        return f"{self.settings.prefix}-{checkout}-baseline"

    def seal_name(self, vm: str, owner: Owner) -> str:
        return f"{self._baseline_repo(owner.checkout)}:{owner.fingerprint[:12]}"

    def seal(self, vm: str, owner: Owner) -> Baseline:
        if self.machine:
            self._forget_machine_id(vm)
        return self._commit(vm, owner)

    def _commit(self, vm: str, owner: Owner) -> Baseline:
        """Commit the container ``vm`` to the baseline's tag and delete it."""
        tag = self.seal_name(vm, owner)
        args = ["commit"]
        for key, value in _baseline_labels(owner, kept_from_container=True).items():
            args += ["--change", f"LABEL {key}={value}"]
        self._docker("commit", [*args, vm, tag], vm=vm)
        image = self._image_inspect(tag)
        self.delete(vm)
        return Baseline(image, {"tag": tag})

    # -- the baseline as a file (``orch baseline export/import``, a CI cache) -----------------

    def export_baseline(self, baseline: Baseline, path: Path) -> None:
        """``image save`` by the image's id: the file names no tag, so loading it never
        moves another checkout's tag."""
        self._docker("image", ["image", "save", "--output", str(path), baseline.ref])

    def import_baseline(self, path: Path, name: str, owner: Owner) -> Baseline:
        """The archive re-labelled as this checkout's baseline (a new image of its own that
        shares the layers: :mod:`~orchestrator.providers.image_archive` says why not a
        commit), then ``image load``, which names it with its tag at once (the state
        records that tag before: a crash leaves nothing unnamed). Another checkout's image
        of the archive's id, if the engine has one, is neither changed nor made a parent."""
        image_archive.image_id(path)  # one line for a file that is no image archive
        tag = self.seal_name(name, owner)
        with tempfile.TemporaryDirectory(prefix="orch-import-") as tmp:
            ours = Path(tmp) / "baseline.tar"
            image = image_archive.relabel(path, ours, _baseline_labels(owner), tag)
            self._docker("image", ["image", "load", "--quiet", "--input", str(ours)])
        if not self.has_image(image):
            raise PermanentProviderError(f"{path} loaded, but its image {image[:19]} is not there", operation="import")
        self._docker("image", ["image", "tag", image, tag])  # an engine that ignored the archive's name
        return Baseline(image, {"tag": tag})

    def _forget_machine_id(self, vm: str) -> None:
        """The baseline's machine id, emptied in the container before it is committed:
        systemd writes it to /etc/machine-id at first boot (no transient bind mount here:
        /etc is writable), and a clone that found one would be the same machine."""
        result = self.exec(vm, ["sh", "-c", CLEAR_MACHINE_ID])
        if not result.ok:
            raise PermanentProviderError(
                f"cannot empty /etc/machine-id in {vm} before sealing it: {result.stderr.strip()[:200]}",
                operation="commit",
                vm=vm,
            )

    def clone(self, baseline: Baseline, vm: str, owner: Owner) -> None:
        self._docker("create", self._run_args(vm, baseline.ref, owner), vm=vm)

    def verify(self, baseline: Baseline) -> str | None:
        try:
            self._image_inspect(baseline.ref)
        except (VMNotFound, PermanentProviderError) as err:
            if self.image_gone(err):
                return f"its image {baseline.seal.get('tag', '')} ({baseline.ref[:19]}) is gone"
            raise
        return None

    def drop(self, baseline: Baseline) -> bool:
        """Delete the image by its id (its tag may name a newer baseline by now)."""
        if not baseline.ref:
            return True
        try:
            self._docker("delete", ["image", "rm", baseline.ref])
        except (VMNotFound, PermanentProviderError) as err:
            if self.image_gone(err):
                return True
            if self.image_in_use(err):
                log.info("baseline %s is still used by a container: kept for now", baseline.ref)
                return False
            raise
        return True
