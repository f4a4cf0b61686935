"""How pyinfra reaches inside orch's VMs: the connector under test.

By default a provider's own connector (``@docker/NAME``, ``@orbstack/NAME``, ``@podman/NAME``).
With ``[tool.orch] connector = "ssh"`` every VM runs an SSH server and everything —
provisioning, resets, the fixtures, ``orch exec``, the pyinfra CLI on the inventories —
goes through pyinfra's ``@ssh`` connector, as deploys reach production:

- orch makes one key pair per checkout in ``<inventory dir>/.orch/ssh/`` (mode 600, the
  folder git-ignored), a non-root user (``[tool.orch.ssh] user``, default ``orch``) with
  passwordless sudo, and installs ``openssh-server`` and ``sudo`` with apt-get when the image
  lacks them;
- the VMs' host key is orch's own too (made with the user key, installed by orch), so the
  known_hosts file of an address (``.orch/ssh/known_hosts.d/ADDRESS``) names it before any
  connection: checked strictly, never trusted on first use, nothing prompts; a file per
  address never changes (pyinfra reads a known_hosts file once per process);
- readiness waits for the SSH server's banner, not only for the VM, and first makes sure
  the VM authorizes the checkout's current keys (a key made again by ``orch up`` reaches
  every VM the next time it is made ready, VMs cloned from an older baseline included);
- orch never follows a symlink it did not make: a symlink (or anything but what orch makes)
  where its folder or a key should be is refused in one line; a key deleted since is named
  by every command, and made again (and authorized in the workers) only by ``orch up``.
"""

from __future__ import annotations

import logging
import os
import shlex
import socket
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import Field

from orchestrator.primitives.errors import ConfigError, OrchError, PermanentProviderError, StateError, TransientProviderError
from orchestrator.providers.base import Provider, WaitStrategy
from orchestrator.settings.model import Model
from orchestrator.state.store import _not_a_file, _regular_or_missing

if TYPE_CHECKING:
    from orchestrator.core.steps import Reporter
    from orchestrator.providers.base import Provider
    from orchestrator.settings.model import Settings
    from orchestrator.state.store import StateStore


class Checkout(Protocol):
    """What a connector uses of the checkout's context (:class:`orchestrator.core.context.Context`,
    which makes its connector: the connector does not import it)."""

    checkout: str
    settings: Settings
    provider: Provider
    store: StateStore
    report: Reporter


log = logging.getLogger(__name__)


class Connector:
    """The provider's own connector: nothing to prepare."""

    name = "native"

    def __init__(self, ctx: Checkout) -> None:
        self.ctx = ctx
        self.provider = ctx.provider

    def setup(self, *, repair: bool = False) -> None:
        """Before a command reaches inside VMs: what the connector keeps in the checkout is
        there and orch's own; ``repair`` (``orch up``) makes again what is missing."""

    def prepare(self, vm: str) -> None:
        """A VM just made from the image: install what the connector needs."""

    def ready(self, vm: str) -> float:
        """After every start: make sure the connector can reach the VM; seconds waited."""
        return 0.0

    def host(self, vm: str) -> tuple[str, dict[str, Any]]:
        return self.provider.host(vm)

    def deploy_data(self) -> dict[str, Any]:
        """Host data orch's own deploys need (root inside the VM)."""
        return {}

    def vm_settings(self) -> str:
        """The connector's settings that change what a VM is (part of the baseline's fingerprint)."""
        return ""

    def exec_argv(self, vm: str, argv: list[str], *, interactive: bool = False) -> list[str]:
        return self.provider.exec_argv(vm, argv, interactive=interactive)


PREPARE = r"""
set -e
if ! command -v sshd >/dev/null 2>&1 && [ ! -x /usr/sbin/sshd ] || ! command -v sudo >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends openssh-server sudo >/dev/null
  else
    echo "the image has no sshd or sudo, and no apt-get to install them: use an image with openssh-server and sudo" >&2
    exit 3
  fi
fi
id -u "$U" >/dev/null 2>&1 || useradd -m -s /bin/sh "$U"
printf '%s ALL=(ALL) NOPASSWD:ALL\n' "$U" > /etc/sudoers.d/orch && chmod 440 /etc/sudoers.d/orch
H=$(getent passwd "$U" | cut -d: -f6)
install -d -m 700 -o "$U" -g "$(id -gn "$U")" "$H/.ssh"
printf '%s\n' "$K" > "$H/.ssh/authorized_keys"
chown "$U:$(id -gn "$U")" "$H/.ssh/authorized_keys" && chmod 600 "$H/.ssh/authorized_keys"
rm -f /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub
umask 077
printf '%s\n' "$HK" > /etc/ssh/ssh_host_ed25519_key
printf '%s\n' "$HP" > /etc/ssh/ssh_host_ed25519_key.pub && chmod 644 /etc/ssh/ssh_host_ed25519_key.pub
"""

START_SSHD = (
    'mkdir -p /run/sshd; if [ -f /run/sshd.pid ] && kill -0 "$(cat /run/sshd.pid)" 2>/dev/null; then :; else /usr/sbin/sshd; fi'
)

# The checkout's current keys, authorized before sshd is (re)started: a key made again
# reaches VMs made earlier, and clones of a baseline sealed with the old one.
SYNC_KEYS = r"""
H=$(getent passwd "$U" | cut -d: -f6)
if [ -n "$H" ] && [ "$(cat "$H/.ssh/authorized_keys" 2>/dev/null)" != "$K" ]; then
  printf '%s\n' "$K" > "$H/.ssh/authorized_keys"
  chown "$U:$(id -gn "$U")" "$H/.ssh/authorized_keys" && chmod 600 "$H/.ssh/authorized_keys"
fi
if [ "$(cat /etc/ssh/ssh_host_ed25519_key.pub 2>/dev/null)" != "$HP" ]; then
  (umask 077; printf '%s\n' "$HK" > /etc/ssh/ssh_host_ed25519_key)
  printf '%s\n' "$HP" > /etc/ssh/ssh_host_ed25519_key.pub && chmod 644 /etc/ssh/ssh_host_ed25519_key.pub
  if [ -f /run/sshd.pid ]; then
    P=$(cat /run/sshd.pid); kill "$P" 2>/dev/null || :
    while kill -0 "$P" 2>/dev/null; do sleep 0.1; done
    rm -f /run/sshd.pid
  fi
fi
"""


class SSHSettings(Model):
    """``[tool.orch.ssh]``: the SSH connector (``connector = "ssh"``)."""

    whole_table_variable: ClassVar[bool] = True  # ORCH_SSH=user=NAME is still read (deprecated)

    #: The non-root user orch makes in every VM, with passwordless sudo.
    user: str = Field("orch", pattern=r"^[a-z_][a-z0-9_-]{0,31}$")


#: The tables the connectors declare (``[tool.orch.<name>]``), for the settings loader.
TABLES: dict[str, type[Model]] = {"ssh": SSHSettings}


class SSHConnector(Connector):
    """pyinfra's ``@ssh``: a key per checkout, a sudo user, strict host keys."""

    name = "ssh"

    def __init__(self, ctx: Checkout) -> None:
        super().__init__(ctx)
        self.user = SSHSettings(**ctx.settings.tables.get("ssh", {})).user
        self.port = 22
        self.dir = ctx.store.dir / "ssh"
        self.key = self.dir / "id_ed25519"
        self.host_key = self.dir / "host_ed25519"
        self.known_hosts = self.dir / "known_hosts.d"
        self.repair = False  # `orch up`: make again the keys that are missing

    def setup(self, *, repair: bool = False) -> None:
        self.repair = self.repair or repair
        if self.keys_made():
            self.reauthorize()

    def keys_made(self) -> bool:
        """Make the keys (or, with ``repair``, the ones missing); True if a key that VMs
        had been given was made again."""
        first = self._first_use()
        before = all(p.exists() for k in (self.key, self.host_key) for p in (k, k.with_suffix(".pub")))
        self.keys()
        return not first and not before

    def reauthorize(self) -> None:
        """The checkout's keys made again: every recorded VM authorizes them now (a VM that
        cannot be reached now takes them when it is next made ready)."""
        self.ctx.report("ssh", f"{self.dir} had lost a key: made a new one; authorizing it in the VMs")
        data = self.ctx.store.read()
        vms = [r.vm for r in data.sorted_workers()] + [s.vm for s in data.standbys.values()] + list(data.oneoffs)

        def sync(vm: str) -> None:
            try:
                info = self.provider.inspect(vm)
                if info is not None and info.running:
                    self.provider.exec(vm, ["sh", "-c", f"{self._env()}\n{SYNC_KEYS}\n{START_SSHD}"])
            except OrchError as err:
                log.warning("%s: the new SSH key is authorized when it is next made ready (%s)", vm, err)

        self.provider.map(sync, vms)

    def _refuse_foreign(self) -> None:
        """Refuse, in one line, anything where orch keeps its SSH files that orch did not
        make (a symlink is never followed: keys would be written where it points)."""
        for folder in (self.dir, self.known_hosts):
            try:
                st = os.lstat(folder)
            except FileNotFoundError:
                continue
            if not stat.S_ISDIR(st.st_mode):
                kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a folder"
                raise StateError(f"{folder} is {kind}, not the folder orch makes: remove it and run the command again")
        for path in (
            self.key,
            self.key.with_suffix(".pub"),
            self.host_key,
            self.host_key.with_suffix(".pub"),
            self.dir / ".gitignore",
        ):
            if not _regular_or_missing(path):
                raise _not_a_file(path)

    def _first_use(self) -> bool:
        """No key was ever handed to a VM of this checkout: making them is no repair."""
        return not os.path.lexists(self.dir) and not self.ctx.store.read().workers

    def keys(self) -> tuple[str, str, str]:
        """(user public key, host private key, host public key) of this checkout. Made on
        first use; one deleted since is made again only by ``orch up`` (``repair``): every
        other command names it, and ``orch up``."""
        self._refuse_foreign()
        user, host = (self.key, self.key.with_suffix(".pub")), (self.host_key, self.host_key.with_suffix(".pub"))
        missing = [p for p in (*user, *host) if not p.exists()]
        if missing:
            if not (self.repair or self._first_use()):
                raise StateError(
                    f"the SSH key {missing[0]} is missing (deleted since `orch up`?): "
                    "run `orch up` to make a new one and authorize it in the workers"
                )
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(self.dir, 0o700)  # orch's own folder: checked above, not a symlink
            _write(self.dir / ".gitignore", "*\n", 0o644)
            if any(p in missing for p in host):
                host_private, host_public = _ed25519(f"orch-host@{self.ctx.checkout}")
                _write(self.host_key, host_private, 0o600)
                _write(self.host_key.with_suffix(".pub"), host_public, 0o644)
                for old in self.known_hosts.glob("*") if self.known_hosts.is_dir() else []:
                    old.unlink()  # they name the old host key
            if any(p in missing for p in user):
                private, public = _ed25519(f"orch@{self.ctx.checkout}")
                _write(self.key.with_suffix(".pub"), public, 0o644)
                _write(self.key, private, 0o600)
        return (
            self.key.with_suffix(".pub").read_text().strip(),
            self.host_key.read_text().strip(),
            self.host_key.with_suffix(".pub").read_text().strip(),
        )

    def _env(self) -> str:
        """The keys as shell variables (U K HK HP) for the scripts run inside a VM."""
        public, host_private, host_public = self.keys()
        values = (("U", self.user), ("K", public), ("HK", host_private), ("HP", host_public))
        return " ".join(f"{k}={shlex.quote(v)}" for k, v in values) + "; export U K HK HP"

    def prepare(self, vm: str) -> None:
        result = self.provider.exec(vm, ["sh", "-c", f"{self._env()}; {PREPARE}"], timeout=self.ctx.settings.timeout("create"))
        if not result.ok:
            raise PermanentProviderError(f"cannot set up SSH in {vm}: {result.stderr.strip() or result.stdout.strip()}", vm=vm)

    def ready(self, vm: str) -> float:
        started = time.monotonic()
        result = self.provider.exec(vm, ["sh", "-c", f"{self._env()}\n{SYNC_KEYS}\n{START_SSHD}"])
        if not result.ok:
            raise TransientProviderError(f"sshd does not start in {vm}: {result.stderr.strip()[:200]}", operation="ready", vm=vm)
        address = self.provider.address(vm)

        def banner() -> str | None:
            with socket.create_connection((address, self.port), timeout=2) as sock:
                data = sock.recv(64)
            return None if data.startswith(b"SSH-") else f"no SSH banner yet ({data[:20]!r})"

        WaitStrategy(timeout=self.ctx.settings.timeout("ready"), interval=0.1, tolerate=(OSError,)).wait(f"sshd in {vm}", banner)
        return time.monotonic() - started

    def known_hosts_file(self, address: str) -> Path:
        """The known_hosts file of one address: the checkout's host key, for that address."""
        path = self.known_hosts / address
        if not _regular_or_missing(path):
            raise _not_a_file(path)
        if not path.exists():
            _, _, host_public = self.keys()
            self.known_hosts.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(f"{address} {' '.join(host_public.split()[:2])}\n")
            os.replace(tmp, path)
        return path

    def host(self, vm: str) -> tuple[str, dict[str, Any]]:
        address = self.provider.address(vm)
        return vm, {
            "ssh_hostname": address,
            "ssh_port": self.port,
            "ssh_user": self.user,
            "ssh_key": str(self.key),
            "ssh_known_hosts_file": str(self.known_hosts_file(address)),
            "ssh_strict_host_key_checking": "yes",
        }

    def deploy_data(self) -> dict[str, Any]:
        return {"_sudo": True} if self.user != "root" else {}

    def vm_settings(self) -> str:
        return self.user

    def exec_argv(self, vm: str, argv: list[str], *, interactive: bool = False) -> list[str]:
        self.keys()  # the key is there, or one line names `orch up`
        address = self.provider.address(vm)
        options = [
            "BatchMode=yes",
            "IdentitiesOnly=yes",
            "StrictHostKeyChecking=yes",
            f"UserKnownHostsFile={self.known_hosts_file(address)}",
        ]
        return [
            "ssh",
            "-t" if interactive else "-T",
            *[arg for option in options for arg in ("-o", option)],
            *["-i", str(self.key), "-p", str(self.port), f"{self.user}@{address}", "--", shlex.join(argv)],
        ]


def testinfra_host(host: str, data: dict[str, Any]) -> Any:
    """A testinfra ``Host`` on a VM that pyinfra reaches over SSH (host data ``ssh_*``),
    as root (through sudo for another user); None for a VM reached otherwise."""
    if not data.get("ssh_hostname") and (host == "@local" or host.startswith("@")):
        return None
    import testinfra  # noqa: PLC0415  optional (pyinfra-orch[testinfra]): only the orch_host fixture needs it

    user = data.get("ssh_user", "root")
    spec = f"paramiko://{user}@{data.get('ssh_hostname', host)}:{data.get('ssh_port', 22)}"
    return testinfra.get_host(spec, ssh_identity_file=data.get("ssh_key"), sudo=user != "root")


def _ed25519(comment: str) -> tuple[str, str]:
    """A new Ed25519 key pair in OpenSSH's formats: (private, public)."""
    # lazy: only the SSH connector makes keys; every other command would pay for the import
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: PLC0415

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private.decode(), f"{public.decode()} {comment}\n"


def _write(path: Path, text: str, mode: int) -> None:
    """Write one of orch's files, never through a symlink (O_NOFOLLOW)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, mode)


def connector_for(ctx: Checkout) -> Connector:
    kind = ctx.settings.connector
    if kind in ("", "native"):
        return Connector(ctx)
    if kind == "ssh":
        if type(ctx.provider).address is Provider.address:
            raise ConfigError(f"connector ssh needs VMs with an address: the {ctx.provider.name} provider has none")
        return SSHConnector(ctx)
    raise ConfigError(f"unknown connector {kind!r}: choose native or ssh (--connector, ORCH_CONNECTOR, [tool.orch] connector)")
