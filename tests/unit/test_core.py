"""The core's phase logic on the FakeProvider (no Docker, no pyinfra): record → act →
record, what every crash point leaves, and what the next command makes of it."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes_core import fake_orch

from orchestrator.primitives.errors import LiveRunError, UsageError
from orchestrator.primitives.kinds import Kind
from orchestrator.providers.fake import Crash
from orchestrator.state import inventory
from orchestrator.state.leases import Lease
from orchestrator.state.records import CREATING, FAILED, PROVISIONING, READY
from orchestrator.verbs.down import down
from orchestrator.verbs.oneoffs import create_oneoff
from orchestrator.verbs.reset import reset
from orchestrator.verbs.status import status
from orchestrator.verbs.up import up


def unrecorded(orch) -> set[str]:
    """VMs on the backend that the state does not know: must always be empty."""
    return set(orch.provider.vms) - orch.store.read().all_vms()


def workers_ready(orch, n: int) -> bool:
    data = orch.store.read()
    return sorted(data.workers) == sorted(f"gw{i}" for i in range(n)) and all(r.phase == READY for r in data.workers.values())


def test_up_makes_a_baseline_and_provisioned_workers(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path)
    results = up(orch, 2)
    assert [(r.worker, r.action, r.error) for r in results] == [("gw0", "created", ""), ("gw1", "created", "")]
    data = orch.store.read()
    assert data.baseline is not None and data.baseline.phase == READY and data.baseline.ref in orch.provider.baselines
    for w in ("gw0", "gw1"):
        assert orch.provider.vms[orch.vm_name(w)].files["/etc/orch-worker"] == f"{w}\n"
        assert data.workers[w].fingerprint == data.baseline.fingerprint
    assert [h.worker for h in inventory.parse((orch.settings.inventory_dir / "workers.py").read_text())] == ["gw0", "gw1"]
    assert unrecorded(orch) == set()


def test_second_up_does_no_vm_operation(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path)
    up(orch, 2)
    before = orch.provider.counts()
    assert [r.action for r in up(orch, 2)] == ["reused", "reused"]
    after = orch.provider.counts()
    changes = {op: after[op] - before[op] for op in ("create", "clone", "delete", "start", "stop", "seal")}
    assert set(changes.values()) == {0}


def test_later_workers_are_cloned_from_the_baseline(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path)
    up(orch, 1)
    creates = orch.provider.counts()["create"]
    assert {r.worker: r.action for r in up(orch, 3)} == {"gw0": "reused", "gw1": "created", "gw2": "created"}
    assert orch.provider.counts()["create"] == creates  # no new create from the image
    assert orch.provider.counts()["clone"] == 2
    assert orch.provider.vms[orch.vm_name("gw2")].files["/etc/orch-worker"] == "gw2\n"  # personalized


@pytest.mark.parametrize("phase", [CREATING, PROVISIONING, FAILED])
def test_an_unfinished_or_failed_worker_is_made_again(tmp_path: Path, phase: str) -> None:
    orch = fake_orch(tmp_path)
    up(orch, 1)
    orch.store.update(Kind.WORKER, "gw0", phase=phase, error="boom" if phase == FAILED else "")
    reported: list[str] = []
    orch.report = lambda who, msg: reported.append(msg)
    assert [r.action for r in up(orch, 1)] == ["recreated"]
    assert workers_ready(orch, 1)
    if phase == FAILED:
        assert any("retrying: it failed last time (boom)" in m for m in reported)


def test_stopped_worker_is_started_missing_one_made_again(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path)
    up(orch, 2)
    orch.provider.vms[orch.vm_name("gw0")].state = "stopped"
    del orch.provider.vms[orch.vm_name("gw1")]
    assert {r.worker: r.action for r in up(orch, 2)} == {"gw0": "started", "gw1": "recreated"}
    assert all(v.state == "running" for v in orch.provider.vms.values())


def test_failed_provisioning_keeps_the_vm_reachable_and_the_next_up_retries(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path)
    up(orch, 1)
    orch.deployer.fail["gw1"] = "operation 'x', command `false` exited with code 1"
    [gw0, gw1] = up(orch, 2)
    assert gw0.ok and not gw1.ok and "exited with code 1" in gw1.error
    rec = orch.store.read().workers["gw1"]
    assert rec.phase == FAILED and "exited with code 1" in rec.error
    assert orch.vm_name("gw1") in orch.provider.vms  # kept, to be looked into
    host = inventory.read_worker(orch.settings.inventory_dir, "gw1")
    assert host is not None and host.data["orch_failed"]
    assert [h.worker for h in inventory.parse((orch.settings.inventory_dir / "workers.py").read_text())] == ["gw0"]
    del orch.deployer.fail["gw1"]
    assert [r.action for r in up(orch, 2)] == ["reused", "recreated"]
    assert workers_ready(orch, 2)


def test_transient_errors_are_retried_and_permanent_ones_fail_at_once(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path, retries=4)  # three faults may land on one VM of the three made at once
    orch.provider.faults.fail("create", times=2)
    orch.provider.faults.created_but_failed("create")
    assert all(r.ok for r in up(orch, 2))
    orch.provider.faults.fail("clone", permanent=True)
    [*_, gw2] = up(orch, 3)
    assert not gw2.ok and "permanent" in gw2.error
    assert orch.provider.counts()["clone"] == 1  # not retried


def test_a_changed_provision_deploy_re_provisions_and_says_so(tmp_path: Path) -> None:
    deploys = tmp_path / "mydeploys"
    deploys.mkdir()
    source = "from pyinfra.api import deploy\n\n@deploy('mine')\ndef provision():\n    pass\n"
    (deploys / "__init__.py").write_text(source)
    orch = fake_orch(tmp_path, provision="mydeploys:provision")
    up(orch, 2)
    first = orch.store.read().baseline
    assert [r.action for r in up(orch, 2)] == ["reused", "reused"]
    (deploys / "__init__.py").write_text(source + "# changed\n")
    import importlib
    import sys

    sys.modules.pop("mydeploys", None)
    importlib.invalidate_caches()
    reported: list[str] = []
    orch.report = lambda who, msg: reported.append(f"{who}: {msg}")
    assert [r.action for r in up(orch, 2)] == ["recreated", "recreated"]
    assert any("the provision deploy changed since it was made" in m for m in reported)
    assert orch.store.read().baseline.fingerprint != first.fingerprint
    assert first.ref not in orch.provider.baselines  # the stale baseline is gone
    assert [r.action for r in up(orch, 2, reprovision=True)] == ["recreated", "recreated"]


def test_reset_rebuilds_a_missing_baseline_before_it_deletes_the_vm(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path)
    up(orch, 1)
    orch.provider.baselines.clear()  # the baseline vanished behind orch's back
    vm = orch.provider.vms[orch.vm_name("gw0")]
    vm.files["/dirty"] = "x"
    [result] = reset(orch, ["gw0"])
    assert result.ok
    assert "/dirty" not in orch.provider.vms[orch.vm_name("gw0")].files
    assert orch.store.read().baseline.ref in orch.provider.baselines


def test_reset_that_cannot_get_a_baseline_leaves_the_vm(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path)
    up(orch, 1)
    orch.provider.baselines.clear()
    orch.provider.images.clear()  # and the image cannot be had either
    with pytest.raises(Exception, match="not available"):
        reset(orch, ["gw0"])
    assert orch.vm_name("gw0") in orch.provider.vms


def test_a_tainted_baseline_is_rebuilt_before_cloning(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path)
    up(orch, 1)
    ref = orch.store.read().baseline.ref
    orch.provider.baselines[ref]["/tainted"] = "pushed by a test"
    reported: list[str] = []
    orch.report = lambda who, msg: reported.append(f"{who}: {msg}")
    [result] = reset(orch, ["gw0"])
    assert result.ok
    assert any("rebuilding the baseline" in m and "changed after it was sealed" in m for m in reported)
    assert "/tainted" not in orch.provider.vms[orch.vm_name("gw0")].files


@pytest.mark.parametrize("verb", ["reset", "down"])
def test_a_live_run_is_not_broken_without_force(tmp_path: Path, verb: str) -> None:
    orch = fake_orch(tmp_path)
    up(orch, 2)
    lease = Lease(orch.settings.inventory_dir)
    lease.use("gw0")
    try:
        with pytest.raises(LiveRunError, match="--force"):
            reset(orch) if verb == "reset" else down(orch)
        assert len(orch.store.read().workers) == 2
        assert all(r.ok for r in reset(orch, ["gw0"], lock=False))  # the run's own reset stays allowed
        assert all(r.ok for r in reset(orch, ["gw1"]))  # a worker the run does not use, too
        done = reset(orch, force=True) if verb == "reset" else down(orch, force=True)
        assert all(r.ok for r in done)
    finally:
        lease.release()


# -- crash points: what the next command makes of them ---------------------------------


@pytest.mark.parametrize(
    "operation, after",
    [("create", False), ("create", True), ("seal", False), ("clone", False), ("clone", True), ("ready", False)],
)
def test_crash_during_up_then_up_converges(tmp_path: Path, operation: str, after: bool) -> None:
    orch = fake_orch(tmp_path)
    if operation == "clone":
        up(orch, 1)
    orch.provider.faults.crash(operation, after=after)
    with pytest.raises(Crash):
        up(orch, 2)
    assert unrecorded(orch) == set()
    results = up(orch, 2)
    assert all(r.ok for r in results), results
    assert workers_ready(orch, 2)
    assert unrecorded(orch) == set()
    down(orch)
    assert orch.provider.vms == {} and orch.provider.baselines == {}


@pytest.mark.parametrize("after", [False, True])
def test_crash_during_reset_then_up_repairs(tmp_path: Path, after: bool) -> None:
    orch = fake_orch(tmp_path)
    up(orch, 2)
    orch.provider.faults.crash("delete" if not after else "clone", after=after)
    with pytest.raises(Crash):
        reset(orch, ["gw1"])
    assert unrecorded(orch) == set()
    assert all(r.ok for r in up(orch, 2))
    assert workers_ready(orch, 2) and orch.vm_name("gw1") in orch.provider.vms


@pytest.mark.parametrize("operation, after", [("clone", False), ("clone", True), ("ready", False)])
def test_crash_during_a_oneoff_leaves_a_record_that_down_cleans(tmp_path: Path, operation: str, after: bool) -> None:
    orch = fake_orch(tmp_path)
    up(orch, 1)
    orch.provider.faults.crash(operation, after=after)
    with pytest.raises(Crash):
        create_oneoff(orch, "20260101000000-1-0123abcd")  # a run that is gone
    assert unrecorded(orch) == set()
    down(orch)
    assert orch.provider.vms == {} and orch.store.read().oneoffs == {}


def test_crash_during_down_then_down_finishes(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path)
    up(orch, 2)
    orch.provider.faults.crash("delete", after=True)
    with pytest.raises(Crash):
        down(orch)
    assert unrecorded(orch) == set()
    down(orch)
    assert orch.provider.vms == {} and orch.store.read().workers == {}


def test_down_of_the_last_worker_drops_the_baseline_and_dead_oneoffs(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path)
    up(orch, 1)
    create_oneoff(orch, "20260101000000-1-0123abcd")
    down(orch)
    data = orch.store.read()
    assert data.oneoffs == {} and data.baseline is None and data.retired == []
    assert orch.provider.vms == {} and orch.provider.baselines == {}


def test_up_refuses_to_switch_images_or_providers(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path)
    up(orch, 1)
    orch.provider.images.add("other:1")
    other = fake_orch(tmp_path, provider=orch.provider, image="other:1")
    with pytest.raises(UsageError, match="run `orch down` first"):
        up(other, 1)


@pytest.mark.parametrize("command", ["status", "up", "reset", "down gw1", "sweep"])
def test_a_dead_runs_oneoff_whose_vm_is_gone_is_forgotten_by_the_next_command(
    tmp_path: Path, command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pytest killed while its background deletions ran; they finished,
    the records stayed, and `orch status` listed them `missing` until `orch down`. The next
    command drops them; a live run's records stay, even one whose VM is not made yet."""
    import os

    from orchestrator.primitives.clock import now_iso
    from orchestrator.state.records import OneoffRecord
    from orchestrator.verbs.sweep import sweep

    orch = fake_orch(tmp_path)
    up(orch, 2)
    live = Lease(orch.settings.inventory_dir)
    try:
        dead = create_oneoff(orch, "20260101000000-1-0123abcd").vm
        deleting = create_oneoff(orch, live.run).vm
        creating = dead.replace("-x2", "-x1")  # a name of orch's form, not made yet
        with orch.store.transaction() as state:
            state.oneoffs[creating] = OneoffRecord(creating, live.run, now_iso(), os.getpid(), CREATING)
        for vm in (dead, deleting):
            orch.provider.delete(vm)  # the deletions finished; the run died before it forgot them
        if command == "status":
            status(orch)
        elif command == "up":
            up(orch, 2)
        elif command == "reset":
            reset(orch, ["gw0"], force=True)
        elif command == "down gw1":
            down(orch, ["gw1"], force=True)
        else:
            monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)  # as the CLI runs it
            sweep(orch.settings, orch.provider)
        assert dead not in orch.store.read().oneoffs  # the command itself forgot it, before any status
        rows = {r.vm: r.state for r in status(orch) if r.kind == "oneoff"}
        assert dead not in rows
        assert rows == {deleting: "missing", creating: "missing"}  # a live run's: it may be at work on them
    finally:
        live.release()
