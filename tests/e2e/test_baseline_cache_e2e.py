"""``orch baseline key | export | import`` as a CI job uses them, on real engines: one
checkout exports its baseline; another (a new clone: its own checkout id, no state)
imports it and brings its workers up from it without provisioning; the imported
baseline is that checkout's own (its labels, its tag), so neither checkout's down or
sweep touches the other's. A folder with no entry for the key is a miss (exit 3), a
damaged entry is refused in one line and nothing is recorded."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from backends import remove_podman, run_orch

MISS = 3


def _checkout(folder: Path, provider: str, prefix: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "pyproject.toml").write_text(
        f'[tool.orch]\nprovider = "{provider}"\nimage = "orch-base:bookworm"\nprefix = "{prefix}"\n'
    )
    return folder


def _image_labels(engine: str, ref: str) -> dict[str, str]:
    proc = subprocess.run([engine, "image", "inspect", ref], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        return {}
    [raw] = json.loads(proc.stdout)
    return dict(raw.get("Config", {}).get("Labels") or {})


def _baseline(project: Path) -> dict:
    proc = run_orch(project, "status", "--json")
    assert proc.returncode == 0, proc.stderr
    [row] = [r for r in json.loads(proc.stdout) if r["kind"] == "baseline"]
    return row


def _tag(project: Path) -> str:
    state = json.loads((project / "inventories" / ".orch" / "state.json").read_text())
    return state["baseline"]["seal"]["tag"]


def _checkout_id(project: Path) -> str:
    return json.loads((project / "inventories" / ".orch" / "state.json").read_text())["checkout"]


@pytest.mark.parametrize("engine", ["docker", "podman"])
def test_a_baseline_exported_by_one_checkout_is_imported_by_another(
    tmp_path: Path, docker_engine: str, podman_engine: str, prefix: str, engine: str
) -> None:
    first = _checkout(tmp_path / "first", engine, prefix)
    second = _checkout(tmp_path / "second", engine, prefix)
    cache = tmp_path / "cache"
    try:
        up = run_orch(first, "up", "--workers", "1")
        assert up.returncode == 0, up.stderr
        key = run_orch(first, "baseline", "key")
        assert key.returncode == 0 and len(key.stdout.strip()) == 12, key.stderr
        assert run_orch(second, "baseline", "key").stdout == key.stdout  # same sources, image, orch: same key

        export = run_orch(first, "baseline", "export", str(cache), "--json")
        assert export.returncode == 0, export.stderr
        assert json.loads(export.stdout)["action"] == "exported"
        k = key.stdout.strip()
        assert sorted(p.name for p in cache.iterdir()) == [f"orch-baseline-{k}.json", f"orch-baseline-{k}.tar"]
        again = run_orch(first, "baseline", "export", str(cache))
        assert again.returncode == 0 and "already in" in again.stderr

        imported = run_orch(second, "baseline", "import", str(cache))
        assert imported.returncode == 0, imported.stderr
        assert f"baseline {k} imported" in imported.stderr
        tag, theirs = _tag(second), _tag(first)
        assert tag != theirs
        labels = _image_labels(engine, tag)
        assert labels["orch.baseline-of"] == _checkout_id(second) != _checkout_id(first)
        assert labels["orch.inventory"] == str(second / "inventories")  # where sweep finds its checkout

        up2 = run_orch(second, "up", "--workers", "2")
        assert up2.returncode == 0, up2.stderr
        assert "provisioning with" not in up2.stderr and "building the baseline" not in up2.stderr, up2.stderr
        assert run_orch(second, "exec", "gw1", "--", "test", "-d", "/var/lib/orch/baseline").returncode == 0
        assert _baseline(second)["state"] == "sealed"

        # each checkout's down deletes its own baseline only
        assert run_orch(first, "down").returncode == 0
        assert not _image_labels(engine, theirs) and _image_labels(engine, tag)
        assert run_orch(second, "exec", "gw0", "--", "true").returncode == 0
        assert run_orch(second, "down").returncode == 0
        assert not _image_labels(engine, tag)
    finally:
        run_orch(first, "down", "--force")
        run_orch(second, "down", "--force")
        if engine == "podman":
            remove_podman(prefix, tmp_path)


def test_a_miss_and_a_damaged_entry(project: Path, tmp_path: Path) -> None:
    """No entry for the key: exit 3 and one line (a CI script provisions as usual); an
    archive cut short: exit 1, one line naming it, and no baseline is recorded."""
    empty = tmp_path / "empty"
    miss = run_orch(project, "baseline", "import", str(empty))
    assert miss.returncode == MISS, miss.stderr
    assert len(miss.stderr.strip().splitlines()) == 1 and "no baseline for key" in miss.stderr
    assert not (project / "inventories" / ".orch" / "state.json").exists() or not [
        r for r in json.loads(run_orch(project, "status", "--json").stdout) if r["kind"] == "baseline"
    ]

    other = _checkout(tmp_path / "other", "docker", _prefix_of(project))
    cache = tmp_path / "cache"
    try:
        assert run_orch(other, "up", "--workers", "1").returncode == 0
        assert run_orch(other, "baseline", "export", str(cache)).returncode == 0
        [archive] = cache.glob("*.tar")
        with archive.open("r+b") as f:
            f.truncate(archive.stat().st_size // 2)
        damaged = run_orch(project, "baseline", "import", str(cache))
        assert damaged.returncode == 1, damaged.stderr
        [line] = damaged.stderr.strip().splitlines()
        assert str(archive) in line and "partial or corrupt" in line
        rows = json.loads(run_orch(project, "status", "--json").stdout or "[]")
        assert not [r for r in rows if r["kind"] == "baseline"]

        # up with that cache builds as usual, and writes a whole entry over the damaged one
        up = run_orch(project, "up", "--workers", "1", "--baseline-cache", str(cache))
        assert up.returncode == 0, up.stderr
        assert "baseline cache not used" in up.stderr and "baseline written to cache" in up.stderr
        assert archive.stat().st_size == json.loads(archive.with_suffix(".json").read_text())["size"]
    finally:
        run_orch(other, "down", "--force")
        run_orch(project, "down", "--force")
        shutil.rmtree(cache, ignore_errors=True)


def _prefix_of(project: Path) -> str:
    for line in (project / "pyproject.toml").read_text().splitlines():
        if line.startswith("prefix = "):
            return line.split('"')[1]
    raise AssertionError("no prefix")
