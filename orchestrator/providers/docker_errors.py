"""Docker's error texts, by what they mean, and the classification of a failed docker
command (the exit code says little: 1 for most daemon errors, 125 for refused requests)."""

from __future__ import annotations

from ..errors import (
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
    if any(t in msg for t in _NOT_FOUND):
        return VMNotFound(msg, operation=operation, vm=vm)
    if "Conflict" in msg and any(t in msg for t in _EXISTS):
        return VMExists(msg, operation=operation, vm=vm)
    if any(t in msg for t in _NO_IMAGE):
        return PermanentProviderError(msg, operation=operation, vm=vm)
    if any(t in msg for t in _TRANSIENT):
        return TransientProviderError(msg, operation=operation, vm=vm)
    # Anything else is unknown: fail at once with docker's own message rather than retry blindly.
    return PermanentProviderError(msg, operation=operation, vm=vm)
