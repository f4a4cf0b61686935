"""On the real Docker engine: spares and baselines are never handed out or
lost by mistake. Each test reproduces a defect found by using orch as a user would
(docs/RELIABILITY.md) and checks that it no longer happens."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

from backends import both_providers, run_orch, write_pyproject

from orchestrator.core import settings as config
from orchestrator.core.context import Context, Refill
from orchestrator.core.maintainer import spawn_maintainer
from orchestrator.verbs.down import down
from orchestrator.verbs.reset import reset
from orchestrator.verbs.up import up


def make(project: Path, *, refill: Refill | None = spawn_maintainer, **overrides: object) -> Context:
    return Context(config.load(cwd=project, env={}, overrides=overrides), refill=refill)


def docker(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)


def exists(vm: str) -> bool:
    return docker("container", "inspect", vm).returncode == 0


# -- 4. repair never turns a swapped-out, dirty VM into a standby ---------------------------


@both_providers
def test_repair_deletes_a_swapped_out_dirty_vm_instead_of_making_it_a_standby(project: Path, backend) -> None:
    """standby = true; a test dirties gw0; the swap moves its VM to the trash; the maintainer
    never empties it (killed); the state file is lost. `orch repair` must keep gw1's real
    standby and delete the trash, and the next `orch reset gw0` must not bring /etc/dirty back.
    Docker tells them apart by a label, OrbStack (no labels) by what orch wrote inside."""
    orch = make(project, standby=True, refill=None)  # the maintainer that would empty the trash was killed
    assert all(r.ok for r in up(orch, 2))
    gw0 = orch.vm_name("gw0")
    assert backend.sh(gw0, "touch /etc/dirty").returncode == 0
    [swapped] = reset(orch, ["gw0"])
    assert swapped.action == "swapped", swapped
    data = orch.store.read()
    [trash], standby = data.trash, data.standbys["gw1"].vm
    assert backend.sh(trash, "test -e /etc/dirty").returncode == 0
    orch.store.path.unlink()  # the state file is lost

    repaired = run_orch(project, "repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert not backend.exists(trash), repaired.stderr  # deleted, not recorded as gw0's standby
    assert {w: s.vm for w, s in make(project).store.read().standbys.items()} == {"gw1": standby}

    again = run_orch(project, "reset", "gw0")
    assert again.returncode == 0, again.stdout + again.stderr
    assert backend.sh(gw0, "test -e /etc/dirty").returncode == 1  # a clean gw0
    assert run_orch(project, "down").returncode == 0  # waits for the maintainer the reset started


# -- 7. a maintainer whose checkout is deleted stops, and sweep finds what it made ---------

SLOW_PERSONALIZE = """
import os
from pyinfra.api import deploy
from pyinfra.operations import server
from orchestrator.deploys.provision import personalize as orchs

MARKS = {marks!r}


@deploy("slow personalize")
def personalize():
    if os.path.exists(os.path.join(MARKS, "slow")):  # the maintainer's refill: takes a while
        with open(os.path.join(MARKS, "personalizing"), "w") as fh:
            fh.write(str(os.getpid()))
        server.shell(name="take a while", commands=["sleep 8"])
    orchs()
"""


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def test_rm_rf_of_a_checkout_while_its_maintainer_refills(project: Path, tmp_path_factory, prefix: str) -> None:
    """`rm -rf` of the checkout while `orch maintain` makes a standby: the maintainer made
    `inventories/.orch` again (its state holding only what it made next), and sweep then
    kept everything as "cannot be seen from here". It must stop and recreate nothing;
    sweep (from anywhere on this machine) deletes all of it as orphans of a gone checkout."""
    marks = tmp_path_factory.mktemp("marks")
    (project / "deploys").mkdir()
    (project / "deploys" / "__init__.py").write_text("")
    (project / "deploys" / "slow.py").write_text(SLOW_PERSONALIZE.format(marks=str(marks)))
    text = (project / "pyproject.toml").read_text()
    (project / "pyproject.toml").write_text(
        text.replace("[tool.orch]\n", '[tool.orch]\npool = 1\nstandby = true\npersonalize = "deploys.slow:personalize"\n')
    )
    assert run_orch(project, "up", "--workers", "1").returncode == 0
    (marks / "slow").write_text("")
    swapped = run_orch(project, "reset", "gw0")  # swaps the standby in; a maintainer makes a new one
    assert swapped.returncode == 0 and "swapped" in swapped.stdout + swapped.stderr, swapped.stdout + swapped.stderr
    deadline = time.time() + 120
    while not (marks / "personalizing").exists() and time.time() < deadline:
        time.sleep(0.1)
    pid = int((marks / "personalizing").read_text())
    shutil.rmtree(project)  # rm -rf of the checkout, mid-refill
    deadline = time.time() + 120
    while alive(pid) and time.time() < deadline:
        time.sleep(0.2)
    assert not alive(pid), "the maintainer did not stop"
    assert not project.exists(), sorted(str(p.relative_to(project)) for p in project.rglob("*"))  # nothing made again

    elsewhere = tmp_path_factory.mktemp("elsewhere")
    write_pyproject(elsewhere, "docker", prefix)
    swept = run_orch(elsewhere, "sweep", "--json")
    assert swept.returncode == 0, swept.stderr
    decisions = [d for d in json.loads(swept.stdout) if d["vm"].startswith(prefix)]
    assert decisions and all(d["result"] == "deleted" and "gone" in d["reason"] for d in decisions), decisions
    assert {d["kind"] for d in decisions} >= {"worker", "standby", "oneoff", "baseline"}
    left = docker("ps", "-a", "--format", "{{.Names}}").stdout.split()
    assert [n for n in left if n.startswith(prefix)] == []


# -- 9. a sweep while `orch up` seals the baseline keeps the new image ----------------------


def test_a_sweep_while_up_seals_the_baseline_keeps_the_image(project: Path) -> None:
    """The image is committed, then the baseline container removed, then the image's id
    recorded: a sweep in that window found an image the state did not record and deleted
    it. The state must know the image before it exists, as it knows every VM."""
    from orchestrator.providers.registry import get_provider
    from orchestrator.verbs.sweep import Sweeper

    orch = make(project)
    baseline_vm, decisions = "", []
    real_delete = orch.provider.delete

    def delete(vm: str) -> None:
        if "-zbaseline-" in vm and not decisions:  # the seal: committed, not yet recorded
            sweeper = Sweeper(orch.settings, get_provider(orch.settings))  # another process's sweep
            decisions.extend(sweeper.execute(sweeper.plan()))
        real_delete(vm)

    orch.provider.delete = delete  # type: ignore[method-assign]
    try:
        assert all(r.ok for r in up(orch, 1))
        data = orch.store.read()
        assert data.baseline is not None
        baseline_vm = data.baseline.seal["tag"]
        images = [d for d in decisions if d.kind == "baseline" and d.ref]  # the image, not the container
        assert [(d.vm, d.result) for d in images] == [(baseline_vm, "kept")], [(d.vm, d.result, d.reason) for d in decisions]
        assert docker("image", "inspect", data.baseline.ref).returncode == 0
        [result] = reset(orch, ["gw0"])  # cloned from that image
        assert result.ok and result.action == "reset", result.error
    finally:
        orch.provider.delete = real_delete  # type: ignore[method-assign]
        down(orch)
