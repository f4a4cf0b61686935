"""Retries of backend operations: transient errors only, bounded, health-checked after timeouts."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pytest

from orchestrator.primitives.errors import (
    EngineUnavailable,
    PermanentProviderError,
    ProviderTimeout,
    TransientProviderError,
    VMNotFound,
)
from orchestrator.providers import retry

FAST = {"initial_delay": 0.001, "max_delay": 0.01}


class Script:
    """A fake backend operation: raises the scripted errors in turn, then returns "done"."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


def always(err: BaseException) -> Callable[[], str]:
    def fn() -> str:
        fn.calls += 1  # type: ignore[attr-defined]
        raise err

    fn.calls = 0  # type: ignore[attr-defined]
    return fn


def test_success_is_returned_at_once() -> None:
    fn = Script()
    assert retry.call(fn, what="create vm", **FAST) == "done"
    assert fn.calls == 1


@pytest.mark.parametrize("attempts", [1, 2, 4])
def test_transient_error_is_retried_up_to_attempts_then_reraised(attempts: int) -> None:
    err = TransientProviderError("engine busy", operation="create", vm="vm1")
    fn = always(err)
    with pytest.raises(TransientProviderError) as exc:
        retry.call(fn, what="create vm1", attempts=attempts, **FAST)
    assert exc.value is err  # the backend's own error and message, not a RetryError
    assert fn.calls == attempts  # type: ignore[attr-defined]


def test_zero_attempts_still_tries_once() -> None:
    fn = always(TransientProviderError("busy"))
    with pytest.raises(TransientProviderError):
        retry.call(fn, what="x", attempts=0, **FAST)
    assert fn.calls == 1  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "err",
    [
        PermanentProviderError("unknown image nope:latest"),
        VMNotFound("no such container"),
        EngineUnavailable("docker is not running"),
        ValueError("a bug in orch, not a backend failure"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_permanent_errors_are_not_retried(err: BaseException) -> None:
    fn = always(err)
    with pytest.raises(type(err)) as exc:
        retry.call(fn, what="create vm1", attempts=5, **FAST)
    assert exc.value is err
    assert fn.calls == 1  # type: ignore[attr-defined]


def test_succeeds_after_two_transient_failures() -> None:
    fn = Script(TransientProviderError("busy"), TransientProviderError("connection reset"))
    assert retry.call(fn, what="start vm1", attempts=3, **FAST) == "done"
    assert fn.calls == 3


def test_transient_then_permanent_stops_at_the_permanent_error() -> None:
    fn = Script(TransientProviderError("busy"), PermanentProviderError("name in use"), TransientProviderError("never"))
    with pytest.raises(PermanentProviderError, match="name in use"):
        retry.call(fn, what="create vm1", attempts=5, **FAST)
    assert fn.calls == 2


def test_health_is_checked_after_a_timeout_then_retried() -> None:
    health = []
    fn = Script(ProviderTimeout("docker create did not finish in 180s"))
    assert retry.call(fn, what="create vm1", attempts=3, health_check=lambda: health.append("ok"), **FAST) == "done"
    assert fn.calls == 2
    assert health == ["ok"]


def test_dead_engine_after_a_timeout_stops_at_once() -> None:
    fn = always(ProviderTimeout("docker create did not finish in 180s"))
    checks = []

    def health_check() -> None:
        checks.append(1)
        raise EngineUnavailable("the Docker engine is not reachable: start it")

    with pytest.raises(EngineUnavailable, match="not reachable"):
        retry.call(fn, what="create vm1", attempts=5, health_check=health_check, **FAST)
    assert fn.calls == 1  # type: ignore[attr-defined]
    assert checks == [1]


def test_health_is_not_checked_after_other_transient_errors() -> None:
    checks = []
    fn = Script(TransientProviderError("busy"), TransientProviderError("busy"))
    assert retry.call(fn, what="x", attempts=3, health_check=lambda: checks.append(1), **FAST) == "done"
    assert checks == []


def test_no_health_check_after_the_last_attempt() -> None:
    checks = []
    fn = always(ProviderTimeout("slow"))
    with pytest.raises(ProviderTimeout):
        retry.call(fn, what="x", attempts=2, health_check=lambda: checks.append(1), **FAST)
    assert fn.calls == 2  # type: ignore[attr-defined]
    assert checks == [1]  # between attempt 1 and 2 only


def test_small_delays_keep_retries_fast() -> None:
    fn = always(TransientProviderError("busy"))
    start = time.monotonic()
    with pytest.raises(TransientProviderError):
        retry.call(fn, what="x", attempts=6, **FAST)
    assert time.monotonic() - start < 0.5  # 5 waits of at most max_delay (plus overhead)


def test_each_retry_is_logged_with_the_operation(caplog: pytest.LogCaptureFixture) -> None:
    fn = Script(TransientProviderError("engine busy"))
    with caplog.at_level(logging.WARNING, logger="orchestrator.providers.retry"):
        retry.call(fn, what="create orch-1a2b3c4d-gw0", attempts=3, **FAST)
    [record] = caplog.records
    assert "create orch-1a2b3c4d-gw0" in record.getMessage()
    assert "engine busy" in record.getMessage()
    assert "retrying" in record.getMessage()
