"""Shared fixtures. Tests that need Docker use the ``docker_engine`` fixture: where no
engine answers it skips on a developer's machine and FAILS in CI (CI=true), so CI can
never pass by skipping."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

BASE_IMAGE = os.environ.get("ORCH_BASE_IMAGE", "orch-base:bookworm")
ROOT = Path(__file__).resolve().parent.parent


def _engine_problem() -> str | None:
    try:
        proc = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"docker not usable: {err}"
    if proc.returncode != 0:
        return f"Docker engine not reachable: {proc.stderr.strip()}"
    proc = subprocess.run(["docker", "image", "inspect", BASE_IMAGE], capture_output=True, text=True)
    if proc.returncode != 0:
        return f"base image {BASE_IMAGE} missing (scripts/setup.sh builds it)"
    return None


@pytest.fixture(scope="session")
def docker_engine() -> str:
    """The base image name, once the engine answers and the image exists."""
    problem = _engine_problem()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"CI=true and {problem}: Docker tests must not be skipped", pytrace=False)
        pytest.skip(f"{problem} (not CI: skipped; run scripts/test.sh to set it up)")
    return BASE_IMAGE


def checkout_containers(checkout: str) -> list[str]:
    out = subprocess.run(
        ["docker", "ps", "-a", "-q", "--filter", f"label=orch.checkout={checkout}"], capture_output=True, text=True, check=True
    ).stdout
    return out.split()


def remove_checkout(checkout: str) -> None:
    """Delete every container and baseline image of one test checkout (by its labels)."""
    ids = checkout_containers(checkout)
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)
    images = subprocess.run(
        ["docker", "images", "-q", "--filter", f"reference=*-{checkout}-baseline"], capture_output=True, text=True
    ).stdout.split()
    if images:
        subprocess.run(["docker", "rmi", "-f", *set(images)], capture_output=True)


@pytest.fixture
def project(tmp_path: Path, docker_engine: str) -> Path:
    """A fresh project folder (its own checkout id) whose [tool.orch] names the base image
    and a prefix of its own, so that a sweep in one test never judges another test's (or
    the developer's) VMs; every VM of its checkout is deleted afterwards."""
    import secrets

    from orchestrator import naming

    prefix = f"t{secrets.token_hex(4)}"
    (tmp_path / "pyproject.toml").write_text(
        f'[tool.orch]\nimage = "{docker_engine}"\nprefix = "{prefix}"\nlegacy_prefixes = ["{prefix}legacy-"]\n'
    )
    yield tmp_path
    remove_checkout(naming.checkout_id(tmp_path / "inventories"))
