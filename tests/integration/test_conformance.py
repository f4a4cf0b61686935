"""The provider conformance suite on the real providers: Docker against the real engine,
podman (rootful, the real podman), Incus (the real incusd, system containers from the
machine image), OrbStack (the real orbctl command line is emulated by tests/fakes/orbctl)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from backends import IncusBackend, PodmanBackend, remove_incus, remove_podman

from orchestrator.providers.docker import DockerProvider
from orchestrator.providers.incus import IncusProvider
from orchestrator.providers.orbstack import OrbStackProvider
from orchestrator.providers.podman import PodmanProvider
from orchestrator.testing.conformance import ProviderContract, contract_settings

FAKES = Path(__file__).resolve().parents[1] / "fakes"


class TestDockerProvider(ProviderContract):
    @pytest.fixture
    def provider(self, tmp_path: Path, docker_engine: str) -> DockerProvider:
        return DockerProvider(contract_settings(tmp_path, "docker", image=docker_engine))


class TestPodmanProvider(ProviderContract):
    @pytest.fixture
    def provider(self, tmp_path: Path, podman_engine: str) -> Iterator[PodmanProvider]:
        """Rootful podman; whatever a failed test left in podman (named with the test's
        prefix or labelled as made under tmp_path) is deleted afterwards, and checked gone."""
        provider = PodmanProvider(contract_settings(tmp_path, "podman", image=podman_engine))
        yield provider
        prefix = provider.settings.prefix
        remove_podman(prefix, tmp_path)
        podman = PodmanBackend()
        assert podman.names(prefix) == [] and podman.images(prefix) == [] and podman.images_of(tmp_path) == []


class TestOrbStackProvider(ProviderContract):
    @pytest.fixture
    def provider(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> OrbStackProvider:
        monkeypatch.setenv("PATH", f"{FAKES}{os.pathsep}{os.environ['PATH']}")
        return OrbStackProvider(contract_settings(tmp_path, "orbstack", image="debian:bookworm"))


class TestIncusProvider(ProviderContract):
    @pytest.fixture
    def provider(self, tmp_path: Path, incus_engine: str) -> Iterator[IncusProvider]:
        """The local Incus; whatever a failed test left there (named with the test's
        prefix) is deleted afterwards, and checked gone."""
        provider = IncusProvider(contract_settings(tmp_path, "incus", image=incus_engine))
        yield provider
        remove_incus(provider.settings.prefix)
        assert IncusBackend().names(provider.settings.prefix) == []
