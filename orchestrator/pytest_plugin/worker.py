"""What a test sees of its worker's VM: plain functions and one class, which the pytest
plugin's fixtures wrap in a few lines each.

The worker's VM is found in the generated inventory (``<inventory dir>/gwN.py``), never
by guessing names, so a test reaches exactly what ``orch up`` made and recorded. A VM
is handed to a pyinfra connector only while it runs (pyinfra's ``@docker`` commits and
removes a stopped container it had to start itself).

A machine (``machine = true``) may reboot inside a test (pyinfra's ``server.reboot``, a
package's scripts). An operation or deploy on one reads the machine's boot before and
after; when it rebooted, the worker waits until the provider says it is ready again
(systemd booted), and connects again, before the test goes on. One that is down before
(a reboot the test started itself) is waited for first: pyinfra's ``@podman``, connecting
between the machine's exit and its restart, would start it itself, then commit and
remove it when it disconnects.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from orchestrator.primitives.errors import DeployError, OrchError
from orchestrator.primitives.naming import validate_worker_id
from orchestrator.primitives.results import ExecResult
from orchestrator.pyinfra.runner import PyinfraSession
from orchestrator.state import inventory

#: The key under which the pytest controller hands a worker the orch worker id to use
#: (differs from the xdist id after a crashed worker was replaced).
WORKERINPUT_KEY = "orch_worker"

#: What tells one boot of a machine from the next: the kernel's boot id (a VM's own) and
#: when PID 1 started (a container shares the host's kernel, so its boot id too).
BOOT_ID = "cat /proc/sys/kernel/random/boot_id && sed 's/^.*) //' /proc/1/stat | cut -d' ' -f20"


class WorkerMissing(OrchError):
    """This pytest worker has no usable VM: ``orch up`` made fewer workers than pytest
    runs, or its provisioning failed."""


class CommandFailed(DeployError):
    """A command run with ``check=True`` exited non-zero; carries its exit code and output."""

    def __init__(self, vm: str, command: str, result: ExecResult) -> None:
        detail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        super().__init__(f"command failed on {vm} (exit code {result.rc}): {command!r}: {' | '.join(detail) or 'no output'}")
        self.rc, self.stdout, self.stderr = result.rc, result.stdout, result.stderr


def current_worker_id(workerinput: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> str:
    """The orch worker id of this process: the one the controller handed over, else the
    xdist worker id, else ``gw0`` (a run without xdist)."""
    env = os.environ if env is None else env
    if workerinput:
        chosen = workerinput.get(WORKERINPUT_KEY) or workerinput.get("workerid")
        if chosen:
            return validate_worker_id(chosen)
    return validate_worker_id(env.get("PYTEST_XDIST_WORKER") or "gw0")


class Worker:
    """One worker's VM: its ids, its pyinfra host, and ways to work inside it."""

    def __init__(
        self,
        host: inventory.InventoryHost,
        inventory_path: Path | None = None,
        *,
        resetter: Callable[[], None] | None = None,
        ensure_running: Callable[[], None] | None = None,
        ready: Callable[[], None] | None = None,
    ) -> None:
        """``ready`` (machines only): wait until the VM is running and booted again."""
        self.worker_id: str = host.worker
        self.vm: str = host.vm
        self.host: str = host.name
        self.host_data: dict[str, Any] = dict(host.data)
        self.inventory_path = inventory_path
        self.provider: str = host.data.get("orch_provider", "")
        self._session: PyinfraSession | None = None
        self._resetter = resetter
        self._ensure_running = ensure_running
        self._ready = ready
        #: How many times a test reached inside (run, fact, operation, deploy): tells the
        #: isolation check that a test used its worker without naming ``orch_worker``.
        self.uses = 0

    def __repr__(self) -> str:
        return f"<Worker {self.worker_id} vm={self.vm} host={self.host}>"

    def ensure_running(self) -> None:
        """Start the VM if it is stopped (after a host or engine restart, or `docker stop`)."""
        if self._ensure_running is not None:
            self._ensure_running()

    def wait_ready(self) -> None:
        """A machine: wait until it is booted again, then connect again on next use (after
        a reboot the test started itself, e.g. ``run("systemctl reboot")``: systemd says
        "stopping" until the machine goes down, so this cannot return too early). Nothing
        to wait for on a plain container."""
        if self._ready is not None:
            self.close()
            self._ready()

    def _boot(self) -> str | None:
        """This boot of the machine, or None when it cannot be asked now (it is down)."""
        try:
            result = self.session.shell(BOOT_ID)
        except Exception:  # a connection that died with the boot: any error means it is down
            return None
        return result.stdout if result.ok else None

    @contextlib.contextmanager
    def _reboots(self) -> Iterator[None]:
        """Around an operation or deploy: a machine that is down is waited for first, and
        one that rebooted during it is waited for after."""
        if self._ready is None:
            yield
            return
        before = self._boot()
        if before is None:
            self.wait_ready()
            before = self._boot()
        yield
        if before is None or self._boot() != before:
            self.wait_ready()

    @property
    def session(self) -> PyinfraSession:
        self.uses += 1
        if self._session is None:
            self.ensure_running()
            self._session = self._connect()
        return self._session

    def _connect(self) -> PyinfraSession:
        from orchestrator.providers.registry import exit_codes  # noqa: PLC0415  (on first use: not at plugin load)

        session = PyinfraSession([(self.host, self.host_data)], exit_codes=exit_codes(self.provider))
        session.__enter__()
        return session

    def refresh(self) -> None:
        """Read the worker's host again from its inventory (a VM made again, or started
        again, may have another address)."""
        if self.inventory_path is None:
            return
        host = inventory.read_worker(self.inventory_path.parent, self.worker_id)
        if host is not None:
            self.close()
            self.host, self.host_data = host.name, dict(host.data)

    def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            session.__exit__(None, None, None)

    def run(self, command: str, *, check: bool = True) -> ExecResult:
        """Run a shell command in the VM (through pyinfra's connector); the result has
        ``rc``, ``stdout`` and ``stderr``. With ``check`` (the default) a non-zero exit
        raises ``CommandFailed``, which carries all three."""
        result = self.session.shell(command)
        if check and not result.ok:
            raise CommandFailed(self.vm, command, result)
        return result

    def fact(self, fact_cls: type, *args: Any, **kwargs: Any) -> Any:
        """Read a pyinfra fact, e.g. ``fact(pyinfra.facts.server.Hostname)``."""
        return self.session.fact(fact_cls, *args, **kwargs)

    def operation(self, op: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run one pyinfra operation, e.g. ``operation(files.directory, path="/x")``;
        raises ``DeployError`` if it fails (naming the command and its exit code). On a
        machine, one that rebooted it (``server.reboot``) returns once it is ready again."""
        with self._reboots():
            failed = self.session.operation(op, *args, **kwargs)
        self._raise(failed)

    def deploy(self, func: Callable[..., Any], **kwargs: Any) -> None:
        """Run a ``@deploy`` function (several operations); raises ``DeployError`` if it
        fails. On a machine, one that rebooted it returns once it is ready again."""
        with self._reboots():
            failed = self.session.deploy(func, **kwargs)
        self._raise(failed)

    def reset(self) -> None:
        """Put this worker's VM back to its baseline now (same name, same inventory)."""
        if self._resetter is None:
            raise OrchError(f"{self.vm} cannot be reset (a one-off VM: make a new one instead)")
        self.close()
        self._resetter()

    def _raise(self, failed: dict[str, str]) -> None:
        if failed:
            raise DeployError(f"on {self.vm}: {failed.get(self.host, '; '.join(failed.values()))}")


def find_worker(
    inventory_dir: Path,
    worker_id: str,
    *,
    workers_hint: int | None = None,
    resetter: Callable[[], None] | None = None,
    ensure_running: Callable[[], None] | None = None,
    ready: Callable[[], None] | None = None,
) -> Worker:
    """The worker ``worker_id`` as the generated inventory describes it, or
    ``WorkerMissing`` naming the command that makes it (or the log that says why not)."""
    host = inventory.read_worker(inventory_dir, worker_id)
    if host is None:
        count = max(workers_hint or 0, int(worker_id[2:]) + 1)
        raise WorkerMissing(
            f"orch: worker {worker_id} has no VM (no {inventory.worker_path(inventory_dir, worker_id)}): "
            f"run `orch up --workers {count}` before pytest, or `pytest --orch-up`"
        )
    if host.data.get("orch_failed"):
        raise WorkerMissing(
            f"orch: worker {worker_id}'s provisioning failed ({host.data['orch_failed']}); "
            f"look into it with `orch logs {worker_id}` or `orch shell {worker_id}`, then run `orch up`"
        )
    return Worker(
        host, inventory.worker_path(inventory_dir, worker_id), resetter=resetter, ensure_running=ensure_running, ready=ready
    )
