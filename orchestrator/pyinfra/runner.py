"""Running pyinfra against orch's VMs through pyinfra's own API.

Deploys (provision, personalize, reset) run through :class:`PyinfraDeployer`: one
pyinfra ``State`` for all the VMs at once (pyinfra runs the hosts in parallel), a log
file per VM with pyinfra's whole output, and for each VM that failed one line naming the
deploy, the operation, the command, its exit code and the last lines of its output.
Shell commands, facts and operations of the fixtures go through :class:`PyinfraSession`.

Deploys named in ``[tool.orch]`` are found by :mod:`orchestrator.pyinfra.loading`.

A connector that keeps its hosts' exit codes to itself (pyinfra's local and SSH
connectors log them) is handled by whoever knows it: the caller passes ``exit_codes``,
called for each connected host with a function that records an exit code (the
provider's ``watch_exit_codes``).

pyinfra itself (and paramiko under it) is imported where a deploy, a command or a fact
runs, not when this module is: it costs about half a second of CPU, which every ``orch``
command and every pytest process would pay, and most of them run no deploy.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.primitives.errors import DeployError
from orchestrator.primitives.results import ExecResult
from orchestrator.pyinfra.loading import deploy_name

if TYPE_CHECKING:
    from pyinfra.api import State

log = logging.getLogger(__name__)

HostSpec = tuple[str, dict[str, Any]]
TAIL = 5  # lines of output in an error message


@dataclass
class DeployResult:
    ok: bool
    error: str = ""  # one line: what failed, where, and the log to read
    log: str = ""  # the log file of this VM, when one was written


#: ``exit_codes(host, record)``: make ``record(rc)`` be called for each command ``host`` runs.
ExitCodes = Callable[[Any, Callable[[int], None]], None]


class _Capture(logging.Handler):
    """pyinfra's log records per host (through pyinfra's greenlet-local host), and the
    exit codes that the local and SSH connectors log at debug level."""

    _RC = re.compile(r"Command exit status: (-?[0-9]+)")

    def __init__(self) -> None:
        from pyinfra.context import ctx_host  # noqa: PLC0415  (see the module's docstring)

        super().__init__(logging.DEBUG)
        self._host = ctx_host  # once, not for every log record pyinfra writes
        self.lines: dict[str, list[str]] = {}
        self.rcs: dict[str, int] = {}
        self.last = ""

    def recorder(self, name: str) -> Callable[[int], None]:
        """What records the exit codes of host ``name`` (for ``exit_codes`` hooks)."""

        def record(rc: int) -> None:
            self.rcs[name] = rc

        return record

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a record pyinfra formats badly must not break the deploy
            return
        current = self._host.get() if self._host.isset() else None
        name = getattr(current, "name", "")
        m = self._RC.search(message)
        if m and name:
            self.rcs[name] = int(m.group(1))
            return
        if record.levelno >= logging.INFO:
            self.lines.setdefault(name, []).append(message)
        if record.levelno >= logging.WARNING:
            self.last = message


class _Attached:
    """Attach a capture handler to pyinfra's logger for the length of a block."""

    def __init__(self) -> None:
        self.capture = _Capture()
        self._logger = logging.getLogger("pyinfra")
        self._level = self._logger.level

    def __enter__(self) -> _Capture:
        self._logger.addHandler(self.capture)
        self._logger.setLevel(logging.DEBUG)
        return self.capture

    def __exit__(self, *exc: object) -> None:
        self._logger.removeHandler(self.capture)
        self._logger.setLevel(self._level)


def _connect(
    hosts: list[HostSpec], capture: _Capture, timeout: int, exit_codes: ExitCodes | None
) -> tuple[State, dict[str, str]]:
    """A connected state; {host name: why it could not connect} for the hosts that failed."""
    from pyinfra.api import Config, Inventory, State  # noqa: PLC0415  (see the module's docstring)
    from pyinfra.api.connect import connect_all  # noqa: PLC0415  (see the module's docstring)
    from pyinfra.api.exceptions import PyinfraError  # noqa: PLC0415  (see the module's docstring)

    inventory = Inventory((hosts, {}))
    state = State(inventory, Config(CONNECT_TIMEOUT=timeout))
    try:
        connect_all(state)
    except PyinfraError as err:
        why = capture.last or str(err)
        return state, {name: f"cannot connect to {name}: {(capture.lines.get(name) or [why])[-1]}" for name, _ in hosts}
    failed = {}
    for h in inventory:
        if h in state.failed_hosts or not h.connected:
            failed[h.name] = (
                f"cannot connect to {h.name}: {(capture.lines.get(h.name) or [capture.last or 'no message from pyinfra'])[-1]}"
            )
        elif exit_codes is not None:
            exit_codes(h, capture.recorder(h.name))
    return state, failed


def _spec_names(hosts: list[HostSpec], state: State) -> dict[str, str]:
    """{pyinfra's host name: the name orch gave}: some connectors rename their hosts
    (``@orbstack/NAME`` becomes ``NAME``); orch's host data says which VM each is."""
    by_vm = {data.get("orch_vm"): name for name, data in hosts if data.get("orch_vm")}
    names = {}
    for i, h in enumerate(state.inventory):
        vm = h.data.get("orch_vm")
        names[h.name] = by_vm.get(vm) or (hosts[i][0] if i < len(hosts) else h.name)
    return names


def _op_report(state: State, host: Any) -> tuple[list[str], str]:
    """(the host's whole log, the failing operation's one-line description)."""
    lines: list[str] = []
    failure = ""
    for op_hash in state.get_op_order():
        data = state.ops.get(host, {}).get(op_hash)
        if data is None:
            continue
        meta = data.operation_meta
        names = ", ".join(sorted(state.get_op_meta(op_hash).names)) or op_hash
        if not meta.is_complete():
            lines.append(f"--- {names}: not run")
            continue
        commands = [str(c) for c in (getattr(meta, "_commands", None) or [])]
        status = "FAILED" if meta.did_error() else ("changed" if meta.did_change() else "no change")
        lines.append(f"--- {names}: {status}")
        lines += [f"$ {c}" for c in commands]
        lines += [f"stdout: {x}" for x in meta.stdout_lines] + [f"stderr: {x}" for x in meta.stderr_lines]
        if meta.did_error() and not failure:
            tail = (meta.stdout_lines + meta.stderr_lines)[-TAIL:]
            failure = (
                f"operation {names!r}"
                + (f", command `{commands[-1]}`" if commands else "")
                + "{rc}"
                + (f": {' | '.join(tail)}" if tail else ": no output")
            )
    return lines, failure


def _describe(state: State, host: Any, capture: _Capture, title: str) -> tuple[list[str], str]:
    lines, failure = _op_report(state, host)
    rc = capture.rcs.get(host.name)
    failure = failure.replace("{rc}", f" exited with code {rc}" if rc is not None else "")
    if not failure:
        failure = (capture.lines.get(host.name) or [capture.last or "pyinfra gave no reason"])[-1]
    return lines, f"{title}: {failure}"


class PyinfraDeployer:
    """Runs a deploy on many VMs at once; writes each VM's log where the core says
    (host data ``orch_log``)."""

    def __init__(self, connect_timeout: int = 30, *, exit_codes: ExitCodes | None = None) -> None:
        self.connect_timeout = connect_timeout
        self.exit_codes = exit_codes

    def run(self, hosts: list[HostSpec], funcs: list[Callable[..., Any]], *, title: str = "") -> dict[str, DeployResult]:
        """Run ``funcs`` in order on every host at once; {host name: result}."""
        from pyinfra.api.connect import disconnect_all  # noqa: PLC0415  (see the module's docstring)
        from pyinfra.api.deploy import add_deploy  # noqa: PLC0415  (see the module's docstring)
        from pyinfra.api.exceptions import PyinfraError  # noqa: PLC0415  (see the module's docstring)
        from pyinfra.api.operations import run_ops  # noqa: PLC0415  (see the module's docstring)

        title = title or " + ".join(f"deploy {deploy_name(f)!r}" for f in funcs)
        results: dict[str, DeployResult] = {}
        with _Attached() as capture:
            state, failed = _connect(hosts, capture, self.connect_timeout, self.exit_codes)
            try:
                live = [h for h in state.inventory if h.name not in failed]
                if live:
                    try:
                        for func in funcs:
                            add_deploy(state, func)
                        run_ops(state)
                    except PyinfraError as err:
                        capture.last = capture.last or str(err)
                names = _spec_names(hosts, state)
                for h in state.inventory:
                    if h.name in failed:
                        results[names[h.name]] = DeployResult(False, f"{title}: {failed[h.name]}")
                        continue
                    lines, error = _describe(state, h, capture, title)
                    ok = h not in state.failed_hosts
                    result = results[names[h.name]] = DeployResult(ok, "" if ok else error)
                    lines = [*capture.lines.get(h.name, []), *lines]
                    result.log = _write_log(h.data.get("orch_log"), title, lines, result)
            finally:
                disconnect_all(state)
        for name, result in results.items():
            if not result.ok:
                log.warning("%s failed on %s: %s", title, name, result.error)
        return results


def _write_log(path: str | None, title: str, lines: list[str], result: DeployResult) -> str:
    if not path:
        return ""
    target = Path(path)
    try:
        # only logs/ itself: its .orch folder exists while orch is at work (the state was
        # written first), and one deleted meanwhile (rm -rf of the checkout) is not made again
        target.parent.mkdir(exist_ok=True)
        with target.open("a", encoding="utf-8") as fh:
            fh.write(f"=== {title}: {'ok' if result.ok else 'FAILED'}\n")
            fh.writelines(line + "\n" for line in lines)
            if not result.ok:
                fh.write(f"error: {result.error}\n")
    except OSError as err:
        log.warning("cannot write %s: %s", target, err.strerror)
        return ""
    return str(target)


class PyinfraSession:
    """Connected pyinfra hosts for shell commands, facts, operations and deploys.

    pyinfra runs the operations queued in a ``State`` once; each batch of operations or
    deploys therefore gets a state of its own, while commands and facts share one.
    Use as a context manager.
    """

    def __init__(self, hosts: Iterable[HostSpec], *, connect_timeout: int = 30, exit_codes: ExitCodes | None = None) -> None:
        self.hosts_spec = list(hosts)
        self.connect_timeout = connect_timeout
        self.exit_codes = exit_codes
        self._attached = _Attached()
        self.state: State | None = None

    def __enter__(self) -> PyinfraSession:
        from pyinfra.api.connect import disconnect_all  # noqa: PLC0415  (see the module's docstring)

        capture = self._attached.__enter__()
        try:
            state, failed = _connect(self.hosts_spec, capture, self.connect_timeout, self.exit_codes)
            if failed:
                disconnect_all(state)
                raise DeployError("; ".join(failed.values()))
            self.state = state
        except BaseException:
            self._attached.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        from pyinfra.api.connect import disconnect_all  # noqa: PLC0415  (see the module's docstring)

        try:
            if self.state is not None:
                disconnect_all(self.state)
        finally:
            self.state = None
            self._attached.__exit__(None, None, None)

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

    def _batch(self, title: str, add: Callable[[State], None]) -> dict[str, str]:
        """Queue operations with ``add`` on a fresh state, run them, and return
        ``{host name: what failed}`` for the hosts that failed."""
        from pyinfra.api.connect import disconnect_all  # noqa: PLC0415  (see the module's docstring)
        from pyinfra.api.exceptions import PyinfraError  # noqa: PLC0415  (see the module's docstring)
        from pyinfra.api.operations import run_ops  # noqa: PLC0415  (see the module's docstring)

        capture = self._attached.capture
        state, failed = _connect(self.hosts_spec, capture, self.connect_timeout, self.exit_codes)
        try:
            if failed:
                names = _spec_names(self.hosts_spec, state)
                return {names.get(k, k): v for k, v in failed.items()}
            try:
                add(state)
                run_ops(state)
            except PyinfraError as err:
                capture.last = capture.last or str(err)
            names = _spec_names(self.hosts_spec, state)
            return {names[h.name]: _describe(state, h, capture, title)[1] for h in state.inventory if h in state.failed_hosts}
        finally:
            disconnect_all(state)

    def deploy(self, func: Callable[..., Any], **kwargs: Any) -> dict[str, str]:
        """Run a ``@deploy`` function on every host; return the hosts that failed."""
        from pyinfra.api.deploy import add_deploy  # noqa: PLC0415  (see the module's docstring)

        return self._batch(f"deploy {deploy_name(func)!r}", lambda state: add_deploy(state, func, **kwargs))

    def operation(self, op: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, str]:
        """Run one pyinfra operation on every host; return the hosts that failed."""
        from pyinfra.api.operation import add_op  # noqa: PLC0415  (see the module's docstring)

        name = getattr(op, "__name__", str(op))
        return self._batch(f"operation {name!r}", lambda state: add_op(state, op, *args, **kwargs))

    def shell(self, command: str, host: str | None = None) -> ExecResult:
        """Run a shell command; its exit code is reported by the shell itself (the
        connectors keep theirs to themselves)."""
        wrapped = f'( {command}\n); echo "__orch_rc=$?" >&2'
        ok, output = self.host(host).run_shell_command(wrapped)
        stderr = list(output.stderr_lines)
        rc = 1 if not ok else 0
        if stderr and (m := re.fullmatch(r"__orch_rc=([0-9]+)", stderr[-1].strip())):
            rc = int(m.group(1))
            stderr.pop()
        return ExecResult(rc, output.stdout, "\n".join(stderr))

    def fact(self, fact_cls: type, *args: Any, host: str | None = None, **kwargs: Any) -> Any:
        return self.host(host).get_fact(fact_cls, *args, **kwargs)
