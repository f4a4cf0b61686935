"""orch's pytest plugin, black-box with pytester, on the file-backed FakeProvider (no VM
needed): bring-up from the controller (--orch-up), the worker count pytest-xdist resolves,
one-line failures, markers and fixtures that do not need to enter a VM."""

from __future__ import annotations

import json

import pytest
from plugin_projects import fake_project

pytest_plugins = ["pytester"]

NAMES = """
def test_a(worker_vm, orch_worker):
    assert worker_vm.endswith(orch_worker.worker_id)

def test_b(worker_vm):
    assert worker_vm
"""


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    fake_project(pytester, monkeypatch)
    pytester.makepyfile(test_names=NAMES)
    return pytester


def backend(project: pytest.Pytester) -> dict:
    path = project.path / "fake.json"
    return json.loads(path.read_text()) if path.exists() else {"vms": {}, "baselines": {}}


def workers(project: pytest.Pytester) -> list[str]:
    return sorted(n.rsplit("-", 1)[1] for n in backend(project)["vms"] if "-gw" in n)


def test_orch_up_brings_up_exactly_the_workers_xdist_starts(project: pytest.Pytester) -> None:
    result = project.runpytest_subprocess("-n", "3", "--orch-up")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*orch: bringing up 3 worker(s) on fake (--orch-up)*", "*3 worker(s) ready*"])
    assert workers(project) == ["gw0", "gw1", "gw2"]
    again = project.runpytest_subprocess("-n", "3", "--orch-up")
    again.assert_outcomes(passed=2)
    again.stdout.fnmatch_lines(["*gw0 reused, gw1 reused, gw2 reused*"])


def test_fewer_workers_leave_the_others_alone(project: pytest.Pytester) -> None:
    project.runpytest_subprocess("-n", "3", "--orch-up").assert_outcomes(passed=2)
    project.runpytest_subprocess("-n", "2", "--orch-up").assert_outcomes(passed=2)
    assert workers(project) == ["gw0", "gw1", "gw2"]


def test_without_xdist_orch_up_brings_up_gw0(project: pytest.Pytester) -> None:
    project.runpytest_subprocess("-p", "no:xdist", "--orch-up").assert_outcomes(passed=2)
    assert workers(project) == ["gw0"]


def test_auto_up_setting_and_its_opt_out(project: pytest.Pytester) -> None:
    text = (project.path / "pyproject.toml").read_text().replace('prefix = "p"', 'prefix = "p"\nauto_up = true')
    (project.path / "pyproject.toml").write_text(text)
    project.runpytest_subprocess("-n", "2").assert_outcomes(passed=2)
    assert workers(project) == ["gw0", "gw1"]
    project.makepyfile(
        test_many="import pytest\n\n@pytest.mark.parametrize('n', range(12))\ndef test_n(n, worker_vm):\n    assert worker_vm\n"
    )
    off = project.runpytest_subprocess("-n", "3", "--no-orch-up", "test_many.py")
    assert off.ret != 0
    off.stdout.fnmatch_lines(["*worker gw2 has no VM*run `orch up --workers 3`*"])


def test_a_bring_up_that_fails_stops_the_run_in_one_line(project: pytest.Pytester) -> None:
    text = (project.path / "pyproject.toml").read_text().replace("fake:bookworm", "nosuch:image")
    (project.path / "pyproject.toml").write_text(text)
    result = project.runpytest_subprocess("-n", "2", "--orch-up")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: orch up: *nosuch:image*--image*"])
    assert "Traceback" not in result.stderr.str() and "collected" not in result.stdout.str()


def test_more_pytest_workers_than_vms_name_the_fix(project: pytest.Pytester) -> None:
    project.runpytest_subprocess("-p", "no:xdist", "--orch-up").assert_outcomes(passed=2)
    result = project.runpytest_subprocess("-n", "2")
    result.stdout.fnmatch_lines(["*worker gw1 has no VM*orch up --workers 2*"])
    assert "Traceback" not in result.stdout.str()


def test_a_bad_setting_is_a_usage_error(project: pytest.Pytester) -> None:
    text = (project.path / "pyproject.toml").read_text().replace('prefix = "p"', 'prefix = "p"\nwrokers = 2')
    (project.path / "pyproject.toml").write_text(text)
    result = project.runpytest_subprocess("--orch-up")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown setting 'wrokers'*"])


FRESH = """
import pytest

def test_fresh(fresh_vm):
    one, two = fresh_vm(), fresh_vm()
    assert one.vm != two.vm and "-x" in one.vm

@pytest.mark.orch_reset
def test_marked(orch_worker):
    assert orch_worker.vm
"""


def test_fresh_vms_are_deleted_and_the_marker_resets(project: pytest.Pytester) -> None:
    project.makepyfile(test_fresh=FRESH)
    project.runpytest_subprocess("-p", "no:xdist", "--orch-up", "test_fresh.py").assert_outcomes(passed=2)
    names = list(backend(project)["vms"])
    assert [n for n in names if "-x" in n] == []  # one-offs deleted at teardown
    assert [n for n in names if "-gw" in n] == ["p-" + n.split("-")[1] + "-gw0" for n in names if "-gw" in n]


def test_current_worker_is_the_fixtures_worker(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_helper="""
from orchestrator import current_worker

def helper():
    return current_worker().vm

def test_helper(orch_worker):
    assert helper() == orch_worker.vm
"""
    )
    project.runpytest_subprocess("-p", "no:xdist", "--orch-up", "test_helper.py").assert_outcomes(passed=1)


LEASE_AT_IMPORT = """
import json, os
from pathlib import Path
from orchestrator.state.leases import scan

runs = scan(Path(os.path.dirname(__file__)) / "inventories")
Path(os.path.dirname(__file__), "leases-" + os.environ.get("PYTEST_XDIST_WORKER", "main")).write_text(
    json.dumps(sorted(sorted(w) for w in runs.workers.values()))
)

def test_nothing():
    pass
"""


def test_a_run_holds_its_lease_before_collection(project: pytest.Pytester) -> None:
    """While test modules are still being imported, the controller's lease
    names every worker of the run and each xdist worker's names its own."""
    project.runpytest_subprocess("-n", "2", "--orch-up").assert_outcomes(passed=2)
    project.makepyfile(test_lease=LEASE_AT_IMPORT)
    project.runpytest_subprocess("-n", "2", "test_lease.py").assert_outcomes(passed=1)
    for worker in ("gw0", "gw1"):
        seen = json.loads((project.path / f"leases-{worker}").read_text())
        assert ["gw0", "gw1"] in seen and [worker] in seen, seen


def test_a_project_orch_never_ran_in_gets_no_lease(project: pytest.Pytester) -> None:
    project.makepyfile(test_plain="def test_plain():\n    pass\n")
    project.runpytest_subprocess("-p", "no:xdist", "test_plain.py").assert_outcomes(passed=1)
    assert not (project.path / "inventories").exists()


def owe_a_reset(project: pytest.Pytester, worker: str = "gw0") -> None:
    path = project.path / "inventories" / ".orch" / "state.json"
    state = json.loads(path.read_text())
    state["workers"][worker]["reset_pending"] = "after test_other.py::test_dirty"
    path.write_text(json.dumps(state))


def test_a_worker_owing_a_reset_is_made_again_unless_another_run_uses_it(project: pytest.Pytester) -> None:
    """The next taker of a worker that owes a reset makes it again first, but never under
    the feet of another live run that uses it (its marked test, or its own reset)."""
    from orchestrator.state.leases import Lease

    project.runpytest_subprocess("-p", "no:xdist", "--orch-up").assert_outcomes(passed=2)
    fake = backend(project)
    gw0 = next(n for n in fake["vms"] if n.endswith("-gw0"))
    fake["vms"][gw0]["files"]["/etc/dirty"] = "left by test_dirty"
    (project.path / "fake.json").write_text(json.dumps(fake))
    before = backend(project)["vms"]
    owe_a_reset(project)
    other = Lease(project.path / "inventories", workers=["gw0"])
    try:
        refused = project.runpytest_subprocess("-p", "no:xdist", "test_names.py")
        refused.assert_outcomes(errors=2)
        refused.stdout.fnmatch_lines(
            [f"*gw0 owes a reset (after test_other.py::test_dirty)*another pytest run uses it (run {other.run})*"]
        )
        assert backend(project)["vms"] == before  # nothing made again under its feet
    finally:
        other.release()
    project.runpytest_subprocess("-p", "no:xdist", "test_names.py").assert_outcomes(passed=2)
    assert "/etc/dirty" not in backend(project)["vms"][gw0]["files"]  # made again


RESET_INSIDE_MARKED = """
import json, os, pytest

def owed():
    path = os.path.join(os.path.dirname(__file__), "inventories", ".orch", "state.json")
    return json.load(open(path))["workers"]["gw0"]["reset_pending"]

@pytest.mark.orch_reset
def test_marked(orch_worker):
    assert owed() == "after test_inside.py::test_marked"  # recorded before the body
    orch_worker.reset()
    assert owed() == "after test_inside.py::test_marked"  # the body goes on: still owed

def test_after(orch_worker):
    assert owed() == ""  # the teardown paid it
"""


def test_a_marked_tests_debt_outlives_a_reset_inside_it(project: pytest.Pytester) -> None:
    project.runpytest_subprocess("-p", "no:xdist", "--orch-up").assert_outcomes(passed=2)
    project.makepyfile(test_inside=RESET_INSIDE_MARKED)
    project.runpytest_subprocess("-p", "no:xdist", "test_inside.py").assert_outcomes(passed=2)


def test_collect_only_takes_no_lease(project: pytest.Pytester) -> None:
    """IDE discovery and `--collect-only` use no worker: they never block `orch down`."""
    project.runpytest_subprocess("-p", "no:xdist", "--orch-up").assert_outcomes(passed=2)
    project.makepyfile(test_lease=LEASE_AT_IMPORT)
    project.runpytest_subprocess("-p", "no:xdist", "--collect-only", "test_lease.py")
    assert json.loads((project.path / "leases-main").read_text()) == []
