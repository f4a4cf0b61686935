"""The in-VM pollution check on the real backends: plain containers on Docker and the
emulated OrbStack, machines (systemd as PID 1) on Docker, podman and Incus. On each, one
VM goes through what tests do to workers: nothing (a clean check; on machines while the
baseline's timers run their units), a file in /etc, a file with a tab in its name, a
mode changed, a file deleted, a user and a group added, a tiny package installed with
dpkg, a process left running; then the same undone, then a restart. What the check
reports is exactly what was done: never its own processes, the ignored paths,
pyinfra's temporary files or the timers' work."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from backends import remove_incus, remove_podman, remove_prefix, run_pytest

from orchestrator.core.isolation import ExecChecker
from orchestrator.primitives import naming
from orchestrator.primitives.changes import Changes, CheckFailed, Ignore
from orchestrator.primitives.kinds import Kind
from orchestrator.primitives.labels import Owner
from orchestrator.providers.base import Provider
from orchestrator.providers.docker import DockerProvider
from orchestrator.providers.incus import IncusProvider
from orchestrator.providers.orbstack import OrbStackProvider
from orchestrator.providers.podman import PodmanProvider
from orchestrator.state.checkouts import CheckoutRef
from orchestrator.testing.conformance import contract_settings

FAKES = Path(__file__).resolve().parents[1] / "fakes"

#: (provider class, engine fixture, image, machine)
KINDS = {
    "docker": (DockerProvider, "docker_engine", "orch-base:bookworm", False),
    "docker-machine": (DockerProvider, "docker_engine", "orch-machine:bookworm", True),
    "podman-machine": (PodmanProvider, "podman_engine", "localhost/orch-machine:bookworm", True),
    "incus": (IncusProvider, "incus_engine", "orch-machine/bookworm", True),
    "orbstack": (OrbStackProvider, "docker_engine", "debian:bookworm", False),
}

#: A package of one file, built and installed inside the VM (dpkg-deb, no network); its
#: build folder is under an ignored path.
TINY_DEB = r"""
d=/srv/ignored/deb && mkdir -p $d/DEBIAN $d/usr/share/orch-tiny && echo hi > $d/usr/share/orch-tiny/hello &&
printf 'Package: orch-tiny\nVersion: 1.0\nArchitecture: all\nMaintainer: orch <orch@example.invalid>\nDescription: tiny\n' \
  > $d/DEBIAN/control && dpkg-deb --build $d /srv/ignored/orch-tiny.deb >/dev/null && dpkg -i /srv/ignored/orch-tiny.deb >/dev/null
"""

POLLUTE = (
    r"""
set -e
echo x > /etc/polluted
printf y > "$(printf '/opt/odd name\twith tab')"
chmod 600 /etc/issue
rm /etc/motd
useradd -m polluter
groupadd pgroup
mkdir -p /srv/ignored && echo ignored > /srv/ignored/x
echo pyinfra > /tmp/pyinfra-0123456789abcdef0123456789abcdef01234567
echo run > /run/x
setsid nohup sleep 1000 >/dev/null 2>&1 < /dev/null &
"""
    + TINY_DEB
)

UNDO = r"""
set -e
for d in /proc/[0-9]*; do [ "$(cat $d/cmdline 2>/dev/null | tr '\0' ' ')" != "sleep 1000 " ] || kill ${d#/proc/}; done
userdel -r polluter 2>/dev/null
groupdel pgroup
dpkg -r orch-tiny >/dev/null
"""

#: On a machine: a unit that a timer of the baseline starts (its processes run for a while).
SLOW_TIMER = r"""
printf '[Timer]\nOnCalendar=yearly\n' > /etc/systemd/system/orch-slow.timer
printf '[Service]\nExecStart=/bin/sh -c "sleep 300 & sleep 301"\n' > /etc/systemd/system/orch-slow.service
systemctl daemon-reload
"""
#: ... and the baseline's own timers' units, started as their timers would.
TIMERS = (
    "systemctl start dpkg-db-backup.service apt-daily.service systemd-tmpfiles-clean.service e2scrub_all.service; "
    "systemctl start --no-block orch-slow.service; sleep 1; systemctl is-active orch-slow.service"
)


@dataclass
class Machine:
    provider: Provider
    vm: str
    machine: bool

    def sh(self, script: str) -> str:
        result = self.provider.exec(self.vm, ["sh", "-c", script])
        assert result.ok, f"{script}: exit {result.rc}: {result.stderr}"
        return result.stdout

    def put(self, local: Path, remote: str) -> None:
        """Copy a file in as pyinfra's connector for the backend uploads."""
        cli = {"docker": ["docker", "cp"], "podman": ["podman", "cp"], "incus": ["incus", "file", "push"]}
        if self.provider.name == "orbstack":
            argv = ["orbctl", "push", "-m", self.vm, str(local), remote]
        else:
            sep = "" if self.provider.name == "incus" else ":"
            argv = [*cli[self.provider.name], str(local), f"{self.vm}{sep}{remote}"]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr

    def checker(self) -> ExecChecker:
        ignore = Ignore.of(["/srv/ignored"], machine=self.machine)
        return ExecChecker(lambda cmd: self.provider.exec(self.vm, ["sh", "-c", cmd]), ignore)


@pytest.fixture(params=list(KINDS))
def machine(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Machine]:
    cls, engine, image, is_machine = KINDS[request.param]
    request.getfixturevalue(engine)
    if cls is OrbStackProvider:
        monkeypatch.setenv("PATH", f"{FAKES}{os.pathsep}{os.environ['PATH']}")
    extra = {"machine": True} if is_machine and cls is not IncusProvider else {}
    settings = contract_settings(tmp_path / "p", cls.name, image=image, **extra)
    provider = cls(settings)
    where = CheckoutRef.here(settings.inventory_dir)
    owner = Owner(Kind.WORKER, settings.checkout, where.inventory, where.host, where.fs, "gw0", fingerprint="0123456789ab")
    vm = naming.worker_vm_name(settings.prefix, settings.checkout, "gw0")
    try:
        provider.create(vm, image, owner)
        provider.wait_ready(vm)
        yield Machine(provider, vm, is_machine)
    finally:
        provider.delete(vm)
        remove_prefix(settings.prefix)
        if cls is PodmanProvider:
            remove_podman(settings.prefix, tmp_path)
        if cls is IncusProvider:
            remove_incus(settings.prefix)


def paths(changes: Changes) -> list[str]:
    return [*changes.created, *changes.changed, *changes.deleted]


def test_the_check_reports_exactly_what_a_test_did(machine: Machine, tmp_path: Path) -> None:
    if machine.machine:
        machine.sh(SLOW_TIMER)  # part of the "baseline": made before the check is armed
    checker = machine.checker()
    checker.arm()
    assert checker.check() == Changes()  # nothing happened: the check's own work is not reported
    (tmp_path / "script.sh").write_text("true\n")
    machine.put(tmp_path / "script.sh", "/tmp/pyinfra-0123456789abcdef0123456789abcdef01234567")
    assert checker.check() == Changes(), "pyinfra's upload (server.script's copy) is not the test's"
    if machine.machine:
        assert machine.sh(TIMERS).strip() == "active"
        assert checker.check() == Changes(), "the baseline's timers are not a test's doing"

    machine.sh(POLLUTE)
    changes = checker.check()
    assert {"/etc/polluted", "/opt/odd name\twith tab", "/home/polluter", "/usr/share/orch-tiny/hello"} <= set(changes.created)
    assert {"/etc/issue", "/etc/passwd", "/etc/group", "/var/lib/dpkg/status"} <= set(changes.changed)
    assert changes.deleted == ("/etc/motd",)
    assert changes.users_added == ("polluter",) and changes.groups_added == ("pgroup", "polluter")
    assert changes.packages_installed == ("orch-tiny 1.0",) and changes.packages_removed == ()
    assert [p.split(" ", 1)[1] for p in changes.processes] == ["sleep 1000"]
    roots = (
        "/etc/",
        "/opt/",
        "/home/polluter",
        "/usr/share/orch-tiny",
        "/usr/share/doc/orch-tiny",
        "/var/lib/dpkg/",
        "/var/log/",
        "/var/mail/",
    )
    assert [p for p in paths(changes) if not p.startswith(roots)] == []  # nothing under ignored paths or of pyinfra's
    assert checker.check() == Changes()  # the state after one test is the state before the next

    machine.sh(UNDO)
    undone = checker.check()
    assert undone.users_removed == ("polluter",) and undone.groups_removed == ("pgroup", "polluter")
    assert undone.packages_removed == ("orch-tiny 1.0",) and undone.packages_installed == ()
    assert undone.processes == () and undone.users_added == ()
    assert {"/home/polluter", "/usr/share/orch-tiny/hello"} <= set(undone.deleted)

    machine.provider.stop(machine.vm)
    machine.provider.start(machine.vm)
    machine.provider.wait_ready(machine.vm)
    with pytest.raises(CheckFailed, match="cannot tell what changed"):  # the earlier state says nothing now
        checker.check()
    assert checker.check() == Changes()  # armed again by the check that could not tell


def test_a_vm_that_is_gone_fails_the_check(tmp_path: Path, docker_engine: str) -> None:
    provider = DockerProvider(contract_settings(tmp_path, "docker", image=docker_engine))
    checker = ExecChecker(lambda cmd: provider.exec(f"nosuchvm-{secrets.token_hex(4)}", ["sh", "-c", cmd]), Ignore.of())
    with pytest.raises(CheckFailed):
        checker.check()


SSH_SUITE = """
import io
from pyinfra.operations import files

def test_a_connects(orch_worker):
    assert orch_worker.run("id -un").stdout.strip() == "orch"

def test_b_uploads(orch_worker):  # pyinfra keeps an sftp-server for its uploads
    orch_worker.operation(files.put, src=io.StringIO("x"), dest="/home/orch/uploaded")

def test_c_leaves_a_process(orch_worker):
    orch_worker.run("nohup sleep 1002 >/dev/null 2>&1 </dev/null &")

def test_d_runs_sudo(orch_worker):
    orch_worker.run("sudo -n true")
"""


def test_an_ssh_connection_is_not_a_tests_doing(project: Path) -> None:
    """Over ``@ssh`` (pyinfra connects during the test, keeps its connection and an
    sftp-server), only what the tests did is reported."""
    with (project / "pyproject.toml").open("a") as fh:
        fh.write('connector = "ssh"\nisolation = "on-dirty"\n')
    (project / "conftest.py").write_text(
        "from orchestrator.providers.docker import DockerProvider\n\n"
        "DockerProvider.pollution_checker = lambda self, vm, ignore: None  # the in-VM check, as on Incus\n"
    )
    (project / "test_ssh.py").write_text(SSH_SUITE)
    run = run_pytest(project, "-p", "no:xdist", "--orch-up")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    entries = {e["test"].split("::")[1]: e["changes"] for e in report(project)["pollution"]}
    assert entries == {
        "test_b_uploads": {"created": ["/home/orch/uploaded"]},
        "test_c_leaves_a_process": {"processes": [entries["test_c_leaves_a_process"]["processes"][0]]},
    }
    assert entries["test_c_leaves_a_process"]["processes"][0].endswith(" sleep 1002")


def report(project: Path) -> dict:
    [path] = (project / "inventories" / ".orch" / "reports").glob("*.json")
    return json.loads(path.read_text())
