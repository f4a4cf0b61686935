"""orch's pytest plugin (entry point ``pytest11``): fixtures that give each xdist worker
its VM, one-off VMs for lifecycle tests, the ``orch_reset`` marker, and the
controller-side handover of a crashed worker's VM to its replacement.

The fixtures are thin: the work is in :mod:`orchestrator.worker` and
:mod:`orchestrator.lifecycle`, shared with the CLI.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from . import config as orch_config
from .errors import OrchError
from .leases import Lease
from .lifecycle import Orch
from .worker import WORKERINPUT_KEY, Worker, current_worker_id, find_worker

log = logging.getLogger(__name__)
_RUN = pytest.StashKey["OrchRun"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("orch", "orch: persistent VMs per xdist worker")
    group.addoption(
        "--orch-inventory-dir",
        default=None,
        help="folder of orch's generated inventories [default: ORCH_INVENTORY_DIR, [tool.orch], <project>/inventories]",
    )
    group.addoption(
        "--orch-sweep",
        action="store_true",
        default=False,
        help="run `orch sweep` once from the controller before the tests (never from a worker)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "orch_reset: reset this worker's VM to its baseline after the test")
    if config.pluginmanager.hasplugin("xdist") and not hasattr(config, "workerinput"):
        config.pluginmanager.register(WorkerHandover(), "orch-worker-handover")


class WorkerHandover:
    """Controller side: pytest-xdist restarts a crashed worker under a new id (gw1 comes
    back as gw4); give the replacement the dead worker's VM instead of none."""

    def __init__(self) -> None:
        self.assigned: dict[str, str] = {}  # xdist node id -> orch worker id
        self.orphaned: list[str] = []  # orch worker ids whose node crashed

    @pytest.hookimpl
    def pytest_configure_node(self, node: Any) -> None:
        orch_id = self.orphaned.pop(0) if self.orphaned else node.gateway.id
        self.assigned[node.gateway.id] = orch_id
        node.workerinput[WORKERINPUT_KEY] = orch_id

    @pytest.hookimpl
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        orch_id = self.assigned.pop(node.gateway.id, None)
        if error is not None and orch_id is not None:
            self.orphaned.append(orch_id)


class OrchRun:
    """This pytest process's view of orch, made on first use: settings, the core, and
    the run lease that tells sweep this process is alive."""

    def __init__(self, config: pytest.Config) -> None:
        option = config.getoption("orch_inventory_dir")
        self.settings = orch_config.load(cwd=config.invocation_params.dir, overrides={"inventory_dir": option})
        self.workerinput: dict[str, Any] = getattr(config, "workerinput", None) or {}
        self._orch: Orch | None = None
        self._lease: Lease | None = None
        self.worker: Worker | None = None  # this process's worker, once a test asked for it

    @property
    def orch(self) -> Orch:
        if self._orch is None:
            self._orch = Orch(self.settings)
        return self._orch

    @property
    def run_id(self) -> str:
        if self._lease is None:
            self._lease = Lease(self.settings.inventory_dir)
        return self._lease.run

    def close(self) -> None:
        if self._lease is not None:
            self._lease.release()


def orch_run(config: pytest.Config) -> OrchRun:
    if _RUN not in config.stash:
        config.stash[_RUN] = OrchRun(config)
    return config.stash[_RUN]


def _fail(err: OrchError) -> None:
    pytest.fail(str(err), pytrace=False)


def pytest_sessionstart(session: pytest.Session) -> None:
    config = session.config
    if config.getoption("orch_sweep") and not hasattr(config, "workerinput"):
        from .sweep import sweep

        run = orch_run(config)
        try:
            decisions = sweep(run.settings, run.orch.provider)
        except OrchError as err:
            raise pytest.UsageError(f"orch sweep: {err}") from err
        deleted = [d.vm for d in decisions if d.result == "deleted"]
        log.warning("orch sweep deleted %d orphan(s): %s", len(deleted), " ".join(deleted))


def pytest_unconfigure(config: pytest.Config) -> None:
    if _RUN in config.stash:
        config.stash[_RUN].close()


@pytest.fixture(scope="session")
def orch_worker(request: pytest.FixtureRequest) -> Iterator[Worker]:
    """This xdist worker's VM: ids, pyinfra host, inventory path, run/fact/operation/reset."""
    try:
        run = orch_run(request.config)
        worker_id = current_worker_id(run.workerinput)
        run.run_id  # hold a lease while this process uses orch's VMs
        worker = find_worker(
            run.settings.inventory_dir,
            worker_id,
            workers_hint=run.workerinput.get("workercount"),
            resetter=lambda: _reset(run, worker_id),
        )
    except OrchError as err:
        _fail(err)
    run.worker = worker
    yield worker
    worker.close()


def _reset(run: OrchRun, worker_id: str) -> None:
    if run.worker is not None:
        run.worker.close()  # its connection points at the VM being replaced
    [result] = run.orch.reset([worker_id], lock=False)
    if not result.ok:
        raise OrchError(f"reset of {worker_id} failed: {result.error}")


@pytest.fixture(scope="session")
def worker_vm(orch_worker: Worker) -> str:
    """The name of this xdist worker's VM (``gw0`` without xdist), as the seed's fixture."""
    return orch_worker.vm


@pytest.fixture
def fresh_vm(request: pytest.FixtureRequest) -> Iterator[Callable[[], Worker]]:
    """A factory of one-off VMs for lifecycle tests: ``vm = fresh_vm()``. Each is recorded
    in the state before it is created and deleted at teardown, pass or fail; if the run
    dies, ``orch sweep`` finds it (its run's lease is gone)."""
    run = orch_run(request.config)
    made: list[Worker] = []

    def make() -> Worker:
        try:
            worker = Worker(run.orch.create_oneoff(run.run_id))
        except OrchError as err:
            _fail(err)
        made.append(worker)
        return worker

    yield make
    errors = []
    for worker in made:
        worker.close()
        try:
            run.orch.delete_oneoff(worker.vm)
        except OrchError as err:
            errors.append(str(err))
    if errors:
        pytest.fail("; ".join(errors), pytrace=False)


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """``@pytest.mark.orch_reset``: reset this worker's VM after the test."""
    if item.get_closest_marker("orch_reset") is None:
        return
    run = orch_run(item.config)
    try:
        _reset(run, current_worker_id(run.workerinput))
    except OrchError as err:
        _fail(err)
