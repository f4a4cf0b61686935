"""The isolation policies black-box with pytester, on the file-backed FakeProvider: what
each policy checks and resets, the report that names the polluter (terminal summary,
JSON, junit, a later failure's output), the marker and its mistakes, a check that fails,
and a run killed mid-test. The project's conftest gives the fake a checker of its files
(``Provider.pollution_checker``), as a backend that tells cheaply would."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from plugin_projects import fake_project

pytest_plugins = ["pytester"]

#: The fake's checker: what a test wrote in its VM's files (the fake's exec writes them).
CONFTEST = """
from orchestrator.primitives.changes import Changes, CheckFailed
from orchestrator.providers.fake import FakeProvider


class FilesChecker:
    def __init__(self, fake, vm, ignore):
        self.fake, self.vm, self.ignore, self.before = fake, vm, ignore, {}

    def files(self):
        with self.fake._lock:
            found = self.fake.vms.get(self.vm)
            if found is None or found.state != "running":
                raise CheckFailed(f"{self.vm} is not running")
            return {p: t for p, t in found.files.items() if not self.ignore.covers(p)}

    def arm(self):
        self.before = self.files()

    def check(self):
        now = self.files()
        before, self.before = self.before, now
        return Changes(
            created=tuple(sorted(set(now) - set(before))),
            changed=tuple(sorted(p for p in now if p in before and now[p] != before[p])),
            deleted=tuple(sorted(set(before) - set(now))),
        )


if not @BROKEN@:
    FakeProvider.pollution_checker = lambda self, vm, ignore: FilesChecker(self, vm, ignore)
"""

HELPERS = """
import os
import pytest
from orchestrator.pytest_plugin.run import orch_run

N = {n}

def write(request, worker, path):
    assert orch_run(request.config).ctx.provider.exec(worker.vm, ["sh", "-c", f"printf %s x > {{path}}"]).ok

def polluted(request, worker):
    exec = orch_run(request.config).ctx.provider.exec
    return [j for j in range(N) if exec(worker.vm, ["cat", f"/etc/polluted-{{j}}"]).ok]
"""

#: Every fourth test pollutes its worker; every test first asserts its worker is clean.
SUITE = (
    HELPERS
    + """
@pytest.mark.parametrize("n", range(N))
def test_n(n, request, orch_worker):
    assert not polluted(request, orch_worker), "an earlier test's file is on this worker"
    if n % 4 == 0:
        write(request, orch_worker, f"/etc/polluted-{{n}}")

def test_without_a_worker():
    pass
"""
)


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    fake_project(pytester, monkeypatch)
    pytester.makeconftest(CONFTEST.replace("@BROKEN@", "False"))
    return pytester


def backend(project: pytest.Pytester) -> dict:
    return json.loads((project.path / "fake.json").read_text())


def state(project: pytest.Pytester) -> dict:
    return json.loads((project.path / "inventories" / ".orch" / "state.json").read_text())


def report(project: pytest.Pytester) -> dict:
    [path] = (project.path / "inventories" / ".orch" / "reports").glob("*.json")
    return json.loads(path.read_text())


def summary(result: pytest.RunResult) -> str:
    out = result.stdout.str()
    assert "orch: tests that changed their worker (isolation)" in out, out
    return out.split("orch: tests that changed their worker (isolation)")[1].split("orch: the run's report")[0]


def test_on_dirty_under_n_2_every_test_gets_a_clean_worker_and_the_summary_names_the_polluters(
    project: pytest.Pytester,
) -> None:
    project.makepyfile(test_suite=SUITE.format(n=12))
    result = project.runpytest_subprocess("-n", "2", "--orch-up", "--orch-isolation", "on-dirty", "--junitxml=junit.xml")
    result.assert_outcomes(passed=13)
    text = summary(result)
    polluters = [f"test_suite.py::test_n[{n}]" for n in (0, 4, 8)]
    assert [line.split(" (")[0] for line in text.splitlines() if line.startswith("test_suite.py")] == sorted(
        polluters, key=lambda t: text.index(t)
    )
    for n in (0, 4, 8):
        assert f"test_suite.py::test_n[{n}] (gw" in text and f"created: /etc/polluted-{n}" in text
    assert text.count("changed its worker; reset:") == 3
    entries = report(project)["pollution"]
    assert sorted(e["test"] for e in entries) == polluters
    assert all(e["reset"] and e["changes"] == {"created": [f"/etc/polluted-{e['test'][-2]}"]} for e in entries)
    props = [
        json.loads(p.get("value"))
        for case in ET.parse(project.path / "junit.xml").iter("testcase")
        for p in case.iter("property")
        if p.get("name") == "orch"
    ]
    assert sorted(p["pollution"][0]["test"] for p in props) == polluters
    assert all(rec["reset_pending"] == "" for rec in state(project)["workers"].values())  # clean ones forgiven


def test_report_names_the_polluter_in_a_later_failure_and_never_resets(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_suite=HELPERS.format(n=1)
        + """
def test_a_polluter(request, orch_worker):
    write(request, orch_worker, "/etc/polluted-0")

def test_b_fails_after_it(request, orch_worker):
    assert not polluted(request, orch_worker)

def test_c_still_sees_it(request, orch_worker):
    assert polluted(request, orch_worker) == [0]
"""
    )
    made = project.runpytest_subprocess("-p", "no:xdist", "--orch-up", "--orch-isolation", "report")
    made.assert_outcomes(passed=2, failed=1)
    out = made.stdout.str()
    failure = out.split("test_b_fails_after_it ____")[1].split("short test summary")[0]
    assert "orch isolation" in failure
    assert "this test ran on gw0 after tests that changed it (not reset since):" in failure
    assert "test_suite.py::test_a_polluter:" in failure and "created: /etc/polluted-0" in failure
    text = summary(made)
    assert "test_suite.py::test_a_polluter (gw0) changed its worker:" in text and "reset" not in text
    assert [e["test"] for e in report(project)["pollution"]] == ["test_suite.py::test_a_polluter"]


def test_per_test_resets_after_each_test_that_uses_its_worker_and_checks_nothing(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_suite=SUITE.format(n=4)
        + """
def owed(request):
    rec = json.loads((request.config.rootpath / "inventories" / ".orch" / "state.json").read_text())["workers"]["gw0"]
    return rec["reset_pending"]

def test_o_owes_before_it_ends(request, orch_worker):
    assert owed(request) == "after test_suite.py::test_o_owes_before_it_ends (isolation per-test)"

def test_p_without_a_worker_owes_nothing(request):
    assert owed(request) == ""
"""
    )
    (project.path / "test_suite.py").write_text("import json\n" + (project.path / "test_suite.py").read_text())
    result = project.runpytest_subprocess("-p", "no:xdist", "--orch-up", "--orch-isolation", "per-test")
    result.assert_outcomes(passed=7)  # each test_n sees a clean worker
    assert "tests that changed their worker" not in result.stdout.str()
    assert state(project)["workers"]["gw0"]["reset_pending"] == ""


def test_shared_checks_nothing_and_later_tests_see_the_pollution(project: pytest.Pytester) -> None:
    project.makepyfile(test_suite=SUITE.format(n=4))
    result = project.runpytest_subprocess("-p", "no:xdist", "--orch-up")
    result.assert_outcomes(passed=2, failed=3)
    assert "tests that changed their worker" not in result.stdout.str()


def test_the_marker_overrides_the_setting_for_its_test(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_suite=HELPERS.format(n=3)
        + """
@pytest.mark.orch_isolation("on-dirty")
def test_a_reset_polluter(request, orch_worker):
    write(request, orch_worker, "/etc/polluted-0")

def test_b_shared_polluter(request, orch_worker):
    assert polluted(request, orch_worker) == []
    write(request, orch_worker, "/etc/polluted-1")

@pytest.mark.orch_isolation("report")
def test_c_reported(request, orch_worker):
    assert polluted(request, orch_worker) == [1]
    write(request, orch_worker, "/etc/polluted-2")

@pytest.mark.orch_isolation("per-test")
def test_d_per_test(request, orch_worker):
    assert polluted(request, orch_worker) == [1, 2]

def test_e_after(request, orch_worker):
    assert polluted(request, orch_worker) == []
"""
    )
    result = project.runpytest_subprocess("-p", "no:xdist", "--orch-up")
    result.assert_outcomes(passed=5)
    entries = {e["test"].split("::")[1]: e for e in report(project)["pollution"]}
    assert sorted(entries) == ["test_a_reset_polluter", "test_c_reported"]
    assert entries["test_a_reset_polluter"]["reset"] and not entries["test_c_reported"].get("reset")


def test_orch_reset_tests_are_not_checked(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_suite=HELPERS.format(n=1)
        + """
@pytest.mark.orch_reset
def test_marked(request, orch_worker):
    write(request, orch_worker, "/etc/polluted-0")

def test_after(request, orch_worker):
    assert polluted(request, orch_worker) == []
"""
    )
    result = project.runpytest_subprocess("-p", "no:xdist", "--orch-up", "--orch-isolation", "on-dirty")
    result.assert_outcomes(passed=2)
    assert "tests that changed their worker" not in result.stdout.str()


@pytest.mark.parametrize("xdist", [False, True])
@pytest.mark.parametrize(
    ("marker", "shown"),
    [
        ('("bogus")', "'bogus'"),
        ("", ""),
        ('("report", "on-dirty")', "'report', 'on-dirty'"),
        ('(policy="report")', "policy='report'"),
    ],
)
def test_a_bad_marker_stops_the_run_in_one_line_before_any_test(
    project: pytest.Pytester, marker: str, shown: str, xdist: bool
) -> None:
    project.makepyfile(
        test_bad=f"""
import pytest

def test_first(orch_worker):
    pass

@pytest.mark.orch_isolation{marker}
def test_marked(orch_worker):
    pass
"""
    )
    why = (
        f"orch: test_bad.py::test_marked: @pytest.mark.orch_isolation({shown}): name one policy of "
        'shared, report, on-dirty, per-test, e.g. @pytest.mark.orch_isolation("per-test")'
    )
    args = ["-n", "2"] if xdist else ["-p", "no:xdist"]
    result = project.runpytest_subprocess(*args)
    assert result.ret != 0
    if xdist:  # an xdist worker cannot stop the run with a usage error: its module fails to collect
        assert why in result.stdout.lines and "ERROR collecting test_bad.py" in result.stdout.str()
    else:
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        assert result.stderr.lines[-1] == f"ERROR: {why}" or f"ERROR: {why}" in result.stderr.lines
    assert "passed" not in result.stdout.str() and "Traceback" not in result.stdout.str() + result.stderr.str()


def test_a_check_that_fails_is_never_clean(pytester: pytest.Pytester, project: pytest.Pytester) -> None:
    """The fake's VMs cannot run the command inside (no pyinfra connector): every check
    fails; on-dirty resets the worker after each checked test, report says so and resets
    nothing."""
    pytester.makeconftest(CONFTEST.replace("@BROKEN@", "True"))
    project.makepyfile(test_suite=SUITE.format(n=2))
    result = project.runpytest_subprocess("-p", "no:xdist", "--orch-up", "--orch-isolation", "on-dirty")
    result.assert_outcomes(passed=3)  # test_n[1] sees no pollution: the worker was reset
    text = summary(result)
    assert text.count("not checked: ") == 2 and text.count("; reset") == 2
    reported = project.runpytest_subprocess("-p", "no:xdist", "--orch-isolation", "report")
    reported.assert_outcomes(passed=2, failed=1)  # test_n[1] sees test_n[0]'s file
    assert summary(reported).count("not checked: ") == 2 and "; reset" not in summary(reported)


def test_a_run_killed_mid_test_leaves_a_worker_the_next_run_makes_again(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_suite=HELPERS.format(n=1)
        + """
def test_killed(request, orch_worker):
    write(request, orch_worker, "/etc/polluted-0")
    os._exit(9)  # the run dies before its teardown: nothing checks or resets the worker

def test_next(request, orch_worker):
    assert polluted(request, orch_worker) == []
"""
    )
    killed = project.runpytest_subprocess("-p", "no:xdist", "--orch-up", "--orch-isolation", "on-dirty", "-k", "killed")
    assert killed.ret == 9
    assert state(project)["workers"]["gw0"]["reset_pending"] == "after test_suite.py::test_killed (isolation on-dirty)"
    # the next run, whatever its policy, resets the worker before its first test
    project.runpytest_subprocess("-p", "no:xdist", "-k", "next").assert_outcomes(passed=1)
    assert state(project)["workers"]["gw0"]["reset_pending"] == ""


def test_a_reset_inside_a_test_is_followed_by_a_check_of_what_came_after(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_suite=HELPERS.format(n=2)
        + """
def test_a_reset_after_its_pollution(request, orch_worker):
    write(request, orch_worker, "/etc/polluted-0")
    orch_worker.reset()

def test_b_pollutes_after_its_reset(request, orch_worker):
    write(request, orch_worker, "/etc/polluted-0")
    orch_worker.reset()
    write(request, orch_worker, "/etc/polluted-1")

def test_c_after(request, orch_worker):
    assert polluted(request, orch_worker) == []
"""
    )
    result = project.runpytest_subprocess("-p", "no:xdist", "--orch-up", "--orch-isolation", "on-dirty")
    result.assert_outcomes(passed=3)
    [entry] = report(project)["pollution"]
    assert entry["test"] == "test_suite.py::test_b_pollutes_after_its_reset"
    assert entry["changes"] == {"created": ["/etc/polluted-1"]}


def test_a_kept_failing_polluter_leaves_the_next_test_a_clean_worker(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_suite=HELPERS.format(n=1)
        + """
def test_a_fails(request, orch_worker):
    write(request, orch_worker, "/etc/polluted-0")
    assert False, "fails on purpose"

def test_b_after(request, orch_worker):
    assert polluted(request, orch_worker) == []
"""
    )
    args = ("-p", "no:xdist", "--orch-up", "--orch-isolation", "on-dirty", "--orch-keep-failed")
    project.runpytest_subprocess(*args).assert_outcomes(failed=1, passed=1)
    [kept] = [n for n in backend(project)["vms"] if "-kept-" in n]
    assert backend(project)["vms"][kept]["files"]["/etc/polluted-0"] == "x"  # kept as it was
    assert state(project)["workers"]["gw0"]["reset_pending"] == ""  # the new VM was checked clean


def test_a_test_that_reaches_its_worker_without_naming_the_fixture_is_checked(project: pytest.Pytester) -> None:
    """``request.getfixturevalue("orch_worker")`` (or ``current_worker()``) in a test that
    does not name ``orch_worker``: its pollution is found and reset all the same, while a
    test that never reaches its worker is not checked."""
    project.makepyfile(
        test_suite=HELPERS.format(n=2)
        + """
def test_a_names_it(request, orch_worker):
    assert not polluted(request, orch_worker)

def test_b_reaches_it_by_name(request):
    worker = request.getfixturevalue("orch_worker")
    worker.run("true")
    write(request, worker, "/etc/polluted-1")

def test_c_never_reaches_it(request):
    pass

def test_d_sees_a_clean_worker(request, orch_worker):
    assert not polluted(request, orch_worker), "test_b's file is still there"
"""
    )
    result = project.runpytest_subprocess("-p", "no:xdist", "-p", "no:randomly", "--orch-up", "--orch-isolation", "on-dirty")
    result.assert_outcomes(passed=4)
    named = [e["test"] for e in report(project)["pollution"]]
    assert named == ["test_suite.py::test_b_reaches_it_by_name"]
