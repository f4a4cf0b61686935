"""Keeping a failing test's worker (``--orch-keep-failed``) on the FakeProvider: the VM is
kept as it was under a kept name, the worker gets a clean VM, the cap is never exceeded
(across processes of one run), a crash at every step leaves nothing leaked or forgotten,
and status, down, sweep and repair know kept VMs for what they are."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
from fakes_core import fake_orch

from orchestrator.core.keeping import delete_kept, keep, settle
from orchestrator.primitives import naming
from orchestrator.primitives.kinds import Kind
from orchestrator.providers.fake import Crash, FakeVM
from orchestrator.pytest_plugin.handout import unfit
from orchestrator.state.leases import Lease
from orchestrator.state.records import KEEPING, READY
from orchestrator.verbs.down import down
from orchestrator.verbs.repair import repair
from orchestrator.verbs.reset import reset
from orchestrator.verbs.status import status
from orchestrator.verbs.sweep import Sweeper
from orchestrator.verbs.up import up

SESSION = "20260101000000-1-0123abcd"  # a run (pytest session) that is gone
TEST = "tests/test_x.py::test_fails"


def unrecorded(orch) -> set[str]:
    """VMs on the backend that the state does not know: must always be empty."""
    return set(orch.provider.vms) - orch.store.read().all_vms()


def dirty(orch, worker: str = "gw0") -> str:
    """What the failing test did to its worker: a file only that VM has."""
    vm = orch.provider.vms[orch.vm_name(worker)]
    vm.files["/root/failed-test-was-here"] = worker
    return vm.name


def keep_one(orch, worker: str = "gw0", *, test: str = TEST, session: str = SESSION, cap: int = 3):
    return keep(orch, worker, test=test, session=session, by=session, cap=cap)


def clean(orch, worker: str = "gw0") -> None:
    """The worker as the next test gets it: ready, owing nothing, without the failing test's file."""
    data = orch.store.read()
    assert unfit(data, worker) is None and data.workers[worker].reset_pending == ""
    vm = orch.provider.vms[data.workers[worker].vm]
    assert "/root/failed-test-was-here" not in vm.files and vm.files["/etc/orch-worker"] == f"{worker}\n"


def plan(orch, **kwargs):
    return {d.vm: d for d in Sweeper(orch.settings, orch.provider).plan(**kwargs)}


@pytest.mark.parametrize("standby", [False, True])
def test_the_workers_vm_is_kept_as_it_was_and_the_worker_gets_a_clean_one(tmp_path: Path, standby: bool) -> None:
    orch = fake_orch(tmp_path, standby=standby)
    up(orch, 1)
    was = dirty(orch)
    labels = dict(orch.provider.vms[was].labels)
    kept = keep_one(orch)
    assert kept.kept and kept.vm.startswith(f"{was}-kept-")
    vm = orch.provider.vms[kept.vm]
    assert vm.files["/root/failed-test-was-here"] == "gw0" and vm.state == "running" and vm.labels == labels
    assert was not in orch.provider.vms  # renamed, not copied
    rec = orch.store.read().kept[kept.vm]
    assert (rec.worker, rec.test, rec.session, rec.source, rec.phase) == ("gw0", TEST, SESSION, was, READY)
    assert unfit(orch.store.read(), "gw0") is not None  # no test gets the worker until it is reset
    [result] = reset(orch, ["gw0"], lock=False, finish=True)  # what the plugin does next
    assert result.ok, result.error
    assert result.action == ("swapped" if standby else "reset")
    clean(orch)
    assert kept.vm in orch.provider.vms and unrecorded(orch) == set()


def test_the_cap_counts_the_runs_kept_vms_and_other_runs_have_their_own(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path)
    up(orch, 1)
    results = []
    for i in range(5):
        dirty(orch)
        results.append(keep_one(orch, test=f"t.py::test_{i}", cap=3))
        if results[-1].owes_reset:
            reset(orch, ["gw0"], lock=False, finish=True)
    assert [r.kept for r in results] == [True, True, True, False, False]
    assert "this run kept 3 already (keep_failed_max = 3)" in results[3].why
    assert not results[3].owes_reset and orch.store.read().workers["gw0"].reset_pending == ""  # left as it is
    assert len(orch.store.read().kept) == 3
    other = keep_one(orch, session="20260101000000-2-0123abcd", cap=3)
    assert other.kept


def test_the_cap_holds_across_processes_keeping_at_once(tmp_path: Path) -> None:
    """Four xdist workers of one run fail tests at the same moment: one state transaction
    decides each keep, so the run never keeps more than its cap."""
    first = fake_orch(tmp_path)
    up(first, 4)
    contexts = [fake_orch(tmp_path, provider=first.provider) for _ in range(4)]
    outcomes: list[bool] = []
    barrier = threading.Barrier(4)

    def fail_tests(i: int) -> None:
        barrier.wait()
        for n in range(3):
            outcome = keep(contexts[i], f"gw{i}", test=f"t.py::test_{i}_{n}", session=SESSION, by=SESSION, cap=3)
            outcomes.append(outcome.kept)
            if outcome.owes_reset:
                reset(contexts[i], [f"gw{i}"], lock=False, finish=True)

    threads = [threading.Thread(target=fail_tests, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count(True) == 3 and len(first.store.read().kept) == 3
    assert unrecorded(first) == set()
    for i in range(4):
        assert unfit(first.store.read(), f"gw{i}") is None


def test_a_keep_that_fails_on_the_backend_keeps_nothing_and_the_worker_is_still_reset(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path)
    up(orch, 1)
    dirty(orch)
    orch.provider.faults.fail("rename", permanent=True)
    kept = keep_one(orch)
    assert not kept.kept and kept.owes_reset and "keeping" in kept.why
    assert orch.store.read().kept == {}
    reset(orch, ["gw0"], lock=False, finish=True)
    clean(orch)


def test_a_worker_that_is_not_ready_is_not_kept(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path)
    up(orch, 1)
    orch.store.update(Kind.WORKER, "gw0", phase="provisioning")
    kept = keep_one(orch)
    assert not kept.kept and not kept.owes_reset and "not ready" in kept.why


# -- crashes: what the next command makes of them -----------------------------------------


def crash_after_rename(orch) -> None:
    real = orch.provider.rename

    def rename(vm: str, new: str) -> None:
        real(vm, new)
        raise Crash(f"crash after renaming {vm}")

    orch.provider.rename = rename


def crash_in_reset(orch) -> None:
    orch.provider.faults.crash("clone")


NEXT = ["up", "status", "down", "sweep"]


@pytest.mark.parametrize("command", NEXT)
@pytest.mark.parametrize("where", ["before the rename", "after the rename", "before the worker's new VM"])
def test_a_keep_killed_anywhere_leaks_and_forgets_nothing(
    tmp_path: Path, where: str, command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    orch = fake_orch(tmp_path)
    up(orch, 1)
    was = dirty(orch)
    if where == "before the rename":
        orch.provider.faults.crash("rename")
    elif where == "after the rename":
        crash_after_rename(orch)
    with pytest.raises(Crash):
        if where == "before the worker's new VM":
            name = keep_one(orch).vm
            crash_in_reset(orch)
            reset(orch, ["gw0"], lock=False, finish=True)
        else:
            keep_one(orch)
    orch.provider.rename = type(orch.provider).rename.__get__(orch.provider)
    data = orch.store.read()
    [name] = data.kept  # recorded before anything was done on the backend
    assert unrecorded(orch) == set()
    assert unfit(data, "gw0") is not None  # the worker reaches no test as it is
    if command == "up":
        assert all(r.ok for r in up(orch, 1))
    elif command == "status":
        status(orch)
    elif command == "down":
        down(orch)
        assert orch.provider.vms == {} and orch.store.read().kept == {}
        return
    else:
        monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
        from orchestrator.verbs.sweep import sweep

        swept = {d.vm: d for d in sweep(orch.settings, orch.provider)}
        assert not any(d.delete for d in swept.values())
        assert unrecorded(orch) == set()
        up(orch, 1)
    data = orch.store.read()
    assert data.kept[name].phase == READY  # carried out (the dead run's keep), never forgotten
    assert orch.provider.vms[name].files["/root/failed-test-was-here"] == "gw0"
    assert unrecorded(orch) == set()
    if command in ("up", "sweep"):
        clean(orch)
    else:
        [result] = reset(orch, ["gw0"], lock=False, finish=True)
        assert result.ok and was in orch.provider.vms
        clean(orch)


def test_a_keep_left_halfway_is_forgotten_once_its_worker_was_reset(tmp_path: Path) -> None:
    """The run's next process (xdist's replacement worker) reset the worker first: the
    VM to keep is gone, and so is the record; nothing else changes."""
    orch = fake_orch(tmp_path)
    up(orch, 1)
    dirty(orch)
    orch.provider.faults.crash("rename")
    with pytest.raises(Crash):
        keep_one(orch)
    reset(orch, ["gw0"], lock=False, finish=True)
    settle(orch)
    assert orch.store.read().kept == {} and unrecorded(orch) == set()
    clean(orch)


def test_a_keep_in_flight_is_left_to_its_process(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path)
    up(orch, 1)
    alive = Lease(orch.settings.inventory_dir)
    try:
        orch.provider.faults.crash("rename")
        with pytest.raises(Crash):
            keep(orch, "gw0", test=TEST, session=alive.run, by=alive.run, cap=3)
        [name] = orch.store.read().kept
        settle(orch)
        assert orch.store.read().kept[name].phase == KEEPING  # its process may be at the rename
        assert orch.vm_name("gw0") in orch.provider.vms
        assert [r.action for r in delete_kept(orch, [name])] == ["kept"]
    finally:
        alive.release()


# -- status, down, sweep, repair ---------------------------------------------------------


def kept_setup(tmp_path: Path, n: int = 2):
    orch = fake_orch(tmp_path)
    up(orch, 2)
    names = []
    for i in range(n):
        dirty(orch, f"gw{i}")
        names.append(keep_one(orch, f"gw{i}", test=f"t.py::test_{i}").vm)
        reset(orch, [f"gw{i}"], lock=False, finish=True)
    return orch, names


def test_status_lists_kept_vms_with_their_test_and_how_to_enter_them(tmp_path: Path) -> None:
    orch, names = kept_setup(tmp_path)
    rows = {r.vm: r for r in status(orch)}
    for i, name in enumerate(names):
        row = rows[name]
        assert (row.kind, row.worker, row.state, row.phase, row.test) == (
            Kind.KEPT,
            f"gw{i}",
            "running",
            READY,
            f"t.py::test_{i}",
        )
        assert row.enter == f"orch shell {name}" and row.age_seconds is not None and row.age_seconds < 60
    assert rows[orch.vm_name("gw0")].state == "running" and rows[orch.vm_name("gw0")].test == ""
    orch.provider.delete(names[1])  # deleted behind orch's back: forgotten, not "missing" forever
    assert names[1] not in {r.vm for r in status(orch)} and names[1] not in orch.store.read().kept


def test_down_deletes_kept_vms_whole_or_one_by_name(tmp_path: Path) -> None:
    orch, names = kept_setup(tmp_path)
    [one] = down(orch, [names[0]])
    assert (one.vm, one.action) == (names[0], "deleted")
    assert names[0] not in orch.provider.vms and names[1] in orch.provider.vms
    assert sorted(orch.store.read().workers) == ["gw0", "gw1"]  # workers untouched
    down(orch)
    assert orch.provider.vms == {} and orch.provider.baselines == {} and orch.store.read().kept == {}


def test_down_leaves_a_vm_under_a_kept_name_that_is_not_orchs(tmp_path: Path) -> None:
    orch, [name] = kept_setup(tmp_path, 1)
    orch.provider.vms[name].labels = {}
    down(orch)
    assert list(orch.provider.vms) == [name] and orch.store.read().kept == {}
    del orch.provider.vms[name]


def test_sweep_deletes_a_kept_vm_only_by_its_age_since_it_was_kept(tmp_path: Path) -> None:
    orch, names = kept_setup(tmp_path)
    young = names[0]
    old = naming.kept_vm_name(orch.settings.prefix, orch.checkout, "gw1", now=1.0e9)  # kept in 2001
    orch.provider.rename(names[1], old)
    with orch.store.transaction() as state:
        rec = state.kept.pop(names[1])
        rec.vm = old
        state.kept[old] = rec
    for vm in (young, old):  # made long ago as workers: their labels' time does not count
        orch.provider.vms[vm].labels["orch.created"] = "2001-01-01T00:00:00Z"
    decisions = plan(orch)
    assert not decisions[young].delete and not decisions[old].delete
    assert "deleted only by `orch down`" in decisions[young].reason
    decisions = plan(orch, older_than=3600)
    assert not decisions[young].delete and decisions[old].delete and "since it was kept" in decisions[old].reason
    sweeper = Sweeper(orch.settings, orch.provider)
    done = {d.vm: d for d in sweeper.execute(sweeper.plan(older_than=3600))}
    assert done[old].result == "deleted" and old not in orch.provider.vms and old not in orch.store.read().kept
    assert young in orch.provider.vms and young in orch.store.read().kept


@pytest.mark.parametrize("lost", ["state", "checkout"])
def test_sweep_never_takes_a_kept_vm_for_an_orphan(tmp_path: Path, lost: str) -> None:
    """A dead run, a lost state or a gone checkout: only --older-than deletes a kept VM."""
    orch, [name] = kept_setup(tmp_path, 1)
    if lost == "state":
        orch.store.path.unlink()
    else:
        shutil.rmtree(orch.settings.inventory_dir)
    decisions = plan(orch)
    assert decisions[orch.vm_name("gw0")].delete  # the worker is an orphan
    assert not decisions[name].delete


def test_sweep_never_touches_a_vm_under_a_kept_name_that_is_not_orchs(tmp_path: Path) -> None:
    orch, [name] = kept_setup(tmp_path, 1)
    orch.provider.vms[name].labels = {}
    d = plan(orch, older_than=0)[name]
    assert not d.delete and d.kind == "foreign"


@pytest.mark.parametrize("state", ["damaged", "deleted"])
def test_repair_records_kept_vms_again(tmp_path: Path, state: str) -> None:
    orch, names = kept_setup(tmp_path)
    if state == "damaged":
        orch.store.path.write_text("{not json")
    else:
        orch.store.path.unlink()
    data = repair(orch)
    assert sorted(data.kept) == sorted(names)
    for i, name in enumerate(names):
        rec = data.kept[name]
        assert (rec.worker, rec.phase, rec.test) == (f"gw{i}", READY, "")
        assert rec.created.endswith("Z")
    assert unrecorded(orch) == set()


def test_repair_keeps_the_tests_a_readable_state_named(tmp_path: Path) -> None:
    orch, names = kept_setup(tmp_path)
    data = repair(orch)
    assert [data.kept[n].test for n in names] == ["t.py::test_0", "t.py::test_1"]


def test_a_kept_vm_is_never_handed_to_a_test(tmp_path: Path) -> None:
    """Nothing that hands out VMs looks at kept ones: workers by their own name, pool VMs
    by their record, and a kept name is no standby's either."""
    orch, [name] = kept_setup(tmp_path, 1)
    data = orch.store.read()
    assert name not in {r.vm for r in data.workers.values()} | {s.vm for s in data.standbys.values()} | set(data.oneoffs)
    assert all(r.action == "reused" for r in up(orch, 2))
    assert name in orch.provider.vms and isinstance(orch.provider.vms[name], FakeVM)
