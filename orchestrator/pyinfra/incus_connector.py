"""``@incus/NAME``: pyinfra's connector for a running Incus instance (pyinfra has none for
Incus or LXD), registered as the ``incus`` entry point of ``pyinfra.connectors``.

Commands run as ``incus exec NAME -T -- sh -c COMMAND``, built as pyinfra's ``@docker``
builds its ``docker exec``: pyinfra's ``make_unix_command_for_host`` wraps the command
for ``_sudo``, ``_sudo_user``, ``_su_user``, ``_env`` and ``_chdir``, and the local
connector runs it (its exit code and output as pyinfra reports any command's). Files go
through ``incus file push`` and ``incus file pull`` of a local temporary file.

Host data ``incus_remote`` (an incus remote: ``remote:NAME``), ``incus_project``
(``--project``) and ``incus_client`` (the command, when not ``incus``) reach instances
elsewhere; a pushed file is root's (as ``docker cp`` makes it); orch's Incus provider writes them into the
inventories when they are set. The connector never starts, stops or deletes an
instance: connecting to one that is not running fails, naming it.

On a cluster, a command running when the member holding its instance dies never returns
(the member the client talks to keeps the exec open; seen with Incus 6.0.4 here): a
watchdog greenlet looks at the instance once the command has run for
:data:`WATCH_AFTER` seconds, and every :data:`WATCH_EVERY` after, and when the cluster
lists it in status Error (its member does not answer) ends that ``incus exec`` and fails
the command in one line naming the member.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
from tempfile import mkstemp
from typing import TYPE_CHECKING, Any

import gevent
import gevent.subprocess
from pyinfra import logger
from pyinfra.api import QuoteString, StringCommand
from pyinfra.api.exceptions import ConnectError, InventoryError
from pyinfra.api.output import echo
from pyinfra.api.util import get_file_io
from pyinfra.connectors.base import BaseConnector, DataMeta
from pyinfra.connectors.local import LocalConnector
from pyinfra.connectors.util import CommandOutput, OutputLine, extract_control_arguments, make_unix_command_for_host
from typing_extensions import TypedDict, Unpack

from orchestrator.pyinfra import incus_exec

if TYPE_CHECKING:
    from collections.abc import Iterator

    from pyinfra.api.arguments import ConnectorArguments
    from pyinfra.api.host import Host
    from pyinfra.api.state import State


class ConnectorData(TypedDict):
    incus_instance: str
    incus_remote: str
    incus_project: str
    incus_client: str


connector_data_meta: dict[str, DataMeta] = {
    "incus_instance": DataMeta("Name of the Incus instance"),
    "incus_remote": DataMeta("The incus remote the instance is on (default: the client's)", ""),
    "incus_project": DataMeta("The Incus project the instance is in (default: the client's)", ""),
    "incus_client": DataMeta("The incus command (default: incus)", ""),
}

#: Where ``incus exec`` starts commands as root: a relative path is resolved here for
#: ``incus file push/pull`` too (they take absolute paths).
HOME = "/root"
#: When the watchdog first looks at a running command's instance, and how often after.
WATCH_AFTER = 5.0
WATCH_EVERY = 3.0


def _descendants(root: int) -> list[int]:
    """The processes below ``root`` (from /proc: children's parent ids)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _member_of(found: dict[str, Any] | None) -> str:
    """The cluster member a listed instance is on ("" on a single server: "none")."""
    where = str((found or {}).get("location") or "")
    return "" if where == "none" else where


def _on_lost_member(found: dict[str, Any] | None) -> bool:
    """Whether the cluster lists the instance in status Error: its member does not answer."""
    return found is not None and found.get("status") == "Error" and bool(_member_of(found))


def _whole(output: CommandOutput) -> list[OutputLine] | None:
    """The output without the wrapper's marks (stdout's lines, then stderr's); None when
    Incus lost a stream."""
    out, err = incus_exec.unmarked_lines(output.stdout_lines), incus_exec.unmarked_lines(output.stderr_lines)
    if out is None or err is None:
        return None
    return [*(OutputLine("stdout", line) for line in out), *(OutputLine("stderr", line) for line in err)]


class MemberUnreachable(ConnectError, OSError):
    """The cluster member holding the instance does not answer: the command never ran, or
    never finished. An ``OSError`` too, so that pyinfra fails only this host's operation
    (as for any command that could not run) rather than the whole deploy."""


class IncusConnector(BaseConnector):
    """Run pyinfra operations in a running Incus instance: ``pyinfra @incus/NAME ...``."""

    handles_execution = True

    data_cls = ConnectorData
    data_meta = connector_data_meta
    data: ConnectorData

    def __init__(self, state: State, host: Host) -> None:
        super().__init__(state, host)
        self.local = LocalConnector(state, host)
        self.clustered = False

    @staticmethod
    def make_names_data(name: str | None = None) -> Iterator[tuple[str, dict[str, Any], list[str]]]:
        if not name:
            raise InventoryError("No Incus instance named: use @incus/NAME")
        yield f"@incus/{name}", {"incus_instance": name}, ["@incus"]

    # -- the incus command line ---------------------------------------------------------

    def _client(self) -> list[str]:
        project = self.data.get("incus_project") or ""
        return [self.data.get("incus_client") or "incus", *(["--project", project] if project else [])]

    def _target(self) -> str:
        remote = self.data.get("incus_remote") or ""
        name = self.data["incus_instance"]
        return f"{remote}:{name}" if remote else name

    def _key(self) -> str:
        """The instance, as orch's exec wrapper keeps track of it (its project too)."""
        return f"{self.data.get('incus_project') or ''}/{self._target()}"

    def _path(self, remote_filename: str) -> str:
        """``NAME/ABSOLUTE/PATH``, as ``incus file`` takes it."""
        path = remote_filename if remote_filename.startswith("/") else f"{HOME}/{remote_filename}"
        return f"{self._target()}{path}"

    def connect(self) -> None:
        self.local.connect()
        target = self._target()
        try:
            proc, found = self._listed(timeout=60)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise ConnectError(f"incus did not answer for {target}: {err}") from err
        if proc.returncode != 0:
            raise ConnectError(f"incus cannot reach {target}: {' '.join(proc.stderr.split())}")
        status = str(found.get("status", "")) if found else ""
        # On a cluster (a member's name as its location; a single server says "none"):
        # only there can a command hang on a member that died, so only there is it watched.
        self.clustered = bool(_member_of(found))
        if status != "Running":
            raise ConnectError(f"{target} is not a running Incus instance ({status or 'not found'}): start it first")

    def _listed(self, timeout: float = 30) -> tuple[subprocess.CompletedProcess[str], dict[str, Any] | None]:
        """``incus list`` of this instance (cooperative under pyinfra's gevent loop): the
        finished command, and the instance as listed (None when not listed)."""
        remote, _, name = self._target().rpartition(":")
        argv = [*self._client(), "list", *([f"{remote}:"] if remote else []), f"^{name}$", "--format", "json"]
        proc = gevent.subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL)
        try:
            listed = json.loads(proc.stdout or "[]") if proc.returncode == 0 else []
        except ValueError:
            listed = []
        return proc, next((i for i in listed if isinstance(i, dict) and i.get("name") == name), None)

    def _looked_up(self) -> dict[str, Any] | None:
        """This instance as listed now; None when not listed or incus cannot be asked."""
        try:
            return self._listed()[1]
        except (OSError, subprocess.TimeoutExpired):
            return None

    def _watch(self, lost: list[str]) -> None:
        """While a command runs: once its instance is listed in status Error on a cluster (its
        member does not answer), say so in ``lost`` and end this process's ``incus exec`` of
        it, which would otherwise never return."""
        gevent.sleep(WATCH_AFTER)
        target = self._target()
        while True:
            found = self._looked_up()
            if _on_lost_member(found):
                lost.append(self._member_down(found or {}))
                for pid in _descendants(os.getpid()):
                    try:
                        with open(f"/proc/{pid}/cmdline", "rb") as f:
                            argv = f.read().decode(errors="replace").split("\0")
                        if self._is_my_exec(argv, target):
                            os.kill(pid, signal.SIGKILL)
                    except OSError:
                        continue
                return
            gevent.sleep(WATCH_EVERY)

    def _is_my_exec(self, argv: list[str], target: str) -> bool:
        """Whether ``argv`` is an ``incus exec`` of this connector's instance: the client,
        its ``--project`` (or none) and ``exec REMOTE:NAME`` in a row."""
        want = [*self._client()[1:], "exec", target]
        words = argv[1:]
        project = self.data.get("incus_project") or ""
        if not argv or not argv[0].endswith("incus") or (not project and "--project" in words):
            return False
        return any(words[i : i + len(want)] == want for i in range(len(words) - len(want) + 1))

    def _member_down(self, found: dict[str, Any]) -> str:
        """One line naming the cluster member that holds this instance (``found``, as listed)
        and does not answer (the command never ran, or never finished)."""
        member = _member_of(found)
        remote = self._target().rpartition(":")[0]
        try:
            about = gevent.subprocess.run(
                [self._client()[0], "query", f"{remote + ':' if remote else ''}/1.0/cluster/members/{member}"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            seen = json.loads(about.stdout or "{}") if about.returncode == 0 else {}
        except (OSError, subprocess.TimeoutExpired, ValueError):
            seen = {}
        # the member the client talks to may not have missed it yet (it says so within ~12 s)
        why = "" if not seen or seen.get("status") == "Online" else incus_exec.describe_member(seen)
        return (
            f"{self._target()} is on cluster member {member or '(unknown)'}, which does not answer"
            f"{f' ({why})' if why else ''}: its tests fail until the member is back (`incus cluster list`)"
        )

    # -- commands and files ---------------------------------------------------------------

    def _exec(self, script: StringCommand | str, *, tty: bool = False) -> StringCommand:
        """``incus exec NAME -T -- sh -c SCRIPT`` (``-t``: a terminal) as a local command."""
        return StringCommand(
            *(shlex.quote(w) for w in self._client()),
            "exec",
            shlex.quote(self._target()),
            "-t" if tty else "-T",
            "--",
            "sh",
            "-c",
            QuoteString(script),
        )

    def run_shell_command(
        self,
        command: StringCommand,
        print_output: bool = False,
        print_input: bool = False,
        **arguments: Unpack[ConnectorArguments],
    ) -> tuple[bool, CommandOutput]:
        """The command as pyinfra wraps it (``_sudo``, ``_env``, ...), in orch's exec wrapper:
        its output is kept in the instance and read again where Incus lost a stream
        (:mod:`orchestrator.pyinfra.incus_exec`). With ``_get_pty`` a terminal merges the
        streams, and the command runs plainly."""
        local_arguments = extract_control_arguments(arguments)
        inner = make_unix_command_for_host(self.state, self.host, command, **arguments)
        if local_arguments.get("_get_pty"):
            return self.local.run_shell_command(
                self._exec(inner, tty=True), print_output=print_output, print_input=print_input, **local_arguments
            )
        ident = incus_exec.new_ident()
        wrapped = StringCommand(incus_exec.HEAD, inner, incus_exec.tail(ident, incus_exec.take_read(self._key())), _separator="")
        lost: list[str] = []
        watchdog = gevent.spawn(self._watch, lost) if self.clustered else None
        try:
            status, output = self.local.run_shell_command(
                self._exec(wrapped), print_output=False, print_input=print_input, **local_arguments
            )
        finally:
            if watchdog is not None:
                watchdog.kill()
        if lost:
            raise MemberUnreachable(lost[0])
        if not status and (incus_exec.member_down(output.stderr) or incus_exec.incus_error(output.stderr)):
            found = self._looked_up()  # Incus, not the command, failed: was it the instance's member?
            if _on_lost_member(found) or incus_exec.member_down(output.stderr):
                raise MemberUnreachable(self._member_down(found or {}))
        lines = incus_exec.read_whole(
            output, lambda: self.local.run_shell_command(self._exec(incus_exec.reread(ident)))[1], _whole
        )
        if lines is None:
            logger.warning("%sincus exec lost the output of a command, and it could not be read again", self.host.print_prefix)
            lines = list(output.combined_lines)
        else:
            incus_exec.mark_read(self._key(), ident)
        if print_output:
            for line in lines:
                echo(f"{self.host.print_prefix}{line.line}", err=True)
        return status, CommandOutput(lines)

    def _incus_file(self, verb: str, source: str, dest: str, print_output: bool, print_input: bool) -> None:
        # a pushed file is root's, as `docker cp` makes it (incus would copy the local
        # temporary file's owner into the instance)
        owner = ["--uid", "0", "--gid", "0"] if verb == "push" else []
        argv = StringCommand(
            *(shlex.quote(w) for w in self._client()), "file", verb, *owner, QuoteString(source), QuoteString(dest)
        )
        status, output = self.local.run_shell_command(argv, print_output=print_output, print_input=print_input)
        if not status:
            raise OSError(output.stderr)

    def put_file(
        self,
        filename_or_io: Any,
        remote_filename: str,
        remote_temp_filename: str | None = None,  # ignored: pushed where it goes, as root
        print_output: bool = False,
        print_input: bool = False,
        **arguments: Any,  # ignored (as @docker's): the file is written as root
    ) -> bool:
        fd, temp = mkstemp()
        try:
            with get_file_io(filename_or_io) as file_io, open(temp, "wb") as out:
                data = file_io.read()
                out.write(data.encode() if isinstance(data, str) else data)
            self._incus_file("push", temp, self._path(remote_filename), print_output, print_input)
        finally:
            os.close(fd)
            os.remove(temp)
        return True

    def get_file(
        self,
        remote_filename: str,
        filename_or_io: Any,
        remote_temp_filename: str | None = None,  # ignored
        print_output: bool = False,
        print_input: bool = False,
        **arguments: Any,  # ignored (as @docker's)
    ) -> bool:
        fd, temp = mkstemp()
        try:
            self._incus_file("pull", self._path(remote_filename), temp, print_output, print_input)
            with open(temp, "rb") as got, get_file_io(filename_or_io, "wb") as file_io:
                file_io.write(got.read())
        finally:
            os.close(fd)
            os.remove(temp)
        return True
