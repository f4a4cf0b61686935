"""orch's pytest plugin (entry point ``pytest11``): fixtures that give each xdist worker
its VM, and the controller-side handover of a crashed worker's VM to its replacement."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from . import config as orch_config
from .errors import OrchError
from .worker import WORKERINPUT_KEY, Worker, current_worker_id, find_worker


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("orch", "orch: persistent VMs per xdist worker")
    group.addoption(
        "--orch-inventory-dir",
        default=None,
        help="folder of orch's generated inventories [default: ORCH_INVENTORY_DIR, [tool.orch], <project>/inventories]",
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


def inventory_dir(config: pytest.Config) -> Path:
    option = config.getoption("orch_inventory_dir")
    settings = orch_config.load(cwd=config.invocation_params.dir, overrides={"inventory_dir": option})
    return settings.inventory_dir


@pytest.fixture(scope="session")
def orch_worker(request: pytest.FixtureRequest) -> Worker:
    """This xdist worker's VM: ids, pyinfra host, inventory path, run/fact/operation."""
    workerinput = getattr(request.config, "workerinput", None)
    try:
        worker = find_worker(
            inventory_dir(request.config),
            current_worker_id(workerinput),
            workers_hint=(workerinput or {}).get("workercount"),
        )
    except OrchError as err:
        pytest.fail(str(err), pytrace=False)
    request.addfinalizer(worker.close)
    return worker


@pytest.fixture(scope="session")
def worker_vm(orch_worker: Worker) -> str:
    """The name of this xdist worker's VM (``gw0`` without xdist), as the seed's fixture."""
    return orch_worker.vm
