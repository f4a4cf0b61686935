"""Incus end to end, as a user runs it: the example suite with ``pytest -n 2 --orch-up`` in
a project that names only ``provider = "incus"`` (every worker a system container from
the machine image), then ``orch reset``, ``orch sweep`` and ``orch down``; and workers
reached over SSH at their addresses (``connector = "ssh"``)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from backends import IncusBackend, gone_checkout, remove_incus, run_orch, run_pytest

from orchestrator.primitives import naming

ROOT = Path(__file__).resolve().parents[2]
incus = IncusBackend()


@pytest.fixture
def incus_project(tmp_path: Path, incus_engine: str, prefix: str) -> Iterator[Path]:
    """A project on Incus with a prefix of its own; its instances are deleted afterwards,
    and checked gone."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text(f'[tool.orch]\nprovider = "incus"\nprefix = "{prefix}"\n')
    yield project
    remove_incus(prefix)
    assert incus.names(prefix) == []


def proofs(vm: str) -> dict[str, str]:
    """The proof files the example suite leaves in a VM: {test name: worker id it ran under}."""
    out = incus.sh(vm, "cd /var/lib/orch/proofs 2>/dev/null && grep -H . * || true").stdout
    return dict(line.split(":", 1) for line in out.split())


def test_the_example_suite_reset_sweep_and_down_on_incus(incus_project: Path, prefix: str, tmp_path: Path) -> None:
    project = incus_project
    shutil.copy(ROOT / "examples" / "test_example.py", project / "test_example.py")
    tests = run_pytest(project, "-n", "2", "--orch-up", "-v")
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "12 passed" in tests.stdout
    checkout = naming.checkout_id(project / "inventories")
    gw0, gw1 = (f"{prefix}-{checkout}-{w}" for w in ("gw0", "gw1"))
    seen = {test: worker for vm in (gw0, gw1) for test, worker in proofs(vm).items() if worker == vm.rsplit("-", 1)[1]}
    assert len(seen) == 12 and set(seen.values()) == {"gw0", "gw1"}  # every test on its own worker's machine
    assert f"@incus/{gw1}" in (project / "inventories" / "gw1.py").read_text()
    golden = [n for n in incus.names(prefix) if "-zbaseline-" in n]
    assert len(golden) == 1 and not incus.running(golden[0])  # the sealed golden instance, stopped

    # a hard reset: gw0 is a new copy of the golden instance (its proofs gone), gw1 untouched
    gw0_was, gw1_was = incus.identity(gw0), incus.identity(gw1)
    reset = run_orch(project, "reset", "gw0")
    assert reset.returncode == 0, reset.stderr
    assert incus.identity(gw0) != gw0_was and proofs(gw0) == {}
    assert incus.sh(gw0, "cat /etc/orch-worker; hostname").stdout.split() == ["gw0", gw0]
    assert incus.identity(gw1) == gw1_was and proofs(gw1)

    # sweep: an instance of a checkout whose folder is gone is deleted; this checkout's are kept
    orphan = f"{prefix}-{prefix[1:]}-gw0"
    keys = [a for k, v in gone_checkout(tmp_path, prefix[1:]).items() for a in ("-c", f"user.{k}={v}")]
    subprocess.run(["incus", "init", "orch-machine/bookworm", orphan, *keys], check=True, capture_output=True)
    swept = run_orch(project, "sweep", "--json")
    assert swept.returncode == 0, swept.stderr
    report = {d["vm"]: d for d in json.loads(swept.stdout)}
    assert report[orphan]["result"] == "deleted" and not incus.exists(orphan)
    assert report[gw0]["result"] == "kept" and incus.running(gw0) and incus.running(gw1)

    down = run_orch(project, "down")
    assert down.returncode == 0, down.stderr
    assert incus.names(prefix) == []  # no worker, no golden instance left


SSH_SUITE = """
from pyinfra.facts.server import User


def test_over_ssh(orch_worker):
    assert orch_worker.host_data["ssh_hostname"].count(".") == 3
    assert orch_worker.fact(User) == "orch"
    assert orch_worker.run("sudo -n systemctl is-system-running").stdout.strip() in ("running", "degraded")
"""


def test_workers_over_ssh_at_their_addresses(incus_project: Path, prefix: str) -> None:
    """The SSH connector reaches each worker at the address Incus's DHCP gave it (orch
    installs openssh-server in the baseline with apt-get: the machine's DNS works too)."""
    with (incus_project / "pyproject.toml").open("a") as fh:
        fh.write('connector = "ssh"\n')
    (incus_project / "test_ssh.py").write_text(SSH_SUITE)
    tests = run_pytest(incus_project, "-n", "1", "--orch-up")
    assert tests.returncode == 0, tests.stdout + tests.stderr
    exec_ = run_orch(incus_project, "exec", "gw0", "--", "sh", "-c", "id -un; exit 3")
    assert (exec_.returncode, exec_.stdout.split()) == (3, ["orch"]), exec_.stderr
    assert run_orch(incus_project, "down").returncode == 0
