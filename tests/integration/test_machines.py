"""Machines (``machine = true``) on the real Docker engine and on podman: systemd is PID 1,
services are enabled and survive ``server.reboot`` through the ``orch_worker`` fixture,
every worker is its own machine (machine id, /run), a stop is a clean shutdown, and hard
reset, soft reset, standby swaps, one-offs, sweep and down work on them as on plain
containers. One bring-up per provider: each step below builds on the one before, so they
are one test per provider (the suite runs with ``--dist worksteal``, which would hand
separate tests to separate processes, each with a bring-up of its own)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from backends import DockerBackend, PodmanBackend, remove_podman, remove_prefix, run_orch, run_pytest

from orchestrator.core import settings as config
from orchestrator.core.context import Context
from orchestrator.verbs.oneoffs import create_oneoff, delete_oneoff
from orchestrator.verbs.reset import reset
from orchestrator.verbs.up import up

IMAGES = {"docker": "orch-machine:bookworm", "podman": "localhost/orch-machine:bookworm"}

PROVISION = """
from pyinfra.api import deploy
from pyinfra.operations import server

from orchestrator.deploys.provision import provision as orch_provision


@deploy("machine test: provision")
def provision():
    orch_provision()
    server.shell(name="Leave a file of this boot in /run", commands=["echo provisioned > /run/orch-provision-boot"])
"""

UNIT = "[Unit]\nDescription=orch machine test\n[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\n"

INSIDE = f"""
import io

from pyinfra.operations import files, server, systemd

UNIT = {UNIT!r}


def test_a_service_survives_server_reboot(orch_worker):
    assert orch_worker.run("cat /proc/1/comm").stdout.strip() == "systemd"
    orch_worker.operation(files.put, src=io.StringIO(UNIT), dest="/etc/systemd/system/orch-hello.service")
    orch_worker.operation(systemd.service, service="orch-hello", running=True, enabled=True, daemon_reload=True)
    assert orch_worker.run("systemctl is-active orch-hello").stdout.strip() == "active"
    orch_worker.run("touch /run/before-reboot /root/kept")
    # delay: past the reboot itself (1-2 s), as pyinfra's reconnect while the engine
    # restarts the container fails its uptime fact
    orch_worker.operation(server.reboot, delay=4, interval=1)
    assert orch_worker.run("systemctl is-system-running").stdout.strip() == "running"
    assert orch_worker.run("systemctl is-active orch-hello").stdout.strip() == "active"
    assert orch_worker.run("test -e /run/before-reboot", check=False).rc != 0  # a new boot
    assert orch_worker.run("test -e /root/kept", check=False).rc == 0  # the same machine


def test_a_fresh_vm_is_a_machine(fresh_vm):
    vm = fresh_vm()
    assert vm.run("cat /proc/1/comm").stdout.strip() == "systemd"
    assert vm.run("systemctl is-system-running").stdout.strip() == "running"
"""


@dataclass
class Machines:
    provider: str
    project: Path
    backend: DockerBackend
    prefix: str

    @property
    def cli(self) -> str:
        return self.provider  # docker and podman take the same arguments here

    def context(self, **overrides: object) -> Context:
        return Context(config.load(cwd=self.project, env={}, overrides=overrides), refill=None)

    def vm(self, worker: str) -> str:
        return self.context().vm_name(worker)

    def sh(self, vm: str, script: str) -> str:
        proc = self.backend.sh(vm, script)
        assert proc.returncode == 0, f"{script}: {proc.stderr}"
        return proc.stdout.strip()

    def inspect(self, vm: str) -> dict:
        out = subprocess.run([self.cli, "inspect", "--type", "container", vm], capture_output=True, text=True, check=True).stdout
        return json.loads(out)[0]

    def in_image(self, image: str, path: str) -> str:
        argv = [self.cli, "run", "--rm", "--pull", "never", "--entrypoint", "cat", image, path]
        return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout

    def systemd_running(self, vm: str) -> None:
        assert self.sh(vm, "cat /proc/1/comm") == "systemd"
        assert self.sh(vm, "systemctl is-system-running") == "running"


@pytest.fixture(params=["docker", "podman"])
def machines(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Machines]:
    """``orch up --machine --workers 2`` on a project that names no image, with a provision
    deploy that leaves a file in /run; everything named with its prefix is deleted after."""
    import secrets

    provider = request.param
    if provider == "podman":
        request.getfixturevalue("podman_engine")
    prefix = f"m{secrets.token_hex(4)}"
    root = tmp_path_factory.mktemp(f"machines-{provider}")
    project = root / "project"
    (project / "deploys").mkdir(parents=True)
    (project / "deploys" / "provision.py").write_text(PROVISION)
    (project / "pyproject.toml").write_text(
        f'[tool.orch]\nprovider = "{provider}"\nprefix = "{prefix}"\nprovision = "deploys.provision:provision"\n'
    )
    made = run_orch(project, "up", "--machine", "--workers", "2")
    machines = Machines(provider, project, PodmanBackend() if provider == "podman" else DockerBackend(), prefix)
    try:
        assert made.returncode == 0, made.stderr
        with (project / "pyproject.toml").open("a") as fh:
            fh.write("machine = true\n")  # the same workers, for the commands that follow
        yield machines
    finally:
        if provider == "podman":
            remove_podman(prefix, root)
        else:
            remove_prefix(prefix)


def orch_up_machine_makes_systemd_workers_from_the_machine_image(machines: Machines) -> None:
    ctx = machines.context()
    assert ctx.image == IMAGES[machines.provider]
    ids = {}
    for worker in ("gw0", "gw1"):
        vm = machines.vm(worker)
        machines.systemd_running(vm)
        seen = machines.inspect(vm)
        assert seen["Config"]["Image"] == IMAGES[machines.provider]
        assert machines.sh(vm, "hostname") == vm
        host = seen["HostConfig"]
        assert not host.get("Privileged") and not host.get("CapAdd")  # the fewest privileges
        ids[worker] = machines.sh(vm, "cat /etc/machine-id")
    assert ids["gw0"] and ids["gw1"] and ids["gw0"] != ids["gw1"]
    baseline = ctx.store.read().baseline
    assert baseline is not None and baseline.ref
    assert machines.in_image(baseline.ref, "/etc/machine-id").strip() == ""  # sealed without one
    again = {r.worker: r.action for r in up(ctx, 2)}
    assert again == {"gw0": "reused", "gw1": "reused"}


def server_reboot_through_the_fixture_then_a_hard_reset_removes_the_service(machines: Machines) -> None:
    """The fixtures as a user's tests use them (a pytest run in the project), then `orch reset`."""
    gw0 = machines.vm("gw0")
    before = machines.inspect(gw0)
    (machines.project / "test_inside.py").write_text(INSIDE)
    ran = run_pytest(machines.project, "-p", "no:xdist", "-q", "test_inside.py", timeout=300)
    assert ran.returncode == 0 and "2 passed" in ran.stdout, ran.stdout + ran.stderr
    after = machines.inspect(gw0)
    assert after["Id"] == before["Id"] and after["RestartCount"] > before["RestartCount"]  # rebooted, not made again
    assert machines.sh(gw0, "systemctl is-active orch-hello") == "active"

    gw1 = machines.vm("gw1")
    assert machines.sh(gw1, "cat /run/orch-provision-boot") == "provisioned"  # made beside the baseline
    reset_ = run_orch(machines.project, "reset", "gw0")
    assert reset_.returncode == 0, reset_.stderr
    machines.systemd_running(gw0)
    assert machines.inspect(gw0)["Id"] != after["Id"]
    assert machines.backend.sh(gw0, "test -e /etc/systemd/system/orch-hello.service").returncode != 0
    assert machines.backend.sh(gw0, "systemctl is-active orch-hello").stdout.strip() != "active"
    assert machines.backend.sh(gw0, "test -e /run/orch-provision-boot").returncode != 0  # nothing of the baseline's boot
    mine, other = machines.sh(gw0, "cat /etc/machine-id"), machines.sh(gw1, "cat /etc/machine-id")
    assert mine and mine != other


def a_stop_is_a_clean_shutdown_and_up_boots_it_again(machines: Machines) -> None:
    ctx = machines.context()
    gw1 = machines.vm("gw1")
    ctx.provider.stop(gw1)
    state = machines.inspect(gw1)["State"]
    assert not state["Running"] and state["ExitCode"] == 0  # systemd shut down, not killed
    [result] = [r for r in up(ctx, 2) if r.worker == "gw1"]
    assert result.ok and result.action == "started", result.error
    machines.systemd_running(gw1)
    if machines.provider == "docker":  # podman keeps the journal on a tmpfs: gone with the boot
        assert "Reached target shutdown.target" in machines.sh(gw1, "journalctl --no-pager -o cat")


def a_soft_reset_kills_strays_and_keeps_the_machines_services(machines: Machines) -> None:
    gw1 = machines.vm("gw1")
    logind = machines.sh(gw1, "systemctl show -p MainPID --value systemd-logind")
    machines.sh(gw1, "setsid sleep 1000 >/dev/null 2>&1 < /dev/null &")
    soft = run_orch(machines.project, "reset", "--soft", "gw1")
    assert soft.returncode == 0, soft.stderr
    assert machines.backend.sh(gw1, "pgrep -x sleep").returncode != 0  # the stray is gone
    assert machines.sh(gw1, "systemctl show -p MainPID --value systemd-logind") == logind
    machines.systemd_running(gw1)


def standby_swaps_and_one_offs_are_machines(machines: Machines) -> None:
    ctx = machines.context(standby=True)
    assert all(r.ok for r in up(ctx, 2))
    standby = ctx.store.read().standbys["gw0"].vm
    machines.systemd_running(standby)
    [swapped] = reset(ctx, ["gw0"])
    assert swapped.action == "swapped", swapped
    gw0, gw1 = machines.vm("gw0"), machines.vm("gw1")
    machines.systemd_running(gw0)
    oneoff = create_oneoff(ctx, "machines-test")
    try:
        machines.systemd_running(oneoff.vm)
        ids = {vm: machines.sh(vm, "cat /etc/machine-id") for vm in (gw0, gw1, oneoff.vm)}
        assert all(ids.values()) and len(set(ids.values())) == 3
    finally:
        delete_oneoff(ctx, oneoff.vm)


def sweep_keeps_the_machines_and_down_leaves_nothing(machines: Machines) -> None:
    data = machines.context().store.read()
    trash = set(data.trash)  # gw0's old VM, swapped out (no maintainer ran to delete it)
    swept = run_orch(machines.project, "sweep", "--json")
    assert swept.returncode == 0, swept.stderr
    assert {r["vm"] for r in json.loads(swept.stdout or "[]") if r.get("delete")} <= trash
    for vm in (machines.vm("gw0"), machines.vm("gw1"), data.standbys["gw1"].vm):
        machines.systemd_running(vm)
    down = run_orch(machines.project, "down")
    assert down.returncode == 0, down.stderr
    assert machines.backend.names(machines.prefix) == []
    images = subprocess.run([machines.cli, "images", "--format", "{{.Repository}}"], capture_output=True, text=True).stdout
    assert not [i for i in images.split() if i.removeprefix("localhost/").startswith(machines.prefix)]


def test_machines_boot_reboot_reset_and_go(machines: Machines) -> None:
    orch_up_machine_makes_systemd_workers_from_the_machine_image(machines)
    server_reboot_through_the_fixture_then_a_hard_reset_removes_the_service(machines)
    a_stop_is_a_clean_shutdown_and_up_boots_it_again(machines)
    a_soft_reset_kills_strays_and_keeps_the_machines_services(machines)
    standby_swaps_and_one_offs_are_machines(machines)
    sweep_keeps_the_machines_and_down_leaves_nothing(machines)
