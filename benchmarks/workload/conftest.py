"""The benchmark workload's strategies, chosen by BENCH_STRATEGY:

- per_test:    one VM per test, created and deleted around it (the ADR's "before");
- per_session: one VM per xdist worker, created in the session and deleted at its end
               (the ADR's "after", as the seed's conftest does it);
- orch:        the worker VM that `orch up` made (fixture orch_worker).

The VMs of per_test and per_session are made through the same provider code as orch's,
so the three differ only in when VMs are made. Test-body time is recorded per test.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from orchestrator import config, inventory, labels as L, naming
from orchestrator.providers import get_provider
from orchestrator.worker import Worker

STRATEGY = os.environ.get("BENCH_STRATEGY", "orch")
OUT = Path(os.environ.get("BENCH_OUT", "bench-out"))


class Made:
    """A VM made outside orch's state, as the seed's conftest made them."""

    def __init__(self) -> None:
        self.settings = config.load()
        self.provider = get_provider(self.settings)

    def create(self) -> Worker:
        name = naming.oneoff_vm_name(self.settings.prefix, self.settings.checkout)
        if self.provider.uses_golden:  # OrbStack: the seed created every machine from the distro
            self.provider.create_golden(name, self.settings.image)
        else:
            self.provider.create(name, self.settings.image, L.oneoff_labels(self.settings.checkout, "bench", "bench"))
        self.provider.wait_ready(name)
        host, data = self.provider.host(name)
        return Worker(inventory.InventoryHost(host, {**data, "orch_worker_id": "bench", "orch_vm": name}))

    def delete(self, worker: Worker) -> None:
        worker.close()
        self.provider.delete(worker.vm)


@pytest.fixture(scope="session")
def _made() -> Made:
    return Made()


@pytest.fixture(scope="session")
def _session_vm(_made: Made):
    worker = _made.create()
    yield worker
    _made.delete(worker)


@pytest.fixture
def bench_vm(request: pytest.FixtureRequest):
    if STRATEGY == "orch":
        yield request.getfixturevalue("orch_worker")
    elif STRATEGY == "per_session":
        yield request.getfixturevalue("_session_vm")
    else:
        made = request.getfixturevalue("_made")
        worker = made.create()
        yield worker
        made.delete(worker)


_bodies: list[float] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item):
    start = time.perf_counter()
    yield
    _bodies.append(time.perf_counter() - start)


def pytest_sessionfinish(session: pytest.Session) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"bodies-{os.getpid()}.json").write_text(json.dumps(_bodies))
