"""orch: a test orchestrator for pyinfra.

One persistent VM per pytest-xdist worker, brought up and provisioned by pyinfra deploys,
described by generated pyinfra inventories, reset to a baseline on demand and swept when
orphaned.
"""

from typing import TYPE_CHECKING

from orchestrator.primitives.version import __version__

if TYPE_CHECKING:
    from orchestrator.pytest_plugin.worker import Worker

__all__ = ["__version__", "current_worker", "fresh_vm", "vm_name"]


def current_worker() -> "Worker":
    """This pytest process's worker: the very object the ``orch_worker`` fixture gives, for
    helpers that are plain functions, anywhere inside a running test (with or without the
    fixture). Outside a test it raises ``orchestrator.pytest_plugin.run.OutsideTest`` (a
    ``UsageError``)."""

    from orchestrator.pytest_plugin.helpers import current_worker as _current  # noqa: PLC0415 (pytest only when used)

    return _current()


def fresh_vm() -> "Worker":
    """A one-off VM for the test running now, what the ``fresh_vm`` fixture's factory gives
    (from the pool when there is one), deleted after that test, pass or fail; usable
    anywhere inside a running test (its body, a helper, a fixture, a thread it started).
    Made while a session (or module, class) fixture is set up, it lives until the session
    ends. Outside a test it raises ``orchestrator.pytest_plugin.run.OutsideTest``."""

    from orchestrator.pytest_plugin.helpers import fresh_vm as _fresh  # noqa: PLC0415 (pytest only when used)

    return _fresh()


def vm_name(base: str = "test-vm", *, scope: str = "test") -> str:
    """A name for a VM the running test makes itself (through the connector it tests):
    ``{base}-{checkout}-{timestamp}-{pid}-{random}``, recorded by orch before it is returned,
    so that no other test (on any xdist worker) is ever handed it. Whatever exists under it
    is deleted after the test (``scope="session"``: at the end of the session), and by
    ``orch sweep`` if the run dies. ``base``: 1-28 lowercase letters, digits or hyphens,
    starting with a letter (a bad one raises ``orchestrator.primitives.errors.UsageError``)."""

    from orchestrator.pytest_plugin.leaks import vm_name as _vm_name  # noqa: PLC0415 (pytest only when used)

    return _vm_name(base, scope=scope)
