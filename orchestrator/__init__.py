"""orch: a test orchestrator for pyinfra.

One persistent VM per pytest-xdist worker, brought up and provisioned by pyinfra deploys,
described by generated pyinfra inventories, reset to a baseline on demand and swept when
orphaned.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    #: The installed distribution's version (pyproject.toml's ``[project] version``);
    #: the baseline's fingerprint and ``orch --version`` use it.
    __version__ = version("orch")
except PackageNotFoundError:  # pragma: no cover (run from a source tree never installed)
    __version__ = "0+unknown"

__all__ = ["__version__", "current_worker"]


def current_worker():  # type: ignore[no-untyped-def]
    """This pytest process's worker (what the ``orch_worker`` fixture gives), for helpers
    that are plain functions."""
    from orchestrator.pytest_plugin.worker import current_worker as _current

    return _current()
