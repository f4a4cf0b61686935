"""The Incus provider: Incus system containers (or, where the host runs KVM, virtual
machines) as orch's VMs, reached with orch's ``@incus`` pyinfra connector
(:mod:`orchestrator.pyinfra.incus_connector`), or over SSH at the instance's address.

Everything goes through the ``incus`` command line (argv lists, ``--format json``
parsed, the time limits of :mod:`orchestrator.providers.command`); a remote
(``[tool.orch.incus] remote``) is the ``remote:`` prefix of every instance name, a
project the global ``--project``.

- **Machines**: an Incus instance always boots its own init, so every worker is a
  machine (systemd as PID 1) and ``machine_image`` is the default image:
  ``orch-machine/bookworm``, Docker's machine image imported by scripts/incus-image.sh
  (DHCP on eth0, hostname templates). Readiness is what systemd says
  (``systemctl is-system-running`` through ``incus exec``) once the instance runs.
- **Ownership**: the owner's labels are ``user.orch.*`` config keys (the keys and
  values Docker carries as labels), set when an instance is launched or copied, and
  ``user.orch.hostname``, which the image's templates write into /etc/hostname.
- **Baseline**: a stopped, sealed golden instance (its machine identity cleared, so
  every copy boots with its own ``/etc/machine-id``), and ``incus copy`` of it
  (copy-on-write on a btrfs pool) for every worker, started. A hard reset is the
  core's delete and clone: measured here against restoring a per-worker snapshot
  (``incus snapshot restore``), both take the same 1.4-1.5 s to a booted machine, and
  the copy needs no snapshot to keep in step with the baseline. ``verify`` sees a golden
  instance that was started outside orch (it runs, or its ``last_used_at`` moved), or
  reconfigured (its config, devices or profiles).
- **No rename**: Incus renames only stopped instances, so swapping a standby in would
  stop it and boot it again (2.1-2.4 s here, more than the hard reset it replaces):
  ``standby = true`` is refused in one line, and ``can_rename`` is False.
- **Keeping a failing test's worker** (``--orch-keep-failed``): ``incus copy`` of the
  running instance (0.13 s here on btrfs, the files as they were at the failure, no
  shutdown run inside it), left stopped until ``orch shell`` starts it; a stop, rename
  and start would take 1.2 s and run the machine's shutdown first. The worker itself is
  then made again as after any reset.
- **Baseline cache** (``orch baseline export/import``): ``incus export --instance-only``
  of the golden instance, a portable tarball (zstd where the server has it), and ``incus
  import`` under this checkout's name, relabelled at once as this checkout's baseline (the
  archive carries the exporting checkout's ``user.orch.*`` keys). Incus keeps an imported
  instance's ``last_used_at``, ``volatile.uuid`` and MAC address; the stopped golden
  instance never runs, and its copies get their own.
- **Output**: Incus 6.0.4 loses a short command's whole stdout or stderr now and then
  under load, so ``exec`` (and the ``@incus`` connector, and ``orch_host``) run commands
  in a wrapper that keeps their output inside the instance and reads it again where a
  stream came back without its end mark (:mod:`orchestrator.pyinfra.incus_exec`).
- **VMs** (``vm = true``): ``incus launch --vm`` from a VM image (``images:debian/12`` by
  default), ready once the incus agent in the guest answers and systemd has booted. A
  server that cannot run VMs is refused in one line saying why (the server's own
  reason, and on this host what KVM lacks) before any instance is made.

Setup on Debian (scripts/setup.sh): ``incus-base`` (Debian 13; bookworm-backports on 12),
a running ``incusd``, a bridge with an explicit subnet, a btrfs pool on a loop file, the
default profile's root disk and nic, and the machine image.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shlex
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, field_validator

from orchestrator.primitives import labels as L
from orchestrator.primitives import naming
from orchestrator.primitives.clock import iso_ms
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
from orchestrator.primitives.kinds import Kind
from orchestrator.primitives.results import ExecResult
from orchestrator.providers import command
from orchestrator.providers.base import (
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
from orchestrator.providers.incus_errors import classify, incus_own
from orchestrator.pyinfra import incus_exec

if TYPE_CHECKING:
    from orchestrator.primitives.labels import Owner
    from orchestrator.settings.model import Settings

log = logging.getLogger(__name__)

#: The image of ``vm = true`` when the project names none: Incus's own Debian, which has
#: the incus agent a VM needs for ``incus exec``.
VM_IMAGE = "images:debian/12"
#: Why a member counts as not answering before the cluster calls it offline (it does so
#: after ``cluster.offline_threshold``, 20 s by default): the cluster lists its instances
#: in status Error, unable to ask it their state. Nothing on it is judged or touched.
ERROR_STATUS = "its instances are in status Error: the cluster cannot reach it"
#: The config key the image's templates write into /etc/hostname (else the instance's name).
HOSTNAME_KEY = "user.orch.hostname"
#: The owner's labels as config keys: ``orch.kind`` is ``user.orch.kind``.
USER = "user."

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"

#: Run in the provisioned instance before it is stopped as the golden one: no machine
#: identity (systemd makes a new one at each copy's first boot; dbus links to it), and no
#: journal of the provisioning boot (a copy's journal starts with its own).
SEAL = "umount /etc/machine-id 2>/dev/null; : > /etc/machine-id && rm -f /var/lib/dbus/machine-id && rm -rf /var/log/journal/*"


class IncusSettings(ProviderSettings):
    """``[tool.orch.incus]``: how to reach Incus (client, remote, project) and what an
    instance is (profiles, vm, storage pool, config)."""

    client_fields: ClassVar[tuple[str, ...]] = ("incus", "remote", "project", "target")

    #: The incus client.
    incus: str = Field("incus", min_length=1)
    #: An incus remote (``incus remote list``); "" for the client's default (local).
    remote: str = Field("", pattern=r"^([A-Za-z0-9][A-Za-z0-9._-]*)?$")
    #: An Incus project; "" for the client's current one.
    project: str = Field("", pattern=r"^([A-Za-z0-9][A-Za-z0-9._-]*)?$")
    #: On a cluster: the member (or ``@group``) every new instance goes to, passed to Incus
    #: as ``--target``; "" lets the cluster's scheduler place each one (orch never chooses).
    target: str = Field("", pattern=r"^(@?[A-Za-z0-9][A-Za-z0-9._-]*)?$")
    #: Profiles of new instances, in order; [] for Incus's default profile.
    profiles: list[str] = Field(default_factory=list)
    #: Virtual machines instead of system containers (needs KVM on the Incus host).
    vm: bool = False
    #: The storage pool of new instances; "" for the profile's root disk.
    storage_pool: str = Field("", pattern=r"^([A-Za-z0-9][A-Za-z0-9._-]*)?$")
    #: Instance config of new instances (``limits.memory = "1GiB"``).
    config: dict[str, str] = Field(default_factory=dict)

    @field_validator("profiles")
    @classmethod
    def _profiles(cls, value: list[str]) -> list[str]:
        bad = [p for p in value if not re.fullmatch(_NAME, p)]
        if bad:
            raise ValueError(f"invalid profile name {bad[0]!r}")
        return value

    @field_validator("config")
    @classmethod
    def _config(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if key.startswith(("user.orch.", "volatile.")) or not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", key):
                raise ValueError(f"config key {key!r} is orch's or Incus's own (user.orch.*, volatile.*) or not a key")
        return value


def _is_cluster(server: dict[str, Any]) -> bool:
    """Whether the server (``/1.0``) is a member of a cluster."""
    return bool((server.get("environment") or {}).get("server_clustered"))


def _location(raw: dict[str, Any]) -> str:
    """The cluster member an instance is on ("" on a single server, which says "none")."""
    where = str(raw.get("location", "") or "")
    return "" if where == "none" else where


def _state(status: str) -> str:
    return {"Running": RUNNING, "Stopped": STOPPED}.get(status, status.lower() or "unknown")


def _signature(raw: dict[str, Any]) -> dict[str, str]:
    """What a sealed golden instance keeps until orch uses it: when it was last started,
    and a hash of its own config (volatile keys aside), devices and profiles."""
    config = {k: v for k, v in (raw.get("config") or {}).items() if not k.startswith("volatile.")}
    made = json.dumps([config, raw.get("devices") or {}, raw.get("profiles") or []], sort_keys=True)
    return {"last_used_at": str(raw.get("last_used_at", "")), "config": hashlib.sha256(made.encode()).hexdigest()[:16]}


def _unmarked(data: bytes) -> bytes | None:
    end = incus_exec.END.encode()
    return data[: -len(end)] if data.endswith(end) else None


def _testinfra_backend(base: Any, target: str, prefix: str, key: str) -> Any:
    """A testinfra backend running each command as ``PREFIX SCRIPT`` in orch's exec
    wrapper (``base``: testinfra's backend module, an optional import)."""

    def pair(result: Any) -> tuple[bytes, bytes] | None:
        out, err = _unmarked(result.stdout_bytes), _unmarked(result.stderr_bytes)
        return None if out is None or err is None else (out, err)

    class IncusBackend(base.BaseBackend):  # type: ignore[misc]
        NAME = "incus"

        def run(self, command: str, *args: str, **kwargs: Any) -> Any:
            cmd = self.get_command(command, *args)
            ident = incus_exec.new_ident()
            first = self.run_local(f"{prefix} %s", incus_exec.wrap(cmd, ident, incus_exec.take_read(key)))
            whole = incus_exec.read_whole(first, lambda: self.run_local(f"{prefix} %s", incus_exec.reread(ident)), pair)
            if whole is None:
                return first
            incus_exec.mark_read(key, ident)
            return self.result(first.rc, self.encode(cmd), *whole)

    return IncusBackend(target)


def kvm_facts(root: Path = Path("/")) -> list[str]:
    """What this host lacks for KVM virtual machines ([] when nothing is seen missing):
    a usable /dev/kvm with hardware virtualisation, and vhost-vsock (how Incus talks to
    its agent in a VM)."""
    facts = []
    if not (root / "dev/kvm").exists():
        facts.append("no /dev/kvm")
    elif (root / "sys/module/kvm_pvm").exists():
        facts.append("/dev/kvm is kvm_pvm (PVM guests only)")
    try:
        flags = {w for line in (root / "proc/cpuinfo").read_text().splitlines() if line.startswith("flags") for w in line.split()}
    except OSError:
        flags = set()
    if not flags & {"vmx", "svm"}:
        facts.append("no vmx/svm CPU flags")
    if not (root / "dev/vhost-vsock").exists():
        facts.append("no /dev/vhost-vsock")
    return facts


Runner = Callable[..., "subprocess.CompletedProcess[str]"]


class IncusProvider(Provider):
    name = "incus"
    settings_model = IncusSettings
    has_labels = True
    can_rename = False
    engine_word = "cluster member"
    #: An Incus instance always boots its init: a machine either way.
    default_image = "orch-machine/bookworm"
    machine_image = "orch-machine/bookworm"
    opts: IncusSettings

    def __init__(self, settings: Settings, runner: Runner = command.run) -> None:
        super().__init__(settings)
        if settings.standby:
            raise UsageError(
                "standby = true: Incus renames only stopped instances, so a standby swapped in would boot again "
                "(slower than the hard reset it replaces): set standby = false with the incus provider"
            )
        #: ``command.run`` (tests give a recorded incus instead).
        self.runner = runner
        if self.opts.vm:
            self.default_image = self.machine_image = VM_IMAGE  # type: ignore[misc]
        self._vms_checked = False
        #: Whether the server is a cluster member (asked once); the members that do not
        #: answer, {member: why}, as the last listing saw them; instances left out of that
        #: listing because their member does not answer, {instance: member}.
        self._clustered: bool | None = None
        self._down: dict[str, str] = {}
        self._hidden: dict[str, str] = {}
        self._placing = threading.Lock()

    # -- running incus -----------------------------------------------------------------

    def _missing(self) -> str:
        return (
            f"the incus command ({self.opts.incus}) is not installed: install incus-base (Debian 13, or "
            "bookworm-backports on Debian 12; scripts/setup.sh does)"
        )

    def _client(self) -> list[str]:
        return [self.opts.incus, *(["--project", self.opts.project] if self.opts.project else [])]

    def _at(self, name: str) -> str:
        """``name`` on the configured remote (``remote:name``)."""
        return f"{self.opts.remote}:{name}" if self.opts.remote else name

    def _incus(
        self, operation: str, args: list[str], *, vm: str = "", timeout: float | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        limit = timeout if timeout is not None else self.settings.timeout(operation)
        return self.runner(
            [*self._client(), *args],
            operation=operation,
            timeout=limit,
            classify=classify,
            vm=vm,
            missing=self._missing(),
            check=check,
        )

    def _json(self, operation: str, args: list[str], *, vm: str = "") -> Any:
        out = self._incus(operation, args, vm=vm).stdout
        try:
            return json.loads(out or "null")
        except json.JSONDecodeError as err:
            raise TransientProviderError(f"incus {args[0]} printed no JSON: {out[:200]!r}", operation=operation, vm=vm) from err

    def _query(self, path: str) -> Any:
        """``incus query`` of the server's REST API (it takes no --project: the path says it)."""
        out = self.runner(
            [self.opts.incus, "query", f"{self.opts.remote}:{path}" if self.opts.remote else path],
            operation="info",
            timeout=15,
            classify=classify,
            missing=self._missing(),
        ).stdout
        try:
            return json.loads(out or "null")
        except json.JSONDecodeError as err:
            raise TransientProviderError(f"incus query {path} printed no JSON: {out[:200]!r}", operation="info") from err

    def check(self) -> None:
        server = self._query("/1.0") or {}
        self._clustered = _is_cluster(server)
        if self.opts.target and not self._clustered:
            raise UsageError(
                f"[tool.orch.incus] target = {self.opts.target!r}, but the Incus server "
                f"({self.opts.remote or 'local'}) is not a cluster: remove target"
            )
        if self._clustered:
            self._members()
        if self.opts.project:
            self._query(f"/1.0/projects/{self.opts.project}")
        if self.opts.vm:
            self._refuse_vms(server)

    # -- a cluster: the members, and where each instance is ------------------------------

    @property
    def clustered(self) -> bool:
        """Whether the server is a member of an Incus cluster (its scheduler then places
        every instance orch makes)."""
        if self._clustered is None:
            self._clustered = _is_cluster(self._query("/1.0") or {})
        return self._clustered

    def _members(self) -> dict[str, str]:
        """The members that do not answer, {member: why}, asked again (an evacuated member
        answers: its instances are the cluster's business)."""
        found = self._query("/1.0/cluster/members?recursion=1") or []
        self._down = {
            str(m.get("server_name", "")): incus_exec.describe_member(m)
            for m in found
            if isinstance(m, dict) and m.get("status") not in ("Online", "Evacuated")
        }
        return self._down

    def _member_down(self, member: str, vm: str) -> EngineUnavailable:
        why = self._down.get(member, "it does not answer")
        return EngineUnavailable(
            f"cluster member {member} does not answer ({why[:120]}): {vm} is on it, left alone until the member is back",
            vm=vm,
        )

    def unreachable_engines(self) -> dict[str, str]:
        """The cluster members that did not answer when orch last looked."""
        return dict(self._down)

    def engine_of(self, vm: str) -> str:
        """The cluster member that holds ``vm`` ("" on a single server, or when it does not
        exist); ``EngineUnavailable`` naming the member when that member does not answer."""
        if vm in self._hidden:
            raise self._member_down(self._hidden[vm], vm)
        if not self.clustered:
            return ""
        raw = self._raw(vm)
        return "" if raw is None else _location(raw)

    def about(self) -> list[About]:
        """The server's version (``/1.0``'s environment), and the remote and project."""
        where = f"remote {self.opts.remote or 'local'}" + (f", project {self.opts.project}" if self.opts.project else "")
        client = shutil.which(self.opts.incus) or ""
        try:
            server = self._query("/1.0") or {}
            if self.opts.project:
                self._query(f"/1.0/projects/{self.opts.project}")
        except OrchError as err:
            return [About("incus", where, error=str(err), client=client)]
        env = server.get("environment") or {} if isinstance(server, dict) else {}
        version = str(env.get("server_version", "") or "(version unknown)")
        drivers = str(env.get("driver", ""))
        return [About(f"incus {version}", where + (f", drivers {drivers}" if drivers else ""), client=client)]

    def _refuse_vms(self, server: dict[str, Any] | None = None) -> None:
        """``vm = true`` on a server that runs no VMs: one line saying why, before any
        instance is made (checked once)."""
        if not self.opts.vm or self._vms_checked:
            return
        server = server if server is not None else (self._query("/1.0") or {})
        drivers = [d.strip() for d in str((server.get("environment") or {}).get("driver", "")).split("|")]
        if "qemu" in drivers:
            self._vms_checked = True
            return
        warnings = self._json("info", ["warning", "list", "--format", "json"]) or []
        why = [w.get("last_message", "") for w in warnings if w.get("type") == "Instance type not operational"]
        if not self.opts.remote:
            why += kvm_facts()
        reason = "; ".join(w for w in why if w) or "its drivers are " + ", ".join(d for d in drivers if d)
        raise UsageError(
            f"vm = true, but this Incus server cannot run virtual machines ({reason}): "
            "set vm = false in [tool.orch.incus] (system containers), or use a host with KVM"
        )

    def image_id(self, image: str) -> str:
        remote, sep, alias = image.rpartition(":")
        where = f"{remote}:" if sep else (f"{self.opts.remote}:" if self.opts.remote else "")
        try:
            images = self._json("image", ["image", "list", *([where] if where else []), "--format", "json"]) or []
        except PermanentProviderError as err:
            raise PermanentProviderError(
                f"image {image!r} is not available to Incus ({err}): name another with --image / ORCH_IMAGE / [tool.orch] image"
            ) from err
        for found in images:
            names = {a.get("name", "") for a in found.get("aliases") or []}
            if alias in names or (len(alias) >= 12 and str(found.get("fingerprint", "")).startswith(alias)):
                return str(found["fingerprint"])
        raise PermanentProviderError(
            f"image {image!r} is not in Incus{' on ' + where.rstrip(':') if where else ''}: import it "
            "(scripts/setup.sh imports orch-machine/bookworm), or name another with --image / ORCH_IMAGE / [tool.orch] image"
        )

    # -- lifecycle -----------------------------------------------------------------------

    @staticmethod
    def _pairs(owner: Owner, vm: str, *, clear: bool) -> list[str]:
        """``KEY=VALUE`` pairs: the owner's labels as ``user.orch.*`` keys (with ``clear``,
        the ones this owner has not set to "", which unsets what a copy or an imported
        archive carried), and the hostname the templates write."""
        labels = owner.labels()
        keys = [f"{USER}{k}={labels.get(k, '')}" for k in L.ALL if clear or labels.get(k)]
        keys.append(f"{HOSTNAME_KEY}={owner.hostname or vm}")
        return keys

    @classmethod
    def _keys(cls, owner: Owner, vm: str, *, clear: bool) -> list[str]:
        """The same pairs as ``-c`` arguments (launch, copy)."""
        return [a for key in cls._pairs(owner, vm, clear=clear) for a in ("-c", key)]

    @property
    def machine(self) -> bool:
        """An Incus instance boots its own init: a machine whatever ``machine`` says (the
        fixtures then wait through its reboots)."""
        return True

    def _image_at(self, image: str) -> str:
        """The image on the configured remote unless it names its own (``incus launch IMG
        far:vm`` would take IMG from the client's default remote)."""
        return f"{self.opts.remote}:{image}" if self.opts.remote and ":" not in image else image

    def create(self, vm: str, image: str, owner: Owner) -> None:
        self._refuse_vms()
        self._launch("create", self._image_at(image), vm, self._keys(owner, vm, clear=False))

    def _launch(self, operation: str, image: str, vm: str, keys: list[str]) -> None:
        """A new running instance from ``image``: ``incus launch``; on a cluster ``incus
        init`` then ``start``, one placement at a time: the scheduler counts each member's
        instances, and instances placed at once all see the same counts (4 workers at once
        went to one member here). Placing is the quick part; the starts run in parallel."""
        args = [image, self._at(vm), "--quiet", *(["--vm"] if self.opts.vm else [])]
        for profile in self.opts.profiles:
            args += ["-p", profile]
        if self.opts.storage_pool:
            args += ["--storage", self.opts.storage_pool]
        for key, value in sorted(self.opts.config.items()):
            args += ["-c", f"{key}={value}"]
        if not self.clustered:
            self._incus(operation, ["launch", *args, *self._target(), *keys], vm=vm)
            return
        with self._placing:
            self._incus(operation, ["init", *args, *self._target(), *keys], vm=vm)
        self.start(vm)

    def _target(self, member: str = "") -> list[str]:
        """``--target`` for a new instance: the project's (``target``), else ``member``,
        else none (the cluster's scheduler places it)."""
        where = self.opts.target or member
        return ["--target", where] if where else []

    def start(self, vm: str) -> None:
        try:
            self._incus("start", ["start", self._at(vm)], vm=vm)
        except PermanentProviderError as err:
            if "already running" not in str(err):
                raise

    def stop(self, vm: str) -> None:
        """A clean shutdown (systemd's: 0.8 s here), forced after 10 s (or half the stop time
        limit): a machine stopped in its first moments of boot never sees the signal."""
        if not vm:
            raise PermanentProviderError("refusing to stop a VM with an empty name", operation="stop")
        grace = str(max(1, int(min(10.0, self.settings.timeout("stop") / 2))))
        try:
            self._incus("stop", ["stop", self._at(vm), "--timeout", grace], vm=vm)
        except (VMNotFound, EngineUnavailable):
            raise
        except ProviderError as err:
            if "already stopped" in str(err):
                return
            log.info("%s did not shut down cleanly in %ss (%s): stopping it by force", vm, grace, err)
            self._incus("stop", ["stop", self._at(vm), "--force"], vm=vm)

    def delete(self, vm: str) -> None:
        """Delete the instance; on a cluster, a golden instance's published image with it
        (whoever deletes it: down, sweep, a retired baseline), so that no image outlives it."""
        self._delete_instance(vm)
        parsed = naming.parse_vm_name(self.settings.prefix, vm)
        if parsed is not None and naming.kind_of(parsed[1]) is Kind.BASELINE and self.clustered:
            self._delete_image(vm)

    def _delete_instance(self, vm: str) -> None:
        if not vm:
            raise PermanentProviderError("refusing to delete a VM with an empty name", operation="delete")
        try:
            self._incus("delete", ["delete", "--force", self._at(vm)], vm=vm)
        except VMNotFound:
            pass

    def _raw(self, vm: str) -> dict[str, Any] | None:
        """The instance as ``incus list`` shows it (with its state), or None;
        ``EngineUnavailable`` when it is on a cluster member that does not answer (the
        cluster lists it with status Error: nothing about it can be known or done)."""
        where = [f"{self.opts.remote}:"] if self.opts.remote else []
        found = self._json("list", ["list", *where, f"^{vm}$", "--format", "json"], vm=vm) or []
        raw = next((i for i in found if i.get("name") == vm), None)
        if raw is not None and raw.get("status") == "Error" and self.clustered:
            member = self._lost_member(raw, self._members())
            if member:
                raise self._member_down(member, vm)
        return raw

    @staticmethod
    def _lost_member(raw: dict[str, Any], down: dict[str, str]) -> str:
        """The member of an instance the cluster lists in status Error, counted in ``down``
        as not answering ("" for any other instance): a member that died a moment ago is not
        offline yet, but the cluster can no longer ask it the state of its instances."""
        member = _location(raw)
        if raw.get("status") != "Error" or not member:
            return ""
        down.setdefault(member, ERROR_STATUS)
        return member

    @staticmethod
    def _info(raw: dict[str, Any]) -> VMInfo:
        config = raw.get("config") or {}
        created = str(raw.get("created_at", ""))
        return VMInfo(
            name=str(raw.get("name", "")),
            state=_state(str(raw.get("status", ""))),
            labels={k.removeprefix(USER): v for k, v in config.items() if k.startswith(f"{USER}orch.") and v},
            created=iso_ms(created),
            image=str(config.get("volatile.base_image", ""))[:12],
            engine=_location(raw),
        )

    def inspect(self, vm: str) -> VMInfo | None:
        raw = self._raw(vm)
        return None if raw is None else self._info(raw)

    def list_vms(self, *, all_vms: bool = False) -> list[VMInfo]:
        """Every instance (orch's with its label), but those on a cluster member that does not
        answer: they are left out, and the member is one of ``unreachable_engines()``, so
        that sweep, down and up never judge or touch what they cannot see."""
        args = ["list", *([f"{self.opts.remote}:"] if self.opts.remote else [])]
        clustered = self.clustered  # asked once, before the listing it qualifies
        if not all_vms and not clustered:
            args.append(f"{USER}{L.MANAGED_BY}={L.MANAGED_BY_VALUE}")
        listed = self._json("list", [*args, "--format", "json"]) or []
        found = [self._info(raw) for raw in listed]
        if not clustered:
            return found
        # On a cluster the label filter is applied here: an instance on a member that does
        # not answer is listed without its config (name, status Error, location only), so
        # Incus's own filter would drop it before orch could see that its member is gone.
        down = self._members()
        for raw in listed:
            self._lost_member(raw, down)
        self._hidden = {i.name: i.engine for i in found if i.engine in down}
        return [i for i in found if i.engine not in down and (all_vms or L.is_orchs(i.labels))]

    def address(self, vm: str) -> str:
        """The instance's IPv4 address on its first nic that has one (waited for, within
        the ready time limit, while a running instance has none yet)."""
        found: list[str] = []

        def probe() -> str | None:
            raw = self._raw(vm)
            if raw is None:
                raise VMNotFound(f"instance {vm} does not exist", operation="address", vm=vm)
            if raw.get("status") != "Running":
                raise TransientProviderError(
                    f"instance {vm} has no address: it is {raw.get('status')}", operation="address", vm=vm
                )
            for nic, net in sorted(((raw.get("state") or {}).get("network") or {}).items()):
                for addr in (net.get("addresses") or []) if nic != "lo" else []:
                    if addr.get("family") == "inet" and addr.get("scope") == "global":
                        found.append(str(addr["address"]))
                        return None
            return "running, no IPv4 address yet"

        WaitStrategy(timeout=self.settings.timeout("ready"), interval=0.1).wait(f"the address of {vm}", probe)
        return found[0]

    def exec_argv(self, vm: str, argv: list[str], *, interactive: bool = False) -> list[str]:
        return [*self._client(), "exec", self._at(vm), "-t" if interactive else "-T", "--", *argv]

    def exec(self, vm: str, argv: list[str], *, timeout: float | None = None) -> ExecResult:
        """``argv`` through ``incus exec``, its output kept inside the instance and read
        again where Incus lost a stream (:mod:`orchestrator.pyinfra.incus_exec`)."""
        limit = timeout if timeout is not None else self.settings.timeout("default")
        ident = incus_exec.new_ident()
        script = incus_exec.wrap(shlex.join(argv), ident, incus_exec.take_read(self._exec_key(vm)))
        proc = self._exec_sh(vm, script, limit)
        if proc.returncode != 0 and incus_own(proc.stderr):
            raise classify("exec", vm, proc.returncode, proc.stderr)
        whole = incus_exec.read_whole(
            proc,
            lambda: self._exec_sh(vm, incus_exec.reread(ident), limit),
            lambda p: incus_exec.unmarked_pair(p.stdout, p.stderr),
        )
        if whole is None:
            log.warning("%s: incus exec lost the output of %s, and it could not be read again", vm, shlex.join(argv)[:80])
            return ExecResult(proc.returncode, proc.stdout, proc.stderr)
        incus_exec.mark_read(self._exec_key(vm), ident)
        return ExecResult(proc.returncode, *whole)

    def _exec_key(self, vm: str) -> str:
        """The instance as the exec wrapper tracks it (the @incus connector's key too)."""
        return f"{self.opts.project}/{self._at(vm)}"

    def _exec_sh(self, vm: str, script: str, limit: float) -> subprocess.CompletedProcess[str]:
        argv = self.exec_argv(vm, ["sh", "-c", script])
        return self.runner(argv, operation="exec", timeout=limit, classify=classify, vm=vm, check=False)

    def wait_ready(self, vm: str) -> float:
        """Running, then booted by systemd's account (for a VM, once its incus agent
        answers ``incus exec``: until then Incus says the agent is not running)."""
        running = False

        def run(argv: list[str]) -> ExecResult:
            nonlocal running
            try:
                return self.exec(vm, argv, timeout=15)
            except PermanentProviderError as err:
                if "not running" not in str(err) or isinstance(err, VMNotFound):
                    raise
                running = False  # stopped meanwhile (a reboot, between two boots): look again
                return ExecResult(1, "", "the instance is not running")

        booted = systemd_probe(vm, run)

        def probe() -> str | None:
            nonlocal running
            if not running:  # then only systemd is asked: one incus process per look, not two
                raw = self._raw(vm)
                if raw is None:
                    raise VMNotFound(f"instance {vm} disappeared while waiting for it", operation="ready", vm=vm)
                if raw.get("status") != "Running":
                    return f"instance status {raw.get('status', 'unknown')}"
                running = True
            return booted()

        strategy = WaitStrategy(
            timeout=self.settings.timeout("ready"), interval=0.5 if self.opts.vm else 0.1, tolerate=(TransientProviderError,)
        )
        return strategy.wait(f"{'VM' if self.opts.vm else 'instance'} {vm}", probe)

    def host(self, vm: str) -> tuple[str, dict[str, Any]]:
        client = self.opts.incus if self.opts.incus != "incus" else ""
        data = {"incus_remote": self.opts.remote, "incus_project": self.opts.project, "incus_client": client}
        return f"@incus/{vm}", {k: v for k, v in data.items() if v}

    @classmethod
    def testinfra_host(cls, host: str, data: dict[str, Any]) -> Any:
        """``incus exec NAME -T -- /bin/sh -c CMD`` as root (testinfra's lxc backend runs
        the ``lxc`` command: this is the same with ``incus``)."""
        from testinfra.backend import base  # noqa: PLC0415  optional (pyinfra-orch[testinfra]): only orch_host needs it
        from testinfra.host import Host  # noqa: PLC0415  (the same)

        connector, _, target = host.partition("/")
        if connector != "@incus":
            return super().testinfra_host(host, data)
        client = ["incus", *(["--project", data["incus_project"]] if data.get("incus_project") else [])]
        at = f"{data['incus_remote']}:{target}" if data.get("incus_remote") else target
        prefix = shlex.join([*client, "exec", at, "-T", "--", "/bin/sh", "-c"]).replace("%", "%%")
        return Host(_testinfra_backend(base, target, prefix, f"{data.get('incus_project') or ''}/{at}"))

    # -- baseline: a stopped, sealed golden instance, copied ------------------------------

    def seal(self, vm: str, owner: Owner) -> Baseline:
        sealed = self.exec(vm, ["sh", "-c", SEAL])
        if not sealed.ok:
            raise PermanentProviderError(f"cannot seal {vm}: {sealed.stderr.strip()}", operation="seal", vm=vm)
        self.stop(vm)
        raw = self._raw(vm)
        if raw is None:
            raise VMNotFound(f"the baseline instance {vm} disappeared while it was sealed", operation="seal", vm=vm)
        return Baseline(vm, {**_signature(raw), **self._publish(vm)})

    def _publish(self, vm: str) -> dict[str, str]:
        """On a cluster, the sealed golden instance published as an image under its own name
        ({"image": fingerprint}; {} on a single server). A copy of an instance on another
        member moves the whole instance every time (110 MB, 1.7 s here); an image is fetched
        by each member the first time the scheduler places an instance there, then every
        launch on that member is a copy-on-write of its own copy: the cluster's job, once
        per member. An image left by an earlier seal under this name is replaced."""
        if not self.clustered:
            return {}
        self._delete_image(vm)
        for compression in ("zstd", "none"):
            where = [f"{self.opts.remote}:"] if self.opts.remote else []
            args = ["publish", self._at(vm), *where, "--alias", vm, "--compression", compression, "--quiet"]
            try:
                self._incus("seal", args, vm=vm, timeout=self.settings.timeout("image"))
                break
            except ProviderError as err:
                if compression == "zstd" and "isn't currently supported" in str(err):
                    continue
                raise
        found = self._query(self._project_path(f"/1.0/images/aliases/{vm}")) or {}
        image = str(found.get("target", "")) if isinstance(found, dict) else ""
        if not image:
            raise PermanentProviderError(f"the published image of {vm} has no fingerprint ({found!r})", operation="seal", vm=vm)
        return {"image": image}

    def _project_path(self, path: str) -> str:
        return f"{path}?project={self.opts.project}" if self.opts.project else path

    def _delete_image(self, name: str) -> None:
        """Delete the image under alias ``name`` (a baseline's), if there is one."""
        try:
            self._incus("delete", ["image", "delete", self._at(name)], vm=name)
        except ProviderError as err:
            if "not found" not in str(err).lower():
                raise

    def verify(self, baseline: Baseline) -> str | None:
        """Whether the sealed baseline is as sealed. On a cluster the image is what copies
        are made from: a golden instance on a member that does not answer is left unjudged."""
        try:
            raw = self._raw(baseline.ref)
        except EngineUnavailable as err:
            if not baseline.seal.get("image"):
                return f"the baseline instance {baseline.ref} cannot be seen ({err})"
            log.info("%s: not verified (%s); its image is what copies are made from", baseline.ref, err)
            return self._image_gone(baseline.seal["image"])
        if raw is None:
            return f"the baseline instance {baseline.ref} is gone"
        if raw.get("status") != "Stopped":
            return f"the baseline instance {baseline.ref} was started outside orch (it is {raw.get('status')})"
        now = _signature(raw)
        if now["last_used_at"] != baseline.seal.get("last_used_at"):
            return f"the baseline instance {baseline.ref} was started outside orch since it was sealed"
        if now["config"] != baseline.seal.get("config"):
            return f"the baseline instance {baseline.ref} was reconfigured since it was sealed (config, devices or profiles)"
        image = baseline.seal.get("image")
        return self._image_gone(image) if image else None

    def _image_gone(self, image: str) -> str | None:
        try:
            self._query(self._project_path(f"/1.0/images/{image}"))
        except ProviderError as err:
            return f"the baseline's image {image[:12]} is gone ({str(err)[:120]})"
        return None

    def clone(self, baseline: Baseline, vm: str, owner: Owner) -> None:
        self._refuse_vms()
        image = baseline.seal.get("image")
        if image:  # a cluster: made from the baseline's image wherever the scheduler places it
            self._launch("clone", self._at(image), vm, self._keys(owner, vm, clear=True))
            return
        args = ["copy", self._at(baseline.ref), self._at(vm), "--instance-only", *self._keys(owner, vm, clear=True)]
        args += self._target()
        if self.opts.storage_pool:
            args += ["--storage", self.opts.storage_pool]
        try:
            self._incus("clone", args, vm=vm)
        except VMNotFound as err:
            raise PermanentProviderError(
                f"the baseline instance {baseline.ref} is gone ({err})", operation="clone", vm=vm
            ) from err
        self.start(vm)

    def keep(self, vm: str, new: str) -> None:
        """A copy of the instance as it is (running: a snapshot of its files), left stopped;
        Incus renames only stopped instances (see the module's docstring). A file that
        vanishes while it is copied (a pool without snapshots copies a running instance
        file by file) does not fail the keep."""
        args = ["copy", self._at(vm), self._at(new), "--instance-only", "--allow-inconsistent"]
        if self.clustered:  # beside the failed worker: a copy across members would move its files
            args += self._target(self.engine_of(vm))
        if self.opts.storage_pool:
            args += ["--storage", self.opts.storage_pool]
        self._incus("clone", args, vm=vm)

    def drop(self, baseline: Baseline) -> bool:
        """Delete the golden instance, and on a cluster its image (its copies are copies:
        they do not need either)."""
        if baseline.seal.get("image"):
            self._delete_image(baseline.ref)
        self._delete_instance(baseline.ref)
        return True

    # -- the baseline as a file (orch baseline export/import, the baseline cache) ----------

    def export_baseline(self, baseline: Baseline, path: Path) -> None:
        """``incus export --instance-only`` of the stopped golden instance: a portable
        tarball (not ``--optimized-storage``, which restores only onto a pool of the same
        driver), zstd where the server has it (the machine image: 2.3 s and 110 MB here,
        where the server's default gzip takes 16.5 s), else uncompressed (1.6 s, 258 MB).
        Incus reads the instance without starting or reconfiguring it: the baseline still
        verifies afterwards. A failed export leaves no file at ``path``."""
        ref = baseline.ref
        for compression in ("zstd", "none"):
            args = ["export", self._at(ref), str(path), "--instance-only", "--compression", compression, "--quiet"]
            try:
                self._incus("export", args, vm=ref, timeout=self.settings.timeout("image"))
                return
            except VMNotFound as err:
                path.unlink(missing_ok=True)
                raise PermanentProviderError(f"the baseline instance {ref} is gone ({err})", operation="export", vm=ref) from err
            except ProviderError as err:
                path.unlink(missing_ok=True)  # the caller's new temporary name: a half-written file is ours
                if compression == "zstd" and "isn't currently supported" in str(err):
                    log.info("the Incus server has no zstd (%s): exporting %s uncompressed", err, ref)
                    continue
                raise

    def import_baseline(self, path: Path, name: str, owner: Owner) -> Baseline:
        """``incus import`` of the archive under ``name``, then this checkout's labels in one
        ``incus config set`` (every ``user.orch.*`` key: the archive's are another
        checkout's, or another machine's), sealed as ``seal`` returns it. The archive's
        instance (another checkout's baseline, maybe on this server) is only read from the
        file, never touched. A failed import leaves no instance under ``name``: Incus reverts
        an archive it cannot unpack, and orch deletes one it imported but could not make
        ours; one a crashed import left under ``name`` with the archive's labels is deleted
        before the next import (nobody else's instance has this checkout's baseline name)."""
        self._forget_half_import(name, owner)
        if self._raw(name) is not None:  # ours (the core deletes it and asks again) or anyone else's (refused)
            raise VMExists(f"instance {name} already exists", operation="import", vm=name)
        where = [f"{self.opts.remote}:"] if self.opts.remote else []
        storage = ["--storage", self.opts.storage_pool] if self.opts.storage_pool else []
        try:
            self._incus(
                "import",
                ["import", *where, str(path), name, "--quiet", *storage],  # (incus import takes no --target)
                vm=name,
                timeout=self.settings.timeout("image"),
            )
            self._incus("import", ["config", "set", self._at(name), *self._pairs(owner, name, clear=True)], vm=name)
            raw = self._raw(name)
            if raw is None:
                raise VMNotFound(f"the imported instance {name} disappeared", operation="import", vm=name)
            seen = self._info(raw).labels
            if seen.get(L.CHECKOUT) != owner.checkout or seen.get(L.KIND) != owner.kind.value:
                raise PermanentProviderError(
                    f"the imported instance {name} kept labels orch did not give it ({seen})", operation="import", vm=name
                )
            if raw.get("status") != "Stopped":
                raise PermanentProviderError(
                    f"the imported instance {name} is {raw.get('status')}, not stopped", operation="import", vm=name
                )
            published = self._publish(name)
        except OrchError:
            self._forget(name)
            raise
        return Baseline(name, {**_signature(raw), **published})

    def _forget_half_import(self, name: str, owner: Owner) -> None:
        """Delete what a crash between ``incus import`` and its relabelling left: a stopped
        instance under this checkout's baseline name ``name`` with an orch baseline's labels
        of this fingerprint but another checkout's (the archive's). Such an instance is
        nobody's to ownership (its name and labels disagree), so nothing else would."""
        raw = self._raw(name)
        if raw is None:
            return
        labels = self._info(raw).labels
        half = (
            L.is_orchs(labels)
            and labels.get(L.KIND) == owner.kind.value
            and labels.get(L.CHECKOUT, "") not in ("", owner.checkout)
            and labels.get(L.FINGERPRINT) == owner.fingerprint
            and raw.get("status") == "Stopped"
        )
        if half:
            log.warning(
                "%s: an import of another checkout's baseline (%s) left it unlabelled: deleted", name, labels.get(L.CHECKOUT)
            )
            self.delete(name)

    def _forget(self, name: str) -> None:
        """Delete ``name`` after a failed import, without hiding why it failed."""
        try:
            self.delete(name)
        except OrchError as err:
            log.warning("%s: the failed import could not be deleted (%s); the next import deletes it", name, err)
