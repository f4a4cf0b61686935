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
- readiness waits for the SSH server's banner, not only for the VM.
"""

from __future__ import annotations

import os
import shlex
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, PermanentProviderError, TransientProviderError
from .providers.base import WaitStrategy

if TYPE_CHECKING:
    from .core import Orch

KINDS = ("", "native", "ssh")


class Connector:
    """The provider's own connector: nothing to prepare."""

    name = "native"

    def __init__(self, orch: Orch) -> None:
        self.orch = orch
        self.provider = orch.provider

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


class SSHConnector(Connector):
    """pyinfra's ``@ssh``: a key per checkout, a sudo user, strict host keys."""

    name = "ssh"

    def __init__(self, orch: Orch) -> None:
        super().__init__(orch)
        self.user = orch.settings.ssh.user
        self.port = 22
        self.dir = orch.store.dir / "ssh"
        self.key = self.dir / "id_ed25519"
        self.known_hosts = self.dir / "known_hosts.d"

    def keys(self) -> tuple[str, str, str]:
        """(user public key, host private key, host public key) of this checkout, made once."""
        if not self.key.exists():
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(self.dir, 0o700)
            (self.dir / ".gitignore").write_text("*\n")
            host_private, host_public = _ed25519(f"orch-host@{self.orch.checkout}")
            _write_private(self.dir / "host_ed25519", host_private)
            (self.dir / "host_ed25519.pub").write_text(host_public)
            private, public = _ed25519(f"orch@{self.orch.checkout}")
            self.key.with_suffix(".pub").write_text(public)
            _write_private(self.key, private)  # last: its presence says all are there
        return (
            self.key.with_suffix(".pub").read_text().strip(),
            (self.dir / "host_ed25519").read_text().strip(),
            (self.dir / "host_ed25519.pub").read_text().strip(),
        )

    def prepare(self, vm: str) -> None:
        public, host_private, host_public = self.keys()
        values = (("U", self.user), ("K", public), ("HK", host_private), ("HP", host_public))
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in values)
        result = self.provider.exec(
            vm, ["sh", "-c", f"{env}; export U K HK HP; {PREPARE}"], timeout=self.orch.settings.timeout("create")
        )
        if not result.ok:
            raise PermanentProviderError(f"cannot set up SSH in {vm}: {result.stderr.strip() or result.stdout.strip()}", vm=vm)

    def ready(self, vm: str) -> float:
        started = time.monotonic()
        result = self.provider.exec(vm, ["sh", "-c", START_SSHD])
        if not result.ok:
            raise TransientProviderError(f"sshd does not start in {vm}: {result.stderr.strip()[:200]}", operation="ready", vm=vm)
        address = self.provider.address(vm)

        def banner() -> str | None:
            with socket.create_connection((address, self.port), timeout=2) as sock:
                data = sock.recv(64)
            return None if data.startswith(b"SSH-") else f"no SSH banner yet ({data[:20]!r})"

        WaitStrategy(timeout=self.orch.settings.timeout("ready"), interval=0.1, tolerate=(OSError,)).wait(f"sshd in {vm}", banner)
        return time.monotonic() - started

    def known_hosts_file(self, address: str) -> Path:
        """The known_hosts file of one address: the checkout's host key, for that address."""
        path = self.known_hosts / address
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

    def exec_argv(self, vm: str, argv: list[str], *, interactive: bool = False) -> list[str]:
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


def _ed25519(comment: str) -> tuple[str, str]:
    """A new Ed25519 key pair in OpenSSH's formats: (private, public)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private.decode(), f"{public.decode()} {comment}\n"


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def connector_for(orch: Orch) -> Connector:
    kind = orch.settings.connector
    if kind in ("", "native"):
        return Connector(orch)
    if kind == "ssh":
        from .providers.base import Provider

        if type(orch.provider).address is Provider.address:
            raise ConfigError(f"connector ssh needs VMs with an address: the {orch.provider.name} provider has none")
        return SSHConnector(orch)
    raise ConfigError(f"unknown connector {kind!r}: choose native or ssh (--connector, ORCH_CONNECTOR, [tool.orch] connector)")
