"""The pollution check read from the host (providers/overlay.py) on real containers:
Docker and podman, plain (orch-base) and machines (orch-machine, systemd as PID 1). On
each, the provider's own hook gives the overlay checker (never the in-VM one here: a
local engine on overlay storage), and one container goes through what tests do to
workers: nothing (a clean check; on a machine, idling and while the baseline's timers run
their units), a file in /etc, a file deleted, a mode changed, a user and a group added, a
tiny package installed with dpkg, a process left running; then the same undone, then a
restart. What it reports is exactly what was done, and the same, item for item, as what
the in-VM check (orchestrator.core.isolation) reports of the same container at the same
moments (the two run side by side)."""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from backends import remove_podman, remove_prefix, run_pytest

from orchestrator.core.isolation import ExecChecker
from orchestrator.primitives import naming
from orchestrator.primitives.changes import Changes, CheckFailed, Ignore
from orchestrator.primitives.kinds import Kind
from orchestrator.primitives.labels import Owner
from orchestrator.providers.docker import DockerProvider
from orchestrator.providers.overlay import OverlayChecker
from orchestrator.providers.podman import PodmanProvider
from orchestrator.state.checkouts import CheckoutRef
from orchestrator.testing.conformance import contract_settings

#: (provider class, engine fixture, image, machine)
KINDS = {
    "docker": (DockerProvider, "docker_engine", "orch-base:bookworm", False),
    "docker-machine": (DockerProvider, "docker_engine", "orch-machine:bookworm", True),
    "podman": (PodmanProvider, "podman_engine", "localhost/orch-base:bookworm", False),
    "podman-machine": (PodmanProvider, "podman_engine", "localhost/orch-machine:bookworm", True),
}

#: A package of one file, built and installed inside (dpkg-deb, no network); its build
#: folder is under an ignored path.
TINY_DEB = r"""
d=/srv/ignored/deb && mkdir -p $d/DEBIAN $d/usr/share/orch-tiny && echo hi > $d/usr/share/orch-tiny/hello &&
printf 'Package: orch-tiny\nVersion: 1.0\nArchitecture: all\nMaintainer: orch <orch@example.invalid>\nDescription: tiny\n' \
  > $d/DEBIAN/control && dpkg-deb --build $d /srv/ignored/orch-tiny.deb >/dev/null && dpkg -i /srv/ignored/orch-tiny.deb >/dev/null
"""

POLLUTE = (
    r"""
set -e
touch /etc/x
rm /etc/motd
chmod 600 /etc/issue
useradd -m polluter
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
dpkg -r orch-tiny >/dev/null
"""

#: On a machine: a unit that a timer of the baseline starts (its processes run a while)...
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
class Box:
    provider: DockerProvider
    vm: str
    machine: bool

    def sh(self, script: str) -> str:
        result = self.provider.exec(self.vm, ["sh", "-c", script])
        assert result.ok, f"{script}: exit {result.rc}: {result.stderr}"
        return result.stdout

    @property
    def ignore(self) -> Ignore:
        return Ignore.of(["/srv/ignored"], machine=self.machine)

    def put(self, local: Path, remote: str) -> None:
        """Copy a file in as pyinfra's connector for the engine uploads (``docker cp``)."""
        argv = [self.provider.opts.client, "cp", str(local), f"{self.vm}:{remote}"]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr

    def checkers(self) -> tuple[OverlayChecker, ExecChecker]:
        """The provider's checker (the overlay one) and the in-VM one, both armed now."""
        mine = self.provider.pollution_checker(self.vm, self.ignore)
        assert isinstance(mine, OverlayChecker), f"{self.provider.name} fell back to the in-VM check"
        generic = ExecChecker(lambda cmd: self.provider.exec(self.vm, ["sh", "-c", cmd]), self.ignore)
        generic.arm()
        mine.arm()
        return mine, generic


def both(mine: OverlayChecker, generic: ExecChecker) -> Changes:
    """What both say since their last check: the same (the overlay one looks first, so
    the in-VM command's own run is over before either looks again)."""
    changes = mine.check()
    assert generic.check() == changes
    return changes


@pytest.fixture(params=list(KINDS))
def box(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Box]:
    cls, engine, image, is_machine = KINDS[request.param]
    request.getfixturevalue(engine)
    settings = contract_settings(tmp_path / "p", cls.name, image=image, **({"machine": True} if is_machine else {}))
    provider = cls(settings)
    where = CheckoutRef.here(settings.inventory_dir)
    owner = Owner(Kind.WORKER, settings.checkout, where.inventory, where.host, where.fs, "gw0", fingerprint="0123456789ab")
    vm = naming.worker_vm_name(settings.prefix, settings.checkout, "gw0")
    try:
        provider.create(vm, image, owner)
        provider.wait_ready(vm)
        yield Box(provider, vm, is_machine)
    finally:
        provider.delete(vm)
        remove_prefix(settings.prefix)
        if cls is PodmanProvider:
            remove_podman(settings.prefix, tmp_path)


def test_the_check_from_the_host_reports_exactly_what_a_test_did(box: Box, tmp_path: Path) -> None:
    if box.machine:
        box.sh(SLOW_TIMER)  # part of the "baseline": made before the check is armed
    mine, generic = box.checkers()
    assert both(mine, generic) == Changes()
    (tmp_path / "script.sh").write_text("true\n")
    box.put(tmp_path / "script.sh", "/tmp/pyinfra-0123456789abcdef0123456789abcdef01234567")
    assert both(mine, generic) == Changes(), "pyinfra's upload (server.script's copy, its engine's cp) is not the test's"
    if box.machine:
        time.sleep(5)  # a machine idling: journald, logind, dbus
        assert both(mine, generic) == Changes()
        assert box.sh(TIMERS).strip() == "active"
        assert both(mine, generic) == Changes(), "the baseline's timers are not a test's doing"

    box.sh(POLLUTE)
    changes = both(mine, generic)
    assert {"/etc/x", "/home/polluter", "/usr/share/orch-tiny/hello"} <= set(changes.created)
    assert {"/etc/issue", "/etc/passwd", "/etc/group", "/var/lib/dpkg/status"} <= set(changes.changed)
    assert changes.deleted == ("/etc/motd",)
    assert changes.users_added == ("polluter",) and changes.groups_added == ("polluter",)
    assert changes.packages_installed == ("orch-tiny 1.0",) and changes.packages_removed == ()
    assert [p.split(" ", 1)[1] for p in changes.processes] == ["sleep 1000"]
    pid = changes.processes[0].split(" ", 1)[0]
    assert box.sh(f"cat /proc/{pid}/cmdline | tr '\\0' ' '") == "sleep 1000 ", "the pid is the one inside"
    roots = (
        "/etc/",
        "/home/polluter",
        "/usr/share/orch-tiny",
        "/usr/share/doc/orch-tiny",
        "/var/lib/dpkg/",
        "/var/log/",
        "/var/mail/",
    )
    files = [*changes.created, *changes.changed, *changes.deleted]
    assert [p for p in files if not p.startswith(roots)] == []  # nothing ignored, nothing of pyinfra's
    assert both(mine, generic) == Changes()  # the state after one test is the state before the next

    box.sh(UNDO)
    undone = both(mine, generic)
    assert undone.users_removed == ("polluter",) and undone.groups_removed == ("polluter",)
    assert undone.packages_removed == ("orch-tiny 1.0",) and undone.processes == ()
    assert {"/home/polluter", "/usr/share/orch-tiny/hello"} <= set(undone.deleted)

    box.provider.stop(box.vm)
    box.provider.start(box.vm)
    box.provider.wait_ready(box.vm)
    with pytest.raises(CheckFailed, match="cannot tell what changed"):  # the earlier state says nothing now
        mine.check()
    with pytest.raises(CheckFailed, match="cannot tell what changed"):
        generic.check()
    if box.machine:
        time.sleep(2)  # what systemd's boot writes after it says it is running
        mine.arm()
        generic.arm()
    assert both(mine, generic) == Changes()  # armed again on the container that runs now


def test_a_container_that_is_gone_fails_the_check(box: Box) -> None:
    mine, _generic = box.checkers()
    box.provider.delete(box.vm)
    with pytest.raises(CheckFailed, match="gone or stopped"):
        mine.check()


def test_a_remote_engine_falls_back_to_the_in_vm_check(tmp_path: Path, docker_engine: str) -> None:
    settings = contract_settings(tmp_path, "docker", image=docker_engine)
    remote = DockerProvider(settings, engine=f"ssh://nowhere-{secrets.token_hex(4)}.invalid")
    assert remote.pollution_checker("any", Ignore.of()) is None  # and no engine was asked


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

#: The project's conftest: which checker orch made for each worker (the plugin asks the
#: provider), written where the test reads it.
RECORD_CHECKERS = """
from orchestrator.providers.docker import DockerProvider

made = DockerProvider.pollution_checker

def recorded(self, vm, ignore):
    checker = made(self, vm, ignore)
    with open("checkers.txt", "a") as out:
        out.write(type(checker).__name__ + "\\n")
    return checker

DockerProvider.pollution_checker = recorded
"""


def test_over_ssh_only_what_the_tests_did_is_reported(project: Path) -> None:
    """Over ``@ssh`` under ``on-dirty`` on Docker, the plugin's checker is the one read from
    the host, and pyinfra's connection (its sshd, its sftp-server) is not a test's doing."""
    with (project / "pyproject.toml").open("a") as fh:
        fh.write('connector = "ssh"\nisolation = "on-dirty"\n')
    (project / "conftest.py").write_text(RECORD_CHECKERS)
    (project / "test_ssh.py").write_text(SSH_SUITE)
    run = run_pytest(project, "-p", "no:xdist", "--orch-up")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert set((project / "checkers.txt").read_text().split()) == {"OverlayChecker"}
    [path] = (project / "inventories" / ".orch" / "reports").glob("*.json")
    entries = {e["test"].split("::")[1]: e["changes"] for e in json.loads(path.read_text())["pollution"]}
    assert entries == {
        "test_b_uploads": {"created": ["/home/orch/uploaded"]},
        "test_c_leaves_a_process": {"processes": [entries["test_c_leaves_a_process"]["processes"][0]]},
    }
    assert entries["test_c_leaves_a_process"]["processes"][0].endswith(" sleep 1002")
