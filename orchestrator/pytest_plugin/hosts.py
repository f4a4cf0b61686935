"""testinfra on orch's VMs: the ``orch_host`` fixture's ``Host``, reached the way the
worker's own connector reaches it: SSH with the worker's key for ``@ssh`` (the SSH
connector's), else the provider's own (``Provider.testinfra_host``). Needs
pytest-testinfra (``pip install 'pyinfra-orch[testinfra]'``)."""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any

from orchestrator.primitives.errors import UsageError

if TYPE_CHECKING:
    from orchestrator.pytest_plugin.worker import Worker


def testinfra_host(worker: Worker) -> Any:
    """A testinfra ``Host`` on ``worker``'s VM, as root."""
    from orchestrator.core import connectors  # noqa: PLC0415  (on first use: not at plugin load)
    from orchestrator.providers.registry import provider_class  # noqa: PLC0415  (on first use: not at plugin load)

    if importlib.util.find_spec("testinfra") is None:
        raise UsageError("orch_host needs pytest-testinfra: pip install 'pyinfra-orch[testinfra]'")
    host = connectors.testinfra_host(worker.host, worker.host_data)
    if host is not None:
        return host
    if not worker.provider:
        raise UsageError(f"orch_host: testinfra cannot reach {worker.host}: its inventory names no provider (run `orch up`)")
    return provider_class(worker.provider).testinfra_host(worker.host, worker.host_data)
