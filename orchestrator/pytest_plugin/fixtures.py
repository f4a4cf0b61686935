"""The fixtures of orch's pytest plugin, thin on purpose: the work is in
:mod:`orchestrator.pytest_plugin.handout`, :mod:`orchestrator.pytest_plugin.worker` and
the core, shared with the CLI. The plugin registers this module in ``pytest_configure``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from orchestrator.primitives.errors import OrchError
from orchestrator.pytest_plugin import helpers
from orchestrator.pytest_plugin.handout import fail, get_worker
from orchestrator.pytest_plugin.hosts import testinfra_host
from orchestrator.pytest_plugin.leaks import vm_name
from orchestrator.pytest_plugin.worker import Worker


@pytest.fixture(scope="session")
def orch_worker(request: pytest.FixtureRequest) -> Worker:
    """This xdist worker's VM: ids, pyinfra host, inventory path, run/fact/operation/reset
    (the object ``orchestrator.current_worker()`` gives; closed at the end of the session)."""
    try:
        return get_worker(request.config)
    except OrchError as err:
        fail(err)
        raise  # not reached: fail() raises


@pytest.fixture(scope="session")
def orch_host(orch_worker: Worker) -> Any:
    """A testinfra ``Host`` on this worker's VM (needs pytest-testinfra)."""
    try:
        return testinfra_host(orch_worker)
    except OrchError as err:
        fail(err)


@pytest.fixture(scope="session")
def worker_vm(orch_worker: Worker) -> str:
    """The name of this xdist worker's VM, running (started if it was stopped), for tests
    that drive the backend's own CLI with it."""
    try:
        orch_worker.ensure_running()
    except OrchError as err:
        fail(err)
    return orch_worker.vm


@pytest.fixture
def fresh_vm(request: pytest.FixtureRequest) -> Callable[[], Worker]:
    """A factory of one-off VMs for lifecycle tests: ``vm = fresh_vm()``, what
    ``orchestrator.fresh_vm()`` gives. Each is recorded in the state before it is created
    and deleted after its test, pass or fail, in the background (the session waits for the
    deletions at its end); if the run dies, ``orch sweep`` finds it (its run's lease is gone)."""
    return lambda: helpers.fresh_vm(request.node)


@pytest.fixture
def orch_vm_name(request: pytest.FixtureRequest) -> Callable[..., str]:
    """``orch_vm_name("test-vm")``: what ``orchestrator.vm_name`` gives (a name recorded for
    this test, whatever exists under it deleted after the test), failing the test in one
    line on a bad base name."""

    def name(base: str = "test-vm", *, scope: str = "test") -> str:
        try:
            return vm_name(base, scope=scope, item=request.node)
        except OrchError as err:
            fail(err)
            raise  # not reached: fail() raises

    return name
