"""The baseline as a cache entry, on the FakeProvider: the key, export and import (a round
trip between two checkouts), a miss, a corrupt or partial entry, ``up`` with a cache, and
a crash at each step of an import or an export (what the next ``orch up`` makes of it)."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from fakes_core import fake_orch

from orchestrator.core import baseline_cache
from orchestrator.core.baseline_cache import CacheEntryError, CacheMiss
from orchestrator.core.context import Context
from orchestrator.primitives.errors import UsageError
from orchestrator.providers.fake import Crash, FakeProvider
from orchestrator.state.records import CREATING, READY
from orchestrator.verbs import baseline as verb
from orchestrator.verbs.down import down
from orchestrator.verbs.up import up


def _reported(orch: Context) -> list[str]:
    said: list[str] = []
    orch.report = lambda who, msg: said.append(f"{who}: {msg}")
    return said


def _provisioned(orch: Context) -> list[str]:
    """The VMs the provision deploy ran on (what a user sees as provisioning)."""
    return [vm for name, vm in orch.deployer.runs if "orch: provision" in name]  # type: ignore[attr-defined]


def _two_checkouts(tmp_path: Path) -> tuple[Context, Context]:
    """Two checkouts of one project (two CI jobs' workspaces) on one fake backend."""
    a = fake_orch(tmp_path / "job1")
    b = fake_orch(tmp_path / "job2", provider=a.provider)  # type: ignore[arg-type]
    return a, b


def test_key_is_stable_and_changes_with_the_deploy(tmp_path: Path) -> None:
    deploys = tmp_path / "keydeploys"
    deploys.mkdir()
    source = "from pyinfra.api import deploy\n\n@deploy('mine')\ndef provision():\n    pass\n"
    (deploys / "__init__.py").write_text(source)
    orch = fake_orch(tmp_path, provision="keydeploys:provision")
    first = verb.key(orch)
    assert verb.key(orch).value == first.value and len(first.value) == 12
    assert set(first.parts) == {"deploy", "image", "orch", "provider"}
    (deploys / "__init__.py").write_text(source + "# changed\n")
    sys.modules.pop("keydeploys", None)
    importlib.invalidate_caches()
    changed = verb.key(fake_orch(tmp_path, provision="keydeploys:provision"))
    assert changed.value != first.value and changed.parts["deploy"] != first.parts["deploy"]
    assert orch.provider.vms == {}  # the key makes nothing


def test_export_then_import_in_another_checkout_skips_provisioning(tmp_path: Path) -> None:
    a, b = _two_checkouts(tmp_path)
    cache = tmp_path / "cache"
    up(a, 1)
    out = verb.export(a, cache)
    key = verb.key(a).value
    assert out.action == "exported" and Path(out.path) == cache / f"orch-baseline-{key}.tar"
    manifest = json.loads((cache / f"orch-baseline-{key}.json").read_text())
    assert manifest["fingerprint"] == key and manifest["provider"] == "fake" and manifest["sha256"]
    assert verb.export(a, cache).action == "present"  # an entry per key, never rewritten

    got = verb.import_(b, cache)
    assert got.action == "imported"
    rec = b.store.read().baseline
    assert rec is not None and rec.phase == READY and rec.fingerprint == key
    assert rec.vm.startswith(f"orch-{b.checkout}-zbaseline-") and b.checkout in rec.ref  # this checkout's own
    assert a.store.read().baseline.ref != rec.ref  # type: ignore[union-attr]
    said = _reported(b)
    results = up(b, 2)
    assert all(r.ok for r in results) and [r.action for r in results] == ["created", "created"]
    assert _provisioned(a) and _provisioned(b) == []  # b provisioned nothing
    assert not any("building the baseline" in m for m in said)
    assert b.provider.vms[b.vm_name("gw1")].files["/etc/orch-worker"] == "gw1\n"
    assert verb.import_(b, cache).action == "present"
    down(b)  # b's baseline goes, a's stays
    assert a.store.read().baseline.ref in a.provider.baselines  # type: ignore[union-attr]
    assert rec.ref not in b.provider.baselines


def test_import_miss_mismatch_and_refusals(tmp_path: Path) -> None:
    a, b = _two_checkouts(tmp_path)
    cache = tmp_path / "cache"
    with pytest.raises(CacheMiss, match=r"no baseline for key [0-9a-f]{12} in "):
        verb.import_(b, cache)
    with pytest.raises(UsageError, match=r"no baseline yet: run `orch up` first"):
        verb.export(a, cache)
    up(a, 1)
    verb.export(a, cache)
    c = fake_orch(tmp_path / "job3", provider=a.provider, image="fake:trixie")  # type: ignore[arg-type]
    c.provider.images.add("fake:trixie")  # type: ignore[attr-defined]
    with pytest.raises(CacheMiss, match=verb.key(c).value):  # another image: another key, a miss
        verb.import_(c, cache)
    assert c.store.read().baseline is None
    drifted = fake_orch(tmp_path / "job1", provider=a.provider, image="fake:trixie")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=r"baseline drifted \(the image changed since it was made\): run `orch up`"):
        verb.export(drifted, tmp_path / "cache2")
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match=r"is not writable|cannot make the baseline cache folder"):
        verb.export(a, tmp_path / "file" / "sub")


@pytest.mark.parametrize("damage", ["truncated", "flipped", "no-archive", "bad-manifest", "other-provider"])
def test_a_corrupt_or_partial_entry_is_refused_and_nothing_recorded(tmp_path: Path, damage: str) -> None:
    a, b = _two_checkouts(tmp_path)
    cache = tmp_path / "cache"
    up(a, 1)
    verb.export(a, cache)
    key = verb.key(a).value
    archive, manifest = cache / f"orch-baseline-{key}.tar", cache / f"orch-baseline-{key}.json"
    if damage == "truncated":
        archive.write_bytes(archive.read_bytes()[:10])
    elif damage == "flipped":
        data = bytearray(archive.read_bytes())
        data[5] ^= 1
        archive.write_bytes(bytes(data))
    elif damage == "no-archive":
        archive.unlink()
    elif damage == "bad-manifest":
        manifest.write_text("{not json")
    else:
        manifest.write_text(manifest.read_text().replace('"fake"', '"docker"'))
    with pytest.raises(CacheEntryError, match=r"^refusing .*orch-baseline-"):
        verb.import_(b, cache)
    assert b.store.read().baseline is None
    said = _reported(b)
    b.settings.baseline_cache = cache  # `up --baseline-cache`: a broken cache never fails up
    assert all(r.ok for r in up(b, 1))
    assert any("baseline cache not used: refusing" in m for m in said)
    assert any("building the baseline" in m for m in said)


def test_up_with_a_cache_exports_after_a_build_and_imports_on_the_next_cold_run(tmp_path: Path) -> None:
    a, b = _two_checkouts(tmp_path)
    cache = tmp_path / "new" / "cache"  # missing: made
    a.settings.baseline_cache = b.settings.baseline_cache = cache
    (cache.parent).mkdir()
    said_a = _reported(a)
    up(a, 2)
    key = verb.key(a).value
    assert any("no baseline for key" in m for m in said_a) and any("building the baseline" in m for m in said_a)
    assert any(f"baseline written to cache {cache}" in m for m in said_a)
    assert sorted(p.name for p in cache.iterdir()) == [f"orch-baseline-{key}.json", f"orch-baseline-{key}.tar"]
    said_b = _reported(b)
    results = up(b, 2)
    assert all(r.ok for r in results)
    assert any(f"baseline from cache {cache}" in m for m in said_b)
    assert not any("building the baseline" in m for m in said_b) and _provisioned(b) == []
    # a new key: built, exported, and the cache keeps only the current entry
    c = fake_orch(tmp_path / "job3", provider=a.provider, image="fake:trixie", baseline_cache=cache)  # type: ignore[arg-type]
    c.provider.images.add("fake:trixie")  # type: ignore[attr-defined]
    up(c, 1)
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        [f"orch-baseline-{verb.key(c).value}.json", f"orch-baseline-{verb.key(c).value}.tar"]
    )


def test_a_baseline_cache_that_cannot_be_written_never_fails_up(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path / "job")
    (tmp_path / "file").write_text("")
    orch.settings.baseline_cache = tmp_path / "file"
    said = _reported(orch)
    assert all(r.ok for r in up(orch, 1))
    assert any("baseline not written to the cache" in m for m in said)


@pytest.mark.parametrize("operation, after", [("import", False), ("import", True), ("verify", False)])
def test_crash_during_an_import_then_up_repairs(tmp_path: Path, operation: str, after: bool) -> None:
    a, b = _two_checkouts(tmp_path)
    cache = tmp_path / "cache"
    up(a, 1)
    verb.export(a, cache)
    kept = dict(a.provider.baselines)
    b.provider.faults.crash(operation, after=after)  # type: ignore[attr-defined]
    with pytest.raises(Crash):
        verb.import_(b, cache)
    rec = b.store.read().baseline
    assert rec is not None and rec.phase == CREATING and rec.ref == ""  # never recorded ready
    assert all(ref in b.provider.baselines for ref in kept)  # a's baseline untouched
    b.settings.baseline_cache = cache
    results = up(b, 2)  # the next up repairs: imports again, clones
    assert all(r.ok for r in results)
    rec = b.store.read().baseline
    assert rec is not None and rec.phase == READY and rec.ref in b.provider.baselines and b.checkout in rec.ref
    assert b.store.read().retired == []
    down(b)
    assert set(b.provider.baselines) == set(kept)  # only a's is left
    assert a.store.read().baseline.ref in a.provider.baselines  # type: ignore[union-attr]


def test_crash_during_an_import_then_up_without_a_cache_builds(tmp_path: Path) -> None:
    a, b = _two_checkouts(tmp_path)
    cache = tmp_path / "cache"
    up(a, 1)
    verb.export(a, cache)
    b.provider.faults.crash("import", after=True)  # type: ignore[attr-defined]
    with pytest.raises(Crash):
        verb.import_(b, cache)
    said = _reported(b)
    assert all(r.ok for r in up(b, 1))
    assert any("building the baseline: the last one was not finished" in m for m in said)
    down(b)
    assert set(b.provider.baselines) == {a.store.read().baseline.ref}  # type: ignore[union-attr]


def test_crash_during_an_export_leaves_no_entry_an_import_trusts(tmp_path: Path) -> None:
    a, b = _two_checkouts(tmp_path)
    cache = tmp_path / "cache"
    up(a, 1)
    a.provider.faults.crash("export", after=True)  # type: ignore[attr-defined]
    with pytest.raises(Crash):
        verb.export(a, cache)
    with pytest.raises(CacheMiss):
        verb.import_(b, cache)
    assert verb.export(a, cache).action == "exported"  # the next export writes it whole
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]
    assert verb.import_(b, cache).action == "imported"


def test_prune_keeps_a_live_exports_temporary_file(tmp_path: Path) -> None:
    import os

    live = tmp_path / f".orch-baseline-abcdef012345.{os.getpid()}-aaaaaa.tmp"
    dead = tmp_path / ".orch-baseline-abcdef012345.999999999-bbbbbb.tmp"
    old = tmp_path / "orch-baseline-000000000000.tar"
    mine = tmp_path / "orch-baseline-abcdef012345.tar"
    other = tmp_path / "notes.txt"
    for p in (live, dead, old, mine, other):
        p.write_text("x")
    baseline_cache.prune(tmp_path, "abcdef012345")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, mine.name, other.name])


def test_a_provider_that_cannot_export_says_so_in_one_line(tmp_path: Path) -> None:
    class NoCache(FakeProvider):
        export_baseline = FakeProvider.__mro__[1].export_baseline  # type: ignore[attr-defined]
        import_baseline = FakeProvider.__mro__[1].import_baseline  # type: ignore[attr-defined]

    orch = fake_orch(tmp_path / "job")
    orch = fake_orch(tmp_path / "job", provider=NoCache(orch.settings))
    up(orch, 1)
    with pytest.raises(Exception, match=r"^the fake provider cannot export baselines$"):
        verb.export(orch, tmp_path / "cache")


def test_cli_key_export_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.cli import cli

    fake = tmp_path / "fake.json"
    for job in ("job1", "job2"):
        (tmp_path / job).mkdir()
        (tmp_path / job / "pyproject.toml").write_text(
            f'[tool.orch]\nprovider = "fake"\nimage = "fake:bookworm"\n[tool.orch.fake]\npath = "{fake}"\n'
        )
    runner = CliRunner()
    monkeypatch.chdir(tmp_path / "job1")
    key = runner.invoke(cli, ["baseline", "key"])
    assert key.exit_code == 0, key.output
    assert len(key.stdout.strip()) == 12 and key.stdout.count("\n") == 1
    as_json = json.loads(runner.invoke(cli, ["baseline", "key", "--json"]).stdout)
    assert as_json["key"] == key.stdout.strip() and as_json["provider"] == "fake"
    no = runner.invoke(cli, ["baseline", "export", str(tmp_path / "cache")])
    assert (
        no.exit_code == 2 and no.stderr.strip() == "Error: this checkout has no baseline yet: run `orch up` first, then export it"
    )
    miss = runner.invoke(cli, ["baseline", "import", str(tmp_path / "cache")])
    assert (
        miss.exit_code == 3 and miss.stderr.strip() == f"orch: no baseline for key {key.stdout.strip()} in {tmp_path / 'cache'}"
    )
