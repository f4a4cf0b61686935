"""The long-lived maintainer on the FakeProvider: a claim made while a refill is in flight
starts its own make at once, standbys come before pool VMs, the self-sizing pool follows
the claim rate within its floor and ceiling, one maintainer at a time (two spawns at
once start one process; two loops at once make each spare once), a request made while it
exits is served, `orch down` does not wait for an idle maintainer, and a maintainer
killed mid-make leaves a state the next one (or `orch up`) repairs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fakes_core import fake_orch, maintain_now

from orchestrator.core import maintainer, spares
from orchestrator.core.context import Context
from orchestrator.providers.fake import FAKE_IMAGE, Crash, FakeProvider
from orchestrator.state.leases import Lease
from orchestrator.state.records import CREATING, READY, Demand, StateData
from orchestrator.verbs.down import down
from orchestrator.verbs.oneoffs import create_oneoff
from orchestrator.verbs.reset import reset
from orchestrator.verbs.up import up

DEAD_RUN = "20260101000000-1-0123abcd"
TESTS = Path(__file__).resolve().parents[1]


def pool_vms(orch: Context, phase: str | None = None) -> list[str]:
    return sorted(o.vm for o in orch.store.read().oneoffs.values() if o.pool and (phase is None or o.phase == phase))


def unrecorded(orch: Context) -> set[str]:
    return set(orch.provider.vms) - orch.store.read().all_vms()


def slow(orch: Context, seconds: float) -> list[tuple[str, float, float]]:
    """Make each clone take ``seconds``; returns the log of (vm, start, end)."""
    fake = orch.provider
    assert isinstance(fake, FakeProvider)
    real = fake.clone
    log: list[tuple[str, float, float]] = []

    def clone(baseline, vm, owner) -> None:  # type: ignore[no-untyped-def]
        start = time.monotonic()
        time.sleep(seconds)
        real(baseline, vm, owner)
        log.append((vm, start, time.monotonic()))

    fake.clone = clone  # type: ignore[method-assign]
    return log


def in_background(orch: Context, **kwargs: object) -> tuple[threading.Thread, list[object]]:
    got: list[object] = []
    thread = threading.Thread(target=lambda: got.append(maintainer.maintain(orch, **kwargs)), daemon=True)  # type: ignore[arg-type]
    thread.start()
    return thread, got


def wait_for(check, what: str, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


# -- taking requests while it works -------------------------------------------------------


def test_a_claim_while_a_refill_is_in_flight_starts_its_own_make_at_once(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path, pool=2)
    up(orch, 1)
    clones = slow(orch, 1.0)
    create_oneoff(orch, DEAD_RUN)  # the first claim: a refill starts
    maintainer.wanted(orch).touch()
    thread, got = in_background(orch, stay=False)
    wait_for(lambda: len(pool_vms(orch)) == 2 and len(pool_vms(orch, READY)) == 1, "the first refill to be recorded")
    create_oneoff(orch, DEAD_RUN)  # the second claim, while the first refill is being made
    maintainer.wanted(orch).touch()
    thread.join(30)
    assert not thread.is_alive() and got == [[]]
    assert len(clones) == 2
    (_, _, first_end), (_, second_start, _) = sorted(clones, key=lambda c: c[1])
    assert second_start < first_end  # it did not wait for the first make to finish
    assert len(pool_vms(orch, READY)) == 2 and unrecorded(orch) == set()
    assert len(orch.store.read().demand.makes) == 2  # how long each took, for pool = "auto"


def test_standbys_are_made_before_pool_vms(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path, pool=2, standby=True, parallel=1)
    up(orch, 2)
    for _ in range(2):
        create_oneoff(orch, DEAD_RUN)
    assert reset(orch, ["gw0"])[0].action == "swapped"
    assert reset(orch, ["gw1"])[0].action == "swapped"
    clones = slow(orch, 0.0)
    maintain_now(orch)
    order = [vm for vm, _, _ in sorted(clones, key=lambda c: c[1])]
    standbys = {s.vm for s in orch.store.read().standbys.values()}
    assert len(order) == 4 and set(order[:2]) == standbys and set(order[2:]) == set(pool_vms(orch))
    assert orch.store.read().trash == [] and unrecorded(orch) == set()


def test_a_new_standby_waits_for_the_trash_of_its_name_and_survives_it(tmp_path: Path) -> None:
    """A swap renames the worker's old VM to the standby's name and trashes it; a new
    standby made under that name while the (slow) delete of the trash runs was deleted as
    the trash, and the next reset found no standby (a hard reset)."""
    orch = fake_orch(tmp_path, pool=0, standby=True)
    up(orch, 1)
    assert reset(orch, ["gw0"])[0].action == "swapped"
    assert orch.store.read().trash  # the old VM, under the standby's name
    orch.provider.latency["delete"] = 0.5  # type: ignore[attr-defined]
    clones = slow(orch, 0.0)
    maintain_now(orch)
    assert len(clones) == 1  # made once: not deleted as the trash and made again
    data = orch.store.read()
    standby = data.standbys["gw0"]
    assert data.trash == [] and standby.phase == READY
    assert standby.vm in orch.provider.vms  # type: ignore[attr-defined]
    assert reset(orch, ["gw0"])[0].action == "swapped"


def test_a_failed_make_stops_the_inline_maintainer_and_backs_off_in_the_background(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path, pool=1)
    up(orch, 1)
    create_oneoff(orch, DEAD_RUN)
    orch.provider.faults.fail("clone", times=50, permanent=True)  # type: ignore[attr-defined]
    maintainer.wanted(orch).touch()
    failed = maintainer.maintain(orch, stay=False)
    assert len(failed) == 1 and "permanent" in failed[0].error
    before = orch.provider.counts()["clone"]  # type: ignore[attr-defined]
    maintainer.wanted(orch).touch()
    failed = maintainer.maintain(orch, stay=True)  # backs off, then gives up after a few rounds
    assert len(failed) == maintainer.MAX_FAILED_ROUNDS
    assert orch.provider.counts()["clone"] - before == maintainer.MAX_FAILED_ROUNDS  # type: ignore[attr-defined]


# -- the self-sizing pool -----------------------------------------------------------------


def auto(tmp_path: Path, **overrides: object) -> Context:
    return fake_orch(tmp_path, pool="auto", **overrides)


def size_after(orch: Context, claims: list[float], makes: list[float] = (), now: float | None = None) -> int:  # type: ignore[assignment]
    data = StateData(checkout=orch.checkout)
    for took in makes:
        data.demand.made(took)
    for t in claims:
        data.demand.claimed(t, spares.make_seconds(data))
    return spares.pool_size(orch.settings, data, now if now is not None else (claims[-1] if claims else 0.0))


def test_the_auto_pool_grows_with_the_claim_rate_within_its_floor_and_ceiling(tmp_path: Path) -> None:
    orch = auto(tmp_path, pool_min=2, pool_max=12)
    assert size_after(orch, []) == 2  # no claims yet: the floor
    sizes = [size_after(orch, [1000.0 + i * gap for i in range(20)], makes=[2.0]) for gap in (30.0, 5.0, 1.0, 0.25)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]  # more claims per second, a bigger pool
    assert all(2 <= s <= 12 for s in sizes)
    assert size_after(orch, [1000.0 + i * 0.01 for i in range(50)], makes=[2.0]) == 12  # a burst: the ceiling
    one_a_second = size_after(orch, [1000.0 + i for i in range(60)], makes=[2.0])
    assert one_a_second == 1 * 2 * 1.5 + 1  # the formula: ceil(rate × make × 1.5) + 1


def test_the_last_runs_rate_sizes_the_next_run_and_up_fills_to_it(tmp_path: Path) -> None:
    demand = Demand()
    for i in range(8):
        demand.claimed(1000.0 + i * 0.1, 2.0)
    peak = demand.peak
    demand.claimed(1000.0 + 3600, 2.0)  # an hour later: another run
    assert demand.last_peak == peak and demand.claims == [4600.0]
    orch = auto(tmp_path, pool_min=1, pool_max=16)
    up(orch, 1)
    assert len(pool_vms(orch)) == 1  # the floor: no claims seen yet
    with orch.store.transaction() as state:
        state.demand = Demand(last_peak=2.0, makes=[2.0])  # the last run claimed 2 a second
    up(orch, 1)
    assert len(pool_vms(orch, READY)) == spares.wanted_pool(orch) == 7  # ceil(2 × 2 × 1.5) + 1


def test_claims_are_recorded_hit_or_miss_and_bounded(tmp_path: Path) -> None:
    orch = auto(tmp_path, pool_min=1, pool_max=4)
    up(orch, 1)
    create_oneoff(orch, DEAD_RUN)  # a pool VM
    create_oneoff(orch, DEAD_RUN)  # the pool is empty: made
    assert len(orch.store.read().demand.claims) == 2
    demand = Demand()
    for i in range(1000):
        demand.claimed(float(i), 1.0)
        demand.made(1.0)
    assert len(demand.claims) <= 256 and len(demand.makes) <= 16


def test_a_burst_of_claims_grows_the_auto_pool_and_the_maintainer_refills_it(tmp_path: Path) -> None:
    orch = auto(tmp_path, pool_min=1, pool_max=6)
    up(orch, 1)
    for _ in range(4):
        create_oneoff(orch, DEAD_RUN)
    wanted = spares.wanted_pool(orch)
    assert 1 < wanted <= 6
    maintain_now(orch)
    assert len(pool_vms(orch, READY)) == wanted and unrecorded(orch) == set()


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"pool": "lots"}, 'pool must be a number between 0 and 64, or "auto"'),
        ({"pool": True}, "pool must be a number"),
        ({"pool": 65}, "pool must be a number"),
        ({"pool_max": 65}, "pool_max must be between 1 and 64"),
        ({"pool_min": 5, "pool_max": 2}, "pool_max must not be below pool_min (5"),
    ],
)
def test_bad_pool_settings_are_one_line(tmp_path: Path, overrides: dict[str, object], words: str) -> None:
    from orchestrator.primitives.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        fake_orch(tmp_path, **overrides)
    assert words in str(err.value) and "\n" not in str(err.value)


# -- one maintainer at a time -------------------------------------------------------------


def test_two_spawns_at_once_start_one_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    orch = fake_orch(tmp_path, pool=1)
    up(orch, 1)
    started: list[list[str]] = []
    barrier = threading.Barrier(2)

    class Child:
        pid = os.getpid()  # alive, and not holding the lock yet: a maintainer starting

        def __init__(self, argv: list[str], **kwargs: object) -> None:
            started.append(argv)
            assert kwargs["env"][maintainer.STAY_ENV] == "1"  # type: ignore[index]

    monkeypatch.setattr(maintainer.subprocess, "Popen", Child)

    def spawn() -> None:
        barrier.wait()
        maintainer.spawn_maintainer(orch)

    threads = [threading.Thread(target=spawn) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(started) == 1 and maintainer.wanted(orch).exists()
    with maintainer.maintaining(orch, wait=False) as free:  # a maintainer holding the lock
        assert free
        maintainer.spawn_maintainer(orch)
    (tmp_path / "inventories/.orch/maintain.starting").unlink()
    with orch.store.dir.joinpath("maintain.lock").open():
        pass
    lock_held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with maintainer.maintaining(orch, wait=False):
            lock_held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    lock_held.wait(10)
    maintainer.spawn_maintainer(orch)  # the lock is held: no process started
    release.set()
    holder.join()
    assert len(started) == 1


def test_two_maintainers_at_once_make_each_spare_once(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path, pool=3)
    up(orch, 1)
    for _ in range(3):
        create_oneoff(orch, DEAD_RUN)
    slow(orch, 0.3)
    before = orch.provider.counts()["clone"]  # type: ignore[attr-defined]
    maintainer.wanted(orch).touch()
    one, got_one = in_background(orch, stay=False)
    two, got_two = in_background(orch, stay=False)
    one.join(30)
    two.join(30)
    assert got_one == got_two == [[]]
    assert orch.provider.counts()["clone"] - before == 3  # type: ignore[attr-defined]
    assert len(pool_vms(orch, READY)) == 3 and unrecorded(orch) == set()


def test_a_request_made_while_the_maintainer_exits_is_served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    orch = fake_orch(tmp_path, pool=2)
    up(orch, 1)
    create_oneoff(orch, DEAD_RUN)
    real = maintainer._Loop.run
    rounds: list[int] = []

    def run(self):  # type: ignore[no-untyped-def]
        failed = real(self)
        rounds.append(len(pool_vms(orch, READY)))
        if len(rounds) == 1:  # after its last look, before it let go of the lock: a claim
            create_oneoff(orch, DEAD_RUN)
            maintainer.spawn_maintainer(orch)  # finds the lock held: starts nothing, leaves the flag
        return failed

    monkeypatch.setattr(maintainer._Loop, "run", run)
    monkeypatch.setattr(maintainer.subprocess, "Popen", lambda *a, **k: pytest.fail("a second maintainer was started"))
    orch._refill = maintainer.spawn_maintainer  # type: ignore[assignment]
    maintainer.wanted(orch).touch()
    assert maintainer.maintain(orch, stay=False) == []
    assert rounds == [2, 2] and len(pool_vms(orch, READY)) == 2


# -- lifetime, and orch up / orch down ------------------------------------------------------


def test_it_stays_while_a_run_is_alive_and_down_does_not_wait_for_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(maintainer, "IDLE_GRACE", 0.2)
    orch = fake_orch(tmp_path, pool=1, standby=True)
    up(orch, 1)
    lease = Lease(orch.settings.inventory_dir)
    try:
        create_oneoff(orch, DEAD_RUN)
        maintainer.wanted(orch).touch()
        thread, got = in_background(orch, stay=True)
        wait_for(lambda: len(pool_vms(orch, READY)) == 1, "the refill")
        time.sleep(0.5)  # past the idle grace: it stays for the live run
        assert thread.is_alive()
        create_oneoff(orch, DEAD_RUN)  # a request to the idle maintainer
        wait_for(lambda: len(pool_vms(orch, READY)) == 1 and len(orch.store.read().oneoffs) == 3, "the second refill")
        down(orch)  # asks the idle maintainer for the lock: it lets go at its next tick
        thread.join(30)
        assert not thread.is_alive() and got == [[]]
        assert orch.provider.vms == {} and not (orch.store.dir / "maintain.yield").exists()
    finally:
        lease.release()


def test_it_exits_after_the_idle_grace_when_no_run_is_alive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(maintainer, "IDLE_GRACE", 0.3)
    orch = fake_orch(tmp_path, pool=1)
    up(orch, 1)
    maintainer.wanted(orch).touch()
    thread, got = in_background(orch, stay=True)
    thread.join(30)
    assert not thread.is_alive() and got == [[]]


# -- killed mid-make ----------------------------------------------------------------------

CHILD = """
import sys, time
sys.path.insert(0, {tests!r})
from fakes_core import fake_orch
from orchestrator.core import maintainer
from orchestrator.providers.fake import FakeProvider
from orchestrator.core import settings as config
from pathlib import Path
settings = config.load(cwd=Path({root!r}), env={{}}, overrides={{"pool": 3, "standby": True}})
fake = FakeProvider(settings)
real = fake.clone
def clone(baseline, vm, owner):
    real(baseline, vm, owner)
    time.sleep(60)  # made, never finished: killed here
fake.clone = clone
orch = fake_orch(Path({root!r}), provider=fake, pool=3, standby=True)
maintainer.maintain(orch, stay=False)
"""


@pytest.mark.parametrize("repairer", ["maintainer", "up"])
def test_a_maintainer_killed_mid_make_leaves_a_state_the_next_one_repairs(tmp_path: Path, repairer: str) -> None:
    backend = tmp_path / "backend.json"
    (tmp_path / "pyproject.toml").write_text(
        f'[tool.orch]\nprovider = "docker"\nimage = "{FAKE_IMAGE}"\nretries = 2\n\n[tool.orch.fake]\npath = "{backend}"\n'
    )
    orch = fake_orch(tmp_path, pool=3, standby=True)
    up(orch, 2)
    for _ in range(3):
        create_oneoff(orch, DEAD_RUN)
    assert reset(orch, ["gw0"])[0].action == "swapped"
    maintainer.wanted(orch).touch()
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(tests=str(TESTS), root=str(tmp_path))])
    fake = orch.provider
    assert isinstance(fake, FakeProvider)

    def unfinished() -> list[str]:
        data = orch.store.read()
        return [o.vm for o in data.oneoffs.values() if o.pool and o.phase != READY] + [
            s.vm for s in data.standbys.values() if s.phase != READY
        ]

    def all_four_made() -> bool:  # 3 pool VMs and gw0's standby: recorded, made, not finished
        fake._load()
        return len(unfinished()) == 4 and all(vm in fake.vms for vm in unfinished())

    try:
        wait_for(all_four_made, "the makes of the maintainer about to be killed")
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
    fake._load()
    left = unfinished()
    assert {o.phase for o in orch.store.read().oneoffs.values() if o.pool} <= {CREATING, "provisioning"}
    assert unrecorded(orch) == set()  # recorded before it was made: nothing forgotten
    if repairer == "up":
        assert all(r.ok for r in up(orch, 2))
    else:
        maintain_now(orch)
    fake._load()
    data = orch.store.read()
    assert len(pool_vms(orch, READY)) == 3 and {w: s.phase for w, s in data.standbys.items()} == {"gw0": READY, "gw1": READY}
    assert unrecorded(orch) == set()
    assert not [vm for vm in left if vm in fake.vms and vm not in data.all_vms()]
    down(orch)
    fake._load()
    assert fake.vms == {}


def test_a_crash_in_a_make_thread_stops_the_loop_and_leaks_nothing(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path, pool=2)
    up(orch, 1)
    create_oneoff(orch, DEAD_RUN)
    create_oneoff(orch, DEAD_RUN)
    orch.provider.faults.crash("clone", after=True)  # type: ignore[attr-defined]
    maintainer.wanted(orch).touch()
    with pytest.raises(Crash):
        maintainer.maintain(orch, stay=False)
    assert unrecorded(orch) == set()
    maintain_now(orch)
    assert len(pool_vms(orch, READY)) == 2 and unrecorded(orch) == set()
