"""How long tests waited for a VM, as a user reads it in the run's summary and its JSON
report: ``fresh_vm()`` (a claim from the pool, or one made while the test waited), the
``orch_reset`` marker's reset (a standby swapped in, or a hard one) and a worker made again
before it was handed out; black-box with pytester on the file-backed FakeProvider."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from plugin_projects import fake_project

pytest_plugins = ["pytester"]

SUITE = """
import pytest

@pytest.mark.parametrize("n", range(4))
def test_fresh(n, fresh_vm):
    assert fresh_vm().vm

@pytest.mark.orch_reset
@pytest.mark.parametrize("n", range(3))
def test_dirty(n, orch_worker):
    pass

def test_plain():
    pass
"""


def make_project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, extra: str = "") -> pytest.Pytester:
    return fake_project(pytester, monkeypatch, extra)


def waits(project: pytest.Pytester) -> list[dict]:
    """The ``waits`` section of the run's JSON report (the only run of the project)."""
    [path] = (project.path / "inventories" / ".orch" / "reports").glob("*.json")
    return json.loads(path.read_text())["waits"]


def test_without_spares_every_fresh_vm_is_made_and_every_reset_is_hard(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = make_project(pytester, monkeypatch)
    project.makepyfile(test_w=SUITE)
    result = project.runpytest_subprocess("-p", "no:xdist", "-p", "no:randomly", "--orch-up")
    result.assert_outcomes(passed=8)
    result.stdout.fnmatch_lines(
        [
            "*orch: how long tests waited for a VM*",
            "orch: 4 fresh_vm(): 4 made while the test waited (p50 * s, max * s)",
            "orch: 3 resets: 3 hard (p50 * s, max * s: no standby (standby = false))",
        ]
    )
    assert "workers handed out" not in result.stdout.str()  # gw0 taken as it was: no wait worth a line
    got = waits(project)
    fresh = [w for w in got if w["what"] == "fresh_vm"]
    resets = [w for w in got if w["what"] == "reset"]
    assert [w["kind"] for w in fresh] == ["made"] * 4
    assert [(w["kind"], w["cause"]) for w in resets] == [("hard", "orch_reset")] * 3
    assert [w["test"] for w in resets] == [f"test_w.py::test_dirty[{n}]" for n in range(3)]
    assert [(w["what"], w["kind"], w["worker"]) for w in got if w["what"] == "handout"] == [("handout", "ready", "gw0")]
    assert all(isinstance(w["seconds"], float) and w["seconds"] >= 0 for w in got)


def test_with_a_pool_and_a_standby_the_first_ones_are_claimed_and_swapped(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = make_project(pytester, monkeypatch, "pool = 2\nstandby = true\n")
    project.makepyfile(test_w=SUITE)
    result = project.runpytest_subprocess("-p", "no:xdist", "-p", "no:randomly", "--orch-up")
    result.assert_outcomes(passed=8)
    got = waits(project)
    fresh = [w["kind"] for w in got if w["what"] == "fresh_vm"]
    resets = [w["kind"] for w in got if w["what"] == "reset"]
    assert len(fresh) == 4 and fresh[0] == "pool" and set(fresh) <= {"pool", "made"}  # `--orch-up` filled it
    assert len(resets) == 3 and resets[0] == "swapped" and set(resets) <= {"swapped", "hard"}
    result.stdout.fnmatch_lines(
        [
            f"orch: 4 fresh_vm(): {fresh.count('pool')} from the pool (*",
            f"orch: 3 resets: {resets.count('swapped')} swapped in a standby (*",
        ]
    )


def test_under_xdist_the_workers_waits_reach_the_controllers_summary(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = make_project(pytester, monkeypatch)
    project.makepyfile(test_w=SUITE)
    result = project.runpytest_subprocess("-n", "2", "--orch-up")
    result.assert_outcomes(passed=8)
    result.stdout.fnmatch_lines(["orch: 4 fresh_vm(): 4 made while the test waited *", "orch: 3 resets: 3 hard *"])
    got = waits(project)
    assert len([w for w in got if w["what"] == "fresh_vm"]) == 4
    assert {w["worker"] for w in got} <= {"gw0", "gw1"}


def test_quiet_when_no_test_waited_for_a_vm(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    project = make_project(pytester, monkeypatch)
    project.makepyfile(test_plain="def test_a():\n    pass\n\ndef test_b(orch_worker):\n    pass\n")
    result = project.runpytest_subprocess("-p", "no:xdist", "--orch-up")
    result.assert_outcomes(passed=2)
    assert "waited for a VM" not in result.stdout.str()
    assert not [
        line for line in result.stdout.lines if line.startswith(("orch: 1 fresh_vm", "orch: 1 resets", "orch: 1 workers"))
    ]


def test_a_worker_owing_a_reset_is_made_again_and_the_summary_says_so(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run killed inside a marked test leaves a reset owed; the next run's first test
    waits while its worker is made again, and the summary names why."""
    project = make_project(pytester, monkeypatch)
    project.makepyfile(test_killed="import os, pytest\n\n@pytest.mark.orch_reset\ndef test_dies(orch_worker):\n    os._exit(9)\n")
    project.runpytest_subprocess("-p", "no:xdist", "--orch-up")
    for report in (project.path / "inventories" / ".orch" / "reports").glob("*.json"):
        report.unlink()
    Path(project.path / "test_killed.py").unlink()
    project.makepyfile(test_next="def test_uses(orch_worker):\n    assert orch_worker.vm\n")
    result = project.runpytest_subprocess("-p", "no:xdist")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["orch: 1 workers handed out: 1 made again first (* s: owes a reset (after test_killed.py::test_dies)*"]
    )
    [handout] = [w for w in waits(project) if w["what"] == "handout"]
    assert handout["kind"] == "remade" and handout["test"] == "test_next.py::test_uses"


# -- a warm start: `up` on workers recorded ready and seen running ------------------------------


def test_a_warm_up_probes_no_running_worker_and_still_starts_a_stopped_one(tmp_path: Path) -> None:
    """What `pytest --orch-up` does on warm workers: one list, no readiness probe of a
    worker recorded ready and seen running; one that stopped is started and waited for,
    one that is gone is made again."""
    from fakes_core import fake_orch

    from orchestrator.verbs.up import up

    orch = fake_orch(tmp_path)
    up(orch, 3)
    before = orch.provider.counts()
    assert [r.action for r in up(orch, 3)] == ["reused"] * 3
    after = orch.provider.counts()
    assert after["ready"] == before["ready"] and after["list"] == before["list"] + 1
    orch.provider.stop(orch.vm_name("gw1"))
    orch.provider.delete(orch.vm_name("gw2"))
    before = orch.provider.counts()
    assert [r.action for r in up(orch, 3)] == ["reused", "started", "recreated"]
    assert orch.provider.counts()["ready"] > before["ready"]
    assert all(orch.provider.inspect(orch.vm_name(w)).running for w in ("gw0", "gw1", "gw2"))
