"""A warm start costs little of orch (issue 21): an xdist worker whose tests take no orch
fixture imports neither pydantic nor the settings nor the providers, yet holds its lease
from its start; the provider registry finds orch's own providers without scanning every
installed distribution. Black-box with pytester on the file-backed FakeProvider."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from plugin_projects import fake_project

from orchestrator.providers import registry
from orchestrator.pytest_plugin.isolation import ISOLATIONS
from orchestrator.settings.model import ISOLATIONS as MODEL_ISOLATIONS

pytest_plugins = ["pytester"]

#: What a plain test sees of the heavy parts in its xdist worker, and the leases alive then.
SEEN = """
import json, os, sys
from pathlib import Path

HEAVY = ("pydantic", "orchestrator.settings", "orchestrator.core", "orchestrator.providers", "orchestrator.verbs", "pyinfra")


def test_plain():
    heavy = sorted(m for m in sys.modules if m.startswith(HEAVY))
    from orchestrator.state.leases import scan

    runs = scan(Path(os.path.dirname(__file__)) / "inventories")
    Path(os.path.dirname(__file__), "seen-" + os.environ.get("PYTEST_XDIST_WORKER", "main")).write_text(
        json.dumps({"heavy": heavy, "leases": sorted(sorted(w) for w in runs.workers.values())})
    )
"""

USES = """
def test_uses(orch_worker):
    assert orch_worker.run("true").rc == 0
"""


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    fake_project(pytester, monkeypatch)
    return pytester


def test_a_worker_of_plain_tests_imports_none_of_orchs_core_yet_holds_its_lease(project: pytest.Pytester) -> None:
    project.makepyfile(test_seen=SEEN)
    project.runpytest_subprocess("-n", "2", "--orch-up", "-p", "no:randomly", "test_seen.py").assert_outcomes(passed=1)
    project.makepyfile(test_seen2=SEEN.replace("def test_plain", "def test_other"))
    project.runpytest_subprocess("-n", "2", "-p", "no:randomly", "test_seen.py", "test_seen2.py").assert_outcomes(passed=2)
    seen = [json.loads(p.read_text()) for p in sorted(project.path.glob("seen-gw*"))]
    assert len(seen) == 2
    for s in seen:
        assert s["heavy"] == []  # nothing of pydantic, the settings, the core, the providers, pyinfra
    for worker, s in zip(("gw0", "gw1"), seen, strict=True):
        assert ["gw0", "gw1"] in s["leases"] and [worker] in s["leases"], s  # the controller's and its own


def test_a_worker_that_takes_its_vm_loads_what_it_needs(project: pytest.Pytester) -> None:
    project.makepyfile(test_uses=USES.replace("test_uses", "test_a") + USES.replace("test_uses", "test_b"))
    project.runpytest_subprocess("-n", "2", "--orch-up", "test_uses.py").assert_outcomes(passed=2)
    project.runpytest_subprocess("-n", "2", "test_uses.py").assert_outcomes(passed=2)


def test_the_plugins_isolation_policies_are_the_settings_own() -> None:
    assert ISOLATIONS == MODEL_ISOLATIONS


def test_orchs_own_providers_are_found_as_the_scan_finds_them() -> None:
    scanned = registry.available()
    for name in ("docker", "podman", "orbstack", "incus", "fake"):
        assert registry._own()[name] == scanned[name]
    assert registry.provider_class("fake").__name__ == "FakeProvider"


def test_an_unknown_provider_still_names_the_installed_ones() -> None:
    with pytest.raises(Exception, match=r"unknown provider 'nope': choose one of .*docker.*fake"):
        registry.provider_class("nope")


DEPLOY = "from pyinfra.api import deploy\n\n@deploy('mine')\ndef provision():\n    pass\n"


def _fresh_import(name: str) -> None:
    """As a new process sees it: the module not imported yet."""
    import importlib
    import sys

    sys.modules.pop(name, None)
    importlib.invalidate_caches()


def _age(folder: Path) -> None:
    """Files written long enough ago that their stats tell every later edit (not racy)."""
    old = time.time() - 60
    for f in folder.glob("*.py"):
        os.utime(f, (old, old))


def test_the_deploy_hash_cache_never_hides_an_edit(tmp_path: Path) -> None:
    """A warm start takes the deploys' hash from the cache (no import), and any edit of
    their folder (same size too, a new file beside them) changes the fingerprint as before."""
    import sys

    from fakes_core import fake_orch

    from orchestrator.core import baseline as B

    deploys = tmp_path / "mydeploys2"
    deploys.mkdir()
    (deploys / "__init__.py").write_text(DEPLOY)
    _age(deploys)
    orch = fake_orch(tmp_path, provision="mydeploys2:provision")
    orch.store.ensure_dir()  # as `orch up` does before its fingerprint (the cache is never what makes it)
    _fresh_import("mydeploys2")
    first = B.fingerprint(orch)
    assert (orch.settings.inventory_dir / ".orch" / B.DEPLOY_HASHES).is_file()
    _fresh_import("mydeploys2")
    assert B.fingerprint(orch).value == first.value
    assert "mydeploys2" not in sys.modules  # from the cache: not imported

    seen = {first.value}
    for edit in (
        lambda: (deploys / "__init__.py").write_text(DEPLOY.replace("pass", "1   ")),  # the same size
        lambda: (deploys / "helper.py").write_text("X = 1\n"),  # a new module beside it
        lambda: (deploys / "helper.py").write_text("X = 2\n"),  # edited within a second of the last
    ):
        edit()
        _fresh_import("mydeploys2")
        fp = B.fingerprint(orch)
        assert fp.value not in seen
        seen.add(fp.value)
        _fresh_import("mydeploys2")
        assert B.fingerprint(orch).value == fp.value  # stable: the same source, the same hash


def test_a_cached_deploy_hash_equals_the_computed_one(tmp_path: Path) -> None:
    from fakes_core import fake_orch

    from orchestrator.core import baseline as B
    from orchestrator.pyinfra.loading import load_callable, source_hash

    deploys = tmp_path / "mydeploys3"
    deploys.mkdir()
    (deploys / "__init__.py").write_text(DEPLOY)
    _age(deploys)
    orch = fake_orch(tmp_path, provision="mydeploys3:provision")
    _fresh_import("mydeploys3")
    B.deploy_hash(orch, "mydeploys3:provision")
    _fresh_import("mydeploys3")
    cached = B.deploy_hash(orch, "mydeploys3:provision")
    assert cached == source_hash(load_callable("mydeploys3:provision", tmp_path))
