"""Keeping the worker of a failing test (``--orch-keep-failed``): swapped out as it was at
the failure, for ``orch shell``; the next test gets a clean worker."""

from __future__ import annotations

import pytest


def after_test(item: pytest.Item) -> None:
    """Called by the switchboard in each test's teardown (see ``plugin.py`` for the order)."""
