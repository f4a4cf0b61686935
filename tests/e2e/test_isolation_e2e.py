"""Isolation as a user runs it, on Docker (plain containers with standbys), podman
(machines), the emulated OrbStack and Incus (machines): a suite where some tests pollute
their worker (a file in /etc, a user, a process left running, a package installed with
dpkg) runs under ``--orch-isolation on-dirty`` with ``pytest -n 2``; every test first
asserts, from inside, that its worker is clean; the terminal summary and the JSON report
name exactly the polluting tests and what they changed. Then ``report``: a test that fails
after a polluter says so in its failure output. On Docker, runs killed mid-test (the whole
run, and one xdist worker) leave a worker the next test gets clean."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from backends import BACKENDS, DockerBackend, PodmanBackend, remove_incus, remove_podman, remove_prefix, run_orch, run_pytest

FAKES = Path(__file__).resolve().parents[1] / "fakes"

SUITE = r'''
import json, os, signal, pytest
from pyinfra.operations import server

LOG = os.path.join(os.path.dirname(__file__), "order.log")
SCRIPT = os.path.join(os.path.dirname(__file__), "noop.sh")

CLEAN = """
test ! -e /etc/polluted-file || { echo "file"; exit 1; }
! id polluter >/dev/null 2>&1 || { echo "user"; exit 1; }
! dpkg -s orch-tiny >/dev/null 2>&1 || { echo "package"; exit 1; }
for d in /proc/[0-9]*; do tr '\\0' ' ' < $d/cmdline 2>/dev/null; echo; done | grep -qx 'sleep 1000 ' && { echo process; exit 1; }
true
"""

TINY_DEB = """
d=$(mktemp -d) && mkdir -p $d/DEBIAN $d/usr/share/orch-tiny && echo hi > $d/usr/share/orch-tiny/hello &&
printf 'Package: orch-tiny\\nVersion: 1.0\\nArchitecture: all\\nMaintainer: orch <orch@example.invalid>\\nDescription: tiny\\n' \\
  > $d/DEBIAN/control && dpkg-deb --build $d $d.deb >/dev/null && dpkg -i $d.deb >/dev/null && rm -rf $d $d.deb
"""


def clean(worker, name):
    found = worker.run(CLEAN, check=False)
    with open(LOG, "a") as fh:
        fh.write(json.dumps([worker.worker_id, name]) + "\n")
    assert found.rc == 0, f"an earlier test's pollution is on this worker: {found.stdout.strip()}"


def test_p1_file(orch_worker):
    clean(orch_worker, "p")
    orch_worker.run("echo x > /etc/polluted-file")

def test_p2_user(orch_worker):
    clean(orch_worker, "p")
    orch_worker.run("useradd polluter")

def test_p3_process(orch_worker):
    clean(orch_worker, "p")
    orch_worker.run("setsid nohup sleep 1000 >/dev/null 2>&1 < /dev/null &")

def test_p4_package(orch_worker):
    clean(orch_worker, "p")
    orch_worker.run(TINY_DEB)

@pytest.mark.parametrize("n", range(8))
def test_clean(n, orch_worker):
    clean(orch_worker, "clean")
    orch_worker.run("cat /etc/os-release > /dev/null")
    if n == 0:  # pyinfra leaves its copy of the script in /tmp: pyinfra's, not the test's
        orch_worker.operation(server.script, src=SCRIPT)

def test_z_killed(orch_worker):
    clean(orch_worker, "p")
    orch_worker.run("echo x > /etc/polluted-file")
    os.kill(os.getpid(), signal.SIGKILL)  # the run (or its xdist worker) dies mid-test
'''

POLLUTERS = {
    "test_iso.py::test_p1_file": "created: /etc/polluted-file",
    "test_iso.py::test_p2_user": "users added: polluter",
    "test_iso.py::test_p3_process": " sleep 1000",
    "test_iso.py::test_p4_package": "packages installed: orch-tiny 1.0",
}
TITLE = "orch: tests that changed their worker (isolation)"


@dataclass
class Project:
    provider: str
    path: Path
    prefix: str
    backend: DockerBackend

    def pytest(self, *args: str) -> tuple[int, str]:
        run = run_pytest(self.path, *args, timeout=1200)
        return run.returncode, run.stdout + run.stderr

    def later_clean_tests(self) -> int:
        """Tests that ran on a worker after a polluter on it (each checked it inside)."""
        lines = [json.loads(line) for line in (self.path / "order.log").read_text().splitlines()]
        return sum(1 for i, (w, what) in enumerate(lines) if what == "clean" and ["p"] in [x[1:] for x in lines[:i] if x[0] == w])

    def report(self) -> dict:
        latest = max((self.path / "inventories" / ".orch" / "reports").glob("*.json"), key=lambda p: p.stat().st_mtime)
        return json.loads(latest.read_text())


@pytest.fixture(params=["docker", "podman", "orbstack", "incus"])
def project(request: pytest.FixtureRequest, tmp_path: Path, prefix: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    """The suite in a fresh project on one backend, its prefix its own; whatever is named
    with it is deleted afterwards, and checked gone."""
    provider = request.param
    path = tmp_path / "project"
    path.mkdir()
    table = {
        "docker": 'image = "orch-base:bookworm"\nstandby = true\n',
        "podman": 'image = "localhost/orch-machine:bookworm"\nmachine = true\n',
        "orbstack": 'image = "debian:bookworm"\n',
        "incus": "",
    }[provider]
    backend: DockerBackend = PodmanBackend() if provider == "podman" else BACKENDS[provider]
    if provider in ("podman", "incus"):
        request.getfixturevalue(f"{provider}_engine")
    if provider == "orbstack":
        monkeypatch.setenv("PATH", f"{FAKES}{os.pathsep}{os.environ.get('PATH', '')}")
    (path / "pyproject.toml").write_text(f'[tool.orch]\nprovider = "{provider}"\nprefix = "{prefix}"\n{table}')
    (path / "test_iso.py").write_text(SUITE)
    (path / "noop.sh").write_text("#!/bin/sh\ntrue\n")
    try:
        yield Project(provider, path, prefix, backend)
    finally:
        run_orch(path, "down", "--force", timeout=600)
        if provider == "podman":
            remove_podman(prefix, tmp_path)
        elif provider == "incus":
            remove_incus(prefix)
        else:
            remove_prefix(prefix)
        assert backend.names(prefix) == []


def test_on_dirty_gives_every_test_a_clean_worker_and_names_the_polluters(project: Project) -> None:
    rc, out = project.pytest("-n", "2", "--orch-up", "--orch-isolation", "on-dirty", "-k", "not killed")
    assert rc == 0 and "12 passed" in out, out[-5000:]
    assert project.later_clean_tests() >= 1  # the checks inside meant something
    summary = out.split(TITLE)[1].split("orch: the run's report")[0]
    named = [line.split(" (gw")[0] for line in summary.splitlines() if line.startswith("test_iso.py::")]
    assert sorted(named) == sorted(POLLUTERS), summary
    for test, change in POLLUTERS.items():
        block = summary.split(test)[1].split("test_iso.py::")[0]
        assert "changed its worker; reset:" in block and change in block, summary
    entries = project.report()["pollution"]
    assert sorted(e["test"] for e in entries) == sorted(POLLUTERS) and all(e["reset"] for e in entries)
    assert next(e for e in entries if e["test"].endswith("p4_package"))["changes"]["packages_installed"] == ["orch-tiny 1.0"]

    if project.provider == "docker":
        killed(project)

    # report: never reset; a test that fails after a polluter on its worker says which
    rc, out = project.pytest(
        "-n", "1", "--orch-isolation", "report", "-k", "p1_file or clean and 0]"
    )  # its section crosses xdist
    assert rc == 1 and "1 failed, 1 passed" in out, out[-5000:]
    failure = out.split("test_clean[0] _")[1].split("short test summary")[0]
    assert "this test ran on gw0 after tests that changed it (not reset since):" in failure, failure
    assert "test_iso.py::test_p1_file:" in failure and "created: /etc/polluted-file" in failure


def killed(project: Project) -> None:
    """A run killed mid-test leaves a worker that owes a reset, and the next run's test gets
    it clean; so does the replacement of an xdist worker killed mid-test."""
    rc, out = project.pytest("-p", "no:xdist", "--orch-isolation", "on-dirty", "-k", "killed")
    assert rc == -9 or "Killed" in out or rc not in (0, 1), (rc, out[-3000:])
    status = run_orch(project.path, "status", "--json")
    [row] = [r for r in json.loads(status.stdout) if r["kind"] == "worker" and r["worker"] == "gw0"]
    assert "reset pending (after test_iso.py::test_z_killed (isolation on-dirty))" in row["phase"], row
    rc, out = project.pytest("-p", "no:xdist", "-k", "clean and 1]")
    assert rc == 0 and "1 passed" in out, out[-5000:]
    rc, out = project.pytest("-n", "2", "--orch-isolation", "on-dirty", "-k", "killed or clean")
    assert "1 failed, 8 passed" in out and "crashed" in out, out[-5000:]
