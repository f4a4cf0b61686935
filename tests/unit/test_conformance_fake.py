"""The provider conformance suite on the FakeProvider: the fake keeps the promises the
real providers keep, so the core's unit tests on it mean something."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.providers.fake import FakeProvider
from orchestrator.testing.conformance import ProviderContract, contract_settings


class TestFakeProvider(ProviderContract):
    @pytest.fixture
    def provider(self, tmp_path: Path) -> FakeProvider:
        return FakeProvider(contract_settings(tmp_path, "fake"))


class TestFileBackedFakeProvider(ProviderContract):
    """The same fake, kept in a file (shared by the processes of a pytest run)."""

    @pytest.fixture
    def provider(self, tmp_path: Path) -> FakeProvider:
        settings = contract_settings(tmp_path, "fake")
        settings.tables["fake"] = {"path": str(tmp_path / "fake.json")}
        return FakeProvider(settings)
