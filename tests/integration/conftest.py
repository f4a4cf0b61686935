import pytest


@pytest.fixture(autouse=True)
def _needs_docker(docker_engine: str) -> None:
    """Every test here runs against the real Docker engine (fails in CI without one)."""
