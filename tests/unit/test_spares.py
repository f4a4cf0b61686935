"""The warm pool and the standbys on the FakeProvider: claims are atomic and never hand a VM
out twice, a reset swaps the standby in, crashes mid-claim or mid-swap leak nothing, and
sweep and down clean spares up."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from fakes_core import fake_orch, maintain_now

from orchestrator.providers.fake import Crash
from orchestrator.state.records import READY
from orchestrator.verbs.down import down
from orchestrator.verbs.oneoffs import create_oneoff
from orchestrator.verbs.repair import repair
from orchestrator.verbs.reset import reset
from orchestrator.verbs.sweep import Sweeper
from orchestrator.verbs.up import up

DEAD_RUN = "20260101000000-1-0123abcd"


def pool_vms(orch) -> list[str]:
    return sorted(o.vm for o in orch.store.read().oneoffs.values() if o.pool)


def unrecorded(orch) -> set[str]:
    return set(orch.provider.vms) - orch.store.read().all_vms()


def test_up_fills_the_pool_and_fresh_vm_claims_without_making(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path, pool=2)
    up(orch, 1)
    assert len(pool_vms(orch)) == 2
    clones = orch.provider.counts()["clone"]
    host = create_oneoff(orch, "20260101000000-2-0123abcd")
    assert orch.provider.counts()["clone"] == clones  # claimed, not made
    rec = orch.store.read().oneoffs[host.vm]
    assert (rec.pool, rec.run) == (False, "20260101000000-2-0123abcd")
    assert orch.provider.vms[host.vm].files["/etc/orch-worker"] == "oneoff\n"
    maintain_now(orch)
    assert len(pool_vms(orch)) == 2 and host.vm not in pool_vms(orch)  # refilled


def test_an_empty_pool_falls_back_to_making_a_vm(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path, pool=1)
    up(orch, 1)
    first = create_oneoff(orch, DEAD_RUN).vm
    second = create_oneoff(orch, DEAD_RUN).vm  # nothing refilled it yet: made
    assert first != second and orch.vm_name("gw0") not in (first, second)


def test_claims_from_many_threads_never_hand_out_a_vm_twice(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path, pool=6)
    up(orch, 1)
    pooled = set(pool_vms(orch))
    got: list[str] = []
    lock = threading.Lock()

    def claim() -> None:
        vm = create_oneoff(orch, DEAD_RUN).vm
        with lock:
            got.append(vm)

    threads = [threading.Thread(target=claim) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == len(set(got)) == 10
    assert pooled <= set(got)  # the pool went first; the rest were made


def test_a_crash_during_a_claim_leaks_nothing(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path, pool=1)
    up(orch, 1)
    [vm] = pool_vms(orch)
    orch.provider.faults.crash("inspect")  # dies right after the claim was recorded
    with pytest.raises(Crash):
        create_oneoff(orch, DEAD_RUN)
    assert unrecorded(orch) == set()
    rec = orch.store.read().oneoffs[vm]
    assert not rec.pool and rec.run == DEAD_RUN  # never handed out again: it is that run's
    sweeper = Sweeper(orch.settings, orch.provider)
    decisions = {d.vm: d for d in sweeper.execute(sweeper.plan())}
    assert decisions[vm].result == "deleted"


def test_reset_swaps_the_standby_in_and_a_new_one_is_made(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path, standby=True)
    up(orch, 2)
    data = orch.store.read()
    standby = data.standbys["gw1"].vm
    assert orch.provider.vms[standby].files["/etc/orch-worker"] == "gw1\n"
    orch.provider.vms[orch.vm_name("gw1")].files["/dirty"] = "test left this"
    before = orch.provider.counts()
    [result] = reset(orch, ["gw1"])
    assert result.ok and result.action == "swapped"
    after = orch.provider.counts()
    assert after["clone"] == before["clone"] and after["rename"] - before["rename"] == 2  # nothing made while waiting
    vm = orch.provider.vms[orch.vm_name("gw1")]
    assert "/dirty" not in vm.files and vm.files["/etc/orch-worker"] == "gw1\n"
    assert "gw1" not in orch.store.read().standbys and len(orch.store.read().trash) == 1
    maintain_now(orch)
    data = orch.store.read()
    assert data.trash == [] and data.standbys["gw1"].phase == READY
    assert unrecorded(orch) == set()


@pytest.mark.parametrize("when", ["first-rename", "second-rename"])
def test_a_crash_during_a_swap_leaks_nothing_and_up_repairs(tmp_path: Path, when: str) -> None:
    orch = fake_orch(tmp_path, standby=True)
    up(orch, 2)
    if when == "second-rename":
        orch.provider.faults.fail("unused")  # keeps the plan explicit below
        real = orch.provider.rename
        calls = []

        def rename(vm: str, new: str) -> None:
            calls.append(vm)
            if len(calls) == 2:
                raise Crash("crash before the second rename")
            real(vm, new)

        orch.provider.rename = rename  # type: ignore[method-assign]
    else:
        orch.provider.faults.crash("rename")
    with pytest.raises(Crash):
        reset(orch, ["gw1"])
    assert unrecorded(orch) == set()
    orch.provider.rename = type(orch.provider).rename.__get__(orch.provider)  # type: ignore[method-assign]
    results = up(orch, 2)
    assert all(r.ok for r in results)
    assert orch.vm_name("gw1") in orch.provider.vms and unrecorded(orch) == set()
    # a trash name whose VM never took it may stay while gw1 has a standby (it cannot be
    # told from a swap in flight); no VM is behind it, and `orch down` forgets it
    assert all(name not in orch.provider.vms for name in orch.store.read().trash)
    down(orch)
    assert orch.store.read().trash == [] and orch.provider.vms == {}


def test_a_stale_standby_is_not_swapped_in(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path, standby=True)
    up(orch, 1)
    with orch.store.transaction() as state:
        state.standbys["gw0"].fingerprint = "000000000000"
    [result] = reset(orch, ["gw0"])
    assert result.ok and result.action == "reset"  # from the baseline instead


def test_down_deletes_pool_standbys_and_trash(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path, pool=2, standby=True)
    up(orch, 2)
    reset(orch, ["gw0"])  # leaves a swapped-out VM in the trash
    down(orch)
    assert orch.provider.vms == {} and orch.provider.baselines == {}
    data = orch.store.read()
    assert data.oneoffs == {} and data.standbys == {} and data.trash == []


def test_pool_shrinks_when_asked_for_fewer(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path, pool=3)
    up(orch, 1)
    smaller = fake_orch(tmp_path, provider=orch.provider, pool=1)
    up(smaller, 1)
    assert len(pool_vms(smaller)) == 1 and unrecorded(smaller) == set()


def test_a_maintainer_emptying_the_trash_during_a_swap_loses_nothing(tmp_path: Path) -> None:
    """A swap records the trash name, a maintainer at work empties the
    trash before the old VM has taken that name, then the rename happens. The name must
    not be forgotten meanwhile, or the old VM leaks."""
    from orchestrator.core import spares
    from orchestrator.primitives import naming

    orch = fake_orch(tmp_path, standby=True)
    up(orch, 1)
    trash = naming.standby_vm_name(orch.settings.prefix, orch.checkout, "gw0")
    with orch.store.transaction() as state:
        state.trash.append(trash)  # the swap's first step
    spares.empty_trash(orch)  # the maintainer, between that step and the rename
    assert orch.store.read().trash == [trash]  # kept: the rename may still come
    orch.provider.rename(orch.vm_name("gw0"), trash)  # the swap's rename
    spares.empty_trash(orch)
    assert orch.store.read().trash == [] and trash not in orch.provider.vms  # deleted, then forgotten


def test_a_hard_reset_asks_for_a_standby_once_the_worker_is_ready(tmp_path: Path) -> None:
    """A reset without a standby asked for one before the hard reset,
    a maintainer looked while the worker was being made again (so skipped it) and
    stopped; the worker never got a standby. It must also ask once the worker is ready."""
    orch = fake_orch(tmp_path, standby=True)
    up(orch, 1)
    assert reset(orch, ["gw0"])[0].action == "swapped"  # the standby is used up
    vm = orch.vm_name("gw0")
    seen: list[tuple[str, object]] = []  # what a maintainer starting then would see
    watched = fake_orch(
        tmp_path,
        provider=orch.provider,
        refill=lambda ctx: seen.append((ctx.store.read().workers["gw0"].phase, orch.provider.vms.get(vm))),
        standby=True,
    )
    [result] = reset(watched, ["gw0"])
    assert result.action == "reset" and seen
    assert seen[-1] == (READY, orch.provider.vms[vm])  # asked after the new VM was ready
    maintain_now(orch)
    assert orch.store.read().standbys["gw0"].phase == READY


@pytest.mark.parametrize("labels", [True, False], ids=["labels", "no-labels"])
def test_repair_never_promotes_a_swapped_out_vm_to_a_standby(tmp_path: Path, labels: bool) -> None:
    """A swap leaves the dirty VM in the trash under a standby's form of
    name; the maintainer dies before deleting it and the state file is lost. `orch repair`
    must not record it as the worker's ready standby (the next reset would swap the dirty
    VM back in): it deletes it, and keeps only genuine standbys."""
    orch = fake_orch(tmp_path, standby=True)
    orch.provider.has_labels = labels  # type: ignore[misc]  # labels, or only what is inside the VM
    up(orch, 2)
    orch.provider.vms[orch.vm_name("gw0")].files["/etc/dirty"] = "a marked test left this"
    assert reset(orch, ["gw0"])[0].action == "swapped"
    [trash] = orch.store.read().trash
    assert "/etc/dirty" in orch.provider.vms[trash].files  # the maintainer never came
    standby = orch.store.read().standbys["gw1"].vm
    orch.store.path.unlink()  # the state file is lost
    data = repair(orch)
    assert {w: s.vm for w, s in data.standbys.items()} == {"gw1": standby}  # the genuine one only
    assert trash not in orch.provider.vms and trash not in data.all_vms()  # deleted, not handed out
    [result] = reset(orch, ["gw0"])
    assert result.ok and result.action == "reset"  # from the baseline: no standby to swap in
    assert "/etc/dirty" not in orch.provider.vms[orch.vm_name("gw0")].files
    assert unrecorded(orch) == set()


@pytest.mark.parametrize("when", ["during", "before"])
def test_a_maintainer_whose_checkout_is_deleted_stops_and_sweep_finds_its_vms(tmp_path: Path, when: str) -> None:
    """`rm -rf` of the checkout while `orch maintain` refills its spares
    (or just before it starts). The maintainer recreated `inventories/.orch` with only the
    pool in its state, and sweep kept everything as "cannot be seen from here". It must stop,
    make nothing more, recreate nothing, and leave its VMs to sweep as orphans of a gone checkout."""
    import shutil

    from orchestrator.core import maintainer

    project = tmp_path / "checkout"
    # one make at a time: a make in another thread between its "still there?" and its
    # file lock would see the folder there and the lock (filelock) would make it again
    orch = fake_orch(project, pool=1, standby=True, parallel=1)
    up(orch, 2)
    create_oneoff(orch, DEAD_RUN)  # the pool is used up
    assert reset(orch, ["gw0"])[0].action == "swapped"  # so is gw0's standby
    maintainer.wanted(orch).touch()
    clones = orch.provider.counts()["clone"]
    if when == "before":
        shutil.rmtree(project)
    else:
        orch.deployer.hook = lambda name, vm: shutil.rmtree(project, ignore_errors=True)  # type: ignore[attr-defined]
    maintainer.maintain(orch)
    assert not project.exists()  # nothing recreated
    made = orch.provider.counts()["clone"] - clones
    # the standby and the pool VM are asked for at once (the maintainer does not wait for
    # a batch): the one being personalized, perhaps the other, and nothing after them
    assert made in ((0,) if when == "before" else (1, 2))
    sweeper = Sweeper(orch.settings, orch.provider)
    decisions = sweeper.execute(sweeper.plan())
    assert orch.provider.vms == {}, [(d.vm, d.result, d.reason) for d in decisions]
    assert all(d.result == "deleted" and "gone" in d.reason for d in decisions)  # orphans of a gone checkout
