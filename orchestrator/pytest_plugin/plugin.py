"""orch's pytest plugin (entry point ``pytest11``): the switchboard. It declares the
options and the ``orch_reset`` marker, takes each process's run lease, and routes pytest's
hooks to the side they belong to, as pytest-xdist's ``plugin.py`` does:

- :mod:`orchestrator.pytest_plugin.controller`: on the controller (or the only process),
  bring-up (``--orch-up``) and sweep (``--orch-sweep``) before any test; on an xdist
  controller, the handover of each worker's VM (and of a crashed worker's to its
  replacement);
- :mod:`orchestrator.pytest_plugin.fixtures`: ``orch_worker``, ``orch_host``,
  ``worker_vm``, ``fresh_vm``, registered as a plugin of their own, thin wrappers of
  :mod:`orchestrator.pytest_plugin.helpers` (``orchestrator.fresh_vm()``,
  ``orchestrator.current_worker()``: the same, anywhere inside the test running now);
- :mod:`orchestrator.pytest_plugin.handout`: the worker's VM handed out ready and clean,
  and the resets the marker owes;
- :mod:`orchestrator.pytest_plugin.run`: the process's settings, context and lease.

User mistakes stop the run with one line (``pytest.UsageError``).
"""

from __future__ import annotations

from typing import Any

import pytest

# Light at load: what these import of the core (pydantic, the providers, pyinfra) waits for
# the first fixture or hook that needs it; the controller's side is imported on the controller.
from orchestrator.pytest_plugin import fixtures, handout, helpers, isolation, keeping, leaks
from orchestrator.pytest_plugin.isolation import ISOLATIONS
from orchestrator.pytest_plugin.report import REPORT_KEY, RunReport
from orchestrator.pytest_plugin.run import RUN_KEY, hold_lease, running, setting_up


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
        "--orch-isolation",
        default=None,
        choices=ISOLATIONS,
        help="what is checked and reset between tests on a worker: shared (nothing), report (check and "
        "report), on-dirty (reset a worker its test changed), per-test (reset after each test) "
        "[default: [tool.orch] isolation / ORCH_ISOLATION, shared]",
    )
    group.addoption(
        "--orch-keep-failed",
        action="store_true",
        default=None,
        help="keep the worker of a failing test as it was, for `orch shell <name>` (the test after it gets "
        "a clean one), at most [tool.orch] keep_failed_max per run [default: [tool.orch] keep_failed]",
    )
    group.addoption(
        "--orch-reap-leaks",
        action="store_true",
        default=None,
        help="at the end of the run, delete the VMs its tests made and left behind (only those) "
        "[default: [tool.orch] reap_leaks]",
    )
    group.addoption(
        "--orch-baseline-cache",
        default=None,
        metavar="DIR",
        help="with --orch-up: import this key's baseline from DIR instead of provisioning, and export a baseline "
        "built to it (a CI cache, keyed on `orch baseline key`) [default: [tool.orch] baseline_cache / ORCH_BASELINE_CACHE]",
    )
    group.addoption(
        "--orch-sweep",
        action="store_true",
        default=False,
        help="run `orch sweep` once from the controller before the tests (never from a worker)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "orch_reset: reset this worker's VM to its baseline after the test")
    config.addinivalue_line(
        "markers",
        "orch_isolation(policy): this test's isolation policy, overriding [tool.orch] isolation: "
        "shared, report, on-dirty or per-test",
    )
    config.pluginmanager.register(fixtures, "orch-fixtures")
    config.pluginmanager.register(leaks.LeakCheck(config), "orch-leaks")
    if not _is_worker(config):
        from orchestrator.pytest_plugin import controller  # noqa: PLC0415  (on first use: not at plugin load)

        config.stash[REPORT_KEY] = RunReport(config)
        config.pluginmanager.register(config.stash[REPORT_KEY], "orch-report")
        if config.pluginmanager.hasplugin("xdist"):
            config.pluginmanager.register(controller.WorkerHandover(), "orch-worker-handover")
    hold_lease(config)
    if not _is_worker(config) and not getattr(config.option, "collectonly", False):
        controller.preload(config)


def pytest_sessionstart(session: pytest.Session) -> None:
    if not _is_worker(session.config):
        from orchestrator.pytest_plugin import controller  # noqa: PLC0415  (on first use: not at plugin load)

        controller.start(session.config)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    """The test running now, from its setup to its teardown, for what is called without
    it (``orchestrator.fresh_vm()``, ``current_worker()``, ``vm_name()``)."""
    with running(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest) -> Any:
    """The scope of the fixture being set up (a session fixture's ``fresh_vm()`` lives
    until the session ends)."""
    with setting_up(fixturedef.scope):
        return (yield)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    handout.before_test(item)
    isolation.before_test(item)


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Any:
    report = yield
    isolation.validate(report, worker=_is_worker(collector.config))  # a bad orch_isolation marker
    handout.check_collected(report, worker=_is_worker(collector.config))  # no worker of the run has a VM
    return report


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    handout.drop_all_if_no_vms(config, items)  # an xdist worker of a run none of whose workers has a VM


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    handout.saw(item, report)
    isolation.explain(item, report)
    return report


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """After the test's own fixtures are torn down, in this order: a failing test's worker
    is kept first (as it was at the failure), then the pollution check and the policy's
    reset, then the marker's reset, then (whatever the steps before did) the one-offs the
    test made (``fresh_vm``) and the VMs it made under orch's names."""
    try:
        keeping.after_test(item)
        isolation.after_test(item)
        handout.after_test(item)
    finally:
        helpers.after_test(item)
        leaks.after_test(item)


def pytest_unconfigure(config: pytest.Config) -> None:
    if RUN_KEY in config.stash:
        config.stash[RUN_KEY].close()


def _is_worker(config: pytest.Config) -> bool:
    """Whether this process is an xdist worker (the controller hands it ``workerinput``)."""
    return hasattr(config, "workerinput")
