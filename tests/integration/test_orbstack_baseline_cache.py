"""The baseline cache on the orbstack provider (tests/fakes/orbctl, backed by Docker):
``orch baseline export`` and ``import`` are refused in one line saying why and what to do
instead, and a refused import leaves no machine and no ready baseline behind."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from backends import FAKES, run_orch

from orchestrator.core import baseline_cache
from orchestrator.providers.orbstack import NO_CACHE


@pytest.fixture
def provider_name() -> str:
    return "orbstack"


def test_the_baseline_cache_is_refused_in_one_line_on_orbstack(project: Path, tmp_path: Path) -> None:
    env = {"PATH": f"{FAKES}{os.pathsep}{os.environ['PATH']}"}
    up = run_orch(project, "up", "--workers", "1", "-q", env=env)
    assert up.returncode == 0, up.stderr
    cache = tmp_path / "cache"

    export = run_orch(project, "baseline", "export", str(cache), env=env)
    assert export.returncode != 0
    assert export.stderr.count("\n") == 1 and NO_CACHE in export.stderr, export.stderr
    assert "orch up" in NO_CACHE and "orbstack provider" in NO_CACHE
    assert not any(p.name.startswith("orch-baseline-") for p in cache.glob("*"))  # no entry written

    # another checkout (no baseline yet) given an entry for this key: import refuses it too
    other = tmp_path / "other"
    other.mkdir()
    (other / "pyproject.toml").write_text((project / "pyproject.toml").read_text())
    key = run_orch(other, "baseline", "key", env=env).stdout.strip()
    entry = baseline_cache.Entry(key, "orbstack", {}, "0", "ref", {}, "another")
    baseline_cache.write(cache, entry, lambda path: path.write_bytes(b"not a machine"))
    imported = run_orch(other, "baseline", "import", str(cache), env=env)
    assert imported.returncode != 0
    assert imported.stderr.count("\n") == 1 and NO_CACHE in imported.stderr, imported.stderr
    status = json.loads(run_orch(other, "status", "--json", env=env).stdout)
    assert [r for r in status if r.get("phase") == "ready"] == [], status  # nothing recorded ready
