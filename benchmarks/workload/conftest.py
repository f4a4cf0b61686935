"""The benchmark workload's strategies and measurements (read by benchmarks/bench.py).

Chosen by environment variables (bench.py sets them):

- ``BENCH_STRATEGY``: how a test gets its VMs
    * ``per_test``    one VM per test, created before it and deleted after it (the ADR's
                      "before": every machine created from the image, as the seed did);
    * ``per_session`` one VM per xdist worker, created on first use and deleted at the end
                      of the session (the ADR's "after", the seed's ``get_worker_vm``);
                      a fresh VM is created from the image and deleted after its test
                      (the seed's ``create_test_vm(reuse_worker_vm=False)``), and a reset is
                      the only one the seed had: delete the worker VM, create another;
    * ``orch``        orch's fixtures: ``orch_worker``, ``fresh_vm()`` and the
                      ``orch_reset`` marker (pool and standby come from ``[tool.orch]``).
  The seed's VMs are made through orch's provider API (``provider.create(name, image,
  owner)`` then ``wait_ready``), outside orch's state: the strategies differ only in when
  and how VMs are made, not in the code that talks to the backend.
- ``BENCH_SCALE``: a test's work is ``5 s x BENCH_SCALE`` (a sleep), the seed's 5 s test
  shrunk with the emulator's latencies.
- ``BENCH_OUT``: a folder; each pytest process writes ``records-<pid>.json`` there, one
  record per test: its kind, setup/call/teardown seconds, the work it did, how long each
  ``fresh_vm()`` call took inside the test, whether a pool VM served it, and (for tests
  marked ``bench_reset``) the teardown that does the reset: the waits as the test sees them.
- ``BENCH_MIX=pollute`` (the isolation section): 10 % of the tests pollute their VM (a
  file in /etc, a user, a process left running) and every test first looks for what any
  polluter leaves (``saw`` in its record: what it found); ``BENCH_VM=fresh`` gives each
  test a VM of its own (``fresh_vm()``) instead of its worker's; ``BENCH_CHECKER=generic``
  makes orch check with the command inside the VM even where its provider reads the
  changes from the host (the two measured side by side).
- ``BENCH_WAIT_SPARES=1``: before each test (in its setup, outside every timing), wait
  until orch's spares are warm: the pool full and ready, the standbys ready, the trash
  empty and no ``orch maintain`` running. For the p50/p95 of a claim or a swap "with a
  warm pool / a ready standby"; the workload mixes never wait.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

STRATEGY = os.environ.get("BENCH_STRATEGY", "orch")
SCALE = float(os.environ.get("BENCH_SCALE", "0.05"))
OUT = Path(os.environ.get("BENCH_OUT", "bench-out"))
WAIT_SPARES = os.environ.get("BENCH_WAIT_SPARES") == "1"
WORK_SECONDS = 5.0 * SCALE
GENERIC_CHECK = os.environ.get("BENCH_CHECKER") == "generic"

_records: dict[str, dict[str, Any]] = {}


def record(item: pytest.Item) -> dict[str, Any]:
    rec = _records.get(item.nodeid)
    if rec is None:
        params = getattr(getattr(item, "callspec", None), "params", {})
        rec = _records[item.nodeid] = {
            "test": params.get("i", -1),
            "kind": params.get("kind", ""),
            "setup": 0.0,
            "call": 0.0,
            "teardown": 0.0,
            "work": 0.0,
            "fresh_wait": [],
            "fresh_pooled": [],
            "reset_wait": None,
            "worker": os.environ.get("PYTEST_XDIST_WORKER", "gw0"),
            "saw": [],
        }
    return rec


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "bench_reset: reset this test's VM after it (orch_reset under orch)")


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    if GENERIC_CHECK and STRATEGY == "orch":
        # the provider's own checker (read from the host) left out: orch falls back to the
        # command inside the VM, as on a backend that has no cheap way
        from orchestrator.providers.base import Provider  # noqa: PLC0415  only under orch's strategies
        from orchestrator.providers.docker import DockerProvider  # noqa: PLC0415

        DockerProvider.pollution_checker = Provider.pollution_checker  # type: ignore[method-assign]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if STRATEGY == "orch":
        for item in items:
            if item.get_closest_marker("bench_reset") is not None:
                item.add_marker(pytest.mark.orch_reset)


# -- the seed's VMs -----------------------------------------------------------------------


class Seed:
    """VMs made as the seed's conftest made them, through orch's provider API: created
    from the image, waited for, deleted; nothing recorded in orch's state."""

    def __init__(self) -> None:
        # lazy: orch's code is loaded by the strategies that make seed VMs, when they make
        # the first (in that test's timed setup); orch's own strategies never load it here
        from orchestrator.core import settings as config  # noqa: PLC0415
        from orchestrator.primitives.kinds import Kind  # noqa: PLC0415
        from orchestrator.primitives.labels import Owner  # noqa: PLC0415
        from orchestrator.providers.registry import get_provider  # noqa: PLC0415

        self.settings = config.load()
        self.provider = get_provider(self.settings)
        self.image = self.settings.image or self.provider.default_image
        inventory = str(self.settings.inventory_dir)
        self.owner = Owner(Kind.ONEOFF, self.settings.checkout, inventory, run="seed-bench")

    def test_vm_name(self) -> str:
        # the seed's f"{TEST_VM_PREFIX}{timestamp}-{pid}-{random}", under the bench's prefix
        return f"{self.settings.prefix}-test-vm-{int(time.time())}-{os.getpid()}-{secrets.randbelow(9000) + 1000}"

    def worker_vm_name(self) -> str:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "master")
        return f"{self.settings.prefix}-pytest-worker-{worker}-{os.getpid()}-{secrets.token_hex(2)}"

    def create(self, name: str) -> str:
        provider = self.provider
        provider.call(f"create {name}", lambda: provider.create(name, self.image, self.owner))
        provider.wait_ready(name)
        return name

    def delete(self, name: str) -> None:
        self.provider.call(f"delete {name}", lambda: self.provider.delete(name))


_SEED: list[Seed] = []
_SESSION_VM: dict[str, str] = {}


def seed() -> Seed:
    if not _SEED:
        _SEED.append(Seed())
    return _SEED[0]


@pytest.fixture(scope="session")
def _seed_session_vm() -> Iterator[dict[str, str]]:
    _SESSION_VM["vm"] = seed().create(seed().worker_vm_name())
    yield _SESSION_VM
    seed().delete(_SESSION_VM.pop("vm"))


@pytest.fixture
def bench_vm(request: pytest.FixtureRequest) -> Iterator[Any]:
    """This test's VM: orch's worker, the seed's session VM, or a VM of its own."""
    if STRATEGY == "orch":
        yield request.getfixturevalue("orch_worker")
    elif STRATEGY == "per_session":
        yield request.getfixturevalue("_seed_session_vm")["vm"]
    elif STRATEGY == "per_test":
        name = seed().create(seed().test_vm_name())
        try:
            yield name
        finally:
            seed().delete(name)
    else:
        raise pytest.UsageError(f"BENCH_STRATEGY={STRATEGY!r}: use per_test, per_session or orch")


@pytest.fixture
def bench_fresh(request: pytest.FixtureRequest) -> Iterator[Callable[[], Any]]:
    """A factory of fresh VMs; each call is timed as the test sees it."""
    rec = record(request.node)
    if STRATEGY == "orch":
        factory = request.getfixturevalue("fresh_vm")

        def make() -> Any:
            start = time.perf_counter()
            vm = factory()
            rec["fresh_wait"].append(time.perf_counter() - start)
            # a pool VM was named by the process that made it (orch up or orch maintain)
            rec["fresh_pooled"].append(f"-{os.getpid()}-" not in vm.vm)
            return vm

        yield make
        return
    made: list[str] = []

    def make_seed() -> str:
        start = time.perf_counter()
        name = seed().create(seed().test_vm_name())
        made.append(name)
        rec["fresh_wait"].append(time.perf_counter() - start)
        rec["fresh_pooled"].append(False)
        return name

    yield make_seed
    for name in made:
        seed().delete(name)


@pytest.fixture
def bench_target(request: pytest.FixtureRequest) -> Any:
    """In the setup: the worker's VM for the tests that use it (fresh tests make their own)."""
    if request.node.callspec.params.get("kind") == "fresh":
        return request.getfixturevalue("bench_fresh")
    return request.getfixturevalue("bench_vm")


# -- the pollute mix: what a polluter leaves, and what every test looks for ----------------

#: What a polluting test leaves on its VM: a file in /etc, a user, a process left running.
POLLUTE = "touch /etc/bench-polluted-{i} && useradd benchpol{i} && (setsid nohup sleep 1001 >/dev/null 2>&1 </dev/null &)"
#: What every test looks for first (one line per kind of pollution it finds).
LOOK = (
    "ls /etc | grep -q '^bench-polluted-' && echo file; "
    "grep -q '^benchpol' /etc/passwd && echo user; "
    "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f 2>/dev/null; echo; done | grep -q '^sleep 1001 ' && echo process; "
    "true"
)


@pytest.fixture
def bench_pollution(request: pytest.FixtureRequest) -> Callable[[Any, int, bool], None]:
    """``look(vm, i, polluter)``: look for what any polluter leaves on ``vm`` (what it finds
    goes in the test's record), then, for a polluter, leave it."""
    rec = record(request.node)

    def run(vm: Any, i: int, polluter: bool) -> None:
        rec["saw"] = vm.run(LOOK).stdout.split()
        if polluter:
            vm.run(POLLUTE.format(i=i))

    return run


@pytest.fixture
def work(request: pytest.FixtureRequest) -> Callable[[], None]:
    rec = record(request.node)

    def run() -> None:
        start = time.perf_counter()
        time.sleep(WORK_SECONDS)
        rec["work"] += time.perf_counter() - start

    return run


# -- the seed's reset: a new worker VM ------------------------------------------------------


def seed_reset(item: pytest.Item) -> None:
    """The seed had no baseline: the only clean worker VM is a new one."""
    if STRATEGY == "per_session" and item.get_closest_marker("bench_reset") is not None and "vm" in _SESSION_VM:
        seed().delete(_SESSION_VM["vm"])
        _SESSION_VM["vm"] = seed().create(seed().worker_vm_name())


# -- waiting for warm spares (micro-benchmarks only) ------------------------------------


def spares_idle(inventory_dir: Path, pool: int | str, standby: bool, *, in_run: bool = False) -> str | None:
    """None when the pool is full and ready, every worker has a ready standby, the trash is
    empty and no ``orch maintain`` of this checkout runs; else what is still missing.
    ``pool = "auto"``: full is what the maintainer made before it stopped. ``in_run``:
    asked from inside a pytest run, where the maintainer stays as long as the run (so
    only the spares count; the pool's size must then be a number)."""
    pool = 0 if isinstance(pool, str) else pool
    state_file = inventory_dir / ".orch" / "state.json"
    try:
        data = json.loads(state_file.read_text())
    except (OSError, ValueError) as err:
        return f"state unreadable ({err})"
    pooled = [o for o in data.get("oneoffs", {}).values() if o.get("pool")]
    if len(pooled) < pool or any(o.get("phase") != "ready" for o in pooled):
        return f"pool {sum(o.get('phase') == 'ready' for o in pooled)}/{pool} ready"
    if standby:
        standbys = data.get("standbys", {})
        for worker, rec in data.get("workers", {}).items():
            if rec.get("phase") == "ready" and standbys.get(worker, {}).get("phase") != "ready":
                return f"no ready standby for {worker}"
    if data.get("trash"):
        return f"{len(data['trash'])} VM(s) in the trash"
    if not in_run and maintainers(inventory_dir):
        return "orch maintain is running"
    return None


def maintainers(inventory_dir: Path) -> list[int]:
    """Pids of ``orch maintain`` processes of this checkout (Linux /proc)."""
    found = []
    needle = str(inventory_dir)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in argv]
        if "maintain" in words and "orchestrator.cli" in words and needle in words:
            found.append(int(entry.name))
    return found


@pytest.fixture(autouse=True)
def _warm_spares(request: pytest.FixtureRequest) -> None:
    if not (WAIT_SPARES and STRATEGY == "orch"):
        return
    # lazy: only under orch's plugin; the seed's strategies run with -p no:orch and do not load it
    from orchestrator.pytest_plugin.run import orch_run  # noqa: PLC0415

    settings = orch_run(request.config).settings
    deadline = time.monotonic() + 600
    while (missing := spares_idle(settings.inventory_dir, settings.pool, settings.standby, in_run=True)) is not None:
        if time.monotonic() > deadline:
            pytest.fail(f"spares not warm after 600 s: {missing}", pytrace=False)
        time.sleep(0.1)


# -- timing every phase -------------------------------------------------------------------


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    start = time.perf_counter()
    yield
    record(item)["setup"] = time.perf_counter() - start


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    start = time.perf_counter()
    yield
    record(item)["call"] = time.perf_counter() - start


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    start = time.perf_counter()
    yield  # fixtures' teardown, then orch's reset (its hook runs last)
    seed_reset(item)
    rec = record(item)
    rec["teardown"] = time.perf_counter() - start
    if item.get_closest_marker("bench_reset") is not None:
        rec["reset_wait"] = rec["teardown"]


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not _records:
        return
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"records-{os.getpid()}.json").write_text(json.dumps(list(_records.values())))
