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


def _errors(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("Error:")]


def test_a_symlinked_ssh_folder_is_refused_and_never_followed(project: Path, prefix: str, backend) -> None:
    """Orch never follows a symlink it did not make."""
    with_ssh(project)
    elsewhere = project / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    elsewhere.chmod(0o755)
    (elsewhere / ".gitignore").write_text("mine\n")
    (project / "inventories" / ".orch").mkdir(parents=True)
    (project / "inventories" / ".orch" / "ssh").symlink_to(elsewhere)
    up = run_orch(project, "up", "--workers", "1")
    assert up.returncode == 1
    assert len(_errors(up)) == 1 and "symlink" in _errors(up)[0] and ".orch/ssh" in _errors(up)[0], up.stderr
    assert "Traceback" not in up.stderr
    assert sorted(p.name for p in elsewhere.iterdir()) == [".gitignore"]  # no keys written there
    assert (elsewhere / ".gitignore").read_text() == "mine\n"
    assert stat.S_IMODE(elsewhere.stat().st_mode) == 0o755
    assert backend.names(prefix) == []  # refused before any VM was made


MISSING_KEY_SUITE = """
def test_reaches_it(orch_worker):
    assert orch_worker.run("cat /etc/orch-worker").stdout.strip() == "gw0"
"""


def test_a_deleted_private_key_is_named_by_every_command_and_repaired_by_up(project: Path) -> None:
    """The private key deleted between `orch up` and pytest."""
    with_ssh(project)
    (project / "test_key.py").write_text(MISSING_KEY_SUITE)
    assert run_orch(project, "up", "--workers", "1").returncode == 0
    key = project / "inventories" / ".orch" / "ssh" / "id_ed25519"
    old = key.with_suffix(".pub").read_text()
    key.unlink()

    for args in (["reset", "gw0"], ["exec", "gw0", "--", "true"]):
        proc = run_orch(project, *args)
        assert proc.returncode != 0, args
        assert len(_errors(proc)) == 1 and "orch up" in _errors(proc)[0] and str(key) in _errors(proc)[0], proc.stderr
        assert "No such private key" not in proc.stderr and "Traceback" not in proc.stderr
    tests = run_pytest(project, "-n", "1")
    assert tests.returncode != 0
    assert "orch up" in tests.stdout and str(key) in tests.stdout, tests.stdout
    assert "DeployError" not in tests.stdout and "Traceback" not in tests.stdout

    up = run_orch(project, "up", "--workers", "1")
    assert up.returncode == 0, up.stderr
    assert "made a new one" in up.stderr  # said, not a silent "reused"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and key.with_suffix(".pub").read_text() != old
    tests = run_pytest(project, "-n", "1")
    assert tests.returncode == 0, tests.stdout + tests.stderr  # the worker takes the new key
    assert run_orch(project, "reset", "gw0").returncode == 0  # so does a VM made from the baseline
    exec_ = run_orch(project, "exec", "gw0", "--", "cat", "/etc/orch-worker")
    assert (exec_.returncode, exec_.stdout.strip()) == (0, "gw0"), exec_.stderr
