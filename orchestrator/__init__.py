"""orch: a test orchestrator for pyinfra.

One persistent VM per pytest-xdist worker, brought up and provisioned by pyinfra deploys,
described by generated pyinfra inventories, reset to a baseline on demand and swept when
orphaned.
"""

__version__ = "0.2.0"

__all__ = ["__version__", "current_worker"]


def current_worker():  # type: ignore[no-untyped-def]
    """This pytest process's worker (what the ``orch_worker`` fixture gives), for helpers
    that are plain functions."""
    from orchestrator.pytest_plugin.worker import current_worker as _current

    return _current()
