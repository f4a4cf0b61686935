"""The project the plugin's black-box tests (pytester) run in: orch on the file-backed
FakeProvider, with none of this run's own ORCH_/PYTEST_XDIST variables."""

from __future__ import annotations

import os

import pytest


def fake_project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, extra: str = "") -> pytest.Pytester:
    """``pytester``'s folder as an orch project on the FakeProvider (its VMs in fake.json);
    ``extra``: more ``[tool.orch]`` lines."""
    for var in [v for v in os.environ if v.startswith(("ORCH_", "PYTEST_XDIST"))]:
        monkeypatch.delenv(var, raising=False)
    pytester.makepyprojecttoml(
        f'[tool.orch]\nprovider = "fake"\nimage = "fake:bookworm"\nprefix = "p"\n{extra}'
        f'[tool.orch.fake]\npath = "{pytester.path / "fake.json"}"\n'
    )
    return pytester
