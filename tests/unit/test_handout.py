"""No test is handed a worker that is unfinished or owes a reset, on the FakeProvider:
a reset killed at every step leaves a record the plugin refuses to hand out as it is,
and the plugin's next taker makes it again (trust 2, items 2 and 3)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes_core import fake_orch

from orchestrator.plugin import _unfit
from orchestrator.providers.fake import Crash
from orchestrator.state import READY

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


def clean_worker(orch, worker: str = "gw0") -> None:
    data = orch.store.read()
    rec = data.workers[worker]
    assert rec.phase == READY and rec.reset_pending == "" and _unfit(data, worker) is None
    vm = orch.provider.vms[rec.vm]
    assert vm.files.get("/etc/orch-worker") == f"{worker}\n" and "/etc/dirty" not in vm.files


@pytest.mark.parametrize("operation, after", HARD)
def test_a_hard_reset_killed_anywhere_is_never_handed_out_and_is_made_again(tmp_path: Path, operation: str, after: bool) -> None:
    orch = fake_orch(tmp_path)
    orch.up(1)
    orch.provider.vms[orch.vm_name("gw0")].files["/etc/dirty"] = "a test was here"
    crash_at(orch, operation, after)
    with pytest.raises(Crash):
        orch.reset(["gw0"], lock=False)
    orch.deployer.hook = None
    assert _unfit(orch.store.read(), "gw0") is not None  # the fixture will not hand it out as it is
    [result] = orch.reset(["gw0"], lock=False, finish=True)  # what the fixture does instead
    assert result.ok, result.error
    clean_worker(orch)


@pytest.mark.parametrize("standby, operation, after", [(False, *p) for p in HARD] + [(True, *p) for p in SWAP])
def test_a_reset_owed_by_a_test_is_kept_until_the_worker_is_made_again(
    tmp_path: Path, standby: bool, operation: str, after: bool
) -> None:
    """A marked test's reset (a hard one, or a swap for the standby) killed anywhere
    leaves the debt recorded."""
    orch = fake_orch(tmp_path, standby=standby)
    orch.up(1)
    with orch.store.transaction() as state:  # what the plugin records before a marked test's body
        state.workers["gw0"].reset_pending = "after test_x.py::test_dirty"
    orch.provider.vms[orch.vm_name("gw0")].files["/etc/dirty"] = "a test was here"
    crash_at(orch, operation, after)
    with pytest.raises(Crash):
        orch.reset(["gw0"], lock=False)
    orch.deployer.hook = None
    assert _unfit(orch.store.read(), "gw0") is not None
    [result] = orch.reset(["gw0"], lock=False, finish=True)
    assert result.ok, result.error
    clean_worker(orch)


def test_up_makes_a_worker_that_owes_a_reset_again_and_says_why(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path)
    orch.up(1)
    with orch.store.transaction() as state:
        state.workers["gw0"].reset_pending = "after test_x.py::test_dirty"
    orch.provider.vms[orch.vm_name("gw0")].files["/etc/dirty"] = "a test was here"
    said: list[str] = []
    orch.report = lambda who, message: said.append(message)
    [result] = orch.up(1)
    assert result.action == "recreated"
    assert any("owes a reset (after test_x.py::test_dirty)" in m for m in said), said
    clean_worker(orch)


def test_a_swap_clears_the_debt(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path, standby=True)
    orch.up(1)
    with orch.store.transaction() as state:
        state.workers["gw0"].reset_pending = "after test_x.py::test_dirty"
    [result] = orch.reset(["gw0"], lock=False)
    assert result.action == "swapped"
    assert orch.store.read().workers["gw0"].reset_pending == ""
