"""A machine that reboots is the same worker, on the FakeProvider and a stand-in pyinfra
session: the fixture's worker waits until it is ready again after an operation that
rebooted it (and reconnects), a VM its backend is restarting is waited for, never made
again or started twice, and plain containers pay nothing for any of it."""

from __future__ import annotations

from pathlib import Path

from fakes_core import fake_orch

from orchestrator.primitives.results import ExecResult
from orchestrator.providers.base import RESTARTING, RUNNING
from orchestrator.providers.fake import FakeProvider
from orchestrator.pytest_plugin.worker import BOOT_ID, Worker
from orchestrator.state.inventory import InventoryHost
from orchestrator.verbs.up import up

HOST = InventoryHost("@docker/orch-abcd1234-gw0", {"orch_worker_id": "gw0", "orch_vm": "orch-abcd1234-gw0"})


class Session:
    """pyinfra's session as the worker uses it: shell commands and operations. ``reboot``
    in an operation gives the machine a new boot."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.closed = False

    def shell(self, command: str) -> ExecResult:
        self.machine.commands.append(command)
        if command == BOOT_ID:
            if self.machine.down:
                return ExecResult(1, "", "Error response from daemon: Container x is restarting")
            return ExecResult(0, f"boot-{self.machine.boots}\n", "")
        return ExecResult(0, "", "")

    def operation(self, op, *args, **kwargs) -> dict[str, str]:
        op(self.machine)
        return {}

    def __exit__(self, *exc: object) -> None:
        self.closed = True


class Machine:
    def __init__(self) -> None:
        self.boots = 1
        self.down = False
        self.readied = 0
        self.commands: list[str] = []
        self.sessions: list[Session] = []

    def worker(self, *, machine: bool = True) -> Worker:
        def ready() -> None:
            self.readied += 1
            self.down = False

        outer = self

        class Connected(Worker):
            def _connect(self) -> Session:  # type: ignore[override]
                session = Session(outer)
                outer.sessions.append(session)
                return session

        return Connected(HOST, ready=ready if machine else None)


def reboot(machine: Machine) -> None:
    machine.boots += 1


def write_a_file(machine: Machine) -> None:
    pass


def reboot_pending(machine: Machine) -> None:
    """The operation ends while the machine is down (a reboot it did not wait for)."""
    machine.boots += 1
    machine.down = True


def test_an_operation_that_rebooted_the_machine_waits_until_it_is_ready_and_reconnects() -> None:
    machine = Machine()
    worker = machine.worker()
    worker.operation(reboot)
    assert machine.readied == 1
    assert machine.sessions[0].closed  # the next command connects again (an SSH session died with the boot)


def test_an_operation_that_did_not_reboot_costs_no_wait() -> None:
    machine = Machine()
    worker = machine.worker()
    worker.operation(write_a_file)
    assert machine.readied == 0 and not machine.sessions[0].closed


def test_a_machine_down_after_the_operation_is_waited_for() -> None:
    machine = Machine()
    worker = machine.worker()
    worker.operation(reboot_pending)
    assert machine.readied == 1 and not machine.down


def test_a_machine_down_before_the_operation_is_waited_for_first() -> None:
    """pyinfra's @podman, connecting to a machine between its exit and its restart, would
    start it itself, then commit and remove it when it disconnects: never hand it one."""
    machine = Machine()
    machine.down = True
    worker = machine.worker()
    seen: list[bool] = []
    worker.operation(lambda m: seen.append(m.down))
    assert seen == [False] and machine.readied == 1


def test_a_plain_container_reads_no_boot() -> None:
    machine = Machine()
    worker = machine.worker(machine=False)
    worker.operation(reboot)
    assert machine.commands == [] and machine.readied == 0


def test_wait_ready_is_there_for_a_reboot_the_test_started_itself() -> None:
    machine = Machine()
    worker = machine.worker()
    worker.run("systemctl reboot")
    worker.wait_ready()
    assert machine.readied == 1


class Rebooting(FakeProvider):
    """A backend that says its VM is restarting until it has been waited for."""

    def __init__(self, settings) -> None:
        super().__init__(settings)
        self.restarting: set[str] = set()
        self.started: list[str] = []

    def start(self, vm: str) -> None:
        self.started.append(vm)
        super().start(vm)

    def wait_ready(self, vm: str) -> float:
        if vm in self.restarting:
            self.restarting.discard(vm)
            self.vms[vm].state = RUNNING
        return super().wait_ready(vm)


def rebooting(tmp_path: Path):
    orch = fake_orch(tmp_path / "a")
    provider = Rebooting(orch.settings)
    orch = fake_orch(tmp_path / "a", provider=provider)
    up(orch, 1)
    vm = orch.vm_name("gw0")
    provider.vms[vm].state = RESTARTING
    provider.restarting.add(vm)
    return orch, provider, vm


def test_up_reuses_a_worker_its_backend_is_restarting(tmp_path: Path) -> None:
    orch, provider, vm = rebooting(tmp_path)
    [result] = up(orch, 1)
    assert result.ok and result.action == "reused", result.error
    assert provider.started == [] and provider.vms[vm].state == RUNNING


def test_ensure_running_waits_for_a_restart_and_starts_nothing(tmp_path: Path) -> None:
    orch, provider, vm = rebooting(tmp_path)
    orch.ensure_running(vm, "gw0")
    assert provider.started == [] and provider.vms[vm].state == RUNNING
