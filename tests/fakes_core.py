"""The core on the FakeProvider: a ``Context`` for a throwaway project folder, with no
backend and no pyinfra (for the fast unit tests of the core's logic)."""

from __future__ import annotations

from pathlib import Path

from orchestrator.core import settings as config
from orchestrator.core.context import Context, Refill
from orchestrator.core.maintainer import maintain, wanted
from orchestrator.providers.fake import FAKE_IMAGE, FakeDeployer, FakeProvider


def fake_orch(
    folder: Path, *, provider: FakeProvider | None = None, refill: Refill | None = None, **overrides: object
) -> Context:
    """``refill``: none by default (tests call :func:`maintain_now` when they want it)."""
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "pyproject.toml").exists():
        (folder / "pyproject.toml").write_text(f'[tool.orch]\nprovider = "docker"\nimage = "{FAKE_IMAGE}"\nretries = 2\n')
    settings = config.load(cwd=folder, env={}, overrides=overrides)
    fake = provider or FakeProvider(settings)
    return Context(settings, provider=fake, deployer=FakeDeployer(fake), refill=refill)


def maintain_now(orch: Context) -> None:
    """What the background ``orch maintain`` does, inline (the fake lives in this process)."""
    wanted(orch).touch()
    maintain(orch)
