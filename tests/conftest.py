"""Shared fixtures. Tests that need Docker use the ``docker_engine`` fixture: where no
engine answers it skips on a developer's machine and FAILS in CI (CI=true), so CI can
never pass by skipping."""

from __future__ import annotations

import os
import subprocess
import sys
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


FAKES = ROOT / "tests" / "fakes"

sys.path.insert(0, str(Path(__file__).parent))
from backends import BACKENDS, PROVIDERS, remove_prefix, write_pyproject  # noqa: E402


@pytest.fixture(params=PROVIDERS)
def provider_name(request: pytest.FixtureRequest) -> str:
    """Each test that uses a project runs on both providers (a test may narrow it with
    ``@pytest.mark.parametrize("provider_name", [...])``)."""
    return request.param


@pytest.fixture
def backend(provider_name: str):
    return BACKENDS[provider_name]


@pytest.fixture
def prefix() -> str:
    import secrets

    return f"t{secrets.token_hex(4)}"


@pytest.fixture
def project(tmp_path: Path, docker_engine: str, provider_name: str, prefix: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh project folder (its own checkout id) on one provider, with a prefix of its
    own so that a sweep in one test never judges another test's (or the developer's)
    VMs; everything named with that prefix is deleted afterwards. For orbstack the real
    pyinfra-orbstack package runs against tests/fakes/orbctl, put first on PATH."""
    if provider_name == "orbstack":
        monkeypatch.setenv("PATH", f"{FAKES}{os.pathsep}{os.environ.get('PATH', '')}")
    write_pyproject(tmp_path, provider_name, prefix, docker_engine)
    yield tmp_path
    remove_prefix(prefix)
