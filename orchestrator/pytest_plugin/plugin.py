"""orch's pytest plugin (entry point ``pytest11``): the switchboard. It declares the
options and the ``orch_reset`` marker, takes each process's run lease, and routes pytest's
hooks to the side they belong to, as pytest-xdist's ``plugin.py`` does:

- :mod:`orchestrator.pytest_plugin.controller`: on the controller (or the only process),
  bring-up (``--orch-up``) and sweep (``--orch-sweep``) before any test; on an xdist
  controller, the handover of each worker's VM (and of a crashed worker's to its
  replacement);
- :mod:`orchestrator.pytest_plugin.fixtures`: ``orch_worker``, ``orch_host``,
  ``worker_vm``, ``fresh_vm``, registered as a plugin of their own;
- :mod:`orchestrator.pytest_plugin.handout`: the worker's VM handed out ready and clean,
  and the resets the marker owes;
- :mod:`orchestrator.pytest_plugin.run`: the process's settings, context and lease.

User mistakes stop the run with one line (``pytest.UsageError``).
"""

from __future__ import annotations

import pytest

from orchestrator.pytest_plugin import controller, fixtures, handout
from orchestrator.pytest_plugin.run import RUN_KEY, hold_lease


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
    config.pluginmanager.register(fixtures, "orch-fixtures")
    if config.pluginmanager.hasplugin("xdist") and not _is_worker(config):
        config.pluginmanager.register(controller.WorkerHandover(), "orch-worker-handover")
    hold_lease(config)


def pytest_sessionstart(session: pytest.Session) -> None:
    if not _is_worker(session.config):
        controller.start(session.config)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    handout.before_test(item)


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    handout.after_test(item)


def pytest_unconfigure(config: pytest.Config) -> None:
    if RUN_KEY in config.stash:
        config.stash[RUN_KEY].close()


def _is_worker(config: pytest.Config) -> bool:
    """Whether this process is an xdist worker (the controller hands it ``workerinput``)."""
    return hasattr(config, "workerinput")
