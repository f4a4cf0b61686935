"""Workers reached over SSH (``connector = "ssh"``): pyinfra's ``@ssh`` connector into a
real sshd in each container, a key pair per checkout, a non-root user with sudo, host
keys checked strictly. Provisioning, reset, the fixtures, `orch exec` and the pyinfra CLI
all go through SSH."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

from backends import run_orch, run_pytest

SUITE = """
import io
from pyinfra.facts.server import User
from pyinfra.operations import files, server


def test_as_production_does(orch_worker, orch_host):
    assert orch_worker.host_data["ssh_user"] == "orch"
    assert orch_worker.fact(User) == "orch"
    assert orch_worker.run("id -un").stdout.strip() == "orch"
    orch_worker.operation(server.shell, commands=["id -u > /root/uid"], _sudo=True)
    assert orch_worker.run("sudo -n cat /root/uid").stdout.strip() == "0"
    orch_worker.operation(files.put, src=io.StringIO("uploaded"), dest="/home/orch/file")
    assert orch_worker.run("cat /home/orch/file").stdout == "uploaded"
    orch_worker.operation(files.directory, path="/srv/app", mode="750", _sudo=True)
    assert orch_host.file("/srv/app").mode == 0o750
    orch_worker.reset()
    assert orch_worker.run("test -e /srv/app", check=False).rc != 0  # back at the baseline, over SSH again
"""


def with_ssh(project: Path) -> None:
    with (project / "pyproject.toml").open("a") as fh:
        fh.write('connector = "ssh"\n')


def test_workers_over_ssh_end_to_end(project: Path) -> None:
    with_ssh(project)
    (project / "test_ssh.py").write_text(SUITE)
    up = run_orch(project, "up", "--workers", "2")
    assert up.returncode == 0, up.stderr
    ssh = project / "inventories" / ".orch" / "ssh"
    key = ssh / "id_ed25519"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and (ssh / ".gitignore").read_text() == "*\n"
    hosts = json.loads(run_orch(project, "status", "--json").stdout)
    workers = [r for r in hosts if r["kind"] == "worker"]
    assert [r["state"] for r in workers] == ["running", "running"]
    text = (project / "inventories" / "gw1.py").read_text()
    assert "'ssh_user': 'orch'" in text and "'ssh_strict_host_key_checking': 'yes'" in text and "@docker" not in text
    host_key = (ssh / "host_ed25519.pub").read_text().split()[1]
    known = [f.read_text().split() for f in (ssh / "known_hosts.d").iterdir()]
    assert len(known) >= 2 and all(line[1:] == ["ssh-ed25519", host_key] for line in known)  # orch's own host key
    tests = run_pytest(project, "-n", "2")
    assert tests.returncode == 0, tests.stdout + tests.stderr
    exec_ = run_orch(project, "exec", "gw1", "--", "sh", "-c", "id -un; sudo -n cat /etc/orch-worker; exit 3")
    assert (exec_.returncode, exec_.stdout.split()) == (3, ["orch", "gw1"])
    pyinfra = Path(sys.executable).with_name("pyinfra")
    cli = subprocess.run(
        [str(pyinfra), "-y", "inventories/workers.py", "--limit", "gw0", "exec", "--", "sudo", "-n", "id", "-u"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0, cli.stderr
    reset = run_orch(project, "reset", "gw0")
    assert reset.returncode == 0, reset.stderr
    assert run_orch(project, "exec", "gw0", "--", "true").returncode == 0  # the new VM's host key was recorded
    assert run_orch(project, "down").returncode == 0
