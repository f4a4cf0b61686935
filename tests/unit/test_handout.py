"""No test is handed a worker that is unfinished or owes a reset, on the FakeProvider:
a reset killed at every step leaves a record the plugin refuses to hand out as it is,
and the plugin's next taker makes it again."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes_core import fake_orch

from orchestrator.primitives.kinds import Kind
from orchestrator.providers.fake import Crash
from orchestrator.pytest_plugin.handout import unfit
from orchestrator.state.records import CREATING, READY
from orchestrator.verbs.repair import repair
from orchestrator.verbs.reset import reset
from orchestrator.verbs.up import up

#: (operation, after) where a hard reset is killed; "personalize" is the deploy on the new VM.
HARD = [("delete", False), ("delete", True), ("clone", False), ("clone", True), ("ready", False), ("personalize", False)]
#: ... and where a swap for the standby is killed.
SWAP = [("inspect", False), ("rename", False), ("second rename", False)]


def crash_at(orch, operation: str, after: bool) -> None:
    if operation == "personalize":

        def hook(name: str, vm: str) -> None:
            if "personalize" in name:
                raise Crash(f"crash while personalizing {vm}")

        orch.deployer.hook = hook
    elif operation == "second rename":
        real, calls = orch.provider.rename, []

        def rename(vm: str, new: str) -> None:
            calls.append(vm)
            if len(calls) == 2:
                raise Crash("crash before the second rename")
            real(vm, new)

        orch.provider.rename = rename
    else:
        orch.provider.faults.crash(operation, after=after)


DEBT = "after test_x.py::test_dirty"


def owe(orch, worker: str = "gw0") -> None:
    """Record the reset a marked test owes, as the plugin does."""
    with orch.store.transaction() as state:
        state.workers[worker].reset_pending = DEBT


def clean_worker(orch, worker: str = "gw0") -> None:
    data = orch.store.read()
    rec = data.workers[worker]
    assert rec.phase == READY and rec.reset_pending == "" and unfit(data, worker) is None
    vm = orch.provider.vms[rec.vm]
    assert vm.files.get("/etc/orch-worker") == f"{worker}\n" and "/etc/dirty" not in vm.files


@pytest.mark.parametrize("operation, after", HARD)
def test_a_hard_reset_killed_anywhere_is_never_handed_out_and_is_made_again(tmp_path: Path, operation: str, after: bool) -> None:
    orch = fake_orch(tmp_path)
    up(orch, 1)
    orch.provider.vms[orch.vm_name("gw0")].files["/etc/dirty"] = "a test was here"
    crash_at(orch, operation, after)
    with pytest.raises(Crash):
        reset(orch, ["gw0"], lock=False)
    orch.deployer.hook = None
    assert unfit(orch.store.read(), "gw0") is not None  # the fixture will not hand it out as it is
    [result] = reset(orch, ["gw0"], lock=False, finish=True)  # what the fixture does instead
    assert result.ok, result.error
    clean_worker(orch)


@pytest.mark.parametrize("standby, operation, after", [(False, *p) for p in HARD] + [(True, *p) for p in SWAP])
def test_a_reset_owed_by_a_test_is_kept_until_the_worker_is_made_again(
    tmp_path: Path, standby: bool, operation: str, after: bool
) -> None:
    """A marked test's reset (a hard one, or a swap for the standby) killed anywhere
    leaves the debt recorded."""
    orch = fake_orch(tmp_path, standby=standby)
    up(orch, 1)
    owe(orch)  # what the plugin records before a marked test's fixtures and body
    orch.provider.vms[orch.vm_name("gw0")].files["/etc/dirty"] = "a test was here"
    crash_at(orch, operation, after)
    with pytest.raises(Crash):
        reset(orch, ["gw0"], lock=False)
    orch.deployer.hook = None
    assert unfit(orch.store.read(), "gw0") is not None
    [result] = reset(orch, ["gw0"], lock=False, finish=True)
    assert result.ok, result.error
    clean_worker(orch)


def test_up_makes_a_worker_that_owes_a_reset_again_and_says_why(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path)
    up(orch, 1)
    owe(orch)
    orch.provider.vms[orch.vm_name("gw0")].files["/etc/dirty"] = "a test was here"
    said: list[str] = []
    orch.report = lambda who, message: said.append(message)
    [result] = up(orch, 1)
    assert result.action == "recreated"
    assert any("owes a reset (after test_x.py::test_dirty)" in m for m in said), said
    clean_worker(orch)


def test_a_swap_clears_the_debt(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path, standby=True)
    up(orch, 1)
    owe(orch)
    [result] = reset(orch, ["gw0"], lock=False)
    assert result.action == "swapped"
    assert orch.store.read().workers["gw0"].reset_pending == ""


@pytest.mark.parametrize("labels", [True, False], ids=["labels", "no-labels"])
def test_repair_never_records_a_half_made_worker_as_ready(tmp_path: Path, labels: bool) -> None:
    """The state is lost after a reset died while personalizing gw0's new VM: its labels
    (set when it was created) look finished, but orch's last step never ran in it. Repair
    records it unfinished (the next taker makes it again); gw1, swapped for its standby
    before, and gw2, untouched, are finished and recorded ready."""
    orch = fake_orch(tmp_path, standby=True)
    orch.provider.has_labels = labels  # type: ignore[misc]
    up(orch, 3)
    assert reset(orch, ["gw1"])[0].action == "swapped"
    with orch.store.transaction() as state:
        state.standbys.pop("gw0")  # no standby for gw0: a hard reset
    crash_at(orch, "personalize", False)
    with pytest.raises(Crash):
        reset(orch, ["gw0"], lock=False)
    orch.deployer.hook = None
    orch.store.path.unlink()  # the state file is lost
    data = repair(orch)
    assert data.workers["gw0"].phase != READY and unfit(data, "gw0") is not None
    assert [w for w in ("gw1", "gw2") if unfit(data, w) is not None] == []
    [result] = reset(orch, ["gw0"], lock=False, finish=True)
    assert result.ok
    clean_worker(orch)


def test_a_reset_that_failed_is_done_again_by_its_own_process(tmp_path: Path) -> None:
    """The teardown's reset failed halfway (the worker is left unfinished); the process's
    retry before its next test must make it again, not refuse it as "not provisioned"."""
    orch = fake_orch(tmp_path)
    up(orch, 1)
    orch.provider.faults.fail("clone", permanent=True)
    [failed] = reset(orch, ["gw0"], lock=False)
    assert not failed.ok and unfit(orch.store.read(), "gw0") is not None
    [result] = reset(orch, ["gw0"], lock=False, finish=True)  # what the plugin's retry does
    assert result.ok, result.error
    clean_worker(orch)


def test_an_unfinished_worker_with_a_ready_standby_is_finished_by_the_swap(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path, standby=True)
    up(orch, 1)
    orch.store.update(Kind.WORKER, "gw0", phase=CREATING)  # a reset killed before its delete
    [result] = reset(orch, ["gw0"], lock=False, finish=True)
    assert result.action == "swapped"
    clean_worker(orch)


def test_repair_keeps_the_resets_a_readable_state_says_are_owed(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path)
    up(orch, 2)
    owe(orch, "gw1")
    data = repair(orch)
    assert data.workers["gw1"].reset_pending == "after test_x.py::test_dirty"
    assert unfit(data, "gw1") is not None and unfit(data, "gw0") is None


def test_up_never_makes_again_a_worker_a_live_run_has_in_hand(tmp_path: Path) -> None:
    """A live run's teardown is resetting gw0 (unfinished until it is done): `orch up`
    must refuse (naming --force), not make it again under the run's feet."""
    from orchestrator.primitives.errors import LiveRunError
    from orchestrator.state.leases import Lease

    orch = fake_orch(tmp_path)
    up(orch, 1)
    orch.store.update(Kind.WORKER, "gw0", phase=CREATING)
    live = Lease(orch.settings.inventory_dir, workers=["gw0"])
    try:
        with pytest.raises(LiveRunError, match="--force"):
            up(orch, 1)
    finally:
        live.release()
    [result] = up(orch, 1)
    assert result.ok and result.action == "recreated"


def test_a_soft_reset_pays_the_debt(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path)
    up(orch, 1)
    owe(orch)
    [result] = reset(orch, ["gw0"], soft=True)
    assert result.ok, result.error
    assert orch.store.read().workers["gw0"].reset_pending == ""
