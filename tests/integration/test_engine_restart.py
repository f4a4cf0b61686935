"""The reliability figure for an engine restart: after what a host or engine restart leaves
behind, the next pytest run passes on the same VMs and none is lost. The engine restarted
is the second one (scripts/engine2.sh), started for such tests: never the engine the other
tests share."""

from __future__ import annotations

import json
from pathlib import Path

from backends import run_orch, run_pytest, write_pyproject
from engines import SecondEngine, ensure_second_engine, exclusive_use

SUITE = """
import pytest

@pytest.mark.parametrize("n", range(4))
def test_work(n, orch_worker):
    assert orch_worker.run("cat /etc/orch-worker").stdout.strip() == orch_worker.worker_id
    orch_worker.run(f"echo {n} >> /var/lib/orch/scratch/ran")
"""


def containers(engine: SecondEngine, prefix: str) -> dict[str, tuple[str, str]]:
    """{name: (id, state)} of this test's containers on the second engine."""
    out = engine.docker("ps", "-a", "--filter", f"name={prefix}-", "--format", "{{json .}}").stdout
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    ids = {r["Names"]: r["ID"] for r in rows}
    states = {}
    for name in ids:
        states[name] = engine.docker("inspect", "-f", "{{.State.Status}}", name).stdout.strip()
    return {name: (ids[name], states[name]) for name in ids}


def test_workers_survive_a_restart_of_their_engine(second_engine: SecondEngine, tmp_path: Path, prefix: str) -> None:
    project = tmp_path / "project"
    project.mkdir()
    write_pyproject(project, "docker", prefix)
    (project / "test_work.py").write_text(SUITE)
    env = {"DOCKER_HOST": second_engine.docker_host}
    with exclusive_use():
        second_engine = ensure_second_engine()  # another test may have stopped it since the session fixture ran
        try:
            up = run_orch(project, "up", "--workers", "2", env=env)
            assert up.returncode == 0, up.stderr
            before = containers(second_engine, prefix)
            assert len(before) == 2 and all(state == "running" for _, state in before.values())
            second_engine.restart_engine()
            after_restart = containers(second_engine, prefix)
            assert {n: i for n, (i, _) in after_restart.items()} == {n: i for n, (i, _) in before.items()}
            for attempt in (1, 2):
                tests = run_pytest(project, "-n", "2", env=env)
                assert tests.returncode == 0, tests.stdout + tests.stderr
                assert "4 passed" in tests.stdout
                now = containers(second_engine, prefix)
                assert {n: i for n, (i, _) in now.items()} == {n: i for n, (i, _) in before.items()}, f"run {attempt} lost a VM"
            # the engine restarted with every worker stopped by hand (no restart policy applies)
            for name in before:
                second_engine.docker("stop", "-t", "1", name)
            second_engine.restart_engine()
            tests = run_pytest(project, "-n", "2", env=env)
            assert tests.returncode == 0, tests.stdout + tests.stderr
            assert {n: i for n, (i, _) in containers(second_engine, prefix).items()} == {n: i for n, (i, _) in before.items()}
        finally:
            down = run_orch(project, "down", "--force", env=env)
            ids = second_engine.docker("ps", "-aq", "--filter", f"name={prefix}-").stdout.split()
            if ids:
                second_engine.docker("rm", "-f", *ids)
            images = second_engine.docker("images", "-q", "--filter", f"reference={prefix}-*").stdout.split()
            if images:
                second_engine.docker("rmi", "-f", *images)
    assert down.returncode == 0, down.stderr
