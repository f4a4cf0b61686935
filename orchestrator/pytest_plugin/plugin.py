"""orch's pytest plugin (entry point ``pytest11``): bring-up from the controller
(``--orch-up``), fixtures that give each xdist worker its VM, one-off VMs for lifecycle
tests, the ``orch_reset`` marker, and the controller-side handover of a crashed worker's
VM to its replacement.

The fixtures are thin: the work is in :mod:`orchestrator.pytest_plugin.worker` and the core, shared
with the CLI. User mistakes stop the run with one line (``pytest.UsageError``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

import pytest

from orchestrator.core import settings as orch_config
from orchestrator.core.context import Context
from orchestrator.core.maintainer import spawn_maintainer
from orchestrator.primitives import naming
from orchestrator.primitives.errors import OrchError
from orchestrator.pytest_plugin.worker import _CURRENT, WORKERINPUT_KEY, Worker, WorkerMissing, current_worker_id, find_worker
from orchestrator.state import leases
from orchestrator.state.leases import Lease
from orchestrator.state.records import FAILED, READY, StateData
from orchestrator.verbs.oneoffs import create_oneoff, delete_oneoff
from orchestrator.verbs.reset import reset
from orchestrator.verbs.up import up

log = logging.getLogger(__name__)
_RUN = pytest.StashKey["OrchRun"]()
#: The key under which the controller hands each xdist worker its session (its lease's run id).
SESSION_KEY = "orch_session"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("orch", "orch: persistent VMs per xdist worker")
    group.addoption(
        "--orch-up",
        action="store_true",
        default=None,
        help="bring up the workers this run needs (as `orch up`) before any test starts "
        "[default: [tool.orch] auto_up / ORCH_AUTO_UP]",
    )
    group.addoption("--no-orch-up", action="store_false", dest="orch_up", help="do not bring up workers, even with auto_up")
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
    _hold_lease(config)


def _hold_lease(config: pytest.Config) -> None:
    """From its first line, a run is alive to sweep and the CLI: each process leases the
    workers it will use (the controller all of them, an xdist worker its own) before
    collection, xdist start-up or ``--orch-up``. A project orch has never run in gets no
    lease (nothing of it to protect) unless this run brings workers up."""
    try:
        run = orch_run(config)
    except pytest.UsageError:
        return  # settings that do not load: said in one line when a fixture needs them
    if getattr(config.option, "collectonly", False) or getattr(config.option, "help", False):
        return  # IDE discovery and `--collect-only` use no worker: they must not block `orch down`
    if not (run.settings.inventory_dir / ".orch").is_dir() and not _wants_up(config, run):
        return
    if hasattr(config, "workerinput"):
        workers = [current_worker_id(run.workerinput)]
    else:
        workers = naming.worker_ids(workers_needed(config))
    run.hold(workers)


def _wants_up(config: pytest.Config, run: OrchRun) -> bool:
    if hasattr(config, "workerinput"):
        return False
    wants_up = config.getoption("orch_up")
    return bool(wants_up or (wants_up is None and run.settings.auto_up))


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
        run = node.config.stash.get(_RUN, None)
        if run is not None and run._lease is not None:
            node.workerinput[SESSION_KEY] = run._lease.run  # the worker's lease names its session

    @pytest.hookimpl
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        orch_id = self.assigned.pop(node.gateway.id, None)
        if error is not None and orch_id is not None:
            self.orphaned.append(orch_id)


class OrchRun:
    """This pytest process's view of orch, made on first use: settings, the core, and
    the run lease that tells sweep and the CLI that this process is alive."""

    def __init__(self, config: pytest.Config) -> None:
        option = config.getoption("orch_inventory_dir")
        try:
            self.settings = orch_config.load(cwd=config.invocation_params.dir, overrides={"inventory_dir": option})
        except OrchError as err:
            raise pytest.UsageError(f"orch: {err}") from err
        self.workerinput: dict[str, Any] = getattr(config, "workerinput", None) or {}
        self._orch: Context | None = None
        self._lease: Lease | None = None
        self.worker: Worker | None = None  # this process's worker, once a test asked for it
        self.owes_reset = ""  # why this process's worker still needs a reset (its last one failed)
        self.marking = ""  # the reset the marked test now running owes its worker
        self._deleting: ThreadPoolExecutor | None = None
        self._deletions: list[Future[None]] = []

    @property
    def ctx(self) -> Context:
        if self._orch is None:
            self._orch = Context(self.settings, refill=spawn_maintainer, remember_image=True)
        return self._orch

    @property
    def lease(self) -> Lease:
        if self._lease is None:
            self.hold([])
        assert self._lease is not None
        return self._lease

    def hold(self, workers: list[str]) -> None:
        """Take this process's lease (once), naming ``workers`` as used by this run."""
        if self._lease is not None:
            self._lease.use(*workers)
            return
        try:
            session = str(self.workerinput.get(SESSION_KEY, ""))
            self._lease = Lease(self.settings.inventory_dir, workers=workers, session=session)
        except OSError as err:
            folder = self.settings.inventory_dir / ".orch" / "runs"
            raise pytest.UsageError(
                f"orch: cannot take this run's lease in {folder} ({err.strerror}): make the folder writable"
            ) from err

    @property
    def run_id(self) -> str:
        return self.lease.run

    def delete_later(self, vm: str) -> None:
        """Delete a one-off VM without making its test wait (a delete takes 10 s on
        OrbStack). It stays recorded as this run's until it is gone: the session waits
        for every deletion before it ends, and if the process dies first, ``orch sweep``
        deletes it (its run's lease is gone). A failed deletion is logged and left to sweep."""
        if self._deleting is None:
            self._deleting = ThreadPoolExecutor(max_workers=2, thread_name_prefix="orch-delete")
        self._deletions.append(self._deleting.submit(self._delete, vm))

    def _delete(self, vm: str) -> None:
        try:
            delete_oneoff(self.ctx, vm)
        except OrchError as err:
            log.warning("could not delete one-off %s (left to `orch sweep`): %s", vm, err)

    def close(self) -> None:
        if self._deleting is not None:
            wait(self._deletions)
            self._deleting.shutdown()
        if self._lease is not None:
            self._lease.release()


def orch_run(config: pytest.Config) -> OrchRun:
    if _RUN not in config.stash:
        config.stash[_RUN] = OrchRun(config)
    return config.stash[_RUN]


def _fail(err: OrchError) -> None:
    pytest.fail(str(err), pytrace=False)


def workers_needed(config: pytest.Config) -> int:
    """How many workers this run starts: pytest-xdist has resolved ``-n auto`` to its
    ``tx`` specs by now; without xdist (or ``-n 0``) one, gw0."""
    if getattr(config.option, "dist", "no") == "no":
        return 1
    return max(1, len(getattr(config.option, "tx", None) or []))


def _say(config: pytest.Config, message: str) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(message)
    else:
        log.warning("%s", message)


def pytest_sessionstart(session: pytest.Session) -> None:
    config = session.config
    if hasattr(config, "workerinput"):
        return
    wants_up = config.getoption("orch_up")
    run = orch_run(config) if (wants_up is not False or config.getoption("orch_sweep")) else None
    if run is not None and _wants_up(config, run):
        _bring_up(config, run)
    if config.getoption("orch_sweep"):
        from orchestrator.verbs.sweep import sweep

        assert run is not None
        try:
            decisions = sweep(run.settings, run.ctx.provider)
        except OrchError as err:
            raise pytest.UsageError(f"orch sweep: {err}") from err
        deleted = [d.vm for d in decisions if d.result == "deleted"]
        _say(config, f"orch sweep: deleted {len(deleted)} orphan(s) {' '.join(deleted)}".rstrip())


def _bring_up(config: pytest.Config, run: OrchRun) -> None:
    count = workers_needed(config)
    started = time.monotonic()
    _say(config, f"orch: bringing up {count} worker(s) on {run.settings.provider} (--orch-up)")
    ctx = Context(
        run.settings,
        report=lambda who, msg: _say(config, f"orch: [{time.monotonic() - started:5.1f}s] {who}: {msg}"),
        refill=spawn_maintainer,
        own_run=run.run_id,  # the run's own lease names these workers: not a run to protect from itself
    )
    try:
        results = up(ctx, count)
    except OrchError as err:
        raise pytest.UsageError(f"orch up: {err}") from err
    failed = [r for r in results if not r.ok]
    if failed:
        first = failed[0]
        raise pytest.UsageError(f"orch up: {first.worker} failed: {first.error}")
    actions = ", ".join(f"{r.worker} {r.action}" for r in results)
    _say(config, f"orch: {count} worker(s) ready in {time.monotonic() - started:.1f}s ({actions})")


def pytest_unconfigure(config: pytest.Config) -> None:
    if _RUN in config.stash:
        config.stash[_RUN].close()


def get_worker(config: pytest.Config) -> Worker:
    """This process's worker (made once): what ``orch_worker`` and ``current_worker()`` give."""
    run = orch_run(config)
    if run.worker is None:
        worker_id = current_worker_id(run.workerinput)
        run.lease.use(worker_id)  # a lease that says which worker this process uses
        run.ctx.connector.setup()  # a deleted SSH key: one line naming `orch up`
        _take(run, worker_id)
        run.worker = find_worker(
            run.settings.inventory_dir,
            worker_id,
            workers_hint=run.workerinput.get("workercount"),
            resetter=lambda: _reset(run, worker_id),
            ensure_running=lambda: _ensure(run, worker_id),
        )
    return run.worker


def _unfit(data: StateData, worker_id: str) -> str | None:
    """Why the worker's record must not reach a test as it is, or None."""
    rec = data.workers.get(worker_id)
    if rec is None or rec.phase == FAILED:
        return None  # find_worker names the fix
    if rec.phase != READY:
        return f"was left unfinished ({rec.phase}) by a reset or `orch up` that stopped halfway"
    if rec.reset_pending:
        return f"owes a reset ({rec.reset_pending}) that its run never did"
    return None


def _take(run: OrchRun, worker_id: str) -> None:
    """Before a test first gets its worker: one that is unfinished or owes a reset is made
    again from the baseline (or the run stops in one line naming `orch up`)."""
    why = _unfit(run.ctx.store.read(), worker_id)
    if why is None:
        return
    with run.ctx.store.command_lock():  # an `orch up` or `orch reset` at work finishes it: wait
        why = _unfit(run.ctx.store.read(), worker_id)
    if why is None:
        return
    others = leases.scan(run.settings.inventory_dir).others(run.lease.session, worker_id)
    if others:  # another pytest run is at it (its marked test, its reset): never under its feet
        raise WorkerMissing(f"orch: {worker_id} {why}, and another pytest run uses it (run {others[0]}): wait for it to end")
    log.warning("orch: %s %s: making it again from its baseline", worker_id, why)
    [result] = reset(run.ctx, [worker_id], lock=False, finish=True)
    if not result.ok:
        raise WorkerMissing(f"orch: {worker_id} {why}, and making it again failed ({result.error}): run `orch up`")


def _ensure(run: OrchRun, worker_id: str) -> None:
    assert run.worker is not None
    if run.ctx.ensure_running(run.worker.vm, worker_id):
        log.warning("orch: %s's VM %s was stopped; started it", worker_id, run.worker.vm)
        run.worker.refresh()


@pytest.fixture(scope="session")
def orch_worker(request: pytest.FixtureRequest) -> Iterator[Worker]:
    """This xdist worker's VM: ids, pyinfra host, inventory path, run/fact/operation/reset."""
    try:
        worker = get_worker(request.config)
    except OrchError as err:
        _fail(err)
    _CURRENT.append(lambda: worker)
    yield worker
    _CURRENT.remove(_CURRENT[-1])
    worker.close()


def _reset(run: OrchRun, worker_id: str) -> None:
    if run.worker is not None:
        run.worker.close()  # its connection points at the VM being replaced
    # finish: its own worker, whatever a reset that failed before left of it
    [result] = reset(run.ctx, [worker_id], lock=False, finish=True)
    if not result.ok:
        raise OrchError(f"reset of {worker_id} failed: {result.error}")
    run.owes_reset = ""
    if run.marking:  # `orch_worker.reset()` inside a marked test: the test goes on dirtying it
        _owe(run)
    if run.worker is not None:
        run.worker.refresh()


@pytest.fixture(scope="session")
def orch_host(orch_worker: Worker) -> Any:
    """A testinfra ``Host`` on this worker's VM (needs pytest-testinfra)."""
    from orchestrator.pytest_plugin.hosts import testinfra_host

    try:
        return testinfra_host(orch_worker)
    except OrchError as err:
        _fail(err)


@pytest.fixture(scope="session")
def worker_vm(orch_worker: Worker) -> str:
    """The name of this xdist worker's VM, running (started if it was stopped), for tests
    that drive the backend's own CLI with it."""
    try:
        orch_worker.ensure_running()
    except OrchError as err:
        _fail(err)
    return orch_worker.vm


@pytest.fixture
def fresh_vm(request: pytest.FixtureRequest) -> Iterator[Callable[[], Worker]]:
    """A factory of one-off VMs for lifecycle tests: ``vm = fresh_vm()``. Each is recorded
    in the state before it is created and deleted after its test, pass or fail, in the
    background (the session waits for the deletions at its end); if the run dies,
    ``orch sweep`` finds it (its run's lease is gone)."""
    run = orch_run(request.config)
    made: list[Worker] = []

    def make() -> Worker:
        try:
            worker = Worker(create_oneoff(run.ctx, run.run_id))
        except OrchError as err:
            _fail(err)
        made.append(worker)
        return worker

    yield make
    for worker in made:
        worker.close()
        run.delete_later(worker.vm)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before the test's fixtures: a worker whose last reset failed is reset now; a marked
    test takes its worker (finishing one that is unfinished or owes a reset), then records
    the reset it will owe, so a run killed before its teardown leaves a worker that the
    next taker resets first, whatever the test or its fixtures did to it."""
    run = item.config.stash.get(_RUN, None)
    if run is not None and run.owes_reset:
        try:
            _reset(run, current_worker_id(run.workerinput))
        except OrchError as err:
            _fail(OrchError(f"{err} (it still owes a reset {run.owes_reset})"))
    if item.get_closest_marker("orch_reset") is None:
        return
    run = orch_run(item.config)
    try:
        get_worker(item.config)
        run.marking = f"after {item.nodeid}"
        _owe(run)
    except OrchError as err:
        _fail(err)


def _owe(run: OrchRun) -> None:
    """Record the reset this process's marked test will owe its worker."""
    worker_id = current_worker_id(run.workerinput)
    with run.ctx.store.transaction() as state:
        if worker_id in state.workers:
            state.workers[worker_id].reset_pending = run.marking


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """``@pytest.mark.orch_reset``: reset this worker's VM after the test."""
    if item.get_closest_marker("orch_reset") is None:
        return
    run = orch_run(item.config)
    run.marking = ""  # the reset it owes is being done
    try:
        _reset(run, current_worker_id(run.workerinput))
    except OrchError as err:
        run.owes_reset = f"after {item.nodeid}"
        _fail(err)
