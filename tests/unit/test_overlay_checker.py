"""The pollution check read from the host (providers/overlay.py), on a container made of
folders in tmp_path: the image's layers, an upper directory written as overlayfs writes it
(whiteouts are character devices 0/0 and need root, an opaque folder an xattr), the
container's root as the host sees it (its /etc/passwd, dpkg's status, a tmpfs, a file
mounted over the image's), its mount table, its cgroup and a /proc of its own. What a test
did to the container is exactly what the check says, the ignored paths and pyinfra's
temporary files never; a restart or another container under the name is a check that
cannot tell. The real engines: tests/integration/test_overlay_check.py."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from orchestrator.primitives.changes import Changes, CheckFailed, Ignore
from orchestrator.providers import overlay
from orchestrator.providers.overlay import Container, OverlayChecker, Unusable, _cgroups, _installed, _stanzas

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="whiteouts (character devices) and trusted xattrs need root")

PASSWD = "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
GROUP = "root:x:0:\ndaemon:x:1:\n"
STATUS = """Package: dpkg
Status: install ok installed
Architecture: amd64
Version: 1.21.22
Description: Debian package management system
 This package provides the low-level infrastructure.

Package: libc6
Status: install ok installed
Architecture: amd64
Multi-Arch: same
Version: 2.36-9

Package: gone
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0
"""
INIT = 100


class Box:
    """A container as the host sees it, made of folders."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.image = tmp / "layer1"
        self.top = tmp / "layer0"  # the image's top layer (Docker's -init layer)
        self.upper = tmp / "upper"
        self.root = tmp / "root"
        self.proc = tmp / "proc"
        self.cgroup = tmp / "cgroup"
        for d in (self.image, self.top, self.upper, self.root, self.proc, self.cgroup):
            d.mkdir()
        for f, text in {
            "etc/motd": "hello\n",
            "etc/issue": "Debian\n",
            "etc/passwd": PASSWD,
            "usr/share/doc/pkg/a": "a",
            "usr/share/doc/pkg/b": "b",
            "opt/keep": "k",
        }.items():
            self.write(self.image / f, text)
        (self.image / "srv").mkdir()
        self.write(self.top / "etc/hosts", "127.0.0.1 localhost\n")
        for f, text in {"etc/passwd": PASSWD, "etc/group": GROUP, "var/lib/dpkg/status": STATUS}.items():
            self.write(self.root / f, text)
        (self.root / "tmp").mkdir()
        self.write(self.root / "etc/hosts", "127.0.0.1 localhost\n")
        self.mounts = tmp / "mounts"
        self.mounts.write_text(
            f"overlay / overlay rw,lowerdir={self.top}:{self.image},upperdir={self.upper} 0 0\n"
            "proc /proc proc rw 0 0\n"
            "tmpfs /tmp tmpfs rw 0 0\n"
            "/dev/vda /etc/hosts ext4 rw 0 0\n"
        )
        self.procs: list[int] = []
        self.process(INIT, "sleep infinity", start=1000)
        self.next_pid = 200

    @staticmethod
    def write(path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def process(
        self,
        pid: int,
        command: str,
        *,
        start: int,
        state: str = "S",
        cgroup: str = "/docker/c1",
        comm: str = "",
        ppid: int = INIT,
    ) -> None:
        d = self.proc / str(pid)
        d.mkdir(exist_ok=True)
        rest = [state, str(ppid)] + ["0"] * 17 + [str(start)] + ["0"] * 10
        (d / "stat").write_text(f"{pid} ({comm or command.split()[0]}) {' '.join(rest)}\n")
        (d / "status").write_text(f"Name:\t{comm}\nNSpid:\t{pid}\t{pid - 99}\n")
        (d / "cmdline").write_bytes(b"".join(w.encode() + b"\0" for w in command.split()))
        (d / "comm").write_text((comm or command.split()[0]) + "\n")
        (d / "cgroup").write_text(f"9:name=systemd:{cgroup}\n8:pids:/docker/c1\n")
        if pid not in self.procs:
            self.procs.append(pid)
        (self.cgroup / "cgroup.procs").write_text("".join(f"{p}\n" for p in self.procs))

    def spawn(self, command: str, **kw: Any) -> int:
        pid, self.next_pid = self.next_pid, self.next_pid + 1
        self.process(pid, command, start=5000 + pid, **kw)
        return pid

    def end(self, pid: int) -> None:
        self.procs.remove(pid)
        (self.cgroup / "cgroup.procs").write_text("".join(f"{p}\n" for p in self.procs))

    def container(self, cid: str = "c1", start: str = "1000") -> Container:
        return Container(
            id=cid,
            name="box",
            pid=INIT,
            start=start,
            upper=str(self.upper),
            lowers=(str(self.top), str(self.image)),
            cgroups=(str(self.cgroup),),
            proc=str(self.proc),
            root=str(self.root),
            mounts=str(self.mounts),
        )

    def checker(self, ignore: Ignore | None = None, **kw: Any) -> OverlayChecker:
        checker = OverlayChecker(self.container(), ignore or Ignore.of(["/srv/ignored"]), **kw)
        checker.arm()
        return checker

    # -- what overlayfs does on a write ------------------------------------------------------

    def up(self, path: str) -> Path:
        """Copy the folders above ``path`` up (as overlayfs does: same mode and owner)."""
        parts = path.strip("/").split("/")
        for i in range(1, len(parts)):
            rel = "/".join(parts[:i])
            target = self.upper / rel
            if not target.exists():
                source = next((layer / rel for layer in (self.top, self.image) if (layer / rel).is_dir()), None)
                target.mkdir()
                if source is not None:
                    os.chmod(target, stat.S_IMODE(source.stat().st_mode))
        return self.upper / path.lstrip("/")

    def whiteout(self, path: str) -> None:
        os.mknod(self.up(path), stat.S_IFCHR | 0o600, os.makedev(0, 0))


@pytest.fixture
def box(tmp_path: Path) -> Box:
    return Box(tmp_path)


def test_nothing_done_is_nothing_reported(box: Box) -> None:
    checker = box.checker()
    assert checker.check() == Changes()
    assert checker.check() == Changes()


def test_a_file_created_changed_and_a_folder_made(box: Box) -> None:
    checker = box.checker()
    box.up("/etc/x").write_text("x")  # new: the image has none
    box.up("/etc/issue").write_text("Debian 12\n")  # copied up and changed
    box.up("/opt/new/dir").mkdir(parents=True)
    changes = checker.check()
    assert changes == Changes(created=("/etc/x", "/opt/new", "/opt/new/dir"), changed=("/etc/issue",))
    assert checker.check() == Changes()  # the state after one test is the state before the next
    (box.upper / "etc/x").write_text("longer")
    os.chmod(box.upper / "opt/new", 0o700)
    assert checker.check() == Changes(changed=("/etc/x", "/opt/new"))
    (box.upper / "etc/x").unlink()  # a file a test made, removed by a later one: no whiteout
    assert checker.check() == Changes(deleted=("/etc/x",))


def test_a_folder_copied_up_unchanged_is_not_a_change(box: Box) -> None:
    checker = box.checker()
    box.up("/usr/share/doc/pkg/c").write_text("c")
    assert checker.check() == Changes(created=("/usr/share/doc/pkg/c",))


def test_a_mode_changed_on_the_images_folder(box: Box) -> None:
    checker = box.checker()
    box.up("/opt/keep")
    os.chmod(box.upper / "opt", 0o700)
    assert checker.check() == Changes(changed=("/opt",))


@needs_root
def test_a_whiteout_is_a_deletion_of_the_file_or_of_the_whole_folder(box: Box) -> None:
    checker = box.checker()
    box.whiteout("/etc/motd")
    box.whiteout("/usr/share/doc/pkg")
    assert checker.check() == Changes(deleted=("/etc/motd", "/usr/share/doc/pkg", "/usr/share/doc/pkg/a", "/usr/share/doc/pkg/b"))
    assert checker.check() == Changes()
    (box.upper / "etc/motd").unlink()  # made again: overlayfs replaces the whiteout
    (box.upper / "etc/motd").write_text("new\n")
    assert checker.check() == Changes(created=("/etc/motd",))


@needs_root
def test_an_opaque_folder_hides_what_the_image_has_under_it(box: Box) -> None:
    checker = box.checker()
    pkg = box.up("/usr/share/doc/pkg/c").parent  # rm -rf pkg; mkdir pkg; echo c > pkg/c
    os.setxattr(pkg, "trusted.overlay.opaque", b"y")
    (pkg / "c").write_text("c")
    assert checker.check() == Changes(created=("/usr/share/doc/pkg/c",), deleted=("/usr/share/doc/pkg/a", "/usr/share/doc/pkg/b"))
    assert checker.check() == Changes()


@needs_root
def test_a_whiteout_in_the_images_layers_hides_the_layer_below(box: Box) -> None:
    (box.top / "opt").mkdir()
    os.mknod(box.top / "opt/keep", stat.S_IFCHR | 0o600, os.makedev(0, 0))
    checker = box.checker()
    box.up("/opt/keep").write_text("k2")  # the image had none (its top layer deleted it)
    assert checker.check() == Changes(created=("/opt/keep",))


@needs_root
def test_a_file_over_the_images_folder_hides_what_was_under_it(box: Box) -> None:
    checker = box.checker()
    box.up("/usr/share/doc/pkg").write_text("now a file")
    assert checker.check() == Changes(changed=("/usr/share/doc/pkg",), deleted=("/usr/share/doc/pkg/a", "/usr/share/doc/pkg/b"))


def test_ignored_paths_and_pyinfras_temporary_files_are_never_reported(box: Box) -> None:
    checker = box.checker()
    box.up("/srv/ignored/x").write_text("x")
    box.up("/run/orch/x").write_text("x")
    box.up("/tmp/pyinfra-0123456789abcdef/server.script").write_text("x")
    box.up("/tmp/pyinfra_orbstack_0123").write_text("x")
    box.write(box.root / "tmp/pyinfra-0123456789abcdef", "x")
    assert checker.check() == Changes()


def test_a_tmpfs_and_a_file_mounted_into_the_container_are_read_through_its_root(box: Box) -> None:
    checker = box.checker()
    box.write(box.root / "tmp/y", "y")  # /tmp is a tmpfs: not in the upper directory
    with open(box.root / "etc/hosts", "a") as f:  # /etc/hosts is the engine's file, mounted
        f.write("10.0.0.1 db\n")
    box.up("/tmp/under-the-mount").write_text("hidden")  # under the tmpfs: not what the container sees
    assert checker.check() == Changes(created=("/tmp/y",), changed=("/etc/hosts",))
    (box.root / "tmp/y").unlink()
    assert checker.check() == Changes(deleted=("/tmp/y",))


def test_users_and_groups_added_and_removed(box: Box) -> None:
    checker = box.checker()
    box.write(box.root / "etc/passwd", PASSWD + "bob:x:1000:1000::/home/bob:/bin/sh\n")
    box.write(box.root / "etc/group", "root:x:0:\nbob:x:1000:\n")
    assert checker.check() == Changes(users_added=("bob",), groups_added=("bob",), groups_removed=("daemon",))
    box.write(box.root / "etc/passwd", "root:x:0:0:root:/root:/bin/bash\n")
    assert checker.check() == Changes(users_removed=("bob", "daemon"))


def test_packages_as_dpkg_query_names_them(box: Box) -> None:
    checker = box.checker()
    tiny = "\nPackage: orch-tiny\nStatus: install ok installed\nArchitecture: all\nVersion: 1.0\n"
    half = "\nPackage: libfoo\nStatus: install reinstreq half-installed\nArchitecture: i386\nVersion: 2\n"
    box.write(box.root / "var/lib/dpkg/status", STATUS + tiny + half)
    assert checker.check() == Changes(packages_installed=("libfoo:i386 2 (half-installed)", "orch-tiny 1.0"))
    assert checker.check() == Changes()
    # dpkg's journal: what dpkg-query reads after the status file (dpkg killed before it merged it)
    box.write(
        box.root / "var/lib/dpkg/updates/0000",
        "Package: orch-tiny\nStatus: deinstall ok config-files\nArchitecture: all\nVersion: 1.0\n",
    )
    assert checker.check() == Changes(packages_removed=("orch-tiny 1.0",))


def test_installed_names_the_architecture_as_dpkg_does() -> None:
    records = list(_stanzas(STATUS + "\nPackage: foreign\nStatus: install ok unpacked\nArchitecture: arm64\nVersion: 3\n"))
    assert sorted(_installed(records)) == ["dpkg 1.21.22", "foreign:arm64 3 (unpacked)", "libc6:amd64 2.36-9"]


def test_a_process_left_running_is_reported_once_by_its_pid_inside(box: Box) -> None:
    checker = box.checker()
    pid = box.spawn("sleep 1000")
    done = box.spawn("true")
    box.end(done)  # came and went during the test
    box.spawn("defunct", state="Z")
    assert checker.check() == Changes(processes=(f"{pid - 99} sleep 1000",))
    assert checker.check() == Changes()
    box.end(pid)
    assert checker.check() == Changes()


def test_an_ssh_connection_is_not_the_tests_but_a_listener_it_starts_is(box: Box) -> None:
    checker = box.checker()
    listener = box.spawn("/usr/sbin/sshd", comm="sshd")  # daemonized: init is its parent
    connection = box.spawn("sshd: orch [priv]", comm="sshd", ppid=listener)
    box.spawn("/usr/lib/openssh/sftp-server", ppid=connection)
    box.spawn("sshd-session: orch", comm="sshd-session", ppid=box.next_pid + 100)  # its parent outside: docker exec
    left = box.spawn("sleep 1002")  # left running over SSH: its shell's exit gave it to init
    assert checker.check() == Changes(processes=(f"{listener - 99} /usr/sbin/sshd", f"{left - 99} sleep 1002"))


def test_a_process_with_no_command_line_shows_its_name(box: Box) -> None:
    checker = box.checker()
    pid = box.spawn("x", comm="kworker")
    (box.proc / str(pid) / "cmdline").write_bytes(b"")
    assert checker.check() == Changes(processes=(f"{pid - 99} [kworker]",))


def test_on_a_machine_the_timers_units_and_a_users_manager_are_the_baselines_own(box: Box) -> None:
    box.process(INIT, "/sbin/init", start=1000, comm="systemd")
    box.write(box.root / "lib/systemd/system/apt-daily.timer", "[Timer]\nOnCalendar=daily\n")
    box.write(box.root / "etc/systemd/system/backup.timer", "[Timer]\nUnit=my-backup.service\n")
    checker = box.checker(Ignore.of(machine=True))
    box.spawn("apt-get update", cgroup="/docker/c1/system.slice/apt-daily.service")
    box.spawn("tar c", cgroup="/docker/c1/system.slice/my-backup.service")
    box.spawn("systemd --user", cgroup="/docker/c1/user.slice/user-1000.slice/user@1000.service/init.scope")
    mine = box.spawn("sleep 1000", cgroup="/docker/c1/system.slice/ssh.service")
    assert checker.check() == Changes(processes=(f"{mine - 99} sleep 1000",))


def test_a_restart_or_another_container_cannot_tell_then_the_checker_is_armed_again(box: Box) -> None:
    renewed: list[Container | None] = []
    checker = box.checker(renew=lambda: renewed.pop(0))
    box.process(INIT, "sleep infinity", start=2000)  # the init started again
    renewed.append(box.container(start="2000"))
    box.up("/etc/x").write_text("x")
    with pytest.raises(CheckFailed, match="cannot tell what changed: the container box restarted"):
        checker.check()
    assert checker.check() == Changes()  # armed on the container that runs now
    box.process(INIT, "sleep infinity", start=3000)
    renewed.append(box.container(cid="c2", start="3000"))
    with pytest.raises(CheckFailed, match="was replaced by another one under its name"):
        checker.check()
    box.process(INIT, "sleep infinity", start=4000)
    renewed.append(None)
    with pytest.raises(CheckFailed, match="is gone or stopped"):
        checker.check()


def test_a_check_before_any_arm_cannot_tell_and_arms(box: Box) -> None:
    checker = OverlayChecker(box.container(), Ignore.of())
    with pytest.raises(CheckFailed, match="not armed"):
        checker.check()
    assert checker.check() == Changes()


def test_an_upper_directory_that_vanished_fails_the_check(box: Box) -> None:
    checker = box.checker()
    os.rename(box.upper, box.tmp / "elsewhere")
    with pytest.raises(CheckFailed, match="upper directory"):
        checker.check()


# -- what the engine said ------------------------------------------------------------------


def inspect_json(box: Box, **changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "Id": "c1",
        "Name": "/box",
        "State": {"Running": True, "Pid": INIT},
        "GraphDriver": {
            "Name": "overlay2",
            "Data": {"UpperDir": str(box.upper), "LowerDir": f"{box.top}:{box.image}", "MergedDir": str(box.tmp / "merged")},
        },
    }
    raw.update(changes)
    return raw


@pytest.fixture
def proc_root(box: Box) -> Box:
    """The box's /proc with its init's root and mount table where /proc/<pid> has them."""
    (box.proc / str(INIT) / "root").symlink_to(box.root)
    (box.proc / str(INIT) / "mounts").symlink_to(box.mounts)
    (box.proc / str(INIT) / "cgroup").write_text("9:name=systemd:/docker/c1\n8:pids:/docker/c1\n")
    (box.tmp / "cg/pids/docker/c1").mkdir(parents=True)
    (box.tmp / "cg/pids/docker/c1/cgroup.procs").write_text(f"{INIT}\n")
    return box


def test_from_inspect_reads_the_engines_description(proc_root: Box) -> None:
    box = proc_root
    c = Container.from_inspect(inspect_json(box), proc=str(box.proc), cgroup_root=str(box.tmp / "cg"))
    assert (c.id, c.name, c.pid, c.start) == ("c1", "box", INIT, "1000")
    assert c.upper == str(box.upper) and c.lowers == (str(box.top), str(box.image))
    assert c.cgroups == (str(box.tmp / "cg/pids/docker/c1"),)
    assert c.root == f"{box.proc}/{INIT}/root"


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"GraphDriver": {"Name": "devicemapper", "Data": {}}}, "storage driver is devicemapper"),
        ({"GraphDriver": {"Name": "overlay2", "Data": {}}}, "no upper directory"),
        ({"State": {"Running": False, "Pid": 0}}, "not running"),
        ({"State": {"Running": True, "Pid": 4242}}, "not readable"),
    ],
)
def test_from_inspect_says_why_it_cannot_read_a_container(proc_root: Box, changes: dict[str, Any], why: str) -> None:
    box = proc_root
    with pytest.raises(Unusable, match=why):
        Container.from_inspect(inspect_json(box, **changes), proc=str(box.proc), cgroup_root=str(box.tmp / "cg"))


def test_redirects_or_metacopy_on_the_root_mount_are_refused(proc_root: Box) -> None:
    box = proc_root
    box.mounts.write_text(f"overlay / overlay rw,lowerdir={box.image},redirect_dir=on 0 0\n")
    with pytest.raises(Unusable, match="redirect_dir is on"):
        Container.from_inspect(inspect_json(box), proc=str(box.proc), cgroup_root=str(box.tmp / "cg"))


def test_a_root_not_mounted_by_the_kernels_overlay_is_refused(proc_root: Box) -> None:
    box = proc_root
    box.mounts.write_text("fuse-overlayfs / fuse.fuse-overlayfs rw,user_id=0 0 0\n")
    with pytest.raises(Unusable, match=r"mounted as fuse\.fuse-overlayfs"):
        Container.from_inspect(inspect_json(box), proc=str(box.proc), cgroup_root=str(box.tmp / "cg"))


def test_make_gives_an_armed_checker_or_none_when_its_first_look_fails(proc_root: Box) -> None:
    box = proc_root
    made = overlay.make("testengine", lambda: inspect_json(box), Ignore.of(), proc=str(box.proc), cgroup_root=str(box.tmp / "cg"))
    assert isinstance(made, OverlayChecker)
    box.up("/etc/x").write_text("x")
    assert made.check() == Changes(created=("/etc/x",))  # armed by make
    (box.root / "etc/group").unlink()
    (box.root / "etc/group").mkdir()  # cannot be read: the check could not tell users from nothing
    assert (
        overlay.make("testengine", lambda: inspect_json(box), Ignore.of(), proc=str(box.proc), cgroup_root=str(box.tmp / "cg"))
        is None
    )


def test_an_unreadable_upper_directory_is_refused(proc_root: Box) -> None:
    box = proc_root
    raw = inspect_json(box)
    raw["GraphDriver"]["Data"]["UpperDir"] = str(box.tmp / "nowhere")
    with pytest.raises(Unusable, match="is not readable here"):
        Container.from_inspect(raw, proc=str(box.proc), cgroup_root=str(box.tmp / "cg"))


def test_make_falls_back_to_none_and_says_why_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=overlay.__name__)
    raw = {"Name": "/x", "State": {"Running": True, "Pid": 1}, "GraphDriver": {"Name": "vfs", "Data": {}}}
    assert overlay.make("testengine", lambda: raw, Ignore.of()) is None
    assert overlay.make("testengine", lambda: raw, Ignore.of()) is None
    assert overlay.make("testengine", lambda: None, Ignore.of()) is None

    def broken() -> dict[str, Any]:
        raise RuntimeError("engine down")

    assert overlay.make("testengine", broken, Ignore.of()) is None
    said = [r.getMessage() for r in caplog.records]
    assert len([m for m in said if "storage driver is vfs" in m]) == 1
    assert any("does not exist" in m for m in said) and any("engine down" in m for m in said)


def test_cgroups_of_v1_v2_and_a_systemd_init(tmp_path: Path) -> None:
    v1 = tmp_path / "v1"
    (v1 / "pids/docker/abc").mkdir(parents=True)
    (v1 / "pids/docker/abc/cgroup.procs").write_text("1\n")
    text = "9:name=systemd:/docker/abc/init.scope\n8:pids:/docker/abc\n2:cpu,cpuacct:/docker/abc\n0::/docker/abc\n"
    assert _cgroups(text, str(v1)) == (str(v1 / "pids/docker/abc"),)
    v2 = tmp_path / "v2"
    (v2 / "system.slice/docker-abc.scope").mkdir(parents=True)
    (v2 / "cgroup.procs").write_text("")
    (v2 / "system.slice/docker-abc.scope/cgroup.procs").write_text("1\n")
    assert _cgroups("0::/system.slice/docker-abc.scope/init.scope\n", str(v2)) == (str(v2 / "system.slice/docker-abc.scope"),)
    assert _cgroups("0::/\n", str(v2)) == ()  # the host's own root: never the container's
