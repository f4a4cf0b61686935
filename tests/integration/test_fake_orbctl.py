"""tests/fakes/orbctl, the orbctl TEST DOUBLE, against the real Docker engine: the JSON
shapes, texts and exit codes of OrbStack's orbctl that orch and pyinfra-orbstack depend
on, the knobs (failures, hangs, latency), and the real pyinfra-orbstack package (its
@orbstack connector and its vm_* operations) running on it.

Each test is an emulated OrbStack installation of its own (ORBCTL_FAKE_INSTANCE and
ORBCTL_FAKE_STATE_DIR), so `orbctl stop` without a name stops only this test's machines;
its machines are deleted afterwards."""

from __future__ import annotations

import ipaddress
import json
import os
import platform
import re
import secrets
import shlex
import subprocess
import time
from pathlib import Path

import pytest

FAKES = Path(__file__).resolve().parents[1] / "fakes"
NATIVE_ARCH = "arm64" if platform.machine().lower() in ("arm64", "aarch64") else "amd64"
ULID = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$")
NOT_RUNNING = "OrbStack is not running"


def transient_texts(command: str, name: str) -> set[str]:
    """OrbStack's own texts for failures a retry may cure (see the emulator's SOURCES)."""
    common = {
        "start VM: timed out waiting for VM to start",
        "timed out waiting for services to start",
        f'Post "http://sconrpc": dial unix {os.path.expanduser("~")}/.orbstack/run/sconrpc.sock: connect: connection refused',
    }
    if command == "create":
        return common | {
            f"[-32098] create '{name}': setup: machine didn't start in 30s (missing IP address)",
            f"[-32098] create '{name}': start: machine did not start: {name} - STOPPED",
        }
    if command in ("start", "restart"):
        return common | {f"[-32098] machine did not start: {name} - STOPPED"}
    return common


def ulid_time(ulid: str) -> float:
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    ms = 0
    for ch in ulid[:10]:
        ms = ms * 32 + alphabet.index(ch)
    return ms / 1000


class Fake:
    def __init__(self, instance: str) -> None:
        self.instance = instance

    def name(self, what: str = "m") -> str:
        """A machine name unique to this test (and the prefix of its clone images)."""
        return f"{self.instance}-{what}"

    def __call__(self, *args: str, timeout: float = 120, input: str | None = None, **knobs: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["orbctl", *args], capture_output=True, text=True, timeout=timeout, input=input, env={**os.environ, **knobs}
        )

    def popen(self, *args: str, **knobs: str) -> subprocess.Popen:
        """orbctl in the background, as a caller that may give up on it (kill it)."""
        return subprocess.Popen(
            ["orbctl", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **knobs}
        )

    def state_dir(self) -> Path:
        return Path(os.environ["ORBCTL_FAKE_STATE_DIR"])

    def names(self) -> list[str]:
        return [m["name"] for m in self.json("list", "-f", "json")]

    def json(self, *args: str) -> object:
        proc = self(*args)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def record(self, vm: str) -> dict:
        return self.json("info", vm, "-f", "json")["record"]


def docker_out(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True).stdout.strip()


def wait_for(what: str, check, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def orbctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The emulator first on PATH (as pyinfra-orbstack finds it), in an OrbStack of this
    test's own; every machine and clone image of it is removed at teardown."""
    for key in list(os.environ):
        if key.startswith("ORBCTL_FAKE_"):
            monkeypatch.delenv(key)
    instance = f"tfo{secrets.token_hex(3)}"
    monkeypatch.setenv("PATH", f"{FAKES}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("ORBCTL_FAKE_STATE_DIR", str(tmp_path / "orbctl-state"))
    monkeypatch.setenv("ORBCTL_FAKE_INSTANCE", instance)
    yield Fake(instance)
    ids = docker_out("ps", "-a", "-q", "--filter", f"label=orbfake.instance={instance}").split()
    if ids:
        subprocess.run(["docker", "rm", "-f", "-v", *ids], capture_output=True)
    images = [
        i for i in docker_out("images", "--format", "{{.Repository}}:{{.Tag}}").split() if i.startswith(f"orbfake-{instance}")
    ]
    if images:
        subprocess.run(["docker", "rmi", "-f", *images], capture_output=True)


def test_says_it_is_a_test_double() -> None:
    fake = FAKES / "orbctl"
    head = fake.read_text()[:600]
    assert head.startswith("#!/usr/bin/env python3\n")
    assert "TEST DOUBLE" in head and "NOT OrbStack" in head
    assert os.access(fake, os.X_OK)


def test_create_list_info_have_orbstacks_json_shapes(orbctl: Fake) -> None:
    from pyinfra_orbstack.connector import OrbStackConnector
    from pyinfra_orbstack.operations.vm import build_vm_create_command

    vm = orbctl.name()
    # the command line exactly as pyinfra-orbstack's vm_create builds it (flags last)
    before = time.time()
    create = orbctl(*shlex.split(build_vm_create_command(vm, "ubuntu:22.04", NATIVE_ARCH, "root"))[1:])
    assert create.returncode == 0 and create.stdout == "", create.stderr

    [rec] = orbctl.json("list", "-f", "json")
    assert set(rec) == {"id", "name", "image", "config", "builtin", "state"}
    assert rec["name"] == vm and rec["state"] == "running" and rec["builtin"] is False
    assert rec["image"] == {"distro": "ubuntu", "version": "jammy", "arch": NATIVE_ARCH, "variant": "default"}
    assert rec["config"] == {"isolated": False, "default_username": "root"}
    assert ULID.match(rec["id"]) and before - 1 <= ulid_time(rec["id"]) <= time.time() + 1  # the creation time

    info = orbctl.json("info", vm, "--format", "json")
    assert list(info) == ["record", "disk_size", "ip4", "ip6"]
    assert info["record"] == rec and info["disk_size"] > 0
    ip = docker_out("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", f"orbfake-{vm}")
    assert info["ip4"] == ip and ipaddress.ip_address(info["ip6"]).version == 6
    assert orbctl("info", rec["id"], "-f", "json").stdout == orbctl("info", vm, "-f", "json").stdout  # by id too

    # what pyinfra-orbstack's connector makes of it
    [(name, data, groups)] = list(OrbStackConnector.make_names_data(vm))
    assert name == vm and data["vm_status"] == "running" and data["vm_distro"] == "ubuntu"
    assert data["vm_version"] == "jammy" and data["vm_username"] == "root" and data["vm_id"] == rec["id"]
    assert {"orbstack", "orbstack_running", "orbstack_ubuntu", f"orbstack_{NATIVE_ARCH}"} <= set(groups)

    # the other output forms
    assert orbctl("list", "-q").stdout.split() == [vm]
    assert orbctl("list").stdout.split()[:5] == [vm, "running", "ubuntu", "jammy", NATIVE_ARCH]  # no header off a tty
    assert f"Name: {vm}\nState: running\n" in orbctl("info", vm).stdout
    assert orbctl("list", "-r", "--format=json").stdout == orbctl("list", "-fjson").stdout


def test_errors_have_orbctls_texts_and_exit_codes(orbctl: Fake) -> None:
    vm, missing = orbctl.name(), orbctl.name("gone")
    assert orbctl("create", "debian", vm).returncode == 0

    def fails(*args: str) -> str:
        proc = orbctl(*args)
        assert proc.returncode == 1, (args, proc.stdout, proc.stderr)
        return proc.stderr

    assert fails("create", "debian:bookworm", vm).strip() == f"[-32098] create '{vm}': machine already exists: '{vm}'"
    assert fails("info", missing, "-f", "json").strip() == f"[-32098] machine not found: '{missing}'"
    assert orbctl("info", missing, "-f", "json").stdout == ""
    assert fails("delete", "-f", missing).strip() == f"[-32098] machine not found: '{missing}'"
    assert fails("delete", "-f", vm, missing).strip() == f"[-32098] machine not found: '{missing}'"
    assert orbctl.record(vm)["state"] == "running"  # every name is looked up before anything is deleted
    assert fails("start", missing).strip() == f"[-32098] machine not found: '{missing}'"
    assert fails("clone", missing, orbctl.name("new")).strip() == f"[-32098] machine not found: '{missing}'"
    assert fails("clone", vm, vm).strip() == f"[-32098] machine already exists: '{vm}'"
    bad = "bad_name!"
    assert fails("create", "debian", bad).strip() == f"[-32098] create '{bad}': invalid machine name '{bad}'"
    assert fails("create", "debian", "--", "-bad").strip() == "[-32098] create '-bad': invalid machine name '-bad'"
    assert fails("clone", vm, "x").strip() == "[-32098] invalid machine name 'x'"  # 2 characters at least
    # cobra's own errors: "Error: ...", then the usage
    assert fails("create", "windows", orbctl.name("w")).startswith("Error: invalid distro: windows\nUsage:\n")
    assert fails("create", "-a", "sparc", "debian", orbctl.name("s")).startswith("Error: invalid architecture: sparc\n")
    assert fails("delete").startswith("Error: no machines specified\n")
    assert fails("info").startswith("Error: accepts 1 arg(s), received 0\n")
    assert fails("clone", vm).startswith("Error: accepts 2 arg(s), received 1\n")
    assert fails("list", "extra").startswith('Error: unknown command "extra" for "orbctl list"\n')
    assert fails("list", "--bogus").startswith("Error: unknown flag: --bogus\n")
    assert fails("list", "-z").startswith("Error: unknown shorthand flag: 'z' in -z\n")
    assert fails("list", "-f", "yaml").startswith("Error: invalid format: yaml\n")
    assert fails("info", vm, "-f").startswith("Error: flag needs an argument: 'f' in -f\n")
    assert fails("frobnicate") == 'Error: unknown command "frobnicate" for "orbctl"\nRun \'orbctl --help\' for usage.\n'
    assert "does not implement" in fails("logs", vm)
    # delete works, and the machine is gone
    deleted = orbctl("delete", "--force", vm)
    assert deleted.returncode == 0 and deleted.stderr == ""
    assert fails("info", vm).strip() == f"[-32098] machine not found: '{vm}'"
    assert orbctl.json("list", "-f", "json") == []


def test_clone_comes_back_stopped_and_start_gives_it_an_ip4(orbctl: Fake) -> None:
    src, new = orbctl.name("src"), orbctl.name("new")
    assert orbctl("create", "debian", src).returncode == 0
    assert orbctl("run", "-m", src, "sh", "-c", "echo golden > /root/mark").returncode == 0
    assert orbctl.record(src)["state"] == "running"
    started = docker_out("inspect", "-f", "{{.State.StartedAt}} {{.State.Pid}}", f"orbfake-{src}")
    clone = orbctl("clone", src, new)  # a RUNNING source (OrbStack freezes it while it copies)
    assert clone.returncode == 0 and clone.stdout == "", clone.stderr
    # the source runs on, not restarted: same start time, same init process
    assert docker_out("inspect", "-f", "{{.State.Running}} {{.State.Paused}}", f"orbfake-{src}") == "true false"
    assert docker_out("inspect", "-f", "{{.State.StartedAt}} {{.State.Pid}}", f"orbfake-{src}") == started
    info = orbctl.json("info", new, "-f", "json")
    assert info["record"]["state"] == "stopped" and "ip4" not in info and "ip6" not in info  # omitted, as OrbStack does
    assert info["record"]["image"] == orbctl.record(src)["image"] and info["record"]["id"] != orbctl.record(src)["id"]
    assert orbctl.record(src)["state"] == "running"
    assert [m["name"] for m in orbctl.json("list", "-f", "json")] == sorted([src, new])
    assert [m["name"] for m in orbctl.json("list", "-r", "-f", "json")] == [src]

    assert orbctl("start", new).returncode == 0
    info = orbctl.json("info", new, "-f", "json")
    assert info["record"]["state"] == "running" and ipaddress.ip_address(info["ip4"]).version == 4
    assert orbctl("start", new).returncode == 0  # starting a running machine is a no-op
    assert orbctl("run", "-m", new, "cat", "/root/mark").stdout == "golden\n"
    assert orbctl("run", "-m", new, "hostname").stdout.strip() == new

    image = docker_out("inspect", "-f", "{{.Config.Image}}", f"orbfake-{new}")
    assert image.startswith(f"orbfake-{new}:clone-")
    assert orbctl("delete", "-f", new).returncode == 0
    assert docker_out("images", "-q", image) == ""  # the clone's image goes with it


def test_rename_keeps_the_machine_its_id_and_files_under_the_new_name(orbctl: Fake, tmp_path: Path) -> None:
    old, other, new, third = orbctl.name("old"), orbctl.name("other"), orbctl.name("new"), orbctl.name("third")
    assert orbctl("create", "debian", old).returncode == 0
    assert orbctl("create", "debian", other).returncode == 0
    assert orbctl("run", "-m", old, "sh", "-c", "echo kept > /root/mark").returncode == 0
    rec = orbctl.record(old)
    assert orbctl("default").stdout == f"{old}\n"  # the first machine made

    # a RUNNING machine: it runs on under the new name, with its id, image and config
    started = docker_out("inspect", "-f", "{{.State.StartedAt}} {{.State.Pid}}", f"orbfake-{old}")
    renamed = orbctl("rename", old, new)
    assert (renamed.returncode, renamed.stdout, renamed.stderr) == (0, "", "")
    assert orbctl.record(new) == {**rec, "name": new}
    assert docker_out("inspect", "-f", "{{.State.StartedAt}} {{.State.Pid}}", f"orbfake-{new}") == started  # not restarted
    assert orbctl.names() == sorted([new, other])
    assert orbctl("list", "-q").stdout.split() == sorted([new, other])
    assert old not in orbctl("list").stdout.split()
    assert orbctl.record(rec["id"])["name"] == new  # found by id too
    assert f"Name: {new}\n" in orbctl("info", new).stdout
    # the old name is gone for every command
    gone = f"[-32098] machine not found: '{old}'"
    for args in (
        ["info", old, "-f", "json"],
        ["start", old],
        ["stop", old],
        ["restart", old],
        ["delete", "-f", old],
        ["clone", old, orbctl.name("c")],
        ["default", old],
        ["rename", old, orbctl.name("x")],
    ):
        proc = orbctl(*args)
        assert (proc.returncode, proc.stdout, proc.stderr) == (1, "", gone + "\n"), args
    run_old = orbctl("run", "-m", old, "true")
    assert (run_old.returncode, run_old.stdout, run_old.stderr) == (1, "", "")  # as any missing machine
    # the new name works for run, push, pull, default; the files and the Linux hostname follow
    assert orbctl("run", "-m", new, "cat", "/root/mark").stdout == "kept\n"
    assert orbctl("run", "-m", new, "sh", "-c", "hostname; cat /etc/hostname").stdout == f"{new}\n{new}\n"
    hosts = orbctl("run", "-m", new, "cat", "/etc/hosts").stdout.split()
    assert new in hosts and old not in hosts and "localhost" in hosts
    assert orbctl("default").stdout == f"{new}\n"  # the default machine (kept by id) is the same machine
    assert orbctl("run", "hostname").stdout == f"{new}\n"
    src = tmp_path / "f.txt"
    src.write_text("pushed\n")
    assert orbctl("push", "-m", new, str(src), "/tmp/f.txt").returncode == 0
    back = tmp_path / "back.txt"
    assert orbctl("pull", "-m", new, "/tmp/f.txt", str(back)).returncode == 0 and back.read_text() == "pushed\n"
    assert orbctl("restart", new).returncode == 0
    assert orbctl("run", "-m", new, "hostname").stdout == f"{new}\n"  # also after a restart

    # a STOPPED machine, named by its id: it stays stopped, and starts under the new name
    assert orbctl("stop", new).returncode == 0
    assert orbctl("rename", rec["id"], third).returncode == 0
    assert orbctl.record(third) == {**rec, "name": third, "state": "stopped"}
    assert orbctl.names() == sorted([other, third])
    assert orbctl("info", new).returncode == 1
    assert orbctl("start", third).returncode == 0
    proc = orbctl("run", "-m", third, "sh", "-c", "hostname; cat /etc/hostname /root/mark")
    assert proc.stdout == f"{third}\n{third}\nkept\n"
    # OrbStack stopped and started again: it comes back under its new name
    assert orbctl("stop").returncode == 0 and orbctl("start").returncode == 0
    assert orbctl.record(third)["state"] == "running"
    assert orbctl("run", "-m", third, "hostname").stdout == f"{third}\n"
    # a clone of it is a machine of its own
    copy = orbctl.name("copy")
    assert orbctl("clone", third, copy).returncode == 0
    assert orbctl("run", "-m", copy, "sh", "-c", "hostname; cat /root/mark").stdout == f"{copy}\nkept\n"

    # rename, then delete: nothing of it is left
    assert orbctl("delete", "-f", third).returncode == 0
    assert orbctl.names() == sorted([copy, other])
    assert docker_out("ps", "-a", "-q", "--filter", f"label=orbfake.id={rec['id']}") == ""
    for name in (old, new, third):
        assert docker_out("ps", "-a", "-q", "--filter", f"name=^/orbfake-{name}$") == ""


def test_rename_errors_have_orbctls_texts_and_exit_codes(orbctl: Fake) -> None:
    a, b = orbctl.name("a"), orbctl.name("b")
    for vm in (a, b):
        assert orbctl("create", "debian", vm).returncode == 0
    records = {vm: orbctl.record(vm) for vm in (a, b)}

    def fails(*args: str, **knobs: str) -> str:
        proc = orbctl("rename", *args, **knobs)
        assert (proc.returncode, proc.stdout) == (1, ""), (args, proc.stderr)
        return proc.stderr

    # scon's renameInternalLocked: "machine '%q' already exists" (sic: Go quotes inside quotes)
    assert fails(a, b) == f"[-32098] machine '\"{b}\"' already exists\n"
    assert fails(records[a]["id"], b) == f"[-32098] machine '\"{b}\"' already exists\n"
    missing = orbctl.name("gone")
    for new in (orbctl.name("n"), b, "bad_name!"):  # OLD is looked up first
        assert fails(missing, new) == f"[-32098] machine not found: '{missing}'\n"
    assert fails("k8s", orbctl.name("k")) == "[-32098] machine not found: 'k8s'\n"
    # the new name: create's rules (2+ characters of [a-zA-Z0-9-.], not starting with - or .; not reserved)
    for bad in ("x", "bad_name!", ".hidden", "default", "docker", "k8s", "vm"):
        assert fails(a, bad) == f"[-32098] invalid machine name '{bad}'\n", bad
    assert fails(a, "--", "-bad") == "[-32098] invalid machine name '-bad'\n"
    assert fails("docker", orbctl.name("d")) == "[-32098] cannot rename builtin machine\n"
    assert fails("docker", "x") == "[-32098] invalid machine name 'x'\n"
    # cobra's own errors
    assert fails(a).startswith("Error: accepts 2 arg(s), received 1\nUsage:\n  orbctl rename [old name/ID] [new name]\n")
    assert fails(a, b, orbctl.name("c")).startswith("Error: accepts 2 arg(s), received 3\n")
    assert fails(a, "-x", orbctl.name("c")).startswith("Error: unknown shorthand flag: 'x' in -x\n")
    help_ = orbctl("rename", "--help")
    assert help_.returncode == 0 and help_.stdout.startswith("Usage:\n  orbctl rename [old name/ID] [new name]\n")
    # the same name: nothing to do, exit 0
    for key in (a, records[a]["id"]):
        same = orbctl("rename", key, a)
        assert (same.returncode, same.stdout, same.stderr) == (0, "", "")
    # another installation does not see the machine
    assert fails(a, orbctl.name("o"), ORBCTL_FAKE_INSTANCE=orbctl.instance + "x") == f"[-32098] machine not found: '{a}'\n"
    # nothing changed
    assert {vm: orbctl.record(vm) for vm in (a, b)} == records
    # OrbStack stopped (the emulator's DIFFERENCE: it does not start it)
    assert orbctl("stop").returncode == 0
    assert fails(a, orbctl.name("s")) == NOT_RUNNING + "\n"
    assert orbctl("start").returncode == 0
    assert orbctl.names() == [a, b]


def test_a_clone_holds_its_source_against_rename(orbctl: Fake) -> None:
    """scon's clone holds its source while it copies: a rename meanwhile fails (it does
    not wait); a clone whose caller killed it holds nothing."""
    src, copy, new = orbctl.name("src"), orbctl.name("copy"), orbctl.name("new")
    assert orbctl("create", "debian", src).returncode == 0
    holds = orbctl.state_dir() / "holds"

    def held() -> bool:
        return holds.is_dir() and any(holds.iterdir())

    killed = orbctl.popen("clone", src, copy, ORBCTL_FAKE_SCALE="100")
    try:
        wait_for("the clone to hold its source", held)
    finally:
        killed.kill()
        killed.wait()
    assert orbctl("rename", src, new).returncode == 0 and orbctl("rename", new, src).returncode == 0

    clone = orbctl.popen("clone", src, copy, ORBCTL_FAKE_SCALE="1.5")  # clone: 8 s x 1.5, holding its source
    try:
        wait_for("the clone to hold its source", held)
        busy = orbctl("rename", src, new)
        assert (busy.returncode, busy.stdout, busy.stderr) == (
            1,
            "",
            "[-32098] cannot rename: operations are in progress: clone\n",
        )
        assert clone.poll() is None  # (the rename came while the clone was copying)
        assert clone.wait(timeout=120) == 0
    finally:
        if clone.poll() is None:
            clone.kill()
        clone.wait()
    assert orbctl("rename", src, new).returncode == 0
    assert orbctl.names() == sorted([copy, new])
    assert orbctl.record(copy)["state"] == "stopped" and orbctl.record(new)["state"] == "running"


def test_run_passes_streams_exit_code_user_and_workdir(orbctl: Fake) -> None:
    first, second = orbctl.name("a"), orbctl.name("b")
    assert orbctl("create", "debian", first).returncode == 0
    assert orbctl("create", "-u", "nobody", "debian", second).returncode == 0
    proc = orbctl("run", "-m", second, "-w", "/tmp", "sh", "-c", "pwd; echo oops >&2; exit 7")
    assert (proc.returncode, proc.stdout, proc.stderr) == (7, "/tmp\n", "oops\n")
    assert orbctl("run", "-m", second, "cat", input="from stdin\n").stdout == "from stdin\n"
    assert orbctl("run", "-m", second, "-u", "nobody", "id", "-un").stdout == "nobody\n"
    for as_root in (["-u", "root"], ["--user", "root"], ["-u=root"], ["--user=root"]):  # as orch's exec_argv runs
        proc = orbctl("run", "-m", second, *as_root, "sh", "-c", "id -un; id -u")
        assert (proc.returncode, proc.stdout) == (0, "root\n0\n"), (as_root, proc.stderr)
    assert orbctl("run", "-m", second, "-u", "root", "-w", "/tmp", "pwd").stdout == "/tmp\n"
    assert orbctl("run", "--machine=" + second, "echo", "-m", "x").stdout == "-m x\n"  # flags end at the command
    assert orbctl("run", "-s", "-m", second, "echo", "$((40+2))").stdout == "42\n"  # -s: through a shell
    assert orbctl("run", "hostname").stdout.strip() == first  # the default machine: the first one made
    assert orbctl("default").stdout.strip() == first
    assert orbctl("default", second).returncode == 0 and orbctl("run", "hostname").stdout.strip() == second
    missing = orbctl("run", "-m", orbctl.name("gone"), "true")
    assert (missing.returncode, missing.stdout, missing.stderr) == (1, "", "")  # OrbStack's SSH server: silent off a tty
    dashdash = orbctl("run", "-m", second, "--", "true")
    assert dashdash.returncode == 1 and dashdash.stderr.startswith("Error: unknown flag --\n")
    assert orbctl("stop", second).returncode == 0
    assert orbctl("run", "-m", second, "true").returncode == 0 and orbctl.record(second)["state"] == "running"


def test_push_and_pull_copy_files(orbctl: Fake, tmp_path: Path) -> None:
    vm = orbctl.name()
    assert orbctl("create", "debian", vm).returncode == 0
    src = tmp_path / "hello.txt"
    src.write_text("hello orbstack\n")
    assert orbctl("push", "-m", vm, str(src), "/tmp/pushed.txt").returncode == 0
    assert orbctl("run", "-m", vm, "cat", "/tmp/pushed.txt").stdout == "hello orbstack\n"
    assert orbctl("push", "-m", vm, str(src)).returncode == 0  # no destination: the Linux home
    assert orbctl("run", "-m", vm, "cat", "/root/hello.txt").stdout == "hello orbstack\n"
    back = tmp_path / "back.txt"
    assert orbctl("pull", "-m", vm, "/tmp/pushed.txt", str(back)).returncode == 0
    assert back.read_text() == "hello orbstack\n"
    nothing = orbctl("push", "-m", vm, str(tmp_path / "nope"), "/tmp/")
    assert nothing.returncode == 1 and "cannot stat" in nothing.stderr


def test_stop_without_a_name_stops_orbstack_itself(orbctl: Fake) -> None:
    up, down = orbctl.name("up"), orbctl.name("down")
    for vm in (up, down):
        assert orbctl("create", "debian", vm).returncode == 0
    assert orbctl("stop", down).returncode == 0
    assert orbctl("status").stdout == "Running\n" and orbctl("status").returncode == 0

    assert orbctl("stop").returncode == 0
    status = orbctl("status")
    assert (status.stdout, status.returncode) == ("Stopped\n", 1)
    assert docker_out("inspect", "-f", "{{.State.Running}}", f"orbfake-{up}") == "false"
    for args in (
        ["list", "-f", "json"],
        ["info", up, "-f", "json"],
        ["create", "debian", orbctl.name("x")],
        ["run", "-m", up, "true"],
    ):
        proc = orbctl(*args)
        assert (proc.returncode, proc.stderr) == (1, NOT_RUNNING + "\n"), args
    stop = orbctl("stop", up)  # as orbctl: says so, exit 0
    assert (stop.returncode, stop.stderr) == (0, NOT_RUNNING + "\n")

    assert orbctl("start").returncode == 0
    assert orbctl("status").stdout == "Running\n"
    assert orbctl.record(up)["state"] == "running"  # what ran before runs again
    assert orbctl.record(down)["state"] == "stopped"
    again = orbctl("start")
    assert again.returncode == 0 and again.stderr.startswith("OrbStack is already running.")

    # ORBCTL_FAKE_AUTOSTART=1: commands start OrbStack, as the real orbctl does
    assert orbctl("stop").returncode == 0
    assert orbctl("list", "-f", "json", ORBCTL_FAKE_AUTOSTART="1").returncode == 0
    assert orbctl("status").stdout == "Running\n"


def test_failure_knob_fails_with_orbstacks_transient_texts(orbctl: Fake) -> None:
    vm = orbctl.name()
    assert orbctl("create", "debian", vm).returncode == 0
    assert orbctl("stop", vm).returncode == 0
    knobs = {"ORBCTL_FAKE_FAIL_RATE": "1", "ORBCTL_FAKE_FAIL_COMMANDS": "start"}
    failed = orbctl("start", vm, **knobs)
    assert failed.returncode == 1 and failed.stderr.strip() in transient_texts("start", vm)
    assert orbctl.record(vm)["state"] == "stopped"  # it failed before doing anything
    assert orbctl("list", "-f", "json", **knobs).returncode == 0  # only the commands named
    assert orbctl("start", vm, ORBCTL_FAKE_FAIL_RATE="0").returncode == 0
    # rename is a lifecycle command: it fails with FAIL_RATE alone, and when named
    renamed = orbctl.name("r")
    for knobs in ({"ORBCTL_FAKE_FAIL_RATE": "1"}, {"ORBCTL_FAKE_FAIL_RATE": "1", "ORBCTL_FAKE_FAIL_COMMANDS": "rename"}):
        failed = orbctl("rename", vm, renamed, **knobs)
        assert failed.returncode == 1 and failed.stderr.strip() in transient_texts("rename", vm), failed.stderr
        assert orbctl.names() == [vm]  # before doing anything
    assert orbctl("rename", vm, renamed, ORBCTL_FAKE_FAIL_RATE="1", ORBCTL_FAKE_FAIL_COMMANDS="start").returncode == 0
    assert orbctl("rename", renamed, vm).returncode == 0

    # creates: some fail after the machine was made, as when a create outlives its caller
    seeded = {"ORBCTL_FAKE_FAIL_RATE": "1", "ORBCTL_FAKE_SEED": "8"}  # calls 1-4 of this state dir: after, before, after, before
    left = []
    for i in range(4):
        name = orbctl.name(f"c{i}")
        proc = orbctl("create", "debian", name, **seeded)
        assert proc.returncode == 1 and proc.stderr.strip() in transient_texts("create", name)
        left.append(orbctl("info", name).returncode == 0)
    assert left == [True, False, True, False]
    # a fraction: with a seed, reproducible, and about that often
    results = [orbctl("stop", vm, ORBCTL_FAKE_FAIL_RATE="0.5", ORBCTL_FAKE_SEED="11").returncode for _ in range(6)]
    assert 1 <= results.count(1) <= 5, results


def test_hang_knob_hangs(orbctl: Fake) -> None:
    """Hangs are measured from the outside by lower bounds, and "does not hang" by a
    timeout far below the hang, so that a slow machine (a loaded CI runner, where orbctl
    itself may need more than a second to start) cannot fail the test. (Killing a call
    after a short timeout does not show that it hung: it may not have reached its hang,
    and then, with ORBCTL_FAKE_HANG_COUNT, the NEXT call takes the hang.)"""
    vm = orbctl.name()
    assert orbctl("create", "debian", vm).returncode == 0
    # a named command sleeps ORBCTL_FAKE_HANG_SECONDS before doing anything, then does its work
    t = time.monotonic()
    hung = orbctl("info", vm, ORBCTL_FAKE_HANG="info", ORBCTL_FAKE_HANG_SECONDS="2")
    assert time.monotonic() - t >= 2
    assert hung.returncode == 0 and f"Name: {vm}\n" in hung.stdout
    # by default for an hour: the caller has to give up
    with pytest.raises(subprocess.TimeoutExpired):
        orbctl("info", vm, timeout=2, ORBCTL_FAKE_HANG="info")
    long_hang = {"ORBCTL_FAKE_HANG": "info", "ORBCTL_FAKE_HANG_SECONDS": "600"}
    assert orbctl("list", "-f", "json", timeout=60, **long_hang).returncode == 0  # only the commands named

    # only the first N calls hang: the first call's hang runs out (so it surely counted)...
    once = {"ORBCTL_FAKE_HANG": "info", "ORBCTL_FAKE_HANG_COUNT": "1"}
    t = time.monotonic()
    assert orbctl("info", vm, ORBCTL_FAKE_HANG_SECONDS="2", **once).returncode == 0
    assert time.monotonic() - t >= 2
    # ...and the next ones, which would hang for 600 s, do not
    for _ in range(2):
        assert orbctl("info", vm, timeout=60, ORBCTL_FAKE_HANG_SECONDS="600", **once).returncode == 0

    # create:after hangs once the machine exists, as a create that outlives its caller
    late = orbctl.name("late")
    create = orbctl.popen("create", "debian", late, ORBCTL_FAKE_HANG="create:after", ORBCTL_FAKE_HANG_SECONDS="600")
    try:
        wait_for(f"{late} to exist", lambda: orbctl("info", late).returncode == 0)
        assert orbctl.record(late)["state"] == "running"
        with pytest.raises(subprocess.TimeoutExpired):  # the create has not returned
            create.wait(timeout=2)
    finally:
        create.kill()  # the caller gives up
        create.wait()
    assert orbctl.record(late)["state"] == "running"
    again = orbctl("create", "debian", late)
    assert again.returncode == 1 and "machine already exists" in again.stderr


def test_latency_knob_scales_the_base_latencies(orbctl: Fake) -> None:
    vm = orbctl.name()
    assert orbctl("create", "debian", vm).returncode == 0
    t = time.monotonic()
    assert orbctl("stop", vm, ORBCTL_FAKE_SCALE="0.25").returncode == 0  # stop: 3 s x 0.25
    assert time.monotonic() - t >= 0.75
    t = time.monotonic()
    assert orbctl("rename", vm, orbctl.name("r"), ORBCTL_FAKE_SCALE="5").returncode == 0  # rename: 0.2 s x 5
    assert time.monotonic() - t >= 1.0
    vm = orbctl.name("r")
    t = time.monotonic()
    assert orbctl("start", vm).returncode == 0  # scale 0 (the default): no added latency
    assert time.monotonic() - t < 5


def test_real_pyinfra_orbstack_connector_runs_commands_facts_and_operations(orbctl: Fake) -> None:
    from pyinfra.facts.server import Hostname
    from pyinfra.operations import files

    from orchestrator.pyinfra.runner import PyinfraSession

    vm = orbctl.name()
    assert orbctl("create", "debian:bookworm", vm).returncode == 0
    with PyinfraSession([(f"@orbstack/{vm}", {"vm_name": vm})]) as session:
        result = session.shell("echo hello; echo warn >&2; id -un")
        assert result.ok and result.stdout == "hello\nroot" and result.stderr == "warn"
        assert not session.shell("exit 3").ok
        assert session.fact(Hostname) == vm
        assert session.operation(files.directory, path="/opt/orbfake-dir", mode="750") == {}
    stat = orbctl("run", "-m", vm, "stat", "-c", "%F %a", "/opt/orbfake-dir")
    assert stat.stdout == "directory 750\n"


def test_real_pyinfra_orbstack_vm_operations_on_local(orbctl: Fake) -> None:
    """vm_create, vm_clone, vm_start, vm_stop, vm_delete run on @local, as orch's orbstack
    provider runs them: the command lines pyinfra-orbstack builds work on the emulator."""
    from pyinfra_orbstack.operations import vm as ops

    from orchestrator.pyinfra.runner import PyinfraSession

    golden, worker = orbctl.name("golden"), orbctl.name("gw0")
    with PyinfraSession([("@local", {})]) as local:
        assert local.operation(ops.vm_create, golden, "debian:bookworm", NATIVE_ARCH) == {}
        assert local.operation(ops.vm_clone, golden, worker) == {}
        assert orbctl.record(worker)["state"] == "stopped"
        assert local.operation(ops.vm_start, worker) == {}
        assert orbctl.record(worker)["state"] == "running"
        assert local.operation(ops.vm_stop, worker) == {}
        assert orbctl.record(worker)["state"] == "stopped"
        assert local.operation(ops.vm_delete, worker, force=True) == {}
        failed = local.operation(ops.vm_delete, worker, force=True)
        assert f"[-32098] machine not found: '{worker}'" in failed["@local"]
        again = local.operation(ops.vm_create, golden, "debian:bookworm")
        assert f"machine already exists: '{golden}'" in again["@local"]
    assert [m["name"] for m in orbctl.json("list", "-f", "json")] == [golden]
