"""``orchestrator.fresh_vm()`` and ``orchestrator.current_worker()``, the plain functions a
seed-style suite's helpers call, black-box with pytester on the file-backed FakeProvider;
and the one line a run gets when no worker of it has a VM (instead of one error per test).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from plugin_projects import fake_project

pytest_plugins = ["pytester"]

#: A seed-style conftest: one helper for every lifecycle test, routed to orch in two lines.
SEED_CONFTEST = """
import json
import os
from pathlib import Path

import pytest
from orchestrator import current_worker, fresh_vm

SEEN = Path(__file__).parent / "seen.jsonl"


def create_test_vm(reuse_worker_vm=False):
    return current_worker() if reuse_worker_vm else fresh_vm()


def note(test, worker):
    with SEEN.open("a") as f:
        f.write(json.dumps({"test": test, "vm": worker.vm, "pid": os.getpid()}) + "\\n")


def two_levels_down():
    return create_test_vm()


@pytest.fixture
def made_by_fixture(request):
    vm = fresh_vm()
    note(request.node.nodeid + "[fixture]", vm)
    return vm
"""


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    fake_project(pytester, monkeypatch)
    pytester.makeconftest(SEED_CONFTEST)
    return pytester


def backend(project: pytest.Pytester) -> dict:
    path = project.path / "fake.json"
    return json.loads(path.read_text()) if path.exists() else {"vms": {}, "baselines": {}}


def oneoffs(project: pytest.Pytester) -> list[str]:
    """The one-off VMs the backend holds (orch names them ``{prefix}-{checkout}-x...``)."""
    return sorted(n for n in backend(project)["vms"] if "-x" in n)


def seen(project: pytest.Pytester) -> list[dict]:
    path = project.path / "seen.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


SUITE = """
import threading

from conftest import create_test_vm, note, two_levels_down, fresh_vm, current_worker
from orchestrator.pytest_plugin.run import orch_run


def exists(request, vm):
    return orch_run(request.config).ctx.provider.inspect(vm.vm) is not None


def test_body(request):
    vm = create_test_vm()
    note(request.node.nodeid, vm)
    assert exists(request, vm) and "-x" in vm.vm


def test_nested_helper(request):
    vm = two_levels_down()
    note(request.node.nodeid, vm)
    assert exists(request, vm)


def test_function_fixture(request, made_by_fixture):
    assert exists(request, made_by_fixture)


def test_from_a_thread(request):
    out = []
    t = threading.Thread(target=lambda: out.append(fresh_vm()))
    t.start()
    t.join()
    note(request.node.nodeid, out[0])
    assert exists(request, out[0])


def test_fails_after_making_one(request):
    note(request.node.nodeid, create_test_vm())
    assert False, "fails on purpose"


def test_reuses_the_worker(request, orch_worker):
    assert create_test_vm(reuse_worker_vm=True) is orch_worker
"""


def test_fresh_vm_from_a_test_a_helper_a_fixture_and_a_thread_is_deleted_after_its_test(project: pytest.Pytester) -> None:
    project.makepyfile(test_seed=SUITE)
    result = project.runpytest_subprocess("-p", "no:xdist", "-p", "no:randomly", "--orch-up")
    result.assert_outcomes(passed=5, failed=1)
    made = seen(project)
    assert len(made) == 5 and len({m["vm"] for m in made}) == 5
    assert oneoffs(project) == []  # every one deleted, the failing test's too
    assert "Traceback" not in result.stdout.str()


def test_fresh_vm_under_xdist_each_worker_its_own(project: pytest.Pytester) -> None:
    project.makepyfile(test_seed=SUITE)
    result = project.runpytest_subprocess("-n", "2", "--orch-up")
    result.assert_outcomes(passed=5, failed=1)
    assert len({m["vm"] for m in seen(project)}) == 5
    assert oneoffs(project) == []


def test_a_one_off_is_deleted_after_its_test_before_the_next_one(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_order="""
from conftest import create_test_vm, note
from orchestrator.pytest_plugin.run import orch_run

def test_a(request):
    note("a", create_test_vm())

def test_b(request):
    import json, pathlib, time
    [a] = [json.loads(l)["vm"] for l in (pathlib.Path(__file__).parent / "seen.jsonl").read_text().splitlines()]
    provider = orch_run(request.config).ctx.provider
    for _ in range(100):  # deleted in the background: gone soon after test_a's teardown
        if provider.inspect(a) is None:
            return
        time.sleep(0.05)
    raise AssertionError(f"{a} still there")
"""
    )
    project.runpytest_subprocess("-p", "no:xdist", "-p", "no:randomly", "--orch-up").assert_outcomes(passed=2)


def test_a_fixture_that_errors_after_making_one_leaves_none(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_err="""
import pytest
from orchestrator import fresh_vm

@pytest.fixture
def broken():
    fresh_vm()
    raise RuntimeError("the fixture breaks after its VM")

def test_errors(broken):
    pass
"""
    )
    result = project.runpytest_subprocess("-p", "no:xdist", "--orch-up")
    result.assert_outcomes(errors=1)
    assert oneoffs(project) == []


def test_a_session_fixtures_one_off_lives_until_the_session_ends(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_session="""
import pytest
from orchestrator import fresh_vm
from orchestrator.pytest_plugin.run import orch_run

@pytest.fixture(scope="session")
def shared():
    return fresh_vm()

def test_a(request, shared):
    assert orch_run(request.config).ctx.provider.inspect(shared.vm) is not None

def test_b(request, shared):
    assert orch_run(request.config).ctx.provider.inspect(shared.vm) is not None, "deleted after test_a"
"""
    )
    project.runpytest_subprocess("-p", "no:xdist", "-p", "no:randomly", "--orch-up").assert_outcomes(passed=2)
    assert oneoffs(project) == []


def test_the_fixture_is_the_function(project: pytest.Pytester) -> None:
    """The ``fresh_vm`` fixture's factory gives what the function gives, deleted the same way."""
    project.makepyfile(
        test_fixture="""
from conftest import note

def test_both(request, fresh_vm):
    from orchestrator import fresh_vm as plain
    one, two = fresh_vm(), plain()
    note("fixture", one); note("function", two)
    assert one.vm != two.vm and "-x" in one.vm and "-x" in two.vm
"""
    )
    project.runpytest_subprocess("-p", "no:xdist", "--orch-up").assert_outcomes(passed=1)
    assert len(seen(project)) == 2 and oneoffs(project) == []


def test_outside_a_test_one_line(project: pytest.Pytester) -> None:
    """At import (collection), the module fails to collect, its error one line saying where
    the functions belong."""
    project.makepyfile(
        test_import="from orchestrator import fresh_vm\n\nVM = fresh_vm()\n\ndef test_never():\n    pass\n",
        test_fine="def test_fine():\n    pass\n",
    )
    result = project.runpytest_subprocess("-p", "no:xdist", "--orch-up")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["E   *OutsideTest: orchestrator.fresh_vm() * call it in a test, a fixture or a helper they call*"]
    )
    assert oneoffs(project) == []


@pytest.mark.parametrize("call", ["fresh_vm", "current_worker"])
def test_without_orchs_plugin_one_line(call: str) -> None:
    """In a plain Python process (no pytest, no plugin): one line, and ``import
    orchestrator`` imports no pytest."""
    code = (
        "import sys, orchestrator\n"
        "assert 'pytest' not in sys.modules, 'import orchestrator imported pytest'\n"
        "from orchestrator.primitives.errors import UsageError\n"
        f"try:\n    orchestrator.{call}()\nexcept UsageError as err:\n    print(err)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.count("\n") == 1 and f"orchestrator.{call}()" in out and "with orch's pytest plugin" in out


CURRENT = """
from orchestrator import current_worker

SEEN = []

def helper():
    return current_worker()

def test_a_without_the_fixture():
    SEEN.append(helper())
    assert SEEN[0].vm.endswith("-gw0")

def test_b_with_the_fixture(orch_worker):
    assert orch_worker is SEEN[0] is current_worker()
"""


def test_current_worker_without_the_fixture_is_the_fixtures_object(project: pytest.Pytester) -> None:
    project.makepyfile(test_current=CURRENT)
    project.runpytest_subprocess("-p", "no:xdist", "-p", "no:randomly", "--orch-up").assert_outcomes(passed=2)


def test_current_worker_reached_lazily_is_checked_and_reset(project: pytest.Pytester) -> None:
    """A test that reaches its worker only through ``current_worker()`` (and is the first
    to make it) is checked from there on: what it changed is found and reset."""
    from test_isolation_plugin import CONFTEST

    (project.path / "conftest.py").write_text(SEED_CONFTEST + CONFTEST.replace("@BROKEN@", "False"))
    project.makepyfile(
        test_iso="""
from orchestrator import current_worker
from orchestrator.pytest_plugin.run import orch_run

def test_a_pollutes(request):
    w = current_worker()
    assert orch_run(request.config).ctx.provider.exec(w.vm, ["sh", "-c", "printf %s x > /etc/polluted"]).ok

def test_b_clean(request, orch_worker):
    assert not orch_run(request.config).ctx.provider.exec(orch_worker.vm, ["cat", "/etc/polluted"]).ok
"""
    )
    args = ("-p", "no:xdist", "-p", "no:randomly", "--orch-up", "--orch-isolation", "on-dirty")
    project.runpytest_subprocess(*args).assert_outcomes(passed=2)
    [path] = (project.path / "inventories" / ".orch" / "reports").glob("*.json")
    [entry] = json.loads(path.read_text())["pollution"]
    assert entry["test"] == "test_iso.py::test_a_pollutes" and entry.get("reset") and "error" not in entry


# -- one root cause, one line --------------------------------------------------------------------

MANY = """
import pytest

@pytest.mark.parametrize("n", range(7))
def test_n(n, orch_worker):
    pass

def test_plain():
    pass
"""


@pytest.mark.parametrize("xdist", [True, False], ids=["n2", "no-xdist"])
def test_no_worker_has_a_vm_one_line_before_any_test(project: pytest.Pytester, xdist: bool) -> None:
    """Tests that take their worker, in two modules, and plain tests beside them: one line,
    no test runs (an xdist worker's modules fail to collect with it, shown once)."""
    project.makepyfile(test_many=MANY, test_more=MANY, test_aaa_plain="def test_plain():\n    pass\n")
    args = ["-n", "2"] if xdist else ["-p", "no:xdist"]
    result = project.runpytest_subprocess(*args)
    assert result.ret != 0
    out = result.stdout.lines + result.stderr.lines
    count = 2 if xdist else 1
    lines = [line for line in out if line.startswith(("orch: no worker", "ERROR: orch: no worker"))]
    assert len(lines) == 1, out
    assert f"`orch up --workers {count}`" in lines[0] and "`pytest --orch-up`" in lines[0]
    assert "has no VM (no" not in "\n".join(out)  # no per-test errors
    assert "passed" not in result.stdout.str() and "Traceback" not in "\n".join(out)
    if xdist:
        assert result.stdout.str().count("ERROR collecting") == 1 and " 1 error in " in result.stdout.lines[-1]
    else:
        assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_only_some_workers_lack_a_vm_each_test_says_so(project: pytest.Pytester) -> None:
    project.makepyfile(test_many=MANY)
    project.runpytest_subprocess("-p", "no:xdist", "--orch-up").assert_outcomes(passed=8)
    result = project.runpytest_subprocess("-n", "2")
    result.stdout.fnmatch_lines(["*worker gw1 has no VM*orch up --workers 2*"])
    assert "no worker of this run has a VM" not in result.stdout.str() + result.stderr.str()


@pytest.mark.parametrize("configured", [True, False], ids=["tool-orch", "unrelated"])
def test_a_run_whose_tests_use_no_worker_is_not_stopped(project: pytest.Pytester, configured: bool) -> None:
    """Nothing brought up, tests that need no worker (plain tests, names for VMs, one-offs):
    they run, in an orch project as in an unrelated one (orch installed in the venv)."""
    if not configured:
        (project.path / "pyproject.toml").write_text("[project]\nname = 'unrelated'\n")
        (project.path / "conftest.py").unlink()
    project.makepyfile(test_plain="def test_one():\n    pass\n\ndef test_two():\n    pass\n")
    for args in (["-n", "2"], ["-p", "no:xdist"]):
        project.runpytest_subprocess(*args).assert_outcomes(passed=2)
