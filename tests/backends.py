"""How a test looks at a VM behind orch's back, per provider: the real Docker engine
for docker, the orbctl command line (tests/fakes/orbctl on PATH) for orbstack."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


class DockerBackend:
    name = "docker"

    def exists(self, vm: str) -> bool:
        return _run(["docker", "inspect", "--type", "container", vm]).returncode == 0

    def identity(self, vm: str) -> str:
        """Changes when the VM is recreated, not when it is restarted."""
        return _run(["docker", "inspect", "-f", "{{.Id}}", vm]).stdout.strip()

    def running(self, vm: str) -> bool:
        return _run(["docker", "inspect", "-f", "{{.State.Running}}", vm]).stdout.strip() == "true"

    def sh(self, vm: str, script: str) -> subprocess.CompletedProcess:
        return _run(["docker", "exec", vm, "sh", "-c", script])

    def stop(self, vm: str) -> None:
        _run(["docker", "stop", "-t", "1", vm])

    def remove(self, vm: str) -> None:
        _run(["docker", "rm", "-f", vm])

    def names(self, prefix: str) -> list[str]:
        out = _run(["docker", "ps", "-a", "--format", "{{.Names}}"]).stdout.split()
        return sorted(n for n in out if n.startswith(prefix))


class OrbStackBackend(DockerBackend):
    """Through orbctl, as a user of OrbStack would look (the emulator answers)."""

    name = "orbstack"

    def exists(self, vm: str) -> bool:
        return _run(["orbctl", "info", vm, "-f", "json"]).returncode == 0

    def identity(self, vm: str) -> str:
        return _run(["docker", "inspect", "-f", "{{.Id}}", f"orbfake-{vm}"]).stdout.strip()

    def running(self, vm: str) -> bool:
        proc = _run(["orbctl", "info", vm, "-f", "json"])
        return proc.returncode == 0 and json.loads(proc.stdout)["record"]["state"] == "running"

    def sh(self, vm: str, script: str) -> subprocess.CompletedProcess:
        return _run(["orbctl", "run", "-m", vm, "sh", "-c", script])

    def stop(self, vm: str) -> None:
        assert vm, "never call orbctl stop without a name: it stops OrbStack itself"
        _run(["orbctl", "stop", vm])

    def remove(self, vm: str) -> None:
        _run(["orbctl", "delete", "-f", vm])

    def names(self, prefix: str) -> list[str]:
        machines = json.loads(_run(["orbctl", "list", "-f", "json"]).stdout or "[]")
        return sorted(m["name"] for m in machines if m["name"].startswith(prefix))


def remove_prefix(prefix: str) -> None:
    """Delete every container and image whose name starts with a test's own prefix:
    docker workers and baselines, and the orbctl emulator's machines (orbfake-<name>)."""
    names = subprocess.run(["docker", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True).stdout.split()
    doomed = [n for n in names if n.startswith((prefix, f"orbfake-{prefix}"))]
    if doomed:
        subprocess.run(["docker", "rm", "-f", *doomed], capture_output=True)
    images = subprocess.run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True, text=True).stdout.split()
    doomed = [i for i in images if i.startswith((prefix, f"orbfake-{prefix}"))]
    if doomed:
        subprocess.run(["docker", "rmi", "-f", *doomed], capture_output=True)


def write_pyproject(folder: Path, provider: str, prefix: str, image: str = "orch-base:bookworm") -> None:
    image = image if provider == "docker" else "debian:bookworm"  # an OrbStack distro
    (folder / "pyproject.toml").write_text(
        f'[tool.orch]\nprovider = "{provider}"\nimage = "{image}"\nprefix = "{prefix}"\n'
        f'legacy_prefixes = ["{prefix}legacy-"]\n'
    )


FAKES = Path(__file__).resolve().parent / "fakes"
PROVIDERS = ["docker", "orbstack"]

BACKENDS = {"docker": DockerBackend(), "orbstack": OrbStackBackend()}
