"""The provider conformance suite on the real providers: Docker against the real engine,
OrbStack (the real orbctl command line is emulated by tests/fakes/orbctl)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrator.providers.docker import DockerProvider
from orchestrator.providers.orbstack import OrbStackProvider
from orchestrator.testing.conformance import ProviderContract, contract_settings

FAKES = Path(__file__).resolve().parents[1] / "fakes"


class TestDockerProvider(ProviderContract):
    @pytest.fixture
    def provider(self, tmp_path: Path, docker_engine: str) -> DockerProvider:
        return DockerProvider(contract_settings(tmp_path, "docker", image=docker_engine))


class TestOrbStackProvider(ProviderContract):
    @pytest.fixture
    def provider(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> OrbStackProvider:
        monkeypatch.setenv("PATH", f"{FAKES}{os.pathsep}{os.environ['PATH']}")
        return OrbStackProvider(contract_settings(tmp_path, "orbstack", image="debian:bookworm"))
