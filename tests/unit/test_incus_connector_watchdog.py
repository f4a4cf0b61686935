"""The @incus connector's watchdog (orchestrator/pyinfra/incus_connector.py), against a fake
``incus`` client: on a cluster, an ``incus exec`` running when the member holding the
instance dies never returns; once the cluster lists the instance in status Error on a
member, the watchdog ends this process's ``incus exec`` of it and the command fails in one
line naming the member. A single server's long command, a quick command and other
instances' execs are left alone.

The fake (a script in tmp_path, set as host data ``incus_client``) logs its argv; ``list``
prints the instance with the status and location in ``instance.json``; ``query`` of a
cluster member prints it offline; ``exec`` runs the ``sh -c`` script here (the wrapper's
folder moved into tmp_path) or, while ``hang`` exists, first writes its pid and sleeps that
many seconds, as an exec on a dead member hangs. It runs as ``incus`` (argv[0]), as the real
client does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyinfra.api import Config, Inventory, State, StringCommand
from pyinfra.api.connect import connect_all
from pyinfra.api.exceptions import ConnectError
from pyinfra.api.host import Host

from orchestrator.pyinfra import incus_connector

NAME = "w1"
REMOTE = "orch-cluster"

FAKE = r"""
import json, os, sys, time

here = os.path.dirname(os.path.abspath(__file__))
args = sys.argv[1:]
with open(os.path.join(here, "log"), "a") as log:
    log.write(json.dumps(args) + "\n")
project = ""
if args[:1] == ["--project"]:
    project, args = args[1], args[2:]
verb = args[0]
if verb == "list":
    name = next(a for a in args[1:] if a.startswith("^"))[1:-1]
    with open(os.path.join(here, "instance.json")) as f:
        instance = json.load(f)
    print(json.dumps([{"name": name, **instance}]))
elif verb == "query":
    print(json.dumps({
        "status": "Offline",
        "message": "No heartbeat for 21.770543136s (2026-12-03 13:37:00.988347142 +0000 UTC)",
    }))
elif verb == "exec":
    target, script = args[1], args[args.index("--") + 3]
    hang = os.path.join(here, "hang")
    if os.path.exists(hang):
        with open(os.path.join(here, f"exec-{project}-{target}.pid"), "w") as f:
            f.write(str(os.getpid()))
        with open(hang) as f:
            time.sleep(float(f.read()))
    script = script.replace("/run/orch-exec", os.path.join(here, "orch-exec"))
    os.execvp("sh", ["sh", "-c", script])
else:
    sys.exit(f"Error: the fake incus knows no {verb}")
"""


class Fake:
    """The fake client's folder: its command, what ``list`` says, the hang, the log."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "fake_incus.py").write_text(FAKE)
        self.client = root / "incus"
        # `exec -a`: the process's argv[0] is "incus", as the real client's is
        self.client.write_text(f'#!/bin/bash\nexec -a incus {sys.executable} {root / "fake_incus.py"} "$@"\n')
        self.client.chmod(0o755)
        self.listed("Running", "m2")

    def listed(self, status: str, location: str) -> None:
        (self.root / "instance.json").write_text(json.dumps({"status": status, "location": location}))

    def hang(self, seconds: float) -> None:
        (self.root / "hang").write_text(str(seconds))

    def calls(self, verb: str) -> list[list[str]]:
        log = self.root / "log"
        lines = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        return [argv for argv in lines if verb in argv]

    def exec_pid(self, target: str, project: str = "") -> int:
        return int((self.root / f"exec-{project}-{target}.pid").read_text())

    def spawn_exec(self, target: str, project: str = "") -> subprocess.Popen[bytes]:
        """Another ``incus exec`` of this process, outside the connector (it hangs)."""
        client = ["--project", project] if project else []
        proc = subprocess.Popen(
            [str(self.client), *client, "exec", target, "-T", "--", "sh", "-c", "true"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not (self.root / f"exec-{project}-{target}.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return proc

    def end_hung(self) -> None:
        """Kill what the fake left hanging (by the pids it wrote)."""
        for pid_file in self.root.glob("exec-*.pid"):
            try:
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
            except (OSError, ValueError):
                pass


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def survives(proc: subprocess.Popen[bytes]) -> bool:
    """Whether ``proc`` is still running a moment later (a kill is not instant)."""
    try:
        proc.wait(timeout=0.5)
    except subprocess.TimeoutExpired:
        return True
    return False


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Fake]:
    monkeypatch.setattr(incus_connector, "WATCH_AFTER", 0.2)
    monkeypatch.setattr(incus_connector, "WATCH_EVERY", 0.2)
    made = Fake(tmp_path)
    yield made
    made.end_hung()


def connected(fake: Fake, **data: str) -> Host:
    hosts = [(f"@incus/{NAME}", {"incus_remote": REMOTE, "incus_client": str(fake.client), **data})]
    state = State(Inventory((hosts, {})), Config(CONNECT_TIMEOUT=30))
    connect_all(state)
    host = state.inventory.get_host(f"@incus/{NAME}")
    assert host.connected
    return host


def test_a_hung_exec_on_an_instance_whose_member_is_lost_fails_naming_the_member(fake: Fake) -> None:
    host = connected(fake)
    fake.listed("Error", "m2")
    fake.hang(10)  # longer than any watchdog round: only its kill ends the command early
    with pytest.raises(ConnectError) as failed:
        host.run_shell_command(StringCommand("echo never"))
    message = str(failed.value)
    assert "\n" not in message
    assert f"{REMOTE}:{NAME} is on cluster member m2" in message and "does not answer" in message
    assert "offline: No heartbeat for 21.7s" in message
    assert "2026" not in message and "988347142" not in message
    assert not alive(fake.exec_pid(f"{REMOTE}:{NAME}"))


@pytest.mark.parametrize("status", ["Running", "Error"])
def test_a_long_command_on_a_single_server_is_not_killed(fake: Fake, status: str) -> None:
    fake.listed("Running", "none")  # a single server's location
    host = connected(fake)
    fake.listed(status, "none")  # no member to lose, even when the instance is in Error
    fake.hang(2)
    ok, output = host.run_shell_command(StringCommand("echo finished"))
    assert ok is True and output.stdout == "finished"
    assert not alive(fake.exec_pid(f"{REMOTE}:{NAME}"))  # it ended by itself


def test_a_running_instance_on_a_live_member_is_not_killed(fake: Fake) -> None:
    host = connected(fake)  # Running on m2: its member answers
    fake.hang(1.5)
    status, output = host.run_shell_command(StringCommand("echo finished; echo err >&2"))
    assert status is True and output.stdout == "finished" and output.stderr == "err"


def test_a_quick_command_works_and_the_watchdog_ends_with_it(fake: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    # the watchdog's first look after the quick command has returned, had it outlived it
    monkeypatch.setattr(incus_connector, "WATCH_AFTER", 0.5)
    host = connected(fake)
    status, output = host.run_shell_command(StringCommand("echo out; echo err >&2; exit 3"))
    assert status is False and output.stdout == "out" and output.stderr == "err"
    status, output = host.run_shell_command(StringCommand("echo hello"))
    assert status is True and output.stdout == "hello"
    listed = len(fake.calls("list"))
    time.sleep(1.5)
    assert len(fake.calls("list")) == listed


def test_the_watchdog_kills_only_its_own_instances_exec(fake: Fake) -> None:
    host = connected(fake)
    fake.hang(10)
    others = [f"{REMOTE}:other", f"{REMOTE}:{NAME}0", NAME]  # another instance, a longer name, another remote
    procs = [fake.spawn_exec(target) for target in others]
    try:
        fake.listed("Error", "m2")
        with pytest.raises(ConnectError, match="cluster member m2"):
            host.run_shell_command(StringCommand("echo never"))
        assert not alive(fake.exec_pid(f"{REMOTE}:{NAME}"))
        assert [survives(proc) for proc in procs] == [True] * len(others)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=10)


def test_the_watchdog_spares_the_same_name_in_another_project(fake: Fake) -> None:
    host = connected(fake, incus_project="p1")
    fake.hang(10)
    other = fake.spawn_exec(f"{REMOTE}:{NAME}", project="p2")
    try:
        fake.listed("Error", "m2")
        with pytest.raises(ConnectError, match="cluster member m2"):
            host.run_shell_command(StringCommand("echo never"))
        assert not alive(fake.exec_pid(f"{REMOTE}:{NAME}", project="p1"))
        assert survives(other)
    finally:
        other.kill()
        other.wait(timeout=10)
