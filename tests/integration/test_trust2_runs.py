"""A pytest run is protected from its first line to its last, and no test
is handed a worker that is unfinished, owes a reset, or is stopped. Each test reproduces
a defect found by using orch as a user would (docs/RELIABILITY.md), on the real engine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from backends import clean_env, run_orch, run_pytest

from orchestrator.core import settings as config
from orchestrator.core.context import Context
from orchestrator.core.maintainer import spawn_maintainer


def make(project: Path) -> Context:
    return Context(config.load(cwd=project), refill=spawn_maintainer)


def docker(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)


def pytest_in_background(project: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly", *args],
        cwd=project,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def finish(run: subprocess.Popen, timeout: float = 300) -> str:
    """The background run's output once it ends; killed (its whole group) if it does not,
    so it never outlives the test holding its lease."""
    try:
        out, _ = run.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)
        out, _ = run.communicate(timeout=60)
    return out


def wait_for(path: Path, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while not path.exists() and time.time() < deadline:
        time.sleep(0.1)
    assert path.exists(), f"{path.name} never appeared"


def append_setting(project: Path, line: str) -> None:
    text = (project / "pyproject.toml").read_text()
    (project / "pyproject.toml").write_text(text.replace("[tool.orch]\n", f"[tool.orch]\n{line}\n", 1))


# -- 1. a run is protected before its first test asks for a VM -----------------------------

SLOW_IMPORT = """
import os, time
HERE = os.path.dirname(__file__)
open(os.path.join(HERE, "collecting"), "w").write("")
deadline = time.time() + 240
while not os.path.exists(os.path.join(HERE, "release")) and time.time() < deadline:
    time.sleep(0.2)  # still collecting: no test has asked for a VM yet

def test_uses(orch_worker):
    assert orch_worker.run("true").rc == 0
"""


def test_a_run_is_protected_from_its_first_line(project: Path) -> None:
    """`orch sweep --older-than 1s` (twice, with standbys) and `orch down` while the run
    is still collecting: nothing of the run is deleted, down refuses in one line."""
    append_setting(project, "standby = true")
    (project / "test_slow.py").write_text(SLOW_IMPORT)
    assert run_orch(project, "up", "--workers", "2").returncode == 0
    orch = make(project)
    data = orch.store.read()
    vms = sorted([r.vm for r in data.workers.values()] + [s.vm for s in data.standbys.values()])
    assert len(vms) == 4
    run = pytest_in_background(project, "-n", "2", "test_slow.py")
    try:
        wait_for(project / "collecting")
        for _ in (1, 2):
            swept = run_orch(project, "sweep", "--older-than", "1s")
            assert swept.returncode == 0, swept.stderr
            gone = [vm for vm in vms if docker("container", "inspect", vm).returncode != 0]
            assert gone == [], swept.stdout + "\n".join(p.name for p in (project / "inventories/.orch/runs").iterdir())
        refused = run_orch(project, "down")
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert refused.stderr.count("\n") == 1 and "pytest run is using gw0, gw1" in refused.stderr
    finally:
        (project / "release").write_text("")
        out = finish(run)
    assert run.returncode == 0, out
    assert run_orch(project, "down").returncode == 0


# -- 2. a worker whose reset was interrupted is never handed out ---------------------------

SLOW_PERSONALIZE = """
import os
from pyinfra.api import deploy
from pyinfra.operations import server
from orchestrator.deploys.provision import personalize as orchs

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@deploy("slow personalize")
def personalize():
    if os.path.exists(os.path.join(HERE, "slow")):  # before orch's: the worker id is not written yet
        open(os.path.join(HERE, "personalizing"), "w").write("")
        server.shell(name="take a while", commands=["sleep 8"])
    orchs()
"""

INTERRUPTED = """
import os, pytest

HERE = os.path.dirname(__file__)


@pytest.mark.orch_reset
def test_a_marked(orch_worker):
    orch_worker.run("touch /etc/dirty-from-a")
    open(os.path.join(HERE, "slow"), "w").write("")
    open(os.path.join(HERE, "pid"), "w").write(str(os.getpid()))


def test_b_clean(orch_worker):
    assert orch_worker.run("cat /etc/orch-worker").stdout.strip() == orch_worker.worker_id
    assert orch_worker.run("test -e /etc/dirty-from-a", check=False).rc != 0
"""


def test_a_worker_whose_reset_was_interrupted_is_made_again_before_a_test_gets_it(project: Path) -> None:
    """kill -9 of the xdist worker while its teardown's reset personalizes the new VM: the
    replacement worker, and the next run, get a finished worker (made again), never the
    half-made one."""
    (project / "deploys").mkdir()
    (project / "deploys" / "__init__.py").write_text("")
    (project / "deploys" / "slow.py").write_text(SLOW_PERSONALIZE)
    append_setting(project, 'personalize = "deploys.slow:personalize"')
    (project / "test_interrupted.py").write_text(INTERRUPTED)
    assert run_orch(project, "up", "--workers", "1").returncode == 0
    run = pytest_in_background(project, "-n", "1", "test_interrupted.py")
    try:
        wait_for(project / "personalizing")
        os.kill(int((project / "pid").read_text()), signal.SIGKILL)
        (project / "slow").unlink()
    finally:
        out = finish(run)
    assert "worker 'gw0' crashed" in out, out  # the kill happened where the test meant it to
    assert " 2 passed" in out, out  # test_a's body and test_b, on the replacement worker
    again = run_pytest(project, "-n", "1", "test_interrupted.py", "-k", "clean")
    assert again.returncode == 0, again.stdout + again.stderr
    assert run_orch(project, "down").returncode == 0


# -- 3. a reset that is owed is done by whoever takes the worker next ----------------------

KILLED_IN_BODY = """
import os, time, pytest

HERE = os.path.dirname(__file__)


@pytest.mark.orch_reset
def test_dirty(orch_worker):
    orch_worker.run("touch /etc/dirty-from-killed-run")
    open(os.path.join(HERE, "dirtied"), "w").write("")
    time.sleep(120)


def test_clean(orch_worker):
    assert orch_worker.run("test -e /etc/dirty-from-killed-run", check=False).rc != 0
"""


def kill_in_body(project: Path) -> None:
    (project / "dirtied").unlink(missing_ok=True)
    run = pytest_in_background(project, "-p", "no:xdist", "test_killed.py", "-k", "dirty")
    try:
        wait_for(project / "dirtied")
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.communicate(timeout=60)


def test_a_polluted_worker_is_reset_by_the_next_run_and_by_up(project: Path) -> None:
    """A run killed between a marked test's body and its reset: the next run's first test,
    and `orch up`, get the worker reset first (never "reused" with the test's files)."""
    (project / "test_killed.py").write_text(KILLED_IN_BODY)
    assert run_orch(project, "up", "--workers", "1").returncode == 0
    vm = make(project).vm_name("gw0")
    kill_in_body(project)
    assert docker("exec", vm, "test", "-e", "/etc/dirty-from-killed-run").returncode == 0  # it was polluted
    status = run_orch(project, "status")
    assert "reset pending" in status.stdout, status.stdout
    clean = run_pytest(project, "-p", "no:xdist", "test_killed.py", "-k", "clean")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    kill_in_body(project)
    up = run_orch(project, "up", "--workers", "1")
    assert up.returncode == 0, up.stderr
    assert "reused" not in up.stdout and "owes a reset" in up.stdout + up.stderr, up.stdout + up.stderr
    assert docker("exec", vm, "test", "-e", "/etc/dirty-from-killed-run").returncode != 0
    assert run_orch(project, "down").returncode == 0


# -- 6. worker_vm is a running VM --------------------------------------------------------------

BACKEND_CLI = """
import subprocess

def test_exec(worker_vm):
    assert subprocess.run(["docker", "exec", worker_vm, "true"]).returncode == 0
"""


def test_worker_vm_of_a_stopped_worker_is_started(project: Path) -> None:
    (project / "test_cli.py").write_text(BACKEND_CLI)
    assert run_orch(project, "up", "--workers", "2").returncode == 0
    orch = make(project)
    for worker in ("gw0", "gw1"):
        assert docker("stop", "-t", "1", orch.vm_name(worker)).returncode == 0
    result = run_pytest(project, "-n", "2", "test_cli.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert run_orch(project, "down").returncode == 0
