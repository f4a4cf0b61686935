"""Workers on a two-member Incus cluster (scripts/incus-cluster.sh), as a user runs them: a
project that names only the cluster's remote, ``pytest -n 4 --orch-up`` of the example
suite with the workers where the cluster placed them (on both members), ``orch status``
showing each one's member, resets on both members; then member m2 killed in the middle of
a run (only the tests on its workers fail, each naming it; status, sweep, up and down see
it and touch nothing on it), and, once it is back, ``orch down`` leaving both members
empty. ``target`` pins a project's workers to one member.

One test function: it stops a member of the one shared cluster, which no other test may
see meanwhile."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

import pytest
from backends import clean_env, run_orch, run_pytest

from orchestrator.primitives import naming

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "incus-cluster.sh"

SLOW_SUITE = """
import time
from pathlib import Path

import pytest

@pytest.mark.parametrize("n", range(24))
def test_slow(n, orch_worker):
    Path("ran").mkdir(exist_ok=True)
    (Path("ran") / str(n)).write_text(orch_worker.worker_id)
    assert orch_worker.run("cat /etc/orch-worker").stdout.strip() == orch_worker.worker_id
    time.sleep(1)
"""


def incus(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["incus", *args], capture_output=True, text=True, timeout=120, check=check)


def instances(remote: str, prefix: str) -> dict[str, dict]:
    """The cluster's instances of a test's prefix: {name: instance}, on every member
    (the ones on a member that does not answer too, with status Error)."""
    found = json.loads(incus("list", f"{remote}:", "--format", "json").stdout or "[]")
    return {i["name"]: i for i in found if i["name"].startswith(f"{prefix}-")}


def images(remote: str, prefix: str) -> list[str]:
    found = json.loads(incus("image", "list", f"{remote}:", "--format", "json").stdout or "[]")
    return [a["name"] for i in found for a in i.get("aliases") or [] if a["name"].startswith(f"{prefix}-")]


def by_worker(found: dict[str, dict], prefix: str, checkout: str) -> dict[str, dict]:
    """The instances of a checkout's workers, by worker id."""
    return {n.rsplit("-", 1)[1]: i for n, i in found.items() if n.startswith(f"{prefix}-{checkout}-gw")}


def members(remote: str) -> dict[str, str]:
    found = json.loads(incus("cluster", "list", f"{remote}:", "--format", "json").stdout or "[]")
    return {m["server_name"]: m["status"] for m in found}


def status(project: Path) -> dict[str, dict]:
    proc = run_orch(project, "status", "--json")
    assert proc.returncode == 0, proc.stderr
    return {r["worker"]: r for r in json.loads(proc.stdout)}


def script(*args: str) -> None:
    proc = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture
def cluster_project(tmp_path: Path, incus_cluster: str, prefix: str) -> Iterator[Path]:
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        f'[tool.orch]\nprovider = "incus"\nprefix = "{prefix}"\n\n[tool.orch.incus]\nremote = "{incus_cluster}"\n'
    )
    yield project
    if members(incus_cluster).get("m2") != "Online":
        script("start-member", "m2")  # a failed test leaves no member down for the next one
    for _ in range(60):  # a member just started again may answer "not ready" for a while
        doomed = list(instances(incus_cluster, prefix))
        if not doomed or incus("delete", "--force", *(f"{incus_cluster}:{n}" for n in doomed), check=False).returncode == 0:
            break
        time.sleep(1)
    for alias in images(incus_cluster, prefix):
        incus("image", "delete", f"{incus_cluster}:{alias}", check=False)
    assert instances(incus_cluster, prefix) == {}


def test_workers_on_a_two_member_cluster_a_member_lost_mid_run_and_down(
    cluster_project: Path, incus_cluster: str, prefix: str, tmp_path: Path
) -> None:
    remote, project = incus_cluster, cluster_project
    checkout = naming.checkout_id(project / "inventories")

    # target pins a project's workers to one member (a second project, at once removed)
    pinned = tmp_path / "pinned"
    pinned.mkdir()
    (pinned / "pyproject.toml").write_text(
        f'[tool.orch]\nprovider = "incus"\nprefix = "{prefix}"\n\n[tool.orch.incus]\nremote = "{remote}"\ntarget = "m1"\n'
    )
    up = run_orch(pinned, "up", "--workers", "2")
    assert up.returncode == 0, up.stdout + up.stderr
    assert {r["location"] for w, r in status(pinned).items() if w.startswith("gw")} == {"m1"}
    down = run_orch(pinned, "down")
    assert down.returncode == 0, down.stderr
    pinned_checkout = naming.checkout_id(pinned / "inventories")
    assert not [n for n in instances(remote, prefix) if pinned_checkout in n]

    # a new user's run: the example suite, every worker where the cluster placed it
    shutil.copy(ROOT / "examples" / "test_example.py", project / "test_example.py")
    tests = run_pytest(project, "-n", "4", "--orch-up", "-v", "test_example.py")
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "12 passed" in tests.stdout
    rows = status(project)
    where = {w: rows[w]["location"] for w in ("gw0", "gw1", "gw2", "gw3")}
    assert set(where.values()) == {"m1", "m2"}, f"the cluster placed the 4 workers on one member: {where}"
    seen = instances(remote, prefix)
    assert all(seen[f"{prefix}-{checkout}-{w}"]["location"] == m for w, m in where.items())  # as Incus says
    assert rows["baseline"]["state"] == "sealed"
    assert images(remote, prefix)  # the baseline as an image: each member fetches it once

    # a hard reset on each member: a new instance there, its proofs gone
    for member in ("m1", "m2"):
        worker = next(w for w, m in where.items() if m == member)
        vm = f"{prefix}-{checkout}-{worker}"
        before = seen[vm]["created_at"]
        reset = run_orch(project, "reset", worker)
        assert reset.returncode == 0, reset.stdout + reset.stderr
        after = instances(remote, prefix)[vm]
        assert after["created_at"] != before and after["status"] == "Running"
        proofs = incus("exec", f"{remote}:{vm}", "--", "sh", "-c", "ls /var/lib/orch/proofs 2>/dev/null | wc -l").stdout
        assert proofs.strip() == "0"

    # m2 is killed in the middle of a run: only the tests on its workers fail, naming it
    # (where they are now: a reset's new instance is placed by the cluster too)
    rows = status(project)
    where = {w: rows[w]["location"] for w in ("gw0", "gw1", "gw2", "gw3")}
    assert where == {w: i["location"] for w, i in by_worker(instances(remote, prefix), prefix, checkout).items()}
    lost = sorted(w for w, m in where.items() if m == "m2")
    kept = sorted(w for w, m in where.items() if m == "m1")
    assert lost and kept, f"after the resets the cluster holds every worker on one member: {where}"
    (project / "test_slow.py").write_text(SLOW_SUITE)
    argv = ["python", "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly", "-n", "4", "test_slow.py"]
    run = subprocess.Popen(
        [*argv, "--junitxml", "junit.xml"],
        cwd=project,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    while len(list((project / "ran").glob("*"))) < 6 and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    script("stop-member", "m2")
    try:
        out, _ = run.communicate(timeout=240)  # a command in flight on m2 is ended by the connector's watchdog
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert run.returncode != 0, out
    ran = {p.name: p.read_text() for p in (project / "ran").glob("*")}
    failed = {}
    for case in ElementTree.parse(project / "junit.xml").iter("testcase"):
        problem = case.find("failure") if case.find("failure") is not None else case.find("error")
        if problem is not None:
            failed[case.get("name", "").removeprefix("test_slow[").rstrip("]")] = problem.get("message", "")
    assert failed, out
    assert {ran[n] for n in failed if n in ran} <= set(lost), (failed, ran, where)  # only m2's workers' tests
    assert all("cluster member m2" in message for message in failed.values()), failed
    assert {ran[n] for n in ran if n not in failed} & set(kept)  # m1's workers went on

    # while m2 is down: status says where, sweep judges nothing there, up and down touch nothing there
    rows = status(project)
    assert all(rows[w]["state"].startswith("unreachable") and rows[w]["location"] == "m2" for w in lost), rows
    assert all(rows[w]["state"] == "running" for w in kept)
    sweep = run_orch(project, "sweep", "--json")
    assert sweep.returncode == 0, sweep.stderr
    report = {d["vm"]: d for d in json.loads(sweep.stdout)}
    assert "cluster member m2" in report and report["cluster member m2"]["result"] == "kept"
    up = run_orch(project, "up", "--workers", "4")
    assert up.returncode != 0
    for w in lost:  # one line each, naming the member
        assert f"{w}: failed: its cluster member m2 does not answer" in up.stderr, up.stderr
    assert "cluster member m1" not in up.stdout + up.stderr
    down = run_orch(project, "down")
    assert down.returncode != 0 and "cluster member m2 does not answer" in down.stdout + down.stderr
    assert set(status(project)) >= set(lost)  # their records kept: nothing forgotten

    # m2 back: down leaves both members empty
    script("start-member", "m2")
    down = run_orch(project, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert instances(remote, prefix) == {} and images(remote, prefix) == []
    assert incus("info").returncode == 0  # the machine's own Incus answers still
