"""Machines on Docker and podman without an engine: the ``run`` arguments orch builds for a
systemd container (and for a plain one, unchanged), the cgroup mount chosen from the
engine's cgroup version, lxcfs's uptime, readiness by what systemd says, and the seal
that keeps the baseline's machine id out of every clone."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import pytest

from orchestrator.core import settings as config
from orchestrator.primitives.errors import ProviderTimeout, UsageError
from orchestrator.primitives.kinds import Kind
from orchestrator.primitives.labels import Owner
from orchestrator.primitives.results import ExecResult
from orchestrator.providers import docker as docker_module
from orchestrator.providers.base import RESTARTING, VMInfo
from orchestrator.providers.docker import DockerProvider
from orchestrator.providers.podman import PodmanProvider

OWNER = Owner(Kind.WORKER, "abcd1234", "/p/inventories", worker="gw0")
VM = "orch-abcd1234-gw0"


def settings(tmp_path: Path, provider: str, *, machine: bool = True, table: str = "", ready: float | None = None):
    timeouts = f"timeouts = {{ ready = {ready} }}\n" if ready is not None else ""
    (tmp_path / "pyproject.toml").write_text(
        f'[tool.orch]\nprovider = "{provider}"\nprefix = "m"\nmachine = {"true" if machine else "false"}\n{timeouts}{table}'
    )
    return config.load(cwd=tmp_path, env={})


class Recorder:
    """Stands in for the docker command: answers ``info`` with a cgroup version and
    records every other call."""

    def __init__(self, cgroup: str = "1") -> None:
        self.cgroup = cgroup
        self.calls: list[list[str]] = []

    def __call__(self, operation: str, args: list[str], *, vm: str = "", timeout: float | None = None) -> str:
        self.calls.append(args)
        if args[:1] == ["info"]:
            return f"{self.cgroup}\n"
        if args[:2] == ["image", "inspect"]:
            return "sha256:feed\n"
        return ""


@pytest.fixture
def lxcfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """lxcfs's uptime file, as if lxcfs ran here."""
    uptime = tmp_path / "lxcfs-uptime"
    uptime.write_text("1.00 1.00\n")
    monkeypatch.setattr(docker_module, "LXCFS_UPTIME", uptime)
    monkeypatch.setattr(docker_module, "_WARNED", set())
    return uptime


def docker(tmp_path: Path, cgroup: str = "1", **kwargs) -> tuple[DockerProvider, Recorder]:
    provider = DockerProvider(settings(tmp_path, "docker", **kwargs))
    recorder = Recorder(cgroup)
    provider._docker = recorder  # type: ignore[method-assign]
    return provider, recorder


def pairs(args: list[str]) -> list[tuple[str, str]]:
    return list(itertools.pairwise(args))


def test_a_docker_machine_runs_init_with_the_least_that_systemd_needs(tmp_path: Path, lxcfs: Path) -> None:
    provider, _ = docker(tmp_path)
    args = provider._run_args(VM, "orch-machine:bookworm", OWNER)
    assert args[-2:] == ["orch-machine:bookworm", "/sbin/init"]
    assert "--init" not in args and "sleep" not in args
    found = pairs(args)
    assert ("--stop-signal", "SIGRTMIN+3") in found
    assert ("--tmpfs", "/run") in found and ("--tmpfs", "/run/lock") in found
    assert ("-v", "/sys/fs/cgroup/systemd:/sys/fs/cgroup/systemd") in found  # cgroup v1 here
    assert ("-v", f"{lxcfs}:/proc/uptime:ro") in found
    assert ("--restart", "unless-stopped") in found and ("--hostname", VM) in found
    assert not any(a.startswith(("--privileged", "--cap-add", "--cgroupns")) for a in args)


def test_cgroup_v2_mounts_the_whole_tree_in_the_hosts_namespace_and_is_asked_once(tmp_path: Path, lxcfs: Path) -> None:
    provider, recorder = docker(tmp_path, cgroup="2")
    first = provider._run_args(VM, "img", OWNER)
    second = provider._run_args("orch-abcd1234-gw1", "img", OWNER)
    assert "--cgroupns=host" in first and ("-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw") in pairs(first)
    assert "/sys/fs/cgroup/systemd:/sys/fs/cgroup/systemd" not in first and "--cgroupns=host" in second
    assert [c for c in recorder.calls if c[:1] == ["info"]] == [["info", "--format", "{{.CgroupVersion}}"]]


def test_a_machine_is_given_the_time_systemd_may_take_to_shut_down(tmp_path: Path, lxcfs: Path) -> None:
    provider, recorder = docker(tmp_path)
    provider.stop(VM)
    (tmp_path / "plain").mkdir()
    plain, plain_calls = docker(tmp_path / "plain", machine=False)
    plain.stop(VM)
    assert recorder.calls == [["stop", "--time", "15", VM]] and plain_calls.calls == [["stop", "--time", "5", VM]]


def test_a_plain_container_is_unchanged(tmp_path: Path, lxcfs: Path) -> None:
    provider, recorder = docker(tmp_path, machine=False)
    args = provider._run_args(VM, "orch-base:bookworm", OWNER)
    assert args[-3:] == ["orch-base:bookworm", "sleep", "infinity"] and "--init" in args
    assert not any(a in args for a in ("--stop-signal", "--tmpfs", "/sbin/init")) and recorder.calls == []


def test_without_lxcfs_one_warning_names_the_fix(tmp_path: Path, lxcfs: Path, caplog: pytest.LogCaptureFixture) -> None:
    lxcfs.unlink()
    provider, _ = docker(tmp_path)
    with caplog.at_level(logging.WARNING, logger="orchestrator.providers.docker"):
        args = provider._run_args(VM, "img", OWNER)
        provider._run_args("orch-abcd1234-gw1", "img", OWNER)
    assert not any("/proc/uptime" in a for a in args)
    [warning] = [r.getMessage() for r in caplog.records]
    assert "server.reboot" in warning and "lxcfs" in warning


class _StaleMount(type(Path())):  # type: ignore[misc]
    """A FUSE mount whose daemon died: stat fails with ENOTCONN."""

    def stat(self, *, follow_symlinks: bool = True):  # type: ignore[override]
        raise OSError(107, "Transport endpoint is not connected", str(self))


def test_a_stale_lxcfs_mount_is_left_out_with_the_fix(
    tmp_path: Path, lxcfs: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """lxcfs killed (a machine restarted) leaves its mount: the engine could not bind it, so
    the machine is made without it and one warning says how to mend lxcfs."""
    monkeypatch.setattr(docker_module, "LXCFS_UPTIME", _StaleMount("/var/lib/lxcfs/proc/uptime"))
    provider, _ = docker(tmp_path)
    with caplog.at_level(logging.WARNING, logger="orchestrator.providers.docker"):
        args = provider._run_args(VM, "img", OWNER)
    assert not any("/proc/uptime" in a for a in args)
    [warning] = [r.getMessage() for r in caplog.records]
    assert "umount -l /var/lib/lxcfs" in warning


def test_a_remote_engine_gets_no_lxcfs_of_this_machine(tmp_path: Path, lxcfs: Path, caplog: pytest.LogCaptureFixture) -> None:
    provider = DockerProvider(settings(tmp_path, "docker"), engine="ssh://root@far")
    provider._docker = Recorder()  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="orchestrator.providers.docker"):
        args = provider._run_args(VM, "img", OWNER)
    assert not any("/proc/uptime" in a for a in args)
    assert any("lxcfs" in r.getMessage() for r in caplog.records)


def test_a_podman_machine_lets_podman_set_systemd_up(tmp_path: Path, lxcfs: Path) -> None:
    provider = PodmanProvider(settings(tmp_path, "podman"))
    recorder = Recorder()
    provider._docker = recorder  # type: ignore[method-assign]
    args = provider._run_args(VM, "localhost/orch-machine:bookworm", OWNER)
    assert args[-2:] == ["localhost/orch-machine:bookworm", "/sbin/init"]
    assert "--systemd=always" in args and "--init" not in args
    found = pairs(args)
    assert ("--restart", "always") in found and ("-v", f"{lxcfs}:/proc/uptime:ro") in found
    assert not any(a in args for a in ("--stop-signal", "--tmpfs", "--privileged", "--cap-add"))
    assert not any("cgroup" in a for a in args) and recorder.calls == []


def test_each_provider_names_its_machine_image() -> None:
    assert DockerProvider.machine_image == "orch-machine:bookworm"
    assert PodmanProvider.machine_image == "localhost/orch-machine:bookworm"


def test_docker_restarting_a_machine_is_neither_running_nor_stopped() -> None:
    assert docker_module._state({"State": {"Status": "restarting"}}) == RESTARTING


@pytest.mark.parametrize("provider", ["docker", "podman"])
def test_a_command_set_for_machines_is_refused_in_one_line(tmp_path: Path, provider: str) -> None:
    table = f'\n[tool.orch.{provider}]\ncommand = ["sleep", "infinity"]\n'
    cls = DockerProvider if provider == "docker" else PodmanProvider
    with pytest.raises(UsageError) as err:
        cls(settings(tmp_path, provider, table=table))
    assert "/sbin/init" in str(err.value) and "command" in str(err.value) and "\n" not in str(err.value)
    cls(settings(tmp_path, provider, machine=False, table=table))  # a plain container keeps it


class Machine:
    """A container seen through ``inspect`` and ``exec``: a list of states, then what
    ``systemctl is-system-running`` says at each probe."""

    def __init__(self, states: list[str], systemd: list[str], failed: str = "") -> None:
        self.states, self.systemd, self.failed = states, systemd, failed
        self.asked: list[list[str]] = []

    def inspect(self, vm: str) -> VMInfo:
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        return VMInfo(vm, state)

    def exec(self, vm: str, argv: list[str], *, timeout: float | None = None) -> ExecResult:
        self.asked.append(argv)
        if argv[:2] == ["systemctl", "is-system-running"]:
            said = self.systemd.pop(0) if len(self.systemd) > 1 else self.systemd[0]
            return ExecResult(0 if said == "running" else 1, f"{said}\n", "")
        if argv[:2] == ["systemctl", "list-units"]:
            return ExecResult(0, self.failed, "")
        return ExecResult(0, "", "")


def machine(tmp_path: Path, seen: Machine, ready: float = 30) -> DockerProvider:
    provider, _ = docker(tmp_path, ready=ready)
    provider.inspect = seen.inspect  # type: ignore[method-assign]
    provider.exec = seen.exec  # type: ignore[method-assign]
    return provider


def test_ready_waits_through_a_restart_until_systemd_has_booted(tmp_path: Path, lxcfs: Path) -> None:
    seen = Machine(["restarting", "restarting", "running"], ["Failed to connect to bus", "starting", "running"])
    machine(tmp_path, seen).wait_ready(VM)
    assert seen.asked.count(["systemctl", "is-system-running"]) == 3


def test_a_degraded_machine_is_ready_and_its_failed_units_are_logged(
    tmp_path: Path, lxcfs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seen = Machine(["running"], ["degraded"], failed="broken.service loaded failed failed Broken\n")
    with caplog.at_level(logging.WARNING):
        machine(tmp_path, seen).wait_ready(VM)
    assert any("broken.service" in r.getMessage() for r in caplog.records)


def test_the_time_limit_says_what_systemd_last_said(tmp_path: Path, lxcfs: Path) -> None:
    with pytest.raises(ProviderTimeout) as err:
        machine(tmp_path, Machine(["running"], ["starting"]), ready=0.3).wait_ready(VM)
    assert "systemctl is-system-running: starting" in str(err.value)


def test_seal_empties_the_machine_id_before_the_commit(tmp_path: Path, lxcfs: Path) -> None:
    provider, recorder = docker(tmp_path)
    execs: list[list[str]] = []

    def exec_(vm: str, argv: list[str], *, timeout: float | None = None) -> ExecResult:
        execs.append(argv)
        recorder.calls.append(["exec", *argv])
        return ExecResult(0, "", "")

    provider.exec = exec_  # type: ignore[method-assign]
    owner = Owner(Kind.BASELINE, "abcd1234", "/p/inventories", fingerprint="f" * 40)
    provider.seal("orch-abcd1234-baseline", owner)
    [script] = [" ".join(argv) for argv in execs]
    assert "/etc/machine-id" in script and "/var/lib/dbus/machine-id" in script
    order = [c[0] for c in recorder.calls if c[0] in ("exec", "commit")]
    assert order == ["exec", "commit"]


def test_a_plain_seal_runs_nothing_inside(tmp_path: Path, lxcfs: Path) -> None:
    provider, recorder = docker(tmp_path, machine=False)
    provider.exec = lambda *a, **k: pytest.fail("a plain seal ran a command inside")  # type: ignore[method-assign]
    provider.seal("orch-abcd1234-baseline", Owner(Kind.BASELINE, "abcd1234", "/p/inventories", fingerprint="f" * 40))
    assert [c[0] for c in recorder.calls][:1] == ["commit"]
