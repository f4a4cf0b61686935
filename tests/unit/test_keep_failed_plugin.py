"""``pytest --orch-keep-failed`` black-box with pytester, on the file-backed FakeProvider: a
failing test's worker is kept (at most ``keep_failed_max`` per run, across xdist
workers), the next test gets a clean worker, and the terminal summary and the run's JSON
report name each kept VM and the command to enter it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from plugin_projects import fake_project

pytest_plugins = ["pytester"]

SUITE = """
import os
import pytest
from orchestrator.pytest_plugin.run import orch_run

def mark(request, worker, n):
    orch_run(request.config).ctx.provider.exec(worker.vm, ["sh", "-c", f"printf %s {{n}} > /root/failed"])

def seen(request, worker):
    return orch_run(request.config).ctx.provider.exec(worker.vm, ["cat", "/root/failed"])

@pytest.mark.parametrize("n", range({failing}))
def test_fails(n, request, orch_worker):
    mark(request, orch_worker, n)
    assert False, "fails on purpose"

def test_fails_without_a_worker():
    assert False

@pytest.mark.parametrize("n", range({after}))
def test_after(n, request, orch_worker):
    assert not seen(request, orch_worker).ok, "the failing test's file is on this worker"
"""


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    fake_project(pytester, monkeypatch)
    return pytester


def backend(project: pytest.Pytester) -> dict:
    return json.loads((project.path / "fake.json").read_text())


def state(project: pytest.Pytester) -> dict:
    return json.loads((project.path / "inventories" / ".orch" / "state.json").read_text())


def orch(project: pytest.Pytester, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCH_", "PYTEST_"))}
    orch_bin = Path(sys.executable).parent / "orch"
    return subprocess.run([str(orch_bin), *args], cwd=project.path, env=env, capture_output=True, text=True, timeout=120)


def test_a_run_that_fails_five_tests_under_n_2_keeps_three(project: pytest.Pytester) -> None:
    project.makepyfile(test_suite=SUITE.format(failing=5, after=0))
    result = project.runpytest_subprocess("-n", "2", "--orch-up", "--orch-keep-failed")
    result.assert_outcomes(failed=6, skipped=1)
    kept = state(project)["kept"]
    assert len(kept) == 3 and all(k["phase"] == "ready" for k in kept.values())
    assert sorted(kept) == sorted(n for n in backend(project)["vms"] if "-kept-" in n)
    assert {k["test"] for k in kept.values()} < {f"test_suite.py::test_fails[{n}]" for n in range(5)}
    for name in kept:
        assert backend(project)["vms"][name]["files"]["/root/failed"] in "01234"  # as it was at the failure
    out = result.stdout.str()
    assert "orch: workers of failing tests, kept (--orch-keep-failed)" in out
    assert out.count(": kept as p-") == 3 and out.count("enter it: orch shell p-") == 3
    assert out.count("not kept: this run kept 3 already (keep_failed_max = 3)") == 2
    summary = out.split("workers of failing tests")[1].split("short test summary")[0]
    assert "test_fails_without_a_worker" not in summary  # it used no worker: nothing to keep
    [report] = (project.path / "inventories" / ".orch" / "reports").glob("*.json")
    entries = json.loads(report.read_text())["kept"]
    assert sorted(e["vm"] for e in entries if "vm" in e) == sorted(kept)
    assert all(e["shell"] == f"orch shell {e['vm']}" and e["seconds"]["keep"] >= 0 for e in entries if "vm" in e)
    # another run has a cap of its own
    again = project.runpytest_subprocess("-n", "2", "--orch-keep-failed", "-k", "test_fails and 0")
    again.assert_outcomes(failed=1)
    assert len(state(project)["kept"]) == 4


def test_the_next_test_gets_a_clean_worker_and_status_down_know_the_kept_vm(project: pytest.Pytester) -> None:
    project.makepyfile(test_suite=SUITE.format(failing=1, after=2))
    result = project.runpytest_subprocess("-p", "no:xdist", "--orch-up", "--orch-keep-failed")
    result.assert_outcomes(failed=2, passed=2)
    [name] = state(project)["kept"]
    assert backend(project)["vms"][name]["files"]["/root/failed"] == "0"
    status = orch(project, "status", "--json")
    assert status.returncode == 0, status.stderr
    [row] = [r for r in json.loads(status.stdout) if r["kind"] == "kept"]
    assert (row["vm"], row["worker"], row["test"], row["enter"]) == (
        name,
        "gw0",
        "test_suite.py::test_fails[0]",
        f"orch shell {name}",
    )
    table = orch(project, "status")
    assert f"kept after test_suite.py::test_fails[0]: orch shell {name}" in table.stdout
    entered = orch(project, "exec", name, "--", "true")
    assert "fake VM " + name in entered.stderr  # the fake's own exec: it reached the kept VM
    wrong = orch(project, "shell", "p-0badc0de-gw0-kept-20260101000000-abcd")
    assert wrong.returncode == 2 and "neither a worker id nor a VM this checkout kept" in wrong.stderr
    down = orch(project, "down", name)
    assert down.returncode == 0, down.stderr
    assert name not in backend(project)["vms"] and state(project)["kept"] == {}
    assert any(n.endswith("-gw0") for n in backend(project)["vms"])


def test_without_the_flag_nothing_is_kept(project: pytest.Pytester) -> None:
    project.makepyfile(test_suite=SUITE.format(failing=2, after=0))
    project.runpytest_subprocess("-n", "2", "--orch-up").assert_outcomes(failed=3, skipped=1)
    assert state(project).get("kept", {}) == {} and not [n for n in backend(project)["vms"] if "-kept-" in n]
