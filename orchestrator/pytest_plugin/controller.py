"""The controller side of orch's pytest plugin: what the xdist controller (or the only
process of a run without xdist) does before any worker starts, and what it hands each
worker.

- bring-up (``--orch-up``, or ``auto_up``): ``orch up`` for the workers this run starts,
  its progress on the terminal, a failed worker stopping the run in one line;
- sweep (``--orch-sweep``): ``orch sweep`` once, never from a worker;
- handover (:class:`WorkerHandover`, registered only on an xdist controller): each xdist
  worker gets its orch worker id and the run's session, and a worker that pytest-xdist
  restarts after a crash gets the dead worker's VM.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator.primitives.errors import OrchError
from orchestrator.pytest_plugin.run import LEASE_DIR_KEY, RUN_KEY, SESSION_KEY, OrchRun, orch_run, wants_up, workers_needed
from orchestrator.pytest_plugin.worker import WORKERINPUT_KEY

log = logging.getLogger(__name__)


def preload(config: pytest.Config) -> None:
    """On the controller of a run that brings workers up, as soon as it is configured:
    import the deploys in a thread (pyinfra's import is most of a warm ``orch up``) while
    this process does what waits on the backend or on pytest (the leak check's listing,
    the engine check, the command lock). ``up`` imports them again: finished by then, or
    waited for on the import lock; a deploy that fails to import says so from ``up``.

    gevent (pyinfra's) takes the thread that first imports its hub as the main thread, and
    only that thread's loop can watch child processes: its hub is imported here first."""
    try:
        run = orch_run(config)
    except pytest.UsageError:
        return  # said in one line by whatever needs the settings
    if not wants_up(config, run):
        return
    try:
        importlib.import_module("gevent.hub")  # on the main thread: see above
    except ImportError:
        return  # no gevent under pyinfra: nothing known to be safe to import off the main thread

    from orchestrator.pyinfra.loading import load_callable  # noqa: PLC0415  (on first use: not at plugin load)

    def load() -> None:
        for spec in (run.settings.provision, run.settings.personalize):
            with contextlib.suppress(Exception):  # `up` loads it again and says what is wrong
                load_callable(spec, run.settings.root)

    threading.Thread(target=load, name="orch-preload", daemon=True).start()


def start(config: pytest.Config) -> None:
    """Before the workers start: bring them up and sweep, as the options ask."""
    wanted = config.getoption("orch_up")
    run = orch_run(config) if (wanted is not False or config.getoption("orch_sweep")) else None
    if run is not None and wants_up(config, run):
        bring_up(config, run)
    if run is not None and config.getoption("orch_sweep"):
        sweep_once(config, run)


def bring_up(config: pytest.Config, run: OrchRun) -> None:
    from orchestrator.core.context import Context  # noqa: PLC0415  (on first use: not at plugin load)
    from orchestrator.core.maintainer import spawn_maintainer  # noqa: PLC0415  (on first use: not at plugin load)
    from orchestrator.verbs.up import up  # noqa: PLC0415  (on first use: not at plugin load)

    count = workers_needed(config)
    started = time.monotonic()
    _say(config, f"orch: bringing up {count} worker(s) on {run.settings.provider} (--orch-up)")
    cache = config.getoption("orch_baseline_cache")
    settings = (
        run.settings
        if not cache
        else run.settings.model_copy(update={"baseline_cache": config.invocation_params.dir / Path(cache)})
    )
    ctx = Context(
        settings,
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


def sweep_once(config: pytest.Config, run: OrchRun) -> None:
    from orchestrator.verbs.sweep import sweep  # noqa: PLC0415  (on first use: not at plugin load)

    try:
        decisions = sweep(run.settings, run.ctx.provider)
    except OrchError as err:
        raise pytest.UsageError(f"orch sweep: {err}") from err
    deleted = [d.vm for d in decisions if d.result == "deleted"]
    _say(config, f"orch sweep: deleted {len(deleted)} orphan(s) {' '.join(deleted)}".rstrip())


def _say(config: pytest.Config, message: str) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(message)
    else:
        log.warning("%s", message)


class WorkerHandover:
    """pytest-xdist hooks on the controller: each worker's orch id and session; a crashed
    worker's replacement (xdist restarts gw1 as gw4) gets the dead worker's VM instead of
    none."""

    def __init__(self) -> None:
        self.assigned: dict[str, str] = {}  # xdist node id -> orch worker id
        self.orphaned: list[str] = []  # orch worker ids whose node crashed

    @pytest.hookimpl
    def pytest_configure_node(self, node: Any) -> None:
        orch_id = self.orphaned.pop(0) if self.orphaned else node.gateway.id
        self.assigned[node.gateway.id] = orch_id
        node.workerinput[WORKERINPUT_KEY] = orch_id
        run = node.config.stash.get(RUN_KEY, None)
        lease = run.held if run is not None else None
        if lease is not None:
            node.workerinput[SESSION_KEY] = lease.run  # the worker's lease names its session
        if run is not None:  # where the worker's lease goes ("": none until its first use of orch)
            node.workerinput[LEASE_DIR_KEY] = str(run.settings.inventory_dir) if lease is not None else ""

    @pytest.hookimpl
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        orch_id = self.assigned.pop(node.gateway.id, None)
        if error is not None and orch_id is not None:
            self.orphaned.append(orch_id)
