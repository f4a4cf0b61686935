"""The pollution check after each test, and what the isolation policy does with it
(``[tool.orch] isolation``, ``@pytest.mark.orch_isolation``)."""

from __future__ import annotations

import pytest


def after_test(item: pytest.Item) -> None:
    """Called by the switchboard in each test's teardown (see ``plugin.py`` for the order)."""
