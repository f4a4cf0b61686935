"""How long tests waited for a VM, on the real Docker engine: `pytest -n 2 --orch-up` on a
small suite with `fresh_vm()` tests and an `orch_reset` test prints one line per kind of
wait with the right counts, and the run's JSON report keeps each wait."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from backends import run_orch, run_pytest

SUITE = """
import pytest


@pytest.mark.parametrize("n", range(3))
def test_fresh(n, fresh_vm):
    assert fresh_vm().run("cat /etc/orch-worker").stdout.strip() == "oneoff"


@pytest.mark.orch_reset
@pytest.mark.parametrize("n", range(2))
def test_dirty(n, orch_worker):
    orch_worker.run("echo dirty > /root/dirty")


def test_plain(orch_worker):
    assert orch_worker.vm
"""


def test_the_summary_and_the_json_report_say_how_tests_waited(project: Path) -> None:
    (project / "test_suite.py").write_text(SUITE)
    try:
        result = run_pytest(project, "-n", "2", "--orch-up")
        out = result.stdout
        assert result.returncode == 0, out + result.stderr
        lines = [line for line in out.splitlines() if line.startswith("orch: ") and ("fresh_vm()" in line or "resets" in line)]
        assert len(lines) == 2, out
        assert lines[0].startswith("orch: 3 fresh_vm(): 3 made while the test waited (p50 "), out  # no pool
        assert lines[1].startswith("orch: 2 resets: 2 hard (p50 "), out
        assert lines[1].endswith("no standby (standby = false))"), out
        assert "workers handed out" not in out  # both taken as `--orch-up` left them
        [path] = (project / "inventories" / ".orch" / "reports").glob("*.json")
        assert str(path) in out
        waits = json.loads(path.read_text())["waits"]
        assert sorted((w["what"], w["kind"]) for w in waits if w["what"] != "handout") == [
            ("fresh_vm", "made"),
            ("fresh_vm", "made"),
            ("fresh_vm", "made"),
            ("reset", "hard"),
            ("reset", "hard"),
        ]
        assert all(w["seconds"] > 0 and w["worker"] in ("gw0", "gw1") for w in waits)
        assert {w["test"] for w in waits if w["what"] == "reset"} == {
            "test_suite.py::test_dirty[0]",
            "test_suite.py::test_dirty[1]",
        }
        # warm: a worker seen running is reused without a probe; one stopped since is started
        vm = json.loads((project / "inventories" / ".orch" / "state.json").read_text())["workers"]["gw1"]["vm"]
        assert subprocess.run(["docker", "stop", "-t", "0", vm], capture_output=True, timeout=60).returncode == 0
        again = run_pytest(project, "-n", "2", "--orch-up")
        assert again.returncode == 0, again.stdout + again.stderr
        assert "gw0 reused, gw1 started" in again.stdout, again.stdout
    finally:
        run_orch(project, "down", "--force")
