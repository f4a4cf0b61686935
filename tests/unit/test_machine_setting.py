"""``machine = true``: where it is read, what it changes, and the one line for a provider
that makes no machines."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.cli import cli
from orchestrator.core import settings as config
from orchestrator.core.context import Context
from orchestrator.primitives.errors import UsageError
from orchestrator.providers.fake import FakeProvider
from orchestrator.testing.conformance import contract_settings


def test_machine_is_read_from_pyproject_env_and_flag(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.orch]\n")
    assert config.load(cwd=tmp_path, env={}).machine is False
    assert config.load(cwd=tmp_path, env={"ORCH_MACHINE": "1"}).machine is True
    (tmp_path / "pyproject.toml").write_text("[tool.orch]\nmachine = true\n")
    assert config.load(cwd=tmp_path, env={}).machine is True
    assert config.load(cwd=tmp_path, env={}, overrides={"machine": False}).machine is False


def test_machine_must_be_true_or_false(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.orch]\nmachine = "yes"\n')
    with pytest.raises(UsageError, match="machine"):
        config.load(cwd=tmp_path, env={})


def test_orch_up_help_names_the_machine_flag() -> None:
    out = CliRunner().invoke(cli, ["up", "--help"]).output
    assert "--machine" in out and "systemd" in out


class NoMachines(FakeProvider):
    name = "fake"
    machine_image = ""


def test_a_provider_without_machines_refuses_in_one_line(tmp_path: Path) -> None:
    settings = contract_settings(tmp_path, "fake", machine=True)
    with pytest.raises(UsageError) as err:
        NoMachines(settings)
    assert "makes no machines" in str(err.value) and "\n" not in str(err.value)


def test_machine_picks_the_machine_image_and_changes_the_fingerprint(tmp_path: Path) -> None:
    plain = FakeProvider(contract_settings(tmp_path / "a", "fake"))
    machine = FakeProvider(contract_settings(tmp_path / "b", "fake", machine=True))
    assert "machine" not in plain.vm_settings()
    assert machine.vm_settings()["machine"] is True
    ctx = Context(machine.settings, machine)
    assert ctx.image == FakeProvider.machine_image
