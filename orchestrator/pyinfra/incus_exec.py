"""Output that ``incus exec`` does not lose: the command's stdout and stderr kept in files
inside the instance, printed with an end mark, and read again when a mark is missing.

Why: under load, Incus 6.0.4's client loses the whole stdout or stderr of a short command
now and then (2-5 % of ``incus exec NAME -T -- cat FILE`` with six running at once on
this machine, 0 % when idle), while the exit code is right. The server pings each
websocket as it connects and closes them once the command has ended; a client that reads
the ping only after that fails to answer it ("write: broken pipe", ``--debug``) and stops
reading that stream, output unread. A lost stream always loses its end, so a mark printed
last tells a whole stream from a lost one; the files let orch read it again without
running the command twice.

The wrapper runs the command as a shell function with the caller's stdin, its output in
``/run/orch-exec/ID.out`` and ``.err`` (a tmpfs: gone at the next boot), prints both with
:data:`END` after each and exits with the command's code. It deletes the pairs read
whole since the instance's last command (by any caller in this process:
:func:`take_read`) and any pair older than ten minutes. Where that folder cannot be made
it runs the command plainly, still printing the marks.
"""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Callable, Iterable
from typing import TypeVar

R = TypeVar("R")
U = TypeVar("U")

#: Printed after each stream: a record separator (\\036) either side, never in text output.
END = "\x1eorch-end\x1e"
DIR = "/run/orch-exec"
#: How many times a stream whose mark is missing is read again.
REREADS = 5
#: Kept pairs older than this are deleted by the next command (what no caller deleted).
KEEP_MINUTES = 10

_IDENT = re.compile(r"[0-9a-f]{16}")
_MARK = r"printf '\036orch-end\036'"


#: What ``incus exec`` ends with when the cluster member holding the instance does not
#: answer (the command never ran), or answers only in a moment (it is starting).
_MEMBER_DOWN = (
    "Missing event connection with target cluster member",
    "Failed to connect to cluster member",
    "Server isn't ready yet",
)


def member_down(stderr: str) -> bool:
    """Whether an ``incus exec`` failed because Incus could not reach the cluster member
    that holds the instance (Incus's own last line says so)."""
    lines = stderr.strip().splitlines()
    return bool(lines) and lines[-1].startswith("Error: ") and any(t in lines[-1] for t in _MEMBER_DOWN)


def incus_error(stderr: str) -> bool:
    """Whether a failed ``incus exec`` ended with Incus's own ``Error:`` line and without the
    wrapper's end mark: Incus, not the command, failed (a member dying mid-command says
    ``Error: read tcp A->B:8443: read: connection reset by peer``)."""
    lines = stderr.strip().splitlines()
    return bool(lines) and lines[-1].startswith("Error: ") and END not in stderr


def describe_member(member: dict[str, object]) -> str:
    """A cluster member's status in a few words, "offline: No heartbeat for 21.7s" (no
    timestamp, no nanoseconds)."""
    message = re.sub(r"\s*\(\d{4}-\d\d-\d\d [^)]*\)", "", str(member.get("message", "")))
    message = re.sub(r"(\d+\.\d)\d+s", r"\1s", " ".join(message.split()))
    return f"{str(member.get('status', '')).lower()}: {message}".rstrip(": ")


def new_ident() -> str:
    return secrets.token_hex(8)


def _checked(ident: str) -> str:
    if not _IDENT.fullmatch(ident):
        raise ValueError(f"not an exec id: {ident!r}")
    return ident


#: The wrapper's start: the command follows, then :func:`tail`.
HEAD = "orch_run() (\n"


def tail(ident: str, previous: Iterable[str] = (), folder: str = DIR) -> str:
    """The wrapper's end, after the command: run it, keep and print its output (a kept file
    that is gone prints no mark: read again, then reported)."""
    f = f"{folder}/{_checked(ident)}"
    old = " ".join(f'"{folder}/{_checked(p)}.out" "{folder}/{p}.err"' for p in previous)
    drop = f"rm -f {old}; " if old else ""
    return (
        "\n)\n"
        f'if mkdir -p {folder} 2>/dev/null && : >"{f}.out" 2>/dev/null; then\n'
        f"  {drop}find {folder} -type f -mmin +{KEEP_MINUTES} -delete 2>/dev/null\n"
        f'  orch_run >"{f}.out" 2>"{f}.err"; rc=$?\n'
        f'  cat "{f}.out" && {_MARK}; cat "{f}.err" >&2 && {_MARK} >&2\n'
        "else\n"
        f"  orch_run; rc=$?; {_MARK}; {_MARK} >&2\n"
        "fi\n"
        "exit $rc\n"
    )


def wrap(command: str, ident: str, previous: Iterable[str] = (), folder: str = DIR) -> str:
    """``command`` (shell text) in the wrapper."""
    return f"{HEAD}{command}{tail(ident, previous, folder)}"


def reread(ident: str, folder: str = DIR) -> str:
    """A shell script that prints a kept pair again, with the marks (none if it is gone)."""
    f = f"{folder}/{_checked(ident)}"
    return f'cat "{f}.out" && {_MARK}; cat "{f}.err" >&2 && {_MARK} >&2'


def read_whole(first: R, again: Callable[[], R], unmark: Callable[[R], U | None]) -> U | None:
    """What ``unmark`` makes of the first run's output (the streams without their marks),
    or, while it says a stream was lost (None), of the kept pair read ``again``: at most
    :data:`REREADS` times, then None."""
    got = unmark(first)
    for _ in range(REREADS):
        if got is not None:
            break
        got = unmark(again())
    return got


def unmarked(text: str) -> str | None:
    """A whole stream without its mark; None when the mark (so the stream) was lost."""
    return text[: -len(END)] if text.endswith(END) else None


def unmarked_pair(stdout: str, stderr: str) -> tuple[str, str] | None:
    """Both streams without their marks; None when Incus lost either."""
    out, err = unmarked(stdout), unmarked(stderr)
    return None if out is None or err is None else (out, err)


def unmarked_lines(lines: list[str]) -> list[str] | None:
    """The same for a stream split into lines (pyinfra's): the mark ends the last line, or
    is a line of its own after output that ended with a newline."""
    if not lines or not lines[-1].endswith(END):
        return None
    last = lines[-1][: -len(END)]
    return [*lines[:-1], last] if last else lines[:-1]


# -- whose kept pairs are read, per instance, in this process -----------------------------

_read: dict[str, set[str]] = {}
_read_lock = threading.Lock()


def take_read(instance: str) -> list[str]:
    """The pairs of ``instance`` read whole since its last command began: the next command
    deletes them (each one once, whichever caller runs next)."""
    with _read_lock:
        return sorted(_read.pop(instance, set()))


def mark_read(instance: str, ident: str) -> None:
    with _read_lock:
        _read.setdefault(instance, set()).add(ident)
