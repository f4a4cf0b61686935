"""The CLI's answers to user mistakes: one line on stderr naming the fix, a non-zero exit
code, and nothing changed. No Docker needed: each is refused before any backend call."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.cli import cli


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "pyproject.toml").write_text('[tool.orch]\nimage = "orch-base:bookworm"\nprovider = "docker"\n')
    monkeypatch.chdir(tmp_path)
    for var in ("ORCH_IMAGE", "ORCH_PROVIDER", "ORCH_INVENTORY_DIR", "ORCH_WORKERS"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.mark.parametrize(
    "args, fix",
    [
        (["up", "--workers", "0"], "--workers must be between 1 and 256"),
        (["up", "--workers", "-1"], "--workers must be between 1 and 256"),
        (["up", "--workers", "10000"], "--workers must be between 1 and 256"),
        (["down", "../x"], "use gw0 … gw255"),
        (["down", "gw1;rm -rf /"], "use gw0 … gw255"),
        (["down", ""], "use gw0 … gw255"),
        (["down", "gw 1"], "use gw0 … gw255"),
        (["down", "gw99"], "not a worker of this checkout"),
        (["--provider", "vmware", "up"], "unknown provider 'vmware': choose one of"),
        (["--prefix", "Bad_Prefix", "status"], "invalid prefix"),
        (["up", "--parallel", "0"], "parallel must be between 1 and 64"),
    ],
)
def test_bad_input_is_one_line_with_the_fix(project: Path, args: list[str], fix: str) -> None:
    result = invoke(*args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ") and fix in lines[0]
    assert "Traceback" not in result.output
    assert not (project / "inventories" / ".orch" / "state.json").exists()


def test_unknown_setting_in_pyproject_is_named(project: Path) -> None:
    (project / "pyproject.toml").write_text("[tool.orch]\nworkerz = 3\n")
    result = invoke("status")
    assert result.exit_code == 2 and "unknown setting 'workerz'" in result.stderr


def test_corrupt_state_names_the_repair(project: Path) -> None:
    state = project / "inventories" / ".orch" / "state.json"
    state.parent.mkdir(parents=True)
    state.write_text('{"version": 1, "checkout": ')
    result = invoke("status")
    assert result.exit_code == 1
    assert "is corrupt" in result.stderr and "orch repair" in result.stderr
    assert state.read_text() == '{"version": 1, "checkout": '  # untouched


def test_status_without_workers_says_what_to_do(project: Path) -> None:
    result = invoke("status")
    assert result.exit_code == 0 and "run `orch up --workers N`" in result.stderr


def test_help_explains_every_command() -> None:
    result = invoke("--help")
    for command in ("up", "status", "down"):
        assert command in result.output
    assert "[tool.orch]" in result.output
    up_help = invoke("up", "--help").output
    for option in ("--workers", "--image", "--parallel", "--prune", "--no-wait", "--json"):
        assert option in up_help


# -- every bad input is one line naming the fix ---------------------------------


def _file(project: Path) -> str:
    (project / "a-file").write_text("not a folder\n")
    return str(project / "a-file")


@pytest.mark.parametrize(
    "args, env, fix",
    [
        (["up", "--pool", "x"], {}, "'x' is neither a number nor auto (see orch up --help)"),
        (["--connector", "telnet", "status"], {}, "'telnet' is not one of 'native', 'ssh' (see orch --help)"),
        (["exec", "gw0"], {}, "name a command to run: orch exec gw0 -- CMD"),
        (["status", "--nosuch"], {}, "No such option '--nosuch' (see orch status --help)"),
        (["bogus"], {}, "No such command 'bogus'. Did you mean 'logs'? (see orch --help)"),
        (["up"], {"ORCH_HOME": _file}, "is not a folder orch can write"),
        (["sweep"], {"ORCH_HOME": _file}, "is not a folder orch can write"),
        (["up"], {"ORCH_HOME": lambda p: "/proc/orch"}, "is not a folder orch can write"),
        (["sweep"], {"ORCH_HOME": lambda p: "/proc/self/orch"}, "is not a folder orch can write"),
        (["sweep"], {"ORCH_INVENTORY_DIR": _file}, "is a file, not a folder"),
        (["up"], {"ORCH_STANDBY": lambda p: "yes"}, "ORCH_STANDBY: standby must be true or false"),
    ],
)
def test_more_bad_input_is_one_line_with_the_fix(project: Path, args: list[str], env: dict, fix: str) -> None:
    # a docker client that is not there: no input here may reach an engine
    (project / "pyproject.toml").write_text(
        '[tool.orch]\nimage = "orch-base:bookworm"\nprovider = "docker"\n[tool.orch.docker]\ndocker = "/nonexistent/docker"\n'
    )
    env = {k: make(project) for k, make in env.items()}
    result = CliRunner().invoke(cli, args, env=env, catch_exceptions=False, prog_name="orch")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ") and fix in lines[0], lines[0]
    assert not (project / "inventories" / ".orch" / "state.json").exists()


def test_no_arguments_still_print_the_help(project: Path) -> None:
    result = CliRunner().invoke(cli, [], prog_name="orch")
    assert "Usage: orch [OPTIONS] COMMAND" in result.output and "orch up --workers 4" in result.output


def test_an_engine_that_hangs_is_one_error_line(project: Path, tmp_path: Path) -> None:
    """A docker client that answers `version` and then hangs: one Error line, no WARNING first."""
    hung = tmp_path / "hung-docker"
    hung.write_text('#!/bin/sh\n[ "$1" = version ] && { echo 27.0; exit 0; }\nexec sleep 30\n')
    hung.chmod(0o755)
    (project / "pyproject.toml").write_text(
        '[tool.orch]\nimage = "orch-base:bookworm"\nprovider = "docker"\nretries = 0\n'
        f'timeouts = {{ image = 1 }}\n[tool.orch.docker]\ndocker = "{hung}"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCH_", "PYTEST_"))}
    orch = Path(sys.executable).with_name("orch")
    proc = subprocess.run([str(orch), "up", "--workers", "1"], cwd=project, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "timed out after 1s" in lines[0], proc.stderr


def test_every_command_refills_spares_in_the_background(project: Path) -> None:
    """A swap or a claimed pool VM is refilled by the background maintainer; the CLI's
    context must be made with it, or `orch reset` on a standby leaves the next reset a
    hard one."""
    from orchestrator.cli import Invocation
    from orchestrator.core.maintainer import spawn_maintainer

    ctx = Invocation(None, "fake", None).context()
    assert ctx._refill is spawn_maintainer
