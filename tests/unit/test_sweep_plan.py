"""Sweep's decisions, on a fake provider's listing (no Docker): the seed's legacy prefixes
only with --legacy, and nothing without orch's name and labels."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import config, labels as L
from orchestrator.providers.base import Provider, VMInfo
from orchestrator.sweep import SEED_PREFIXES, Sweeper, parse_duration


class ListingOnly(Provider):
    name = "fake"

    def __init__(self, settings, vms):
        super().__init__(settings)
        self.vms = vms

    def list(self, *, all_vms=False):
        return self.vms

    check = ensure_image = create = start = delete = inspect = wait_ready = host = lambda *a, **k: None


def plan(tmp_path: Path, vms: list[VMInfo], **kwargs):
    settings = config.load(cwd=tmp_path, env={})
    return {d.vm: d for d in Sweeper(settings, ListingOnly(settings, vms)).plan(**kwargs)}


def test_seed_prefixes_only_with_legacy(tmp_path: Path) -> None:
    vms = [VMInfo(f"{p}123", "running") for p in SEED_PREFIXES] + [VMInfo("orchestra-db", "running"), VMInfo("gw0", "running")]
    assert all(d.kind == "foreign" or not d.delete for d in plan(tmp_path, vms).values())
    legacy = plan(tmp_path, vms, legacy=True)
    assert {vm for vm, d in legacy.items() if d.delete} == {f"{p}123" for p in SEED_PREFIXES}
    assert "orchestra-db" not in legacy or not legacy["orchestra-db"].delete
    assert "gw0" not in legacy


def test_orch_name_without_labels_is_reported_and_kept(tmp_path: Path) -> None:
    d = plan(tmp_path, [VMInfo("orch-0123abcd-gw0", "running", labels={})])["orch-0123abcd-gw0"]
    assert not d.delete and d.reason.startswith("not orch's")


def test_labels_without_orch_name_are_kept(tmp_path: Path) -> None:
    labels = L.worker_labels("0123abcd", "gw0", str(tmp_path / "gone"))
    d = plan(tmp_path, [VMInfo("my-own-vm", "running", labels=labels)])["my-own-vm"]
    assert not d.delete


def test_oneoff_of_a_dead_run_is_deleted(tmp_path: Path) -> None:
    labels = L.oneoff_labels("0123abcd", "20260101000000-1-0123abcd", str(tmp_path / "inventories"))
    name = "orch-0123abcd-x20260101000000-1-0123456789ab"
    d = plan(tmp_path, [VMInfo(name, "running", labels=labels)])[name]
    assert d.delete and "run that is gone" in d.reason


@pytest.mark.parametrize("text, seconds", [("90", 90), ("90s", 90), ("30m", 1800), ("2h", 7200), ("1.5d", 129600)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-1h", "2w", "1h30m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(Exception, match="invalid duration"):
        parse_duration(text)
