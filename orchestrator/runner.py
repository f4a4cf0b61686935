"""Running pyinfra against orch's VMs through pyinfra's own API.

Deploys (provision, reset), shell commands, facts and operations all go through a
:class:`PyinfraSession`: an inventory of the VMs' pyinfra hosts (``@docker/NAME`` …),
a pyinfra ``State``, connected once and disconnected at the end. pyinfra runs the hosts
in parallel with gevent, so one session provisions every new worker at once.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from pyinfra.api import Config, Inventory, State
from pyinfra.api.connect import connect_all, disconnect_all
from pyinfra.api.deploy import add_deploy
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.operation import add_op
from pyinfra.api.operations import run_ops

from .errors import ConfigError, DeployError

log = logging.getLogger(__name__)

HostSpec = tuple[str, dict[str, Any]]


def load_callable(spec: str) -> Callable[..., Any]:
    """Import ``package.module:function`` (a deploy named in ``[tool.orch]``)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr.isidentifier():
        raise ConfigError(f"invalid deploy {spec!r}: write it as package.module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"cannot import deploy module {module_name!r} ({err}): check the name and that it is installed") from err
    func = getattr(module, attr, None)
    if not callable(func):
        raise ConfigError(f"{module_name} has no deploy function {attr!r}")
    return func


class _Collect(logging.Handler):
    """Keeps pyinfra's warnings and errors so a failure can say what went wrong."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@dataclass
class ShellResult:
    ok: bool
    stdout: str
    stderr: str

    def __bool__(self) -> bool:
        return self.ok


class PyinfraSession:
    """Connected pyinfra hosts for shell commands, facts, operations and deploys.

    pyinfra runs the operations queued in a ``State`` once; each batch of operations or
    deploys therefore gets a state of its own, while commands and facts share one.
    Use as a context manager.
    """

    def __init__(self, hosts: Iterable[HostSpec], *, connect_timeout: int = 30) -> None:
        self.hosts_spec = list(hosts)
        self.connect_timeout = connect_timeout
        self._collect = _Collect()
        self.state: State | None = None

    def _connect(self) -> State:
        inventory = Inventory((self.hosts_spec, {}))
        state = State(inventory, Config(CONNECT_TIMEOUT=self.connect_timeout))
        try:
            connect_all(state)
        except PyinfraError as err:
            raise DeployError(f"cannot connect to {self._names()}: {err}") from err
        failed = [h.name for h in inventory if h in state.failed_hosts or not h.connected]
        if failed:
            disconnect_all(state)
            raise DeployError(f"cannot connect to {', '.join(failed)}: {self._last_message()}")
        return state

    def __enter__(self) -> "PyinfraSession":
        logging.getLogger("pyinfra").addHandler(self._collect)
        try:
            self.state = self._connect()
        except BaseException:
            self._detach()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.state is not None:
                disconnect_all(self.state)
        finally:
            self.state = None
            self._detach()

    def _detach(self) -> None:
        logging.getLogger("pyinfra").removeHandler(self._collect)

    def _names(self) -> str:
        return ", ".join(name for name, _ in self.hosts_spec)

    def _last_message(self) -> str:
        return self._collect.lines[-1] if self._collect.lines else "no message from pyinfra"

    def _host_message(self, name: str) -> str:
        """pyinfra's own output about one host (stderr, errors), last lines first-to-last."""
        mark = f"[{name}] "
        lines = [line[len(mark):] for line in self._collect.lines if line.startswith(mark)]
        return "; ".join(lines[-3:]) if lines else self._last_message()

    def host(self, name: str | None = None) -> Any:
        if self.state is None:
            raise RuntimeError("PyinfraSession used outside its with block")
        hosts = list(self.state.inventory)
        if name is None:
            return hosts[0]
        for h in hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    def _batch(self, what: str, add: Callable[[State], None]) -> dict[str, str]:
        """Queue operations with ``add`` on a fresh state, run them, and return
        ``{host name: last error}`` for the hosts that failed."""
        state = self._connect()
        try:
            try:
                add(state)
                run_ops(state)
            except PyinfraError as err:
                self._collect.lines.append(str(err))
                if not state.failed_hosts:
                    raise DeployError(f"{what} failed: {err}") from err
            failed = {h.name: self._host_message(h.name) for h in state.inventory if h in state.failed_hosts}
        finally:
            disconnect_all(state)
        for name, message in failed.items():
            log.warning("%s failed on %s: %s", what, name, message)
        return failed

    def deploy(self, func: Callable[..., Any], **kwargs: Any) -> dict[str, str]:
        """Run a ``@deploy`` function on every host; return the hosts that failed."""
        name = getattr(func, "deploy_name", getattr(func, "__name__", str(func)))
        return self._batch(f"deploy {name!r}", lambda state: add_deploy(state, func, **kwargs))

    def operation(self, op: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, str]:
        """Run one pyinfra operation on every host; return the hosts that failed."""
        name = getattr(op, "__name__", str(op))
        return self._batch(f"operation {name!r}", lambda state: add_op(state, op, *args, **kwargs))

    def shell(self, command: str, host: str | None = None) -> ShellResult:
        ok, output = self.host(host).run_shell_command(command)
        return ShellResult(bool(ok), output.stdout, output.stderr)

    def fact(self, fact_cls: type, *args: Any, host: str | None = None, **kwargs: Any) -> Any:
        return self.host(host).get_fact(fact_cls, *args, **kwargs)
