"""Workers spread over several Docker engines: this machine's engine and a second, real
one (scripts/engine2.sh: Docker-in-Docker with its own socket, data root and bridge)
reached over SSH on the loopback address. A third engine that does not exist stands for
one that is down."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from backends import run_orch, run_pytest, write_pyproject
from engines import SecondEngine, ensure_second_engine, shared_use

SUITE = """
import pytest

@pytest.mark.parametrize("n", range(8))
def test_work(n, orch_worker):
    assert orch_worker.run("cat /etc/orch-worker").stdout.strip() == orch_worker.worker_id
"""

DEAD = "unix:///tmp/orch-no-such-engine.sock"


@pytest.fixture
def two_engines(second_engine: SecondEngine, tmp_path: Path, prefix: str):
    project = tmp_path / "project"
    project.mkdir()
    write_pyproject(project, "docker", prefix)
    remote = second_engine.ssh_url
    with (project / "pyproject.toml").open("a") as fh:
        fh.write(f'\n[tool.orch.docker]\nengines = ["unix:///var/run/docker.sock", "{remote}"]\n')
    env = {"PATH": f"{second_engine.ssh_bin}{os.pathsep}{os.environ['PATH']}"}  # the docker CLI's ssh, with the engine's key
    with shared_use():
        ensure_second_engine()  # another test may have stopped it since the session fixture ran
        try:
            yield project, env, remote
        finally:
            run_orch(project, "down", "--force", env=env)
            for engine_args in ([], ["--host", second_engine.docker_host]):
                ids = _docker(engine_args, "ps", "-aq", "--filter", f"name={prefix}-").stdout.split()
                if ids:
                    _docker(engine_args, "rm", "-f", *ids)
                images = _docker(engine_args, "images", "-q", "--filter", f"reference={prefix}-*").stdout.split()
                if images:
                    _docker(engine_args, "rmi", "-f", *images)


def _docker(engine_args: list[str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *engine_args, *args], capture_output=True, text=True)


def on(engine: SecondEngine | None, prefix: str) -> list[str]:
    args = ["--host", engine.docker_host] if engine else []
    out = subprocess.run(
        ["docker", *args, "ps", "-a", "--filter", f"name={prefix}-", "--format", "{{.Names}}"], capture_output=True, text=True
    ).stdout
    return sorted(n.rsplit("-", 1)[1] for n in out.split() if "-gw" in n)


def test_workers_over_two_engines(two_engines, second_engine: SecondEngine, prefix: str) -> None:
    project, env, remote = two_engines
    (project / "test_work.py").write_text(SUITE)
    up = run_orch(project, "up", "--workers", "4", env=env)
    assert up.returncode == 0, up.stderr
    assert on(None, prefix) == ["gw0", "gw2"] and on(second_engine, prefix) == ["gw1", "gw3"]
    gw1 = (project / "inventories" / "gw1.py").read_text()
    assert "@orchdocker/" in gw1 and remote in gw1
    assert "@docker/" in (project / "inventories" / "gw0.py").read_text()
    status = [r for r in json.loads(run_orch(project, "status", "--json", env=env).stdout) if r["kind"] == "worker"]
    assert [r["state"] for r in status] == ["running"] * 4
    tests = run_pytest(project, "-n", "4", env=env)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    reset = run_orch(project, "reset", "gw1", "gw2", env=env)
    assert reset.returncode == 0, reset.stderr
    assert on(second_engine, prefix) == ["gw1", "gw3"]
    exec_ = run_orch(project, "exec", "gw3", "--", "cat", "/etc/orch-worker", env=env)
    assert exec_.stdout.strip() == "gw3"
    sweep = run_orch(project, "sweep", "--json", env=env)
    assert all(r["result"] == "kept" for r in json.loads(sweep.stdout) if prefix in r["vm"]), sweep.stdout
    down = run_orch(project, "down", env=env)
    assert down.returncode == 0, down.stderr
    assert on(None, prefix) == [] and on(second_engine, prefix) == []


def test_an_engine_that_is_down_fails_only_its_own_workers(two_engines, second_engine: SecondEngine, prefix: str) -> None:
    project, env, remote = two_engines
    text = (project / "pyproject.toml").read_text().replace(f'"{remote}"]', f'"{remote}", "{DEAD}"]')
    (project / "pyproject.toml").write_text(text)
    up = run_orch(project, "up", "--workers", "3", "--json", env=env)
    assert up.returncode == 1
    rows = {r["worker"]: r for r in json.loads(up.stdout)}
    assert rows["gw0"]["action"] == "created" and rows["gw1"]["action"] == "created"
    assert rows["gw2"]["action"] == "failed" and DEAD in rows["gw2"]["error"]
    assert len([line for line in up.stderr.splitlines() if line.startswith("Error:")]) == 1
    sweep = run_orch(project, "sweep", "--dry-run", "--json", env=env)
    decisions = json.loads(sweep.stdout)
    assert any(d["kind"] == "engine" and DEAD in d["vm"] and "not judged" in d["reason"] for d in decisions)
    assert not any(d["result"] == "would delete" for d in decisions if prefix in d["vm"])
