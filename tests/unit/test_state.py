"""The state file: round trips, corruption, atomic writes, locks, concurrent updates."""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
from pathlib import Path

import pytest

from orchestrator.primitives.errors import LockBusy, StateError
from orchestrator.primitives.kinds import Kind
from orchestrator.state import records as st
from orchestrator.state import store as store_mod
from orchestrator.state.records import BaselineRecord, OneoffRecord, StandbyRecord, StateData, WorkerRecord
from orchestrator.state.store import StateStore

CHECKOUT = "1a2b3c4d"
OTHER = "99887766"


@pytest.fixture
def inv(tmp_path: Path) -> Path:
    return tmp_path / "inventories"


@pytest.fixture
def store(inv: Path) -> StateStore:
    return StateStore(inv, CHECKOUT)


def sample() -> StateData:
    data = StateData(checkout=CHECKOUT, provider="docker", image="orch-base:bookworm", prefix="orch")
    for w, phase in (("gw0", st.READY), ("gw1", st.PROVISIONING), ("gw10", st.CREATING)):
        data.workers[w] = WorkerRecord(
            worker=w, vm=f"orch-{CHECKOUT}-{w}", phase=phase, created="2024-05-01T10:00:00Z", fingerprint=f"fp{w}"
        )
    vm = f"orch-{CHECKOUT}-x20240501100000-123-abcdef012345"
    data.oneoffs[vm] = OneoffRecord(vm=vm, run="run-1", created="2024-05-01T10:00:00Z", pid=123)
    return data


def leftovers(store: StateStore) -> list[str]:
    return sorted(p.name for p in store.dir.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".state-"))


# -- round trip -----------------------------------------------------------------------


def test_write_then_read_gives_back_workers_and_oneoffs(store: StateStore) -> None:
    data = sample()
    store.write(data)
    assert store.exists()
    back = store.read()
    assert back == data
    assert back.workers["gw1"].phase == st.PROVISIONING
    assert back.oneoffs[next(iter(data.oneoffs))].pid == 123
    assert [r.worker for r in back.sorted_workers()] == ["gw0", "gw1", "gw10"]  # numeric, not text order


def test_state_file_is_plain_json_a_user_can_read(store: StateStore) -> None:
    store.write(sample())
    raw = json.loads(store.path.read_text())
    assert store.path == store.inventory_dir / ".orch" / "state.json"
    assert raw["version"] == st.VERSION
    assert raw["checkout"] == CHECKOUT
    assert raw["workers"]["gw0"]["vm"] == f"orch-{CHECKOUT}-gw0"


def test_transaction_round_trip(store: StateStore) -> None:
    with store.transaction() as data:
        data.workers["gw0"] = WorkerRecord(worker="gw0", vm=f"orch-{CHECKOUT}-gw0")
        data.oneoffs["vm1"] = OneoffRecord(vm="vm1", run="r")
    with store.transaction() as data:
        assert set(data.workers) == {"gw0"}
        data.workers["gw1"] = WorkerRecord(worker="gw1", vm=f"orch-{CHECKOUT}-gw1")
    back = store.read()
    assert set(back.workers) == {"gw0", "gw1"}
    assert back.workers["gw0"].phase == st.CREATING
    assert set(back.oneoffs) == {"vm1"}


def test_update_of_a_worker_changes_one_record(store: StateStore) -> None:
    store.write(sample())
    store.update(Kind.WORKER, "gw1", phase=st.READY, fingerprint="new")
    back = store.read()
    assert (back.workers["gw1"].phase, back.workers["gw1"].fingerprint) == (st.READY, "new")
    assert back.workers["gw0"] == sample().workers["gw0"]


def test_update_without_vm_of_a_missing_record_raises_and_writes_nothing(store: StateStore) -> None:
    store.write(sample())
    before = store.path.read_text()
    with pytest.raises(KeyError):
        store.update(Kind.WORKER, "gw5", phase=st.READY)
    assert store.path.read_text() == before


def test_update_with_vm_leaves_a_record_of_another_vm_alone(store: StateStore) -> None:
    data = sample()
    data.standbys["gw0"] = StandbyRecord("gw0", "orch-0123abcd-gw0-s00000001")
    data.baseline = BaselineRecord("orch-0123abcd-zbaseline-00000001")
    store.write(data)
    assert store.update(Kind.STANDBY, "gw0", vm="orch-0123abcd-gw0-s00000002", phase=st.READY) is None
    assert store.update(Kind.BASELINE, "orch-0123abcd-zbaseline-00000002", vm="x", phase=st.READY) is None
    assert store.update(Kind.ONEOFF, "gone", vm="gone", phase=st.READY) is None
    assert store.read() == data
    store.update(Kind.STANDBY, "gw0", vm="orch-0123abcd-gw0-s00000001", phase=st.READY, error="ignored")
    assert store.read().standbys["gw0"].phase == st.READY


def test_update_ignores_fields_the_record_does_not_have(store: StateStore) -> None:
    data = sample()
    data.baseline = BaselineRecord("orch-0123abcd-zbaseline-00000001")
    store.write(data)
    name = data.baseline.vm
    store.update(Kind.BASELINE, name, vm=name, phase=st.PROVISIONING, engine="e1", error="")
    back = store.read()
    assert back.baseline is not None and back.baseline.phase == st.PROVISIONING
    assert not hasattr(back.baseline, "engine")


def test_trash_has_no_record_to_update(store: StateStore) -> None:
    store.write(sample())
    with pytest.raises(TypeError):
        store.update(Kind.TRASH, "orch-0123abcd-gw0-s00000001", phase=st.READY)


def test_read_of_missing_file_is_an_empty_state(store: StateStore) -> None:
    data = store.read()
    assert data == StateData(checkout=CHECKOUT)
    assert data.workers == {} and data.oneoffs == {}
    assert not store.exists()
    assert not store.inventory_dir.exists()  # reading creates nothing


# -- corruption ---------------------------------------------------------------------


def _valid_text() -> str:
    return sample().to_json()


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("this is not json at all\n", id="garbage"),
        pytest.param(_valid_text()[: len(_valid_text()) // 2], id="truncated"),
        pytest.param("", id="empty"),
        pytest.param(json.dumps({**json.loads(_valid_text()), "version": 99}), id="wrong-version"),
        pytest.param(json.dumps({k: v for k, v in json.loads(_valid_text()).items() if k != "version"}), id="no-version"),
        pytest.param(json.dumps({"version": 2}), id="no-checkout"),
        pytest.param("[]", id="json-list"),
        pytest.param('"state"', id="json-string"),
        pytest.param(
            json.dumps({"version": 2, "checkout": CHECKOUT, "workers": {"gw0": {"worker": "gw0"}}}), id="record-missing-vm"
        ),
        pytest.param(
            json.dumps({"version": 2, "checkout": CHECKOUT, "workers": {"gw0": {"worker": "gw0", "vm": "v", "color": 1}}}),
            id="record-unknown-field",
        ),
    ],
)
def test_corrupt_state_file_says_run_orch_repair(store: StateStore, content: str) -> None:
    store.ensure_dir()
    store.path.write_text(content)
    with pytest.raises(StateError) as exc:
        store.read()
    message = str(exc.value)
    assert "orch repair" in message
    assert str(store.path) in message
    assert store.path.read_text() == content  # reading never "fixes" the file behind the user's back


def test_binary_garbage_state_file_says_run_orch_repair(store: StateStore) -> None:
    store.ensure_dir()
    store.path.write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(StateError, match="orch repair"):
        store.read()


@pytest.mark.parametrize("workers", [[], None, "gw0"])
def test_state_with_workers_not_an_object_says_run_orch_repair(store: StateStore, workers: object) -> None:
    store.ensure_dir()
    store.path.write_text(json.dumps({"version": 1, "checkout": CHECKOUT, "workers": workers}))
    with pytest.raises(StateError, match="orch repair"):
        store.read()


def test_state_of_another_checkout_is_refused(inv: Path) -> None:
    StateStore(inv, OTHER).write(StateData(checkout=OTHER))
    with pytest.raises(StateError) as exc:
        StateStore(inv, CHECKOUT).read()
    message = str(exc.value)
    assert OTHER in message and CHECKOUT in message
    assert "orch repair" in message


def test_transaction_on_corrupt_state_raises_and_keeps_the_file(store: StateStore) -> None:
    store.ensure_dir()
    store.path.write_text("garbage")
    with pytest.raises(StateError):
        with store.transaction():
            pytest.fail("the block must not run on a corrupt state")
    assert store.path.read_text() == "garbage"


def test_repair_transaction_starts_from_an_empty_state(store: StateStore) -> None:
    store.ensure_dir()
    store.path.write_text("garbage")
    with store.transaction(repair=True) as data:
        assert data == StateData(checkout=CHECKOUT)
        data.workers["gw0"] = WorkerRecord(worker="gw0", vm="v")
    assert set(store.read().workers) == {"gw0"}


# -- atomic writes ------------------------------------------------------------------


def disk_full(*args: object, **kwargs: object) -> None:
    raise OSError(28, "No space left on device")


def test_write_leaves_no_temporary_files(store: StateStore) -> None:
    for _ in range(3):
        store.write(sample())
    with store.transaction() as data:
        data.workers.pop("gw0")
    assert leftovers(store) == []
    assert set(store.read().workers) == {"gw1", "gw10"}


@pytest.mark.parametrize("fail_at", ["replace", "fsync", "write"])
def test_failed_write_keeps_the_old_file_intact(store: StateStore, monkeypatch: pytest.MonkeyPatch, fail_at: str) -> None:
    store.write(sample())
    before = store.path.read_bytes()

    if fail_at == "write":
        monkeypatch.setattr(StateData, "to_json", disk_full)
    else:
        monkeypatch.setattr(store_mod.os, fail_at, disk_full)
    changed = StateData(checkout=CHECKOUT)  # would wipe every record
    with pytest.raises(StateError, match=r"No space left on device.*previous state is intact"):
        store.write(changed)
    monkeypatch.undo()
    assert store.path.read_bytes() == before
    assert store.read() == sample()
    assert leftovers(store) == []


def test_failed_write_of_a_new_file_leaves_nothing(store: StateStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_mod.os, "replace", disk_full)
    with pytest.raises(StateError, match="No space left on device"):
        store.write(sample())
    monkeypatch.undo()
    assert not store.exists()
    assert store.read() == StateData(checkout=CHECKOUT)
    assert leftovers(store) == []


def test_transaction_does_not_write_when_the_block_raises(store: StateStore) -> None:
    store.write(sample())
    before = store.path.read_bytes()
    with pytest.raises(RuntimeError, match="provider exploded"):
        with store.transaction() as data:
            data.workers.clear()
            data.workers["gw5"] = WorkerRecord(worker="gw5", vm="v5")
            raise RuntimeError("provider exploded")
    assert store.path.read_bytes() == before
    assert store.read() == sample()
    # and the lock is free again: the next transaction goes through
    with store.transaction() as data:
        data.workers["gw2"] = WorkerRecord(worker="gw2", vm="v2")
    assert "gw2" in store.read().workers


def test_transaction_without_a_state_file_writes_nothing_when_the_block_raises(store: StateStore) -> None:
    with pytest.raises(KeyError):
        with store.transaction() as data:
            data.workers["gw0"] = WorkerRecord(worker="gw0", vm="v")
            raise KeyError("gw9")
    assert not store.exists()


# -- concurrency --------------------------------------------------------------------


def _add_workers(inv: str, first: int, count: int, start) -> None:  # runs in a child process
    store = StateStore(Path(inv), CHECKOUT)
    start.wait(30)
    for i in range(first, first + count):
        with store.transaction() as data:
            w = f"gw{i}"
            data.workers[w] = WorkerRecord(worker=w, vm=f"orch-{CHECKOUT}-{w}", created=str(os.getpid()))


def test_concurrent_transactions_from_several_processes_lose_no_update(store: StateStore) -> None:
    processes, per_process = 4, 20
    ctx = multiprocessing.get_context()
    start = ctx.Barrier(processes)
    children = [
        ctx.Process(target=_add_workers, args=(str(store.inventory_dir), p * per_process, per_process, start))
        for p in range(processes)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
    assert [c.exitcode for c in children] == [0] * processes
    data = store.read()
    assert set(data.workers) == {f"gw{i}" for i in range(processes * per_process)}
    assert all(rec.vm == f"orch-{CHECKOUT}-{w}" for w, rec in data.workers.items())
    assert len({rec.created for rec in data.workers.values()}) == processes  # every process wrote
    assert leftovers(store) == []


def run_in_threads(count: int, fn) -> list[BaseException]:
    errors: list[BaseException] = []
    start = threading.Barrier(count)

    def run(n: int) -> None:
        try:
            start.wait(10)
            fn(n)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return errors


def test_concurrent_transactions_from_threads_lose_no_update(store: StateStore) -> None:
    # orch up updates the state from a thread pool (one thread per worker)
    def add(n: int) -> None:
        for i in range(n * 10, n * 10 + 10):
            with store.transaction() as data:
                data.workers[f"gw{i}"] = WorkerRecord(worker=f"gw{i}", vm=f"v{i}")

    assert run_in_threads(4, add) == []
    assert set(store.read().workers) == {f"gw{i}" for i in range(40)}


def test_concurrent_first_use_of_a_folder_never_fails(inv: Path) -> None:
    # Several commands (or xdist workers) that each open the checkout at the same moment
    # must not see a false "cannot write ... --inventory-dir".
    def open_many(n: int) -> None:
        for _ in range(30):
            StateStore(inv, CHECKOUT).ensure_dir()

    assert run_in_threads(8, open_many) == []
    assert [p.name for p in (inv / ".orch").iterdir()] == []


# -- command lock -------------------------------------------------------------------


def _hold_command_lock(inv: str, held, release) -> None:  # runs in a child process
    with StateStore(Path(inv), CHECKOUT).command_lock():
        held.set()
        release.wait(30)


@pytest.fixture
def other_command(store: StateStore):
    """Another process that holds this checkout's command lock until ``release`` is set."""
    ctx = multiprocessing.get_context()
    held, release = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_hold_command_lock, args=(str(store.inventory_dir), held, release))
    child.start()
    assert held.wait(30), "the child process never took the lock"
    yield release
    release.set()
    child.join(30)
    assert child.exitcode == 0


def test_command_lock_no_wait_raises_lock_busy_while_another_process_holds_it(store: StateStore, other_command) -> None:
    with pytest.raises(LockBusy) as exc:
        with store.command_lock(wait=False):
            pytest.fail("got the lock while another process holds it")
    assert "another orch command" in str(exc.value)


def test_command_lock_is_free_again_when_the_other_command_ends(store: StateStore, other_command) -> None:
    with pytest.raises(LockBusy):
        with store.command_lock(wait=False):
            pass
    other_command.set()  # the other command finishes
    entered = False
    for _ in range(100):  # the child needs a moment to let go
        try:
            with store.command_lock(wait=False):
                entered = True
            break
        except LockBusy:
            threading.Event().wait(0.05)
    assert entered


def test_command_lock_waits_and_says_so(store: StateStore, other_command) -> None:
    calls = []

    def on_wait() -> None:
        calls.append("waiting")
        other_command.set()  # the other command ends while we wait

    with store.command_lock(wait=True, on_wait=on_wait):
        entered = True
    assert entered
    assert calls == ["waiting"]


def test_command_lock_free_does_not_call_on_wait(store: StateStore) -> None:
    calls = []
    with store.command_lock(wait=True, on_wait=lambda: calls.append(1)):
        pass
    with store.command_lock(wait=False):
        pass
    assert calls == []


# -- unwritable folders -------------------------------------------------------------


def _file_in_the_way(tmp_path: Path) -> Path:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file, not a folder\n")
    return blocker


@pytest.mark.parametrize("where", ["is-a-file", "under-a-file"])
@pytest.mark.parametrize("operation", ["ensure_dir", "write", "transaction", "command_lock"])
def test_unwritable_inventory_dir_names_the_option(tmp_path: Path, where: str, operation: str) -> None:
    blocker = _file_in_the_way(tmp_path)
    inv = blocker if where == "is-a-file" else blocker / "inventories"
    store = StateStore(inv, CHECKOUT)
    with pytest.raises(StateError) as exc:
        if operation == "ensure_dir":
            store.ensure_dir()
        elif operation == "write":
            store.write(sample())
        else:
            with getattr(store, operation)():
                pytest.fail("entered a block in an unwritable folder")
    message = str(exc.value)
    assert "--inventory-dir" in message and "ORCH_INVENTORY_DIR" in message
    assert str(inv) in message
    assert blocker.read_text() == "a file, not a folder\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_inventory_dir_names_the_option(tmp_path: Path) -> None:
    inv = tmp_path / "inventories"
    inv.mkdir()
    inv.chmod(0o500)
    try:
        with pytest.raises(StateError, match="--inventory-dir"):
            StateStore(inv, CHECKOUT).ensure_dir()
    finally:
        inv.chmod(0o700)


def test_ensure_dir_leaves_no_probe_behind(store: StateStore) -> None:
    store.ensure_dir()
    store.ensure_dir()
    assert store.dir.is_dir()
    assert list(store.dir.iterdir()) == []
