"""Docker's error texts, by what they mean, and the classification of a failed docker
command (the exit code says little: 1 for most daemon errors, 125 for refused requests)."""

from __future__ import annotations

from orchestrator.primitives.errors import (
    EngineUnavailable,
    PermanentProviderError,
    ProviderError,
    TransientProviderError,
    VMExists,
    VMNotFound,
)

# Docker's error texts, by what they mean.
_ENGINE_DOWN = ("Cannot connect to the Docker daemon", "Is the docker daemon running", "error during connect")
_NOT_FOUND = ("No such container", "No such object")
_EXISTS = ("is already in use by container",)
_NO_IMAGE = (
    "No such image",
    "Unable to find image",
    "pull access denied",
    "repository does not exist",
    "manifest unknown",
    "invalid reference format",
)
_TRANSIENT = (
    "context deadline exceeded",
    "i/o timeout",
    "connection reset",
    "TLS handshake timeout",
    "device or resource busy",
    "is already in progress",
    "Client.Timeout exceeded",
    "too many requests",
    "resource temporarily unavailable",
    "502 Bad Gateway",
    "503 Service Unavailable",
    "is restarting, wait until the container is running",  # a machine between two boots
)


def classify(operation: str, vm: str, returncode: int, stderr: str) -> ProviderError:
    """Turn a failed docker command into a named, classified error, from Docker's message
    (the exit code says little: 1 for most daemon errors, 125 for refused requests)."""
    msg = " ".join(stderr.split()) or f"docker exited with code {returncode}"
    if any(t in msg for t in _ENGINE_DOWN):
        return EngineUnavailable(
            f"the Docker engine is not reachable ({msg}): start it (dockerd, or scripts/setup.sh)",
            operation=operation,
            vm=vm,
        )
    # "already in use" means an existing name only in docker's "Conflict." answer
    meanings = MEANINGS if "Conflict" in msg else [m for m in MEANINGS if m[1] is not VMExists]
    return by_markers(msg, operation, vm, meanings)


#: What each table of texts means, in the order they are tried.
MEANINGS: list[tuple[tuple[str, ...], type[ProviderError]]] = [
    (_NOT_FOUND, VMNotFound),
    (_EXISTS, VMExists),
    (_NO_IMAGE, PermanentProviderError),
    (_TRANSIENT, TransientProviderError),
]


def by_markers(msg: str, operation: str, vm: str, meanings: list[tuple[tuple[str, ...], type[ProviderError]]]) -> ProviderError:
    """The error the first matching table of texts names. Anything else is unknown: fail at
    once with the engine's own message rather than retry blindly. Shared by the docker CLI
    and podman, whose texts differ but mean the same things."""
    for markers, kind in meanings:
        if any(t in msg for t in markers):
            return kind(msg, operation=operation, vm=vm)
    return PermanentProviderError(msg, operation=operation, vm=vm)
