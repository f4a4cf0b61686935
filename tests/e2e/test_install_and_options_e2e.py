"""What a new user does first, for real: install orch from its built wheel under its
distribution name into a new virtualenv, and have pytest find the plugin and bring up a
worker on Docker; and type the global options after the command (``orch up --provider
podman``), on real podman."""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from backends import PodmanBackend, clean_env, remove_podman, run_orch

ROOT = Path(__file__).resolve().parents[2]

TEST = """
def test_the_worker_answers(orch_worker):
    assert orch_worker.run("echo hi").stdout.strip() == "hi"
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtualenv with nothing but orch's wheel and what it depends on."""
    where = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(where / "dist"), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [wheel] = (where / "dist").glob("*.whl")
    assert wheel.name.startswith("pyinfra_orch-"), wheel.name
    venv.create(where / "venv", with_pip=True)
    pip = [str(where / "venv" / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    proc = subprocess.run([*pip, str(wheel)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return where / "venv" / "bin"


def in_venv(bin_dir: Path) -> dict[str, str]:
    env = clean_env()
    env["PATH"] = f"{bin_dir}:{env['PATH'].split(':', 1)[1]}"  # the new venv instead of the test run's
    env["VIRTUAL_ENV"] = str(bin_dir.parent)
    return env


def test_the_wheel_installs_as_pyinfra_orch_and_pytest_finds_the_plugin(installed: Path, project: Path) -> None:
    env = in_venv(installed)
    show = subprocess.run([str(installed / "pip"), "show", "pyinfra-orch"], capture_output=True, text=True, env=env)
    assert show.returncode == 0 and "Name: pyinfra-orch" in show.stdout, show.stderr
    version = subprocess.run([str(installed / "orch"), "--version"], capture_output=True, text=True, env=env)
    assert version.returncode == 0 and version.stdout.startswith("orch, version "), version.stderr
    (project / "test_it.py").write_text(TEST)
    argv = [str(installed / "pytest"), "-p", "no:cacheprovider", "-n", "2", "--orch-up"]
    try:
        proc = subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        header = next(line for line in proc.stdout.splitlines() if line.startswith("plugins:"))
        assert "pyinfra-orch-" in header, header
        assert "orch: bringing up" in proc.stdout
        assert "1 passed" in proc.stdout
    finally:
        subprocess.run([str(installed / "orch"), "down", "--force"], cwd=project, env=env, capture_output=True, timeout=300)


def test_orch_up_provider_podman_after_the_command(tmp_path: Path, podman_engine: str, prefix: str) -> None:
    """The project names no provider: `--provider podman` after the verb chooses it, and
    the commands after it find the workers on podman without being told again."""
    (tmp_path / "pyproject.toml").write_text(f'[tool.orch]\nimage = "orch-base:bookworm"\nprefix = "{prefix}"\n')
    try:
        up = run_orch(tmp_path, "up", "--workers", "1", "--provider", "podman", "-q")
        assert up.returncode == 0, up.stderr
        assert not [line for line in up.stderr.splitlines() if line.startswith("[")], up.stderr  # -q after the verb
        status = run_orch(tmp_path, "status", "--json")
        assert status.returncode == 0, status.stderr
        [row] = [r for r in json.loads(status.stdout) if r["kind"] == "worker"]
        assert row["state"] == "running"
        assert PodmanBackend().running(row["vm"])
        assert run_orch(tmp_path, "exec", "gw0", "--", "true").returncode == 0
        down = run_orch(tmp_path, "down", "--provider", "podman")
        assert down.returncode == 0, down.stderr
        assert not PodmanBackend().exists(row["vm"])
    finally:
        remove_podman(prefix, tmp_path)
