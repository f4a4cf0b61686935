"""Named exceptions. Library code raises these ``from`` their cause; the CLI and the pytest
plugin turn them into one line for the user. Nothing else prints."""

from __future__ import annotations


class OrchError(Exception):
    """Base of orch's errors. ``str(err)`` is one line that says what to do."""


class UsageError(OrchError):
    """The user asked for something invalid: a bad worker id, count, name or setting."""


class ConfigError(UsageError):
    """``[tool.orch]``, an ``ORCH_*`` variable or a flag holds an invalid value."""


class StateError(OrchError):
    """The state file is unreadable, unwritable or does not match what is asked."""


class CheckoutGone(StateError):
    """A process that must never make a checkout's state (the background maintainer) found
    it gone: the checkout was deleted under it."""


class LockBusy(OrchError):
    """Another orch command holds this checkout's lock."""


class LiveRunError(UsageError):
    """A live pytest run uses the workers a command would break (``--force`` overrides)."""


class ProviderError(OrchError):
    """A backend operation failed. ``transient`` says whether retrying may help."""

    transient = False

    def __init__(self, message: str, *, operation: str = "", vm: str = "") -> None:
        super().__init__(message)
        self.operation = operation
        self.vm = vm


class TransientProviderError(ProviderError):
    """A failure that may pass on retry: the engine is busy, a timeout, a lost connection."""

    transient = True


class PermanentProviderError(ProviderError):
    """A failure retrying cannot fix: unknown image, invalid name, engine refused the request."""


class VMNotFound(PermanentProviderError):
    """The named VM does not exist on the backend."""


class VMExists(PermanentProviderError):
    """A VM of that name already exists (a create that timed out may have happened)."""


class EngineUnavailable(PermanentProviderError):
    """The backend itself is not reachable (Docker engine stopped, orbctl missing)."""


class ProviderTimeout(TransientProviderError):
    """A backend operation did not finish in its time limit (checked for health, then retried)."""


class DeployError(OrchError):
    """A pyinfra deploy or operation failed on a VM."""
