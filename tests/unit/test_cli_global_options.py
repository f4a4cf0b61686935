"""The global options (--provider, --inventory-dir, --connector, --prefix, -v, -q) work
where users type them: before the command or after it, with the same meaning. On the
FakeProvider, through the real CLI in-process."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from orchestrator.cli import cli


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in [v for v in os.environ if v.startswith(("ORCH_", "PYTEST_XDIST"))]:
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "pyproject.toml").write_text(
        f'[tool.orch]\nimage = "fake:bookworm"\nprefix = "p"\n[tool.orch.fake]\npath = "{tmp_path / "fake.json"}"\n'
    )
    monkeypatch.chdir(tmp_path)
    return tmp_path


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def vms(project: Path) -> list[str]:
    path = project / "fake.json"
    return sorted(json.loads(path.read_text())["vms"]) if path.exists() else []


@pytest.mark.parametrize("where", ["before", "after"])
def test_provider_inventory_dir_and_prefix_after_the_command(project: Path, where: str) -> None:
    opts = ["--provider", "fake", "--inventory-dir", str(project / "inv"), "--prefix", "q"]
    args = [*opts, "up", "--workers", "1"] if where == "before" else ["up", "--workers", "1", *opts]
    result = invoke(*args)
    assert result.exit_code == 0, result.stderr
    assert (project / "inv" / "gw0.py").exists()
    assert not (project / "inventories").exists()
    assert any(name.startswith("q-") and name.endswith("-gw0") for name in vms(project)), vms(project)
    status = invoke("status", "--json", *opts)
    assert status.exit_code == 0, status.stderr
    rows = [row for row in json.loads(status.stdout) if row["kind"] == "worker"]
    assert [(row["worker"], row["state"]) for row in rows] == [("gw0", "running")]


@pytest.mark.parametrize(
    "args, fix",
    [
        (["up", "--provider", "vmware"], "unknown provider 'vmware': choose one of"),
        (["status", "--prefix", "Bad_Prefix"], "invalid prefix"),
        (["down", "gw0", "--provider", "vmware"], "unknown provider 'vmware'"),
        (["up", "--connector", "telnet"], "'telnet' is not one of 'native', 'ssh'"),
    ],
)
def test_a_bad_global_option_after_the_command_is_the_same_one_line(project: Path, args: list[str], fix: str) -> None:
    result = invoke(*args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fix in lines[0], result.stderr
    assert vms(project) == []


def test_quiet_after_the_command_drops_the_progress_lines(project: Path) -> None:
    loud = invoke("--provider", "fake", "up", "--workers", "1")
    quiet = invoke("--provider", "fake", "reset", "gw0", "-q")
    assert loud.exit_code == 0 and quiet.exit_code == 0, quiet.stderr
    assert "gw0: " in loud.stderr
    assert not [line for line in quiet.stderr.splitlines() if line.startswith("[")], quiet.stderr


def test_verbose_after_the_command_logs(project: Path) -> None:
    quiet = invoke("--provider", "fake", "up", "--workers", "1")
    verbose = invoke("--provider", "fake", "reset", "gw0", "-vv")
    assert quiet.exit_code == 0 and verbose.exit_code == 0, verbose.stderr
    assert "orch: DEBUG: " not in quiet.stderr
    assert "orch: DEBUG: " in verbose.stderr


def test_after_the_command_wins_over_before(project: Path) -> None:
    result = invoke("--provider", "vmware", "up", "--workers", "1", "--provider", "fake")
    assert result.exit_code == 0, result.stderr
    assert vms(project)


def test_status_keeps_its_own_q(project: Path) -> None:
    """`orch status -q` prints only the VM names (as `docker ps -q`): status's own option
    of that name stays; status prints no progress lines to silence anyway."""
    assert invoke("--provider", "fake", "up", "--workers", "1").exit_code == 0
    result = invoke("status", "-q")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [vm for vm in vms(project) if vm.endswith("-gw0")] == [line for line in lines if line.endswith("-gw0")]
    assert all(line and " " not in line for line in lines), result.stdout  # names only, no table


def test_every_command_lists_the_global_options() -> None:
    for name, command in cli.commands.items():
        if command.hidden:
            continue
        help_text = CliRunner().invoke(cli, [name, "--help"]).output
        for opt in ("--provider", "--inventory-dir", "--connector", "--prefix", "--verbose"):
            assert opt in help_text, (name, opt)
