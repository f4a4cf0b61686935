"""A command run with another provider than the checkout's.

The checkout is brought up with ``orch --provider podman up``; its pyproject names no
provider, so the default is docker. Every later command that names none must use podman
(what the state records), and one that names docker must refuse in one line, leaving the
podman worker as it is and making nothing on docker."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from backends import DockerBackend, PodmanBackend, remove_podman, remove_prefix, run_orch, run_pytest

podman, docker = PodmanBackend(), DockerBackend()


@pytest.fixture
def podman_checkout(tmp_path: Path, podman_engine: str, docker_engine: str, prefix: str) -> Iterator[Path]:
    """A project whose pyproject names no provider; whatever it leaves on podman or docker
    is deleted afterwards, and checked gone."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text(f'[tool.orch]\nimage = "{podman_engine}"\nprefix = "{prefix}"\n')
    yield project
    remove_podman(prefix, tmp_path)
    remove_prefix(prefix)
    assert podman.names(prefix) == [] and podman.images(prefix) == [] and docker.names(prefix) == []


def _one_line(proc, needle: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error: ") and needle in lines[0], lines[0]


def test_plain_commands_use_the_checkouts_provider_and_another_one_is_refused(podman_checkout: Path, prefix: str) -> None:
    project = podman_checkout
    made = run_orch(project, "--provider", "podman", "up", "--workers", "1")
    assert made.returncode == 0, made.stderr
    [vm] = podman.names(prefix)
    assert podman.running(vm)

    # plain commands: podman, as the state says (not docker's "missing")
    status = run_orch(project, "status", "--json")
    assert status.returncode == 0, status.stderr
    [row] = [r for r in json.loads(status.stdout) if r["kind"] == "worker"]
    assert (row["vm"], row["state"]) == (vm, "running")
    again = run_orch(project, "up", "--workers", "1", "--json")
    assert again.returncode == 0, again.stderr
    assert [r["action"] for r in json.loads(again.stdout)] == ["reused"]
    assert podman.names(prefix) == [vm] and docker.names(prefix) == []

    # another provider, named by the variable or the flag: one line, nothing touched or made
    identity = podman.identity(vm)
    fix = "this checkout's VMs are on podman, not docker"
    for args in (["reset", "gw0"], ["down"], ["status"], ["up", "--workers", "1"], ["exec", "gw0", "--", "true"]):
        _one_line(run_orch(project, *args, env={"ORCH_PROVIDER": "docker"}), fix)
    _one_line(run_orch(project, "--provider", "docker", "down"), "drop --provider")
    assert podman.identity(vm) == identity and podman.running(vm)
    assert docker.names(prefix) == [] and "@podman/" in (project / "inventories" / "gw0.py").read_text()

    # the pytest plugin: the same settings, the same answer
    (project / "test_vm.py").write_text(
        "import subprocess\n\n"
        "def test_vm(worker_vm):\n"
        "    assert subprocess.run(['podman', 'exec', worker_vm, 'true']).returncode == 0\n"
    )
    ran = run_pytest(project, "-n", "0", "test_vm.py")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    refused = run_pytest(project, "-n", "0", "test_vm.py", env={"ORCH_PROVIDER": "docker"})
    assert refused.returncode != 0 and fix in refused.stdout + refused.stderr
    assert "Traceback" not in refused.stdout + refused.stderr

    # plain down deletes the podman worker and its baseline: nothing is forgotten that still exists
    down = run_orch(project, "down")
    assert down.returncode == 0, down.stderr
    assert podman.names(prefix) == [] and podman.images(prefix) == []
