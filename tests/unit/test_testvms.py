"""Names for VMs that tests make themselves (``orchestrator.vm_name``), on the FakeProvider:
the name's form on every backend, recorded before it is handed out and never handed out
twice (many processes at once), deleted after its test, and what ``orch sweep`` and
``orch down`` delete of them: exactly this checkout's recorded names whose run is gone."""

from __future__ import annotations

import multiprocessing
import random
import re
from pathlib import Path

import pytest
from fakes_core import fake_orch

from orchestrator.primitives import naming
from orchestrator.primitives.errors import UsageError
from orchestrator.primitives.kinds import Kind
from orchestrator.providers.fake import FakeVM
from orchestrator.state.leases import Lease, new_run_id
from orchestrator.state.store import StateStore
from orchestrator.verbs import testvms
from orchestrator.verbs.down import down
from orchestrator.verbs.sweep import Sweeper

#: What each backend takes as a name: Docker and podman (their own check), and a
#: hostname's label (Incus instances, OrbStack machines): 63 characters at most.
DOCKER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")
HOSTNAME_LABEL = re.compile(r"[a-z][a-z0-9-]{0,61}[a-z0-9]")


def add_vm(orch, name: str, labels: dict[str, str] | None = None) -> None:
    """A VM made behind orch's back (as a test makes one through its connector)."""
    orch.provider.vms[name] = FakeVM(name, "running", dict(labels or {}), "fake:bookworm")


def plan(orch, **kwargs):
    return {d.vm: d for d in Sweeper(orch.settings, orch.provider).plan(**kwargs)}


def sweep(settings, provider, **kwargs):
    """``orch sweep`` (its plan carried out), as from the CLI."""
    sweeper = Sweeper(settings, provider)
    return sweeper.execute(sweeper.plan(**kwargs))


# -- the name -------------------------------------------------------------------------------


def test_the_name_is_the_seeds_form_with_the_checkout() -> None:
    name = naming.named_vm_name("test-vm", "1a2b3c4d", now=1698765432, pid=12345)
    assert re.fullmatch(r"test-vm-1a2b3c4d-1698765432-12345-[0-9a-f]{6}", name)
    assert naming.parse_named_vm_name(name) == ("test-vm", "1a2b3c4d")


@pytest.mark.parametrize("base", ["a", "test-vm", "e2e-ops-vm", "x" * naming.VM_BASE_MAX, "a1-b2-c3"])
def test_every_name_fits_every_backend(base: str) -> None:
    """The longest base and the largest Linux pid (7 digits) still make a 63-character name."""
    name = naming.named_vm_name(base, "deadbeef", pid=4194304)
    assert len(name) <= 63
    assert DOCKER_NAME.fullmatch(name) and HOSTNAME_LABEL.fullmatch(name)


@pytest.mark.parametrize(
    "base",
    ["", "Test-vm", "test_vm", "1vm", "-vm", "vm-", "a--b", "x" * (naming.VM_BASE_MAX + 1), "a/b", "vm; rm -rf /", "vm name", 7],
)
def test_a_bad_base_is_refused_in_one_line_with_the_fix(base: object) -> None:
    with pytest.raises(UsageError) as err:
        naming.named_vm_name(base, "deadbeef")  # type: ignore[arg-type]
    message = str(err.value)
    assert "\n" not in message and "lowercase letters, digits or single hyphens" in message and '"test-vm"' in message


@pytest.mark.parametrize(
    "name",
    ["test-vm-1698765432-12345-7890", "orch-1a2b3c4d-gw0", "test-vm-1a2b3c4d-1698765432-12345-7890", "my-vm", "test-vm-XYZ"],
)
def test_other_names_are_not_taken_for_handed_out_ones(name: str) -> None:
    assert naming.parse_named_vm_name(name) is None


# -- handing names out ----------------------------------------------------------------------


def test_a_name_is_recorded_before_it_is_handed_out(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path)
    run = new_run_id()
    name = testvms.hand_out(orch.store, "fake", "test-vm", run=run, worker="gw1", test="t.py::test_a")
    rec = orch.store.read().testvms[name]
    assert (rec.run, rec.session, rec.worker, rec.test, rec.scope, rec.provider) == (
        run,
        run,
        "gw1",
        "t.py::test_a",
        "test",
        "fake",
    )
    assert naming.parse_named_vm_name(name) == ("test-vm", orch.checkout)


def test_a_name_already_recorded_is_never_handed_out_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    orch = fake_orch(tmp_path)
    first = testvms.hand_out(orch.store, "fake", run=new_run_id())
    again = iter([first, first, first.replace(first[-6:], "abcdef")])
    monkeypatch.setattr(naming, "named_vm_name", lambda base, checkout: next(again))
    second = testvms.hand_out(orch.store, "fake", run=new_run_id())
    assert second != first and set(orch.store.read().testvms) == {first, second}


def test_a_scope_or_run_that_is_not_one_is_refused(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path)
    with pytest.raises(UsageError, match="invalid scope 'module'"):
        testvms.hand_out(orch.store, "fake", run=new_run_id(), scope="module")
    with pytest.raises(UsageError, match="run lease"):
        testvms.hand_out(orch.store, "fake", run="")
    assert orch.store.read().testvms == {}


def _hand_out_many(inventory: str, checkout: str, count: int, seed: int) -> tuple[list[str], int]:
    """In a process of its own: the same second, the same pid and a random part drawn
    from 1024 values in every process, so names clash often and only the record stops them."""
    rng = random.Random(seed)
    runs = [new_run_id() for _ in range(count)]
    naming.time.time = lambda: 1698765432.0  # type: ignore[attr-defined]
    naming.os.getpid = lambda: 4242  # type: ignore[attr-defined]
    naming.secrets.token_hex = lambda n: f"{rng.randrange(1024):06x}"  # type: ignore[attr-defined]
    made, tried = naming.named_vm_name, []
    naming.named_vm_name = lambda *a, **k: tried.append(1) or made(*a, **k)  # type: ignore[assignment]
    store = StateStore(Path(inventory), checkout)
    names = [testvms.hand_out(store, "fake", run=run, test=f"t::{seed}-{i}") for i, run in enumerate(runs)]
    return names, len(tried)


def test_many_processes_at_once_never_get_the_same_name(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path)
    orch.store.ensure_dir()
    with multiprocessing.get_context("fork").Pool(8) as pool:
        batches = pool.starmap(_hand_out_many, [(str(orch.settings.inventory_dir), orch.checkout, 25, s) for s in range(8)])
    names = [n for batch, _ in batches for n in batch]
    assert len(names) == 200 and len(set(names)) == 200
    assert sum(tried for _, tried in batches) > 200  # names clashed, and the record refused each clash
    recorded = orch.store.read().testvms
    assert set(recorded) == set(names)
    assert {r.test for r in recorded.values()} == {f"t::{s}-{i}" for s in range(8) for i in range(25)}


# -- deleting what is under them --------------------------------------------------------------


def test_what_a_test_left_under_its_names_is_deleted_and_the_records_dropped(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path)
    run = new_run_id()
    left, cleaned, orchs = (testvms.hand_out(orch.store, "fake", run=run) for _ in range(3))
    add_vm(orch, left)
    add_vm(orch, orchs, orch.owner(Kind.ONEOFF, run=run).labels())  # an orch VM under that name: not the test's
    add_vm(orch, "test-vm-1698765432-1-1234")  # a VM with a similar name the test was not handed
    done = {d.vm: d.result for d in testvms.delete_named(orch, [left, cleaned, orchs])}
    assert done == {left: "deleted", cleaned: "absent", orchs: "left"}
    assert set(orch.provider.vms) == {orchs, "test-vm-1698765432-1-1234"}
    assert orch.store.read().testvms == {}


def test_a_deletion_that_fails_keeps_the_record_for_sweep(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path)
    name = testvms.hand_out(orch.store, "fake", run=new_run_id())
    add_vm(orch, name)
    orch.provider.faults.fail("delete", permanent=True)
    [done] = testvms.delete_named(orch, [name])
    assert done.result == "failed" and "permanent" in done.error
    assert name in orch.provider.vms and name in orch.store.read().testvms
    sweep(orch.settings, orch.provider)  # the run is gone (its lease was never held)
    assert name not in orch.provider.vms and orch.store.read().testvms == {}


# -- sweep and down ---------------------------------------------------------------------------


def test_sweep_deletes_exactly_the_recorded_names_whose_run_is_gone(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path / "a")
    other = fake_orch(tmp_path / "b", provider=orch.provider)  # another checkout, on the same backend
    live = Lease(orch.settings.inventory_dir)
    try:
        dead = testvms.hand_out(orch.store, "fake", run=new_run_id(), test="t::dead")
        alive = testvms.hand_out(orch.store, "fake", run=live.run, test="t::alive")
        gone = testvms.hand_out(orch.store, "fake", run=new_run_id(), test="t::gone")  # its VM never made
        theirs = testvms.hand_out(other.store, "fake", run=new_run_id(), test="t::theirs")  # dead run, other checkout
        alike = naming.named_vm_name("test-vm", orch.checkout)  # this checkout's form, never handed out
        seed = "test-vm-1698765432-12345-7890"  # the seed's own form (a legacy prefix)
        for name in (dead, alive, theirs, alike, seed):
            add_vm(orch, name)
        decisions = plan(orch)
        assert decisions[dead].delete and "t::dead" in decisions[dead].reason and decisions[dead].kind == "testvm"
        assert decisions[gone].delete and "not listed" in decisions[gone].reason
        assert not decisions[alive].delete and "alive" in decisions[alive].reason
        assert not decisions[theirs].delete and other.checkout in decisions[theirs].reason
        assert not decisions[alike].delete and "not recorded" in decisions[alike].reason
        assert seed not in decisions
        results = {d.vm: d.result for d in sweep(orch.settings, orch.provider, legacy=True)}
        assert (results[dead], results[gone], results[alive], results[theirs], results[alike]) == (
            "deleted",
            "gone",
            "kept",
            "kept",
            "kept",
        )
        assert results[seed] == "deleted"  # --legacy still takes the seed's own names, as before
        assert set(orch.provider.vms) == {alive, theirs, alike}
        assert set(orch.store.read().testvms) == {alive} and set(other.store.read().testvms) == {theirs}
    finally:
        live.release()


def test_a_name_recorded_for_another_provider_is_not_judged_through_this_one(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path)
    name = testvms.hand_out(orch.store, "docker", run=new_run_id())
    add_vm(orch, name)
    assert not plan(orch)[name].delete
    sweep(orch.settings, orch.provider)
    assert name in orch.provider.vms and name in orch.store.read().testvms


def test_down_deletes_what_dead_runs_left_and_leaves_a_live_runs(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path)
    live = Lease(orch.settings.inventory_dir)
    try:
        dead = testvms.hand_out(orch.store, "fake", run=new_run_id())
        gone = testvms.hand_out(orch.store, "fake", run=new_run_id())
        alive = testvms.hand_out(orch.store, "fake", run=live.run)
        add_vm(orch, dead)
        add_vm(orch, alive)
        add_vm(orch, "test-vm-1698765432-12345-7890")
        results = {r.vm: r.action for r in down(orch)}
        assert results == {dead: "deleted", gone: "forgotten"}
        assert set(orch.provider.vms) == {alive, "test-vm-1698765432-12345-7890"}
        assert set(orch.store.read().testvms) == {alive}
    finally:
        live.release()


def test_the_records_survive_the_state_file_and_a_bad_one_is_refused(tmp_path: Path) -> None:
    from orchestrator.state.records import StateData

    orch = fake_orch(tmp_path)
    name = testvms.hand_out(orch.store, "fake", run=new_run_id(), scope="session", test="t::a")
    again = StateData.from_json(orch.store.read().to_json())
    assert again.testvms[name].scope == "session" and again.testvms[name].test == "t::a"
    assert name not in again.all_vms()  # not orch's VMs: nothing counts them as the checkout's
    raw = orch.store.read().to_json().replace('"scope"', '"scoop"')
    with pytest.raises(ValueError, match="unknown field"):
        StateData.from_json(raw)
    with pytest.raises(ValueError, match="testvms must be a table"):
        StateData.from_json('{"checkout": "x", "version": 2, "testvms": []}')


def test_status_shows_the_recorded_names_with_their_test_and_run(tmp_path: Path) -> None:
    from orchestrator.verbs.status import status

    orch = fake_orch(tmp_path)
    live = Lease(orch.settings.inventory_dir)
    try:
        alive = testvms.hand_out(orch.store, "fake", run=live.run, worker="gw1", test="t::alive")
        dead = testvms.hand_out(orch.store, "fake", run=new_run_id(), test="t::dead")
        add_vm(orch, alive)
        rows = {r.vm: r for r in status(orch)}
        assert (rows[alive].kind, rows[alive].worker, rows[alive].state, rows[alive].test) == (
            "testvm",
            "gw1",
            "running",
            "t::alive",
        )
        assert rows[alive].phase == "its run is alive"
        assert rows[dead].state == "missing" and "orch sweep" in rows[dead].phase
    finally:
        live.release()
