"""One pytest process's view of orch: its settings, its context, the run lease that
tells sweep and the CLI the process is alive, and the one-off VMs it deletes in the
background. Made on first use and kept in the config's stash; the controller side and
the worker side share it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from orchestrator.primitives import naming
from orchestrator.primitives.errors import OrchError, UsageError
from orchestrator.pytest_plugin.worker import current_worker_id

if TYPE_CHECKING:  # imported on first use: an xdist worker whose tests take no orch fixture never needs them
    from orchestrator.core.context import Context
    from orchestrator.pytest_plugin.worker import Worker
    from orchestrator.settings.model import Settings
    from orchestrator.state.leases import Lease

log = logging.getLogger(__name__)
RUN_KEY = pytest.StashKey["OrchRun"]()
#: The key under which the controller hands each xdist worker its session (its lease's run id).
SESSION_KEY = "orch_session"
#: The key under which the controller hands each xdist worker the folder its lease goes in
#: ("" when the controller holds no lease: the worker takes one only on first use), so that
#: a worker takes its lease at start without loading the settings (pydantic, the providers).
LEASE_DIR_KEY = "orch_lease_dir"


class OutsideTest(UsageError):
    """``orchestrator.fresh_vm()`` or ``current_worker()`` called where no test of a pytest
    run with orch's plugin is running (at import, at collection, in a plain process)."""


#: The test running in this process, from the start of its setup to the end of its
#: teardown (``plugin.pytest_runtest_protocol``): process-global, so a helper called from
#: a thread the test started sees it too; each xdist worker is a process of its own.
_NOW: list[pytest.Item] = []
#: The scopes of the fixtures being set up now, innermost last (``plugin.pytest_fixture_setup``).
_SCOPES: list[str] = []


@contextlib.contextmanager
def running(item: pytest.Item) -> Iterator[None]:
    """While ``item`` runs (setup, call, teardown), it is the current test."""
    _NOW[:] = [item]
    try:
        yield
    finally:
        _NOW.clear()


@contextlib.contextmanager
def setting_up(scope: str) -> Iterator[None]:
    """While a fixture of ``scope`` is set up."""
    _SCOPES.append(scope)
    try:
        yield
    finally:
        _SCOPES.pop()


def current_item() -> pytest.Item | None:
    """The test running now in this process, or None."""
    return _NOW[-1] if _NOW else None


def current_test(what: str) -> pytest.Item:
    """The test running now, or ``OutsideTest`` saying where ``what`` belongs."""
    item = current_item()
    if item is None:
        raise OutsideTest(
            f"{what} works only while a test runs, with orch's pytest plugin "
            "(pip install pyinfra-orch): call it in a test, a fixture or a helper they call, not at import or collection"
        )
    return item


def fixture_scope() -> str:
    """The scope of the innermost fixture being set up now ("function" in a test's body)."""
    return _SCOPES[-1] if _SCOPES else "function"


class OrchRun:
    """This pytest process's view of orch, made on first use: settings, the core, and
    the run lease that tells sweep and the CLI that this process is alive."""

    def __init__(self, config: pytest.Config) -> None:
        self._config = config
        self._settings: Settings | None = None
        self.workerinput: dict[str, Any] = getattr(config, "workerinput", None) or {}
        self._orch: Context | None = None
        self._lease: Lease | None = None
        self.worker: Worker | None = None  # this process's worker, once a test asked for it
        self.owes_reset = ""  # why this process's worker still needs a reset (its last one failed)
        self.marking = ""  # the reset the marked test now running owes its worker
        #: Called after this process's worker VM was replaced (any reset, a swap, a keep):
        #: what knew the old VM (the pollution checker) forgets it.
        self.on_replace: list[Callable[[], None]] = []
        self._deleting: ThreadPoolExecutor | None = None
        self._deletions: list[Future[None]] = []
        #: One-offs made in a fixture wider than a function's (``orchestrator.fresh_vm()``
        #: in a session fixture): deleted when the session ends, not after a test.
        self.session_oneoffs: list[Worker] = []
        #: Whether this process handed out a ``scope="session"`` name (``vm_name``): only
        #: then has it names to delete at the end of its session.
        self.session_named = False

    @property
    def settings(self) -> Settings:
        """The run's settings, loaded on first use (``pytest.UsageError`` in one line when
        they do not load): a process whose tests take no orch fixture never imports them."""
        if self._settings is None:
            from orchestrator.core import settings as orch_config  # noqa: PLC0415  (on first use: not at plugin load)

            config = self._config
            overrides = {
                "inventory_dir": config.getoption("orch_inventory_dir"),
                "isolation": config.getoption("orch_isolation"),
                "keep_failed": config.getoption("orch_keep_failed"),
                "reap_leaks": config.getoption("orch_reap_leaks"),
            }
            try:
                self._settings = orch_config.load(cwd=config.invocation_params.dir, overrides=overrides)
            except OrchError as err:
                raise pytest.UsageError(f"orch: {err}") from err
        return self._settings

    @property
    def ctx(self) -> Context:
        if self._orch is None:
            from orchestrator.core.context import Context  # noqa: PLC0415  (on first use: not at plugin load)
            from orchestrator.core.maintainer import spawn_maintainer  # noqa: PLC0415  (on first use: not at plugin load)

            self._orch = Context(self.settings, refill=spawn_maintainer, remember_image=True)
        return self._orch

    @property
    def lease(self) -> Lease:
        if self._lease is None:
            self.hold([])
        assert self._lease is not None
        return self._lease

    @property
    def held(self) -> Lease | None:
        """The lease, if this process took one (``lease`` takes it)."""
        return self._lease

    def hold(self, workers: list[str], inventory_dir: Path | None = None) -> None:
        """Take this process's lease (once), naming ``workers`` as used by this run
        (``inventory_dir``: the settings' own, as the controller handed it to a worker;
        else the settings are loaded)."""
        if self._lease is not None:
            self._lease.use(*workers)
            return
        from orchestrator.state.leases import Lease  # noqa: PLC0415  (on first use: not at plugin load)

        folder = inventory_dir if inventory_dir is not None else self.settings.inventory_dir
        try:
            session = str(self.workerinput.get(SESSION_KEY, ""))
            self._lease = Lease(folder, workers=workers, session=session)
        except OSError as err:
            folder = folder / ".orch" / "runs"
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
        from orchestrator.verbs.oneoffs import delete_oneoff  # noqa: PLC0415  (on first use: not at plugin load)

        try:
            delete_oneoff(self.ctx, vm)
        except OrchError as err:
            log.warning("could not delete one-off %s (left to `orch sweep`): %s", vm, err)

    def close(self) -> None:
        """At the end of the session: the worker's connection closed (once, whoever got it:
        the ``orch_worker`` fixture or ``current_worker()``), the session's one-offs deleted,
        every deletion waited for, the lease released."""
        if self.worker is not None:
            self.worker.close()
        for oneoff in self.session_oneoffs:
            oneoff.close()
            self.delete_later(oneoff.vm)
        self.session_oneoffs.clear()
        if self._deleting is not None:
            wait(self._deletions)
            self._deleting.shutdown()
        if self._lease is not None:
            self._lease.release()


def orch_run(config: pytest.Config, *, load: bool = True) -> OrchRun:
    """This process's run (made once). ``load``: with its settings loaded, or
    ``pytest.UsageError`` in one line (and no run kept) when they do not load; without,
    the settings wait for their first use."""
    run = config.stash.get(RUN_KEY, None)
    if run is None:
        run = OrchRun(config)
        if load:
            run.settings  # noqa: B018 (raises before the run is kept, as making it did)
        config.stash[RUN_KEY] = run
    elif load:
        run.settings  # noqa: B018
    return run


def workers_needed(config: pytest.Config) -> int:
    """How many workers this run starts: pytest-xdist has resolved ``-n auto`` to its
    ``tx`` specs by now; without xdist (or ``-n 0``) one, gw0."""
    if getattr(config.option, "dist", "no") == "no":
        return 1
    return max(1, len(getattr(config.option, "tx", None) or []))


def wants_up(config: pytest.Config, run: OrchRun) -> bool:
    """Whether this process brings the workers up (``--orch-up``, or ``auto_up``): only
    the controller (or the only process) does."""
    if hasattr(config, "workerinput"):
        return False
    wanted = config.getoption("orch_up")
    return bool(wanted or (wanted is None and run.settings.auto_up))


def hold_lease(config: pytest.Config) -> None:
    """From its first line, a run is alive to sweep and the CLI: each process leases the
    workers it will use (the controller all of them, an xdist worker its own) before
    collection, xdist start-up or ``--orch-up``. A project orch has never run in gets no
    lease (nothing of it to protect) unless this run brings workers up.

    An xdist worker takes its lease in the folder the controller handed it, without loading
    the settings (the controller did; when it holds no lease, neither does the worker until
    its first use of orch)."""
    workerinput = getattr(config, "workerinput", None) or {}
    if LEASE_DIR_KEY in workerinput:
        if getattr(config.option, "collectonly", False):
            return
        folder = str(workerinput[LEASE_DIR_KEY])
        if folder:
            orch_run(config, load=False).hold([current_worker_id(workerinput)], Path(folder))
        return
    try:
        run = orch_run(config)
    except pytest.UsageError:
        return  # settings that do not load: said in one line when a fixture needs them
    if getattr(config.option, "collectonly", False) or getattr(config.option, "help", False):
        return  # IDE discovery and `--collect-only` use no worker: they must not block `orch down`
    if not (run.settings.inventory_dir / ".orch").is_dir() and not wants_up(config, run):
        return
    if hasattr(config, "workerinput"):
        workers = [current_worker_id(run.workerinput)]
    else:
        workers = naming.worker_ids(workers_needed(config))
    run.hold(workers)
