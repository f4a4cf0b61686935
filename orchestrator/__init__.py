"""orch: a test orchestrator for pyinfra.

One persistent VM per pytest-xdist worker, brought up and provisioned by pyinfra deploys,
described by generated pyinfra inventories, reset to a baseline on demand and swept when
orphaned.
"""

from typing import TYPE_CHECKING

from orchestrator.primitives.version import __version__

if TYPE_CHECKING:
    from orchestrator.pytest_plugin.worker import Worker

__all__ = ["__version__", "current_worker"]


def current_worker() -> "Worker":
    """This pytest process's worker (what the ``orch_worker`` fixture gives), for helpers
    that are plain functions."""

    from orchestrator.pytest_plugin.worker import current_worker as _current  # noqa: PLC0415

    return _current()
