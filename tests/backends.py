"""How a test looks at a VM behind orch's back, per provider: the real Docker engine
for docker, the orbctl command line (tests/fakes/orbctl on PATH) for orbstack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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


class PodmanBackend(DockerBackend):
    """Through the podman command line (rootful podman on this machine)."""

    name = "podman"

    def exists(self, vm: str) -> bool:
        return _run(["podman", "container", "exists", vm]).returncode == 0

    def identity(self, vm: str) -> str:
        return _run(["podman", "inspect", "--type", "container", "-f", "{{.Id}}", vm]).stdout.strip()

    def running(self, vm: str) -> bool:
        return _run(["podman", "inspect", "--type", "container", "-f", "{{.State.Running}}", vm]).stdout.strip() == "true"

    def sh(self, vm: str, script: str) -> subprocess.CompletedProcess:
        return _run(["podman", "exec", vm, "sh", "-c", script])

    def stop(self, vm: str) -> None:
        _run(["podman", "stop", "-t", "1", vm])

    def remove(self, vm: str) -> None:
        _run(["podman", "rm", "-f", "-t", "0", vm])

    def names(self, prefix: str) -> list[str]:
        out = _run(["podman", "ps", "-a", "--format", "{{.Names}}"]).stdout.split()
        return sorted(n for n in out if n.startswith(prefix))

    def images(self, prefix: str) -> list[str]:
        """Tagged images named with ``prefix`` (podman lists them under localhost/)."""
        out = _run(["podman", "images", "--format", "{{.Repository}}:{{.Tag}}"]).stdout.split()
        return sorted(i for i in out if i.removeprefix("localhost/").startswith(prefix))

    def images_of(self, folder: Path) -> list[str]:
        """Ids of images (tagged or not) whose orch.inventory label is under ``folder``."""
        out = _run(["podman", "images", "-a", "--no-trunc", "--format", '{{.ID}} {{index .Labels "orch.inventory"}}']).stdout
        return sorted({ref for ref, _, inv in (line.partition(" ") for line in out.splitlines()) if inv.startswith(str(folder))})


def remove_podman(prefix: str, folder: Path) -> None:
    """Delete every podman container named with a test's prefix, and every image named
    with it or labelled as made under the test's ``folder`` (what pyinfra commits)."""
    backend = PodmanBackend()
    doomed = backend.names(prefix)
    if doomed:
        _run(["podman", "rm", "-f", "-t", "0", *doomed])
    images = backend.images(prefix) + backend.images_of(folder)
    if images:
        _run(["podman", "rmi", "-f", *images])


class IncusBackend(DockerBackend):
    """Through the incus command line (the local Incus, its default project)."""

    name = "incus"

    def _info(self, vm: str) -> dict | None:
        found = json.loads(_run(["incus", "list", f"^{vm}$", "--format", "json"]).stdout or "[]")
        return next((i for i in found if i["name"] == vm), None)

    def exists(self, vm: str) -> bool:
        return self._info(vm) is not None

    def identity(self, vm: str) -> str:
        return (self._info(vm) or {}).get("config", {}).get("volatile.uuid", "")

    def running(self, vm: str) -> bool:
        return (self._info(vm) or {}).get("status") == "Running"

    def sh(self, vm: str, script: str) -> subprocess.CompletedProcess:
        return _run(["incus", "exec", vm, "-T", "--", "sh", "-c", script])

    def stop(self, vm: str) -> None:
        _run(["incus", "stop", "--force", vm])

    def remove(self, vm: str) -> None:
        _run(["incus", "delete", "--force", vm])

    def names(self, prefix: str) -> list[str]:
        out = _run(["incus", "list", "--format", "csv", "--columns", "n"]).stdout.split()
        return sorted(n for n in out if n.startswith(prefix))


def remove_incus(prefix: str) -> None:
    """Delete every Incus instance whose name starts with a test's own prefix."""
    doomed = IncusBackend().names(prefix)
    if doomed:
        _run(["incus", "delete", "--force", *doomed])


def remove_prefix(prefix: str) -> None:
    """Delete every container and image whose name starts with a test's own prefix:
    docker workers and baselines, and the orbctl emulator's machines (orbfake-<name>)."""
    names = subprocess.run(["docker", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True).stdout.split()
    doomed = [n for n in names if n.startswith((prefix, f"orbfake-{prefix}"))]
    if doomed:
        subprocess.run(["docker", "rm", "-f", *doomed], capture_output=True)
    images = subprocess.run(
        ["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True, text=True
    ).stdout.split()
    doomed = [i for i in images if i.startswith((prefix, f"orbfake-{prefix}"))]
    if doomed:
        subprocess.run(["docker", "rmi", "-f", *doomed], capture_output=True)


def write_pyproject(folder: Path, provider: str, prefix: str, image: str = "orch-base:bookworm") -> None:
    image = image if provider in ("docker", "podman") else "debian:bookworm"  # an OrbStack distro
    (folder / "pyproject.toml").write_text(
        f'[tool.orch]\nprovider = "{provider}"\nimage = "{image}"\nprefix = "{prefix}"\nlegacy_prefixes = ["{prefix}legacy-"]\n'
    )


FAKES = Path(__file__).resolve().parent / "fakes"
PROVIDERS = ["docker", "orbstack"]

import pytest  # noqa: E402

#: Run a test on the real Docker engine and on the emulated OrbStack.
both_providers = pytest.mark.parametrize("provider_name", PROVIDERS)

BACKENDS = {"docker": DockerBackend(), "orbstack": OrbStackBackend(), "incus": IncusBackend()}


BIN = Path(sys.executable).parent


def clean_env(**extra: str) -> dict[str, str]:
    """The environment a user's shell would give orch or pytest: none of this test run's
    PYTEST_/ORCH_/ORBCTL_FAKE_ variables, the virtualenv's bin first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "ORCH_", "ORBCTL_FAKE_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def run_orch(project: Path, *args: str, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "orch"), *args], cwd=project, env=clean_env(**(env or {})), capture_output=True, text=True, timeout=timeout
    )


def run_pytest(project: Path, *args: str, timeout: float = 600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly", *args]
    return subprocess.run(argv, cwd=project, env=clean_env(**(env or {})), capture_output=True, text=True, timeout=timeout)


def gone_checkout(tmp: Path, checkout: str, kind: str = "worker", worker: str = "gw0", run: str = "") -> dict[str, str]:
    """The labels orch gives a VM of a checkout whose folder has since been deleted."""
    from orchestrator.primitives.kinds import Kind
    from orchestrator.primitives.labels import Owner
    from orchestrator.state.checkouts import CheckoutRef

    folder = tmp / f"gone-{checkout}" / "inventories"
    folder.mkdir(parents=True, exist_ok=True)
    where = CheckoutRef.here(folder)
    folder.rmdir()
    return Owner(Kind(kind), checkout, where.inventory, where.host, where.fs, worker if kind == "worker" else "", run).labels()


def make_orphans(backend: DockerBackend, names: list[str], checkout: str, tmp: Path, *, start: bool = False) -> None:
    """VMs of a checkout whose folder has been deleted, made as orch makes them: labelled
    on Docker; on OrbStack named, with the checkout in the machine's registry."""
    labels = gone_checkout(tmp, checkout)
    if backend.name == "docker":
        for name in names:
            worker = gone_checkout(tmp, checkout, worker=name.rsplit("-", 1)[1])
            args = [a for k, v in worker.items() for a in ("--label", f"{k}={v}")]
            subprocess.run(
                [
                    "docker",
                    "run" if start else "create",
                    *(["-d"] if start else []),
                    "--name",
                    name,
                    *args,
                    "orch-base:bookworm",
                    *(["sleep", "infinity"] if start else ["true"]),
                ],
                check=True,
                capture_output=True,
            )
        return
    from orchestrator.primitives import labels as L
    from orchestrator.state import checkouts as registry

    registry.register(checkout, registry.CheckoutRef(labels[L.INVENTORY], labels[L.HOST], labels[L.FS]))
    for name in names:
        subprocess.run(["orbctl", "create", "debian", name], check=True, capture_output=True)
