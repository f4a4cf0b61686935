"""The in-VM pollution check without a VM: how its output is read (paths with spaces, tabs,
newlines, backslashes and bytes that are not UTF-8 come back whole; a truncated or failed
run is never taken for clean), what the command prunes, and what its checker does with
the answers. The command itself runs on real backends in tests/integration/test_isolation.py."""

from __future__ import annotations

import shlex
import subprocess

import pytest

from orchestrator.core.isolation import PYINFRA_TEMP, STATE_DIR, ExecChecker, parse, script, unescape
from orchestrator.primitives.changes import Changes, CheckFailed, Ignore
from orchestrator.primitives.results import ExecResult

END = "Z\tend\n"


def test_each_kind_of_record_fills_its_field_sorted() -> None:
    out = (
        "A\t/etc/zz\nA\t/etc/foo\nM\t/etc/passwd\nD\t/etc/motd\n"
        "U+\tbob\nU-\tgames\nG+\tbob\nG-\tgames\n"
        "P+\thello 2.10-3\nP-\tcurl 7.88\nR\t900 sleep 1000\nR\t77 nc -l 9\n" + END
    )
    parsed = parse(out, Ignore.of())
    assert parsed.complete and not parsed.unknown and not parsed.error
    assert parsed.changes == Changes(
        created=("/etc/foo", "/etc/zz"),
        changed=("/etc/passwd",),
        deleted=("/etc/motd",),
        users_added=("bob",),
        users_removed=("games",),
        groups_added=("bob",),
        groups_removed=("games",),
        packages_installed=("hello 2.10-3",),
        packages_removed=("curl 7.88",),
        processes=("77 nc -l 9", "900 sleep 1000"),  # by pid
    )


@pytest.mark.parametrize(
    ("written", "path"),
    [
        ("/opt/a b/c", "/opt/a b/c"),
        ("/opt/tab\\011in\\012newline", "/opt/tab\tin\nnewline"),
        ("/opt/back\\\\slash\\\\101", "/opt/back\\slash\\101"),  # a backslash, then digits: not an escape
        ("/opt/caf\\303\\251", "/opt/café"),
        ("/opt/bad\\377", "/opt/bad\\xff"),  # not UTF-8: shown, never a decoding error
    ],
)
def test_a_path_comes_back_whole(written: str, path: str) -> None:
    assert unescape(written) == path
    assert parse(f"A\t{written}\n{END}", Ignore.of()).changes.created == (path,)


def test_ignored_paths_and_lines_of_no_known_form_are_left_out() -> None:
    out = "A\t/run/x\nA\t/var/cache/mine/y\nA\t/var/cache/minefield\nnoise without a tab\nQ\tunknown kind\nA\trelative\n" + END
    parsed = parse(out, Ignore.of(["/var/cache/mine"]))
    assert parsed.changes.created == ("/var/cache/minefield",)


def test_a_run_that_did_not_reach_its_end_or_named_an_error_fails_the_check() -> None:
    changes = "A\t/etc/foo\n"
    for result, why in [
        (ExecResult(0, changes, ""), "before its end"),  # cut short: no end record
        (ExecResult(0, "X\tthe VM has no find\n", ""), "the VM has no find"),
        (ExecResult(137, changes + END, "Killed"), r"exit code 137\): Killed"),
    ]:
        checker = ExecChecker(lambda cmd, r=result: r, Ignore.of())
        with pytest.raises(CheckFailed, match=why):
            checker.check()


def test_a_connection_that_breaks_fails_the_check() -> None:
    def run(cmd: str) -> ExecResult:
        raise ConnectionResetError("connection lost")

    with pytest.raises(CheckFailed, match="did not run in the VM: connection lost"):
        ExecChecker(run, Ignore.of()).check()


def test_a_state_that_was_lost_is_unknown_for_check_and_fine_for_arm() -> None:
    lost = ExecResult(0, "W\tthe VM restarted since the last check (a reboot, or a stop and a start)\n" + END, "")
    checker = ExecChecker(lambda cmd: lost, Ignore.of())
    checker.arm()  # arming takes the state: nothing to compare yet
    with pytest.raises(CheckFailed, match="cannot tell what changed: the VM restarted"):
        checker.check()


def test_the_command_prunes_the_ignored_paths_its_state_and_pyinfras_temp_files() -> None:
    cmd = script(Ignore.of(["/srv/my data", "/opt/*glob"], machine=True))
    for path in ["/proc", "/sys", "/dev", "/run", "/var/log/journal", "/var/lib/systemd", STATE_DIR, "'/srv/my data'"]:
        assert f"-path {path if path.startswith(chr(39)) else shlex.quote(path)} " in cmd
    assert all(f"-path {shlex.quote(pattern)}" in cmd for pattern in PYINFRA_TEMP)
    assert "-path '/opt/\\*glob'" in cmd  # a literal star, not a pattern


def test_the_command_is_posix_sh() -> None:
    """dash (Debian's /bin/sh) parses it: no bash-isms reach a VM without bash."""
    dash = subprocess.run(["sh", "-n", "-c", script(Ignore.of(["/srv/x y"]))], capture_output=True, text=True)
    assert dash.returncode == 0, dash.stderr
