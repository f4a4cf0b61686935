"""``pytest --orch-keep-failed`` as a user runs it: a failing test's worker is kept as it
was (the file the test wrote is there, ``orch status`` shows it with the test's id,
``orch exec``/``orch shell <name>`` enter it), every later test on that worker runs on a
clean one (checked from inside those tests), and ``orch down`` deletes the kept VM with
the rest. Docker under ``-n 2``; podman, the emulated OrbStack and Incus on one worker
(what differs there is the backend's rename, or Incus's copy)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from backends import (
    BACKENDS,
    BIN,
    PodmanBackend,
    clean_env,
    remove_incus,
    remove_podman,
    remove_prefix,
    run_orch,
    run_pytest,
    write_pyproject,
)

FAKES = Path(__file__).resolve().parents[1] / "fakes"

SUITE = """
import json, os, pytest

LOG = os.path.join(os.path.dirname(__file__), "order.log")

def log(worker, what):
    with open(LOG, "a") as fh:
        fh.write(json.dumps([worker, what]) + "\\n")

def test_0_fails(orch_worker):
    orch_worker.run("echo failed-here > /root/failed-file")
    log(orch_worker.worker_id, "failed")
    assert False, "fails on purpose"

@pytest.mark.parametrize("n", range({after}))
def test_after(n, orch_worker):
    log(orch_worker.worker_id, "after")
    orch_worker.run("test ! -e /root/failed-file")  # the failing test's worker was replaced
"""


def checked_after_the_failure(project: Path) -> int:
    """How many tests ran on the failing test's worker after it (each checked inside)."""
    lines = [json.loads(line) for line in (project / "order.log").read_text().splitlines()]
    at = next(i for i, (_, what) in enumerate(lines) if what == "failed")
    return sum(1 for worker, what in lines[at + 1 :] if worker == lines[at][0] and what == "after")


def kept_row(project: Path, env: dict[str, str] | None = None) -> dict:
    status = run_orch(project, "status", "--json", env=env)
    assert status.returncode == 0, status.stderr
    [row] = [r for r in json.loads(status.stdout) if r["kind"] == "kept"]
    return row


def test_keep_failed_under_n_2_on_docker(project: Path, prefix: str) -> None:
    backend = BACKENDS["docker"]
    (project / "test_keep.py").write_text(SUITE.format(after=8))
    tests = run_pytest(project, "-n", "2", "--orch-up", "--orch-keep-failed")
    assert tests.returncode == 1, tests.stdout[-3000:] + tests.stderr[-2000:]
    assert "1 failed, 8 passed" in tests.stdout, tests.stdout[-3000:]
    assert checked_after_the_failure(project) >= 1  # the check inside a later test on that worker meant something
    row = kept_row(project)
    name = row["vm"]
    assert (row["test"], row["state"], row["enter"]) == ("test_keep.py::test_0_fails", "running", f"orch shell {name}")
    assert f"test_keep.py::test_0_fails ({row['worker']}): kept as {name}; enter it: orch shell {name}" in tests.stdout
    assert name.startswith(f"{prefix}-") and "-kept-" in name and backend.exists(name)

    seen = run_orch(project, "exec", name, "--", "cat", "/root/failed-file")
    assert (seen.returncode, seen.stdout) == (0, "failed-here\n"), seen.stderr
    shell = subprocess.run(
        [str(BIN / "orch"), "shell", name],
        cwd=project,
        input="cat /root/failed-file\nexit 0\n",
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "failed-here" in shell.stdout, shell.stderr
    worker_vm = next(r["vm"] for r in json.loads(run_orch(project, "status", "--json").stdout) if r["worker"] == row["worker"])
    assert backend.sh(worker_vm, "test ! -e /root/failed-file").returncode == 0  # the worker itself is clean

    down = run_orch(project, "down")
    assert down.returncode == 0, down.stderr
    assert not backend.exists(name) and backend.names(prefix) == []


@pytest.fixture(params=["podman", "orbstack", "incus"])
def one_worker(request: pytest.FixtureRequest, tmp_path: Path, prefix: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple]:
    """A project on one more backend, its prefix its own; what is named with it is
    deleted afterwards, and checked gone."""
    provider = request.param
    project = tmp_path / "project"
    project.mkdir()
    if provider == "podman":
        image = request.getfixturevalue("podman_engine")
        write_pyproject(project, "podman", prefix, image)
        backend = PodmanBackend()
    elif provider == "incus":
        request.getfixturevalue("incus_engine")
        (project / "pyproject.toml").write_text(f'[tool.orch]\nprovider = "incus"\nprefix = "{prefix}"\n')
        backend = BACKENDS["incus"]
    else:
        monkeypatch.setenv("PATH", f"{FAKES}{os.pathsep}{os.environ.get('PATH', '')}")
        write_pyproject(project, "orbstack", prefix)
        backend = BACKENDS["orbstack"]
    try:
        yield provider, project, backend
    finally:
        if backend.names(prefix):
            run_orch(project, "down", "--force")
        if provider == "podman":
            remove_podman(prefix, tmp_path)
        elif provider == "incus":
            remove_incus(prefix)
        else:
            remove_prefix(prefix)
        assert backend.names(prefix) == []


def test_keep_failed_on_podman_orbstack_and_incus(one_worker: tuple, prefix: str) -> None:
    provider, project, backend = one_worker
    (project / "test_keep.py").write_text(SUITE.format(after=1))
    tests = run_pytest(project, "-p", "no:xdist", "--orch-up", "--orch-keep-failed", timeout=900)
    assert tests.returncode == 1 and "1 failed, 1 passed" in tests.stdout, tests.stdout[-3000:] + tests.stderr[-2000:]
    assert checked_after_the_failure(project) == 1
    row = kept_row(project)
    name = row["vm"]
    assert (row["worker"], row["test"]) == ("gw0", "test_keep.py::test_0_fails")
    # a rename keeps it running; Incus's copy is left stopped until it is entered
    assert row["state"] == ("stopped" if provider == "incus" else "running"), row
    seen = run_orch(project, "exec", name, "--", "cat", "/root/failed-file", timeout=300)
    assert (seen.returncode, seen.stdout) == (0, "failed-here\n"), seen.stderr
    assert backend.running(name)
    down = run_orch(project, "down", timeout=300)
    assert down.returncode == 0, down.stderr
    assert not backend.exists(name) and backend.names(prefix) == []
