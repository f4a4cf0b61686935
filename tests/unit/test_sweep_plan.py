"""Sweep's decisions on the FakeProvider (no Docker): legacy prefixes only with --legacy,
nothing without orch's name and matching labels, and no judgement by folder, state or
lease where the sweep cannot see the checkout's filesystem."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fakes_core import fake_orch

from orchestrator.primitives import labels as L
from orchestrator.primitives.clock import parse_duration
from orchestrator.primitives.kinds import Kind
from orchestrator.primitives.labels import Owner
from orchestrator.providers.base import VMInfo
from orchestrator.state import location
from orchestrator.state.leases import Lease
from orchestrator.verbs.oneoffs import create_oneoff
from orchestrator.verbs.reset import reset
from orchestrator.verbs.sweep import LEGACY_PREFIXES, Sweeper
from orchestrator.verbs.up import up


def plan(orch, **kwargs):
    return {d.vm: d for d in Sweeper(orch.settings, orch.provider).plan(**kwargs)}


def add_vm(orch, name: str, labels: dict[str, str] | None = None) -> None:
    from orchestrator.providers.fake import FakeVM

    orch.provider.vms[name] = FakeVM(name, "running", dict(labels or {}), "fake:bookworm")


def test_legacy_prefixes_only_with_legacy(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path)
    for name in [f"{p}123" for p in LEGACY_PREFIXES] + ["orchestra-db", "gw0"]:
        add_vm(orch, name)
    assert not any(d.delete for d in plan(orch).values())
    legacy = plan(orch, legacy=True)
    assert {vm for vm, d in legacy.items() if d.delete} == {f"{p}123" for p in LEGACY_PREFIXES}
    assert "orchestra-db" not in legacy or not legacy["orchestra-db"].delete
    assert "gw0" not in legacy


def test_orch_name_without_labels_is_reported_and_kept(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path)
    add_vm(orch, "orch-0123abcd-gw0")
    d = plan(orch)["orch-0123abcd-gw0"]
    assert not d.delete and d.reason.startswith("not orch's (no orch labels)")


def test_labels_without_orch_name_are_kept(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path)
    add_vm(orch, "my-own-vm", orch.owner(Kind.WORKER, worker="gw0").labels())
    assert not plan(orch)["my-own-vm"].delete


def test_labels_of_another_worker_under_a_workers_name_are_not_orchs(tmp_path: Path) -> None:
    """Defect 3: gw0's labels on a container named like gw2 is nobody's worker."""
    orch = fake_orch(tmp_path)
    up(orch, 3)
    gw2 = orch.vm_name("gw2")
    orch.provider.vms[gw2].labels = orch.owner(Kind.WORKER, worker="gw0").labels()
    d = plan(orch)[gw2]
    assert not d.delete and "labels say worker gw0, the name says gw2" in d.reason
    [result] = reset(orch, ["gw2"])
    assert not result.ok and "is not orch's" in result.error
    assert gw2 in orch.provider.vms  # left alone


def test_oneoff_of_a_dead_run_is_deleted_and_a_live_runs_kept(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path)
    up(orch, 1)
    live = Lease(orch.settings.inventory_dir)
    try:
        mine = create_oneoff(orch, live.run).vm
        dead = create_oneoff(orch, "20260101000000-1-0123abcd").vm
        decisions = plan(orch)
        assert not decisions[mine].delete and "alive" in decisions[mine].reason
        assert decisions[dead].delete and "run that is gone" in decisions[dead].reason
    finally:
        live.release()


def test_a_checkout_on_another_host_is_judged_by_age_only(tmp_path: Path) -> None:
    """Defect 2, the remote DOCKER_HOST case: the folder is not there, but the VM was made
    elsewhere: only --older-than may delete it."""
    orch = fake_orch(tmp_path)
    elsewhere = Owner(
        Kind.WORKER, "0badc0de", "/home/ci/proj/inventories", "otherhost123", "1:2,1:1", "gw0", created="2020-01-01T00:00:00Z"
    )
    name = "orch-0badc0de-gw0"
    add_vm(orch, name, elsewhere.labels())
    d = plan(orch)[name]
    assert not d.delete and "made on another host" in d.reason and "only --older-than" in d.reason
    aged = plan(orch, older_than=3600)[name]
    assert aged.delete and "cannot be seen from here" in aged.reason


def test_a_hidden_checkout_folder_is_not_taken_for_a_gone_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect 2, the mount-namespace case: the folder's path resolves to another folder
    (a tmpfs over it): sweep cannot tell, and keeps everything."""
    orch = fake_orch(tmp_path)
    up(orch, 2)
    real = location._ident
    inv = os.path.realpath(orch.settings.inventory_dir)
    monkeypatch.setattr(location, "_ident", lambda p: "99:1" if str(p) == inv else real(p))
    decisions = plan(orch)
    for w in ("gw0", "gw1"):
        d = decisions[orch.vm_name(w)]
        assert not d.delete and "not the one it was made in" in d.reason


def test_a_deleted_checkout_folder_is_gone_when_its_parents_are_seen(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path)
    up(orch, 1)
    import shutil

    shutil.rmtree(orch.settings.inventory_dir)
    d = plan(orch)[orch.vm_name("gw0")]
    assert d.delete and "inventory folder is gone" in d.reason


@pytest.mark.parametrize("bad", ["symlink", "folder", "fifo"])
def test_a_damaged_runs_folder_keeps_that_checkouts_vms_and_sweep_goes_on(tmp_path: Path, bad: str) -> None:
    """Defect 4: one checkout's bad lease file never stops the sweep of the others."""
    a = fake_orch(tmp_path / "a")
    b = fake_orch(tmp_path / "b", provider=a.provider)
    up(a, 1)
    up(b, 1)
    runs = a.settings.inventory_dir / ".orch" / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    target = runs / "20260101000000-1-0123abcd.lock"
    if bad == "symlink":
        target.symlink_to("/etc/passwd")
    elif bad == "folder":
        target.mkdir()
    else:
        os.mkfifo(target)
    import shutil

    shutil.rmtree(b.settings.inventory_dir)  # b's checkout is gone: its worker is an orphan
    decisions = plan(a)
    assert not decisions[a.vm_name("gw0")].delete and "damaged" in decisions[a.vm_name("gw0")].reason
    assert decisions[b.vm_name("gw0")].delete


def test_unrecorded_vm_of_a_visible_checkout_is_deleted(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path)
    up(orch, 1)
    stray = orch.vm_name("gw9")
    add_vm(orch, stray, orch.owner(Kind.WORKER, worker="gw9").labels())
    d = plan(orch)[stray]
    assert d.delete and "does not record it" in d.reason
    assert not plan(orch)[orch.vm_name("gw0")].delete


def test_sweep_forgets_the_oneoffs_it_deletes(tmp_path: Path) -> None:
    """Defect 9: records of deleted one-offs must not stay in the state."""
    orch = fake_orch(tmp_path)
    up(orch, 1)
    dead = create_oneoff(orch, "20260101000000-1-0123abcd").vm
    sweeper = Sweeper(orch.settings, orch.provider)
    sweeper.execute(sweeper.plan())
    assert dead not in orch.provider.vms
    assert dead not in orch.store.read().oneoffs


def test_label_checkout_must_match_the_name(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path)
    labels = orch.owner(Kind.WORKER, worker="gw0").labels()
    labels[L.CHECKOUT] = "0badc0de"
    add_vm(orch, orch.vm_name("gw0"), labels)
    d = plan(orch)[orch.vm_name("gw0")]
    assert not d.delete and "labels say checkout 0badc0de" in d.reason


@pytest.mark.parametrize("text, seconds", [("90", 90), ("90s", 90), ("30m", 1800), ("2h", 7200), ("1.5d", 129600)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-1h", "2w", "1h30m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(Exception, match="invalid duration"):
        parse_duration(text)


def test_vminfo_is_what_providers_return() -> None:
    assert VMInfo("x", "running").running


def _age(orch, *names: str) -> None:
    """Make these VMs old enough for ``--older-than``."""
    for name in names:
        orch.provider.vms[name].labels[L.CREATED] = "2020-01-01T00:00:00Z"


def test_a_standby_swapped_in_while_sweep_runs_is_neither_deleted_nor_reported_deleted(tmp_path: Path) -> None:
    """Sweep planned to delete gw0 and its standby (older than
    --older-than), then a reset swapped the standby in under gw0's name. The delete by
    the standby's old name does nothing and must not say "deleted"; the delete by gw0's
    name would hit the VM that was the standby: it now belongs to something else, and is
    left alone."""
    orch = fake_orch(tmp_path, standby=True)
    up(orch, 1)
    worker, standby = orch.vm_name("gw0"), orch.store.read().standbys["gw0"].vm
    _age(orch, worker, standby)
    sweeper = Sweeper(orch.settings, orch.provider)
    decisions = {d.vm: d for d in sweeper.plan(older_than=3600)}
    assert decisions[worker].delete and decisions[standby].delete
    swapped_in = dict(orch.provider.vms[standby].labels)
    assert reset(orch, ["gw0"])[0].action == "swapped"  # between sweep's plan and its deletions
    sweeper.execute(list(decisions.values()))
    assert worker in orch.provider.vms and orch.provider.vms[worker].labels == swapped_in  # not deleted
    assert decisions[standby].result not in ("deleted", "failed") and "gone" in decisions[standby].result
    assert decisions[worker].result == "kept" and "another VM" in decisions[worker].reason
    assert orch.store.read().workers["gw0"].vm == worker  # the state still has its worker


def test_a_checkout_deleted_while_sweep_runs_is_never_made_again(tmp_path: Path) -> None:
    """Sweep forgets what it deleted in a checkout's state only while that state exists:
    a checkout removed between the plan and the forget gets no `.orch` folder, lock or
    state back (it would hide its other VMs from the next sweep)."""
    import shutil

    orch = fake_orch(tmp_path / "checkout")
    up(orch, 1)
    oneoff = create_oneoff(orch, "20260101000000-1-0123abcd").vm  # of a run that is gone
    sweeper = Sweeper(orch.settings, orch.provider)
    decisions = sweeper.plan()
    assert next(d for d in decisions if d.vm == oneoff).delete
    shutil.rmtree(orch.settings.inventory_dir)
    sweeper.execute(decisions)
    assert oneoff not in orch.provider.vms
    assert not orch.settings.inventory_dir.exists()


def test_a_sweep_keeps_the_registry_entry_of_a_gone_checkout_it_saw_nothing_of(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without labels (OrbStack) the registry is all that says where a checkout lived. A
    sweep under another prefix (or provider) sees none of a gone checkout's VMs: dropping
    its entry made them unjudgeable forever ("no record of where its checkout is"). Only
    the entry of a gone checkout whose VMs this sweep deleted goes."""
    import shutil

    from orchestrator.state import checkouts as registry
    from orchestrator.verbs.sweep import sweep

    monkeypatch.setenv("ORCH_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)  # as the CLI runs it
    mine = fake_orch(tmp_path / "mine")
    up(mine, 1)
    theirs = fake_orch(tmp_path / "theirs", prefix="other")  # VMs this sweep does not judge
    up(theirs, 1)
    gone = fake_orch(tmp_path / "gone")
    up(gone, 1)
    for orch in (theirs, gone):
        shutil.rmtree(orch.settings.inventory_dir)
    gone.provider.vms.update(mine.provider.vms)  # the backend this sweep looks at: mine and gone's
    sweep(mine.settings, gone.provider)
    assert registry.lookup(gone.checkout) is None  # swept here: nothing of it is left
    assert registry.lookup(theirs.checkout) is not None  # another prefix's sweep still needs it
    assert registry.lookup(mine.checkout) is not None
