"""Several engines with one of them down.

The second engine (scripts/engine2.sh) is reached through a socket path of the test's own, a
symlink to the engine's socket: workers are made there while it answers, then the symlink
is removed. To orch that engine no longer answers (the docker CLI cannot connect) while its
VMs are still there, as when an engine's host goes away; the shared second engine itself
is never stopped, so other tests go on using it."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from backends import run_orch, write_pyproject
from engines import SecondEngine, ensure_second_engine, shared_use


def _docker(host: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", "--host", host, *args], capture_output=True, text=True, timeout=120)


def _names(host: str, prefix: str) -> list[str]:
    out = _docker(host, "ps", "-a", "--filter", f"name={prefix}-", "--format", "{{.Names}}").stdout
    return sorted(n.rsplit("-", 1)[1] for n in out.split() if "-gw" in n)


@pytest.fixture
def flaky_engine(second_engine: SecondEngine, tmp_path: Path, prefix: str):
    """A project over two engines: this machine's and the second one, reached through a
    symlink ``link`` (remove it: the engine stops answering; make it again: it answers)."""
    project = tmp_path / "project"
    project.mkdir()
    write_pyproject(project, "docker", prefix)
    short = Path(tempfile.mkdtemp(prefix="orch-e2-", dir="/tmp"))  # a socket path is at most 107 bytes
    link = short / "docker.sock"
    target = second_engine.docker_host.removeprefix("unix://")
    url = f"unix://{link}"
    with (project / "pyproject.toml").open("a") as fh:
        fh.write(f'\n[tool.orch.docker]\nengines = ["unix:///var/run/docker.sock", "{url}"]\n')
    with shared_use():
        ensure_second_engine()  # another test may have stopped it since the session fixture ran
        link.symlink_to(target)
        try:
            yield project, link, target, url
        finally:
            if not link.is_symlink():
                link.symlink_to(target)
            run_orch(project, "down", "--force")
            for host in ("unix:///var/run/docker.sock", second_engine.docker_host):
                ids = _docker(host, "ps", "-aq", "--filter", f"name={prefix}-").stdout.split()
                if ids:
                    _docker(host, "rm", "-f", *ids)
                images = _docker(host, "images", "-q", "--filter", f"reference={prefix}-*").stdout.split()
                if images:
                    _docker(host, "rmi", "-f", *images)
            shutil.rmtree(short, ignore_errors=True)


def _state(project: Path) -> dict:
    return json.loads((project / "inventories" / ".orch" / "state.json").read_text())


def test_an_engine_that_stops_answering_is_never_forgotten_nor_fails_the_others(
    flaky_engine, second_engine: SecondEngine, prefix: str
) -> None:
    project, link, target, url = flaky_engine
    up = run_orch(project, "up", "--workers", "2")
    assert up.returncode == 0, up.stderr
    e2 = second_engine.docker_host
    assert _names("unix:///var/run/docker.sock", prefix) == ["gw0"] and _names(e2, prefix) == ["gw1"]
    gw1_inventory = (project / "inventories" / "gw1.py").read_text()

    link.unlink()  # the second engine stops answering; its VM is still there

    status = run_orch(project, "status", "--json")
    assert status.returncode == 0, status.stderr
    states = {r["worker"]: r["state"] for r in json.loads(status.stdout) if r["kind"] == "worker"}
    assert states["gw0"] == "running"
    assert states["gw1"].startswith("unreachable") and url in states["gw1"], states  # not "missing"

    gw0_inventory = project / "inventories" / "gw0.py"
    before = gw0_inventory.stat().st_mtime_ns
    reset = run_orch(project, "reset", "gw0", "--json")
    assert reset.returncode == 0, reset.stdout + reset.stderr  # gw1's engine has nothing to do with it
    assert [r["action"] for r in json.loads(reset.stdout)] == ["reset"]
    assert gw0_inventory.stat().st_mtime_ns != before  # inventories written again
    assert (project / "inventories" / "gw1.py").read_text() == gw1_inventory  # gw1's kept as it was

    again = run_orch(project, "up", "--workers", "2", "--json")
    rows = {r["worker"]: r for r in json.loads(again.stdout)}  # its summary, not an error instead
    assert rows["gw0"]["action"] == "reused"
    assert rows["gw1"]["action"] == "failed" and "does not answer" in rows["gw1"]["error"]
    assert len([line for line in again.stderr.splitlines() if line.startswith("Error:")]) <= 1, again.stderr

    down = run_orch(project, "down", "--json")
    assert down.returncode == 1, down.stdout + down.stderr  # not "deleted": it could not be
    rows = {r["worker"]: r for r in json.loads(down.stdout)}
    assert rows["gw0"]["action"] == "deleted"
    assert rows["gw1"]["action"] == "failed" and "does not answer" in rows["gw1"]["error"]
    assert list(_state(project)["workers"]) == ["gw1"]  # not forgotten
    assert _state(project)["baseline"] is not None  # nor the baseline a worker still needs
    assert _names(e2, prefix) == ["gw1"] and _names("unix:///var/run/docker.sock", prefix) == []
    assert (project / "inventories" / "gw1.py").read_text() == gw1_inventory

    link.symlink_to(target)  # the engine answers again: down takes what is left
    down = run_orch(project, "down")
    assert down.returncode == 0, down.stderr
    assert _names(e2, prefix) == [] and _state(project)["workers"] == {}
