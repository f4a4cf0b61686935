"""Retries of backend operations: transient failures only, exponential backoff with
jitter, a bounded number of attempts (tenacity does the looping).

Which failures are transient is the provider's decision (it raises
``TransientProviderError`` or ``PermanentProviderError`` from the backend's exit codes,
error texts and exception types); this module never guesses from a message. After a
timeout the backend's health is checked before the next attempt, so a dead engine fails
at once with its own message instead of timing out again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import tenacity

from orchestrator.primitives.errors import ProviderError, ProviderTimeout

log = logging.getLogger(__name__)
T = TypeVar("T")


def _is_transient(err: BaseException) -> bool:
    return isinstance(err, ProviderError) and err.transient


def call(
    fn: Callable[[], T],
    *,
    what: str,
    attempts: int = 4,
    initial_delay: float = 0.5,
    max_delay: float = 10.0,
    health_check: Callable[[], None] | None = None,
    sleep: Callable[[float], None] | None = None,
) -> T:
    """Call ``fn`` until it succeeds, a permanent error occurs, or attempts run out."""

    def before_sleep(rs: tenacity.RetryCallState) -> None:
        err = rs.outcome.exception() if rs.outcome else None
        log.warning("%s: attempt %d failed (%s); retrying", what, rs.attempt_number, err)
        if isinstance(err, ProviderTimeout) and health_check is not None:
            health_check()  # raises EngineUnavailable (permanent) when the backend is down

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(max(1, attempts)),
        wait=tenacity.wait_exponential_jitter(multiplier=initial_delay, max=max_delay, jitter=initial_delay),
        retry=tenacity.retry_if_exception(_is_transient),
        before_sleep=before_sleep,
        reraise=True,
        sleep=sleep or time.sleep,
    )
    return retrying(fn)
