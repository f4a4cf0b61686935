"""VMs that tests make themselves: collision-free names orch records
(``orchestrator.vm_name``), deleted after their test, and the run's leak check."""

from __future__ import annotations

import pytest


def after_test(item: pytest.Item) -> None:
    """Called by the switchboard in each test's teardown (see ``plugin.py`` for the order)."""
