"""Incus's error texts, by what they mean: a failed ``incus`` command turned into orch's
named, classified errors (retry, or fail at once naming the fix).

The client prints one line, ``Error: …``, and exits 1 for every failure of its own
(read off Incus 6.0.4 here: tests/unit/test_incus.py keeps the texts, and
tests/integration/test_incus.py checks them against the real daemon). ``incus exec``
exits with the command's own code, so :func:`incus_own` tells an exec that Incus could
not run from a command that failed.
"""

from __future__ import annotations

from orchestrator.primitives.errors import (
    EngineUnavailable,
    PermanentProviderError,
    ProviderError,
    TransientProviderError,
    VMExists,
    VMNotFound,
)
from orchestrator.providers.docker_errors import by_markers

#: A cluster member that holds the instance does not answer (the member the client talks
#: to does): that member's instances only, never the whole cluster.
_MEMBER_DOWN = ("Missing event connection with target cluster member", "Failed to connect to cluster member")
#: A member (re)starting: it answers in a moment.
_STARTING = ("Server isn't ready yet",)
#: The local daemon's socket does not answer; a remote server cannot be reached.
_DAEMON_DOWN = ("incus daemon doesn't appear to be started", "Unable to connect to", "connect: connection refused")
_NO_REMOTE = ("doesn't exist",)  # 'The remote "far" doesn't exist'
_NO_PROJECT = ("Project not found",)
#: start, stop, exec, copy (its source), delete ('Failed checking instance exists …').
_NOT_FOUND = ("Instance not found",)
#: launch/copy of a taken name (the database's constraint), rename to a taken one.
_EXISTS = ("UNIQUE constraint failed: instances.project_id, instances.name", "already in use")
#: 'Image "x" not found', an image of the other type, a type this server cannot run.
_NO_IMAGE = ('Image "', "image is of type")
#: Busy or slow, and an agent not yet up in a booting VM: worth another try.
_TRANSIENT = (
    "VM agent isn't currently running",
    "Instance is busy running",
    "database is locked",
    "context deadline exceeded",
    "i/o timeout",
    "connection reset",
    "broken pipe",
    "resource temporarily unavailable",
    "TLS handshake timeout",
)


def classify(operation: str, vm: str, returncode: int, text: str) -> ProviderError:
    """A failed ``incus`` command as orch's error, from Incus's own message."""
    msg = " ".join(text.split()) or f"incus exited with code {returncode}"
    if any(t in msg for t in _MEMBER_DOWN):
        return EngineUnavailable(
            f"the cluster member that holds {vm or 'it'} does not answer ({msg}): start the member again "
            "(`incus cluster list` says which)",
            operation=operation,
            vm=vm,
        )
    if any(t in msg for t in _STARTING):
        return TransientProviderError(msg, operation=operation, vm=vm)
    if any(t in msg for t in _DAEMON_DOWN):
        return EngineUnavailable(
            f"Incus is not reachable ({msg}): start incusd (scripts/setup.sh does), or check [tool.orch.incus] remote",
            operation=operation,
            vm=vm,
        )
    if "remote" in msg and any(t in msg for t in _NO_REMOTE):
        return PermanentProviderError(
            f"{msg}: add it with `incus remote add`, or name another in [tool.orch.incus] remote (or the image's remote:)",
            operation=operation,
            vm=vm,
        )
    if any(t in msg for t in _NO_PROJECT):
        return PermanentProviderError(
            f"{msg}: create it with `incus project create NAME`, or name another in [tool.orch.incus] project",
            operation=operation,
            vm=vm,
        )
    if any(t in msg for t in _NOT_FOUND):
        return VMNotFound(msg, operation=operation, vm=vm)
    if any(t in msg for t in _EXISTS):
        return VMExists(msg, operation=operation, vm=vm)
    if any(t in msg for t in _NO_IMAGE):
        return PermanentProviderError(
            f"{msg}: import the image (scripts/setup.sh imports orch-machine/bookworm; a VM needs a VM image), "
            "or name another with --image / ORCH_IMAGE / [tool.orch] image",
            operation=operation,
            vm=vm,
        )
    return by_markers(msg, operation, vm, [(_TRANSIENT, TransientProviderError)])


#: What an ``incus exec`` that Incus could not run says (the command never ran).
_EXEC_FAILED = (
    *_MEMBER_DOWN,
    *_STARTING,
    *_NOT_FOUND,
    *_DAEMON_DOWN,
    *_NO_REMOTE,
    *_NO_PROJECT,
    "Instance is not running",
    "VM agent isn't",
)


def incus_own(stderr: str) -> bool:
    """Whether a failed ``incus exec`` failed in Incus, not in the command: Incus ends with
    its own ``Error: `` line naming one of the failures above (a command may print
    ``Error: `` itself; one Incus cannot find is the command's 127, as a shell's)."""
    lines = stderr.strip().splitlines()
    last = lines[-1] if lines else ""
    return last.startswith("Error: ") and any(t in last for t in _EXEC_FAILED)
