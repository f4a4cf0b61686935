"""Crash safety, locking, bad input and load, as a user meets them: the `orch` CLI as a
subprocess against the real backend."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from backends import DockerBackend, both_providers, clean_env, make_orphans, run_orch

from orchestrator.primitives import naming

ORCH = str(Path(sys.executable).with_name("orch"))


def orch(project: Path, *args: str, timeout: float = 300, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    return run_orch(project, *args, timeout=timeout, env=extra_env)


def recorded(project: Path) -> set[str]:
    """Every VM name the state knows (workers, one-offs, standbys, baselines)."""
    path = project / "inventories" / ".orch" / "state.json"
    if not path.exists():
        return set()
    state = json.loads(path.read_text())  # must always parse: writes are atomic
    names = {w["vm"] for w in state["workers"].values()} | set(state["oneoffs"]) | {s["vm"] for s in state["standbys"].values()}
    return names | {b["vm"] for b in [*state["retired"], *([state["baseline"]] if state["baseline"] else [])]}


def test_sigkill_during_up_at_random_moments_then_up_converges(project: Path, backend, prefix: str) -> None:
    seed = int(os.environ.get("ORCH_TEST_SEED", time.time()))
    rng = random.Random(seed)
    kills = 0
    for attempt in range(6):
        proc = subprocess.Popen(
            [ORCH, "up", "--workers", "3"],
            cwd=project,
            env=clean_env(),
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        delay = rng.uniform(0.05, 2.5)
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the whole process group, as a CI cancel does
            proc.wait()
            kills += 1
        time.sleep(0.3)  # let docker/orbctl children that were mid-call finish
        stray = set(backend.names(prefix + "-")) - recorded(project)
        assert not stray, f"seed {seed}, attempt {attempt}: VMs the state never recorded: {stray}"
    assert kills, f"seed {seed}: no kill landed"
    final = orch(project, "up", "--workers", "3", "--json")
    assert final.returncode == 0, f"seed {seed}: {final.stderr}"
    assert {r["worker"] for r in json.loads(final.stdout)} == {"gw0", "gw1", "gw2"}
    status = [r for r in json.loads(orch(project, "status", "--json").stdout) if r["kind"] == "worker"]
    assert [(r["worker"], r["state"], r["phase"]) for r in status] == [(f"gw{i}", "running", "ready") for i in range(3)]
    checkout = naming.checkout_id(project / "inventories")
    workers = [n for n in backend.names(prefix + "-") if "-gw" in n]
    assert workers == [f"{prefix}-{checkout}-gw{i}" for i in range(3)]  # exactly the workers asked for
    assert orch(project, "down").returncode == 0
    assert backend.names(prefix + "-") == [], f"seed {seed}"


def test_two_ups_in_one_checkout_are_serialized(project: Path) -> None:
    first = subprocess.Popen(
        [ORCH, "up", "--workers", "2"], cwd=project, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 60
    lock = project / "inventories" / ".orch" / "command.lock"
    while not lock.exists() and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)
    busy = orch(project, "up", "--workers", "2", "--no-wait")
    waited = orch(project, "up", "--workers", "2", "--json")
    assert first.wait(timeout=300) == 0
    if first.returncode == 0 and busy.returncode != 0:
        assert busy.returncode == 1 and "another orch command is running" in busy.stderr
        assert len(busy.stderr.strip().splitlines()) == 1
    assert waited.returncode == 0
    assert [r["action"] for r in json.loads(waited.stdout)] == ["reused", "reused"]


def test_two_checkouts_never_touch_each_others_vms(
    project: Path, tmp_path_factory, backend, provider_name: str, prefix: str
) -> None:
    from backends import write_pyproject

    other = tmp_path_factory.mktemp("second-clone")
    write_pyproject(other, provider_name, prefix)  # same prefix, other checkout
    assert orch(project, "up", "--workers", "2").returncode == 0
    assert orch(other, "up", "--workers", "2").returncode == 0
    mine = set(backend.names(f"{prefix}-{naming.checkout_id(project / 'inventories')}"))
    theirs = set(backend.names(f"{prefix}-{naming.checkout_id(other / 'inventories')}"))
    assert len(mine) >= 2 and len(theirs) >= 2 and not mine & theirs
    assert orch(project, "reset", "--all").returncode == 0
    assert orch(project, "down").returncode == 0
    assert set(backend.names(f"{prefix}-{naming.checkout_id(other / 'inventories')}")) == theirs
    assert json.loads(orch(other, "status", "--json").stdout)[0]["state"] == "running"
    assert orch(other, "down").returncode == 0


BAD_INPUT = [
    (["up", "--workers", "0"], "--workers must be between 1 and 256"),
    (["up", "--workers", "-1"], "--workers must be between 1 and 256"),
    (["up", "--workers", "10000"], "--workers must be between 1 and 256"),
    (["reset", "gw99"], "not a worker of this checkout"),
    (["reset", "../x"], "invalid worker id"),
    (["reset", ""], "invalid worker id"),
    (["reset", "gw 1"], "invalid worker id"),
    (["down", "gw1;rm -rf /"], "invalid worker id"),
    (["down", "$(touch /tmp/orch-pwned)"], "invalid worker id"),
    (["--provider", "vmware", "up"], "unknown provider 'vmware'"),
    (["up", "--workers", "1", "--image", "nosuchdistro:never"], "--image"),
]


@pytest.mark.parametrize("args, fix", BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_bad_input_is_one_line_and_changes_nothing(project: Path, backend, prefix: str, args: list[str], fix: str) -> None:
    assert orch(project, "up", "--workers", "1").returncode == 0
    before = (project / "inventories" / ".orch" / "state.json").read_text()
    vms = backend.names(prefix + "-")
    proc = orch(project, *args)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and fix in lines[0], proc.stderr
    assert (project / "inventories" / ".orch" / "state.json").read_text() == before
    assert backend.names(prefix + "-") == vms
    assert not Path("/tmp/orch-pwned").exists()


@both_providers
def test_corrupt_state_is_rebuilt_by_repair(project: Path, backend) -> None:
    assert orch(project, "up", "--workers", "2").returncode == 0
    state = project / "inventories" / ".orch" / "state.json"
    state.write_text(state.read_text()[:40])  # truncated, as by a full disk
    status = orch(project, "status")
    assert status.returncode == 1 and "orch repair" in status.stderr
    assert orch(project, "repair").returncode == 0
    again = orch(project, "up", "--workers", "2", "--json")
    assert again.returncode == 0 and [r["action"] for r in json.loads(again.stdout)] == ["reused", "reused"]
    assert (project / "inventories" / ".orch" / "state.json.damaged").exists()


def test_unwritable_inventory_folder(project: Path) -> None:
    (project / "blocked").write_text("a file where a folder should be")
    proc = orch(project, "--inventory-dir", "blocked/inv", "up", "--workers", "1")
    assert proc.returncode != 0 and "--inventory-dir" in proc.stderr.strip().splitlines()[-1]


def test_stopped_docker_engine_is_one_line(project: Path) -> None:
    proc = orch(project, "up", "--workers", "1", extra_env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip().splitlines()[-1]]
    assert "Docker engine is not reachable" in proc.stderr and "start it" in proc.stderr


@pytest.mark.parametrize("provider_name", ["orbstack"])
def test_missing_orbctl_is_one_line(project: Path) -> None:
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if "fakes" not in p)
    proc = orch(project, "up", "--workers", "1", extra_env={"PATH": path})
    assert proc.returncode == 1
    assert "orbctl is not on PATH" in proc.stderr and "--provider docker" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_sixteen_workers_on_two_cores(project: Path, backend, prefix: str) -> None:
    up = orch(project, "up", "--workers", "16", "--json", timeout=900)
    assert up.returncode == 0, up.stderr
    assert len([r for r in json.loads(up.stdout) if r["action"] == "created"]) == 16
    assert len([n for n in backend.names(prefix + "-") if "-gw" in n]) == 16
    assert orch(project, "down", timeout=600).returncode == 0
    assert backend.names(prefix + "-") == []


def test_sweep_of_two_hundred_orphans(project: Path, prefix: str, tmp_path: Path) -> None:
    checkout = "0badf00d"
    names = [f"{prefix}-{checkout}-gw{i}" for i in range(200)]
    make_orphans(DockerBackend(), names, checkout, tmp_path)  # made in bulk: created, not started
    sweep = orch(project, "sweep", "--json", timeout=900)
    assert sweep.returncode == 0, sweep.stderr
    rows = {r["vm"]: r for r in json.loads(sweep.stdout)}
    assert all(rows[n]["result"] == "deleted" for n in names), [rows[n] for n in names if rows[n]["result"] != "deleted"][:2]
    left = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=orch.checkout={checkout}"], capture_output=True, text=True
    ).stdout
    assert left.split() == []


def kill_after(project: Path, args: list[str], delay: float) -> bool:
    """Start `orch ARGS`, SIGKILL its process group after ``delay``; True if it was killed."""
    proc = subprocess.Popen(
        [ORCH, *args], cwd=project, env=clean_env(), start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        time.sleep(0.3)
        return True


def test_sigkill_during_reset_and_sweep_then_the_next_command_repairs(
    project: Path, backend, prefix: str, tmp_path: Path
) -> None:
    seed = int(os.environ.get("ORCH_TEST_SEED", time.time()))
    rng = random.Random(seed)
    assert orch(project, "up", "--workers", "2").returncode == 0
    for _ in range(4):
        kill_after(project, ["reset", "--all"], rng.uniform(0.05, 1.0))
        assert not set(backend.names(prefix + "-")) - recorded(project), f"seed {seed}"
    up = orch(project, "up", "--workers", "2")
    assert up.returncode == 0, f"seed {seed}: {up.stderr}"
    assert orch(project, "reset", "--all").returncode == 0
    # sweep killed midway through deleting orphans: the next sweep finishes the job
    gone = prefix[1:]  # a checkout id of this test's own: the registry is shared by every test
    make_orphans(backend, [f"{prefix}-{gone}-gw{i}" for i in range(12)], gone, tmp_path)
    kill_after(project, ["sweep"], rng.uniform(0.2, 1.0))
    again = orch(project, "sweep", "--json")
    assert again.returncode == 0, again.stderr
    assert [n for n in backend.names(prefix + "-") if n.startswith(f"{prefix}-{gone}-")] == [], f"seed {seed}"
    status = [r for r in json.loads(orch(project, "status", "--json").stdout) if r["kind"] == "worker"]
    assert [(r["worker"], r["state"]) for r in status] == [("gw0", "running"), ("gw1", "running")]


RUNS_ON_GW0 = """
import time

def test_long_running_work_on_gw0(orch_worker):
    assert orch_worker.worker_id == "gw0"
    orch_worker.run("echo mine > /root/gw0-state")
    for _ in range(40):
        assert orch_worker.run("cat /root/gw0-state").stdout == "mine"
        time.sleep(0.1)
"""


def test_reset_of_gw1_while_pytest_runs_on_gw0(project: Path) -> None:
    assert orch(project, "up", "--workers", "2").returncode == 0
    (project / "test_gw0.py").write_text(RUNS_ON_GW0)
    tests = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", "-q", "test_gw0.py"],
        cwd=project,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    time.sleep(1.0)
    resets = [orch(project, "reset", "gw1") for _ in range(2)]
    out, _ = tests.communicate(timeout=300)
    assert all(r.returncode == 0 for r in resets), [r.stderr for r in resets]
    assert tests.returncode == 0 and "1 passed" in out, out
