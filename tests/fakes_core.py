"""The core on the FakeProvider: an ``Orch`` for a throwaway project folder, with no
backend and no pyinfra (for the fast unit tests of the core's logic)."""

from __future__ import annotations

from pathlib import Path

from orchestrator.core import settings as config
from orchestrator.core.context import Context
from orchestrator.providers.fake import FAKE_IMAGE, FakeDeployer, FakeProvider


def fake_orch(folder: Path, *, provider: FakeProvider | None = None, **overrides: object) -> Context:
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "pyproject.toml").exists():
        (folder / "pyproject.toml").write_text(f'[tool.orch]\nprovider = "docker"\nimage = "{FAKE_IMAGE}"\nretries = 2\n')
    settings = config.load(cwd=folder, env={}, overrides=overrides)
    fake = provider or FakeProvider(settings)
    orch = Context(settings, provider=fake, deployer=FakeDeployer(fake))
    orch.maintain_later = lambda: None  # tests call maintain_now() when they want it
    return orch


def maintain_now(orch: Context) -> None:
    """What the background ``orch maintain`` does, inline (the fake lives in this process)."""
    from orchestrator.core.spares import maintain, wanted

    wanted(orch).touch()
    maintain(orch)
