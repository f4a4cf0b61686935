"""The wrapper that keeps an ``incus exec`` command's output inside the instance (see
orchestrator/pyinfra/incus_exec.py), run here by a local ``sh`` in a folder of the test's
own: the command's output, exit code and stdin pass through whole, each stream ends with
the mark, a kept pair is read again, and the previous one is deleted."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from orchestrator.pyinfra import incus_exec as X


def sh(script: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", script], input=stdin, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize(
    "command",
    ["printf 'a\\nb'", "echo out; echo err >&2; exit 3", "exit 0", "cat; printf '\\n'", "echo x # a comment"],
)
def test_the_command_runs_whole_and_each_stream_ends_with_the_mark(tmp_path: Path, command: str) -> None:
    plain = sh(command, "from stdin")
    ident = X.new_ident()
    wrapped = sh(X.wrap(command, ident, folder=str(tmp_path)), "from stdin")
    assert wrapped.returncode == plain.returncode
    assert X.unmarked(wrapped.stdout) == plain.stdout and X.unmarked(wrapped.stderr) == plain.stderr
    again = sh(X.reread(ident, folder=str(tmp_path)))
    assert X.unmarked(again.stdout) == plain.stdout and X.unmarked(again.stderr) == plain.stderr
    lines = wrapped.stdout.split("\n")
    expected = plain.stdout.split("\n")
    assert X.unmarked_lines(lines if lines[-1] else lines[:-1]) == (expected if expected[-1] else expected[:-1])


def test_a_stream_without_its_mark_is_lost() -> None:
    assert X.unmarked("partial out") is None and X.unmarked("") is None
    assert X.unmarked_lines(["a", "b"]) is None and X.unmarked_lines([]) is None
    assert X.unmarked_lines([X.END]) == [] and X.unmarked_lines(["a", f"b{X.END}"]) == ["a", "b"]


def test_the_previous_pair_is_deleted_and_a_missing_pair_is_not_read(tmp_path: Path) -> None:
    first, second = X.new_ident(), X.new_ident()
    sh(X.wrap("echo one", first, folder=str(tmp_path)))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"{first}.out", f"{first}.err"])
    sh(X.wrap("echo two", second, [first], folder=str(tmp_path)))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"{second}.out", f"{second}.err"])
    gone = sh(X.reread(first, folder=str(tmp_path)))
    assert X.unmarked(gone.stdout) is None  # nothing to read again: the caller says so


def test_where_no_folder_can_be_made_the_command_still_runs(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    result = sh(X.wrap("echo plain; exit 4", X.new_ident(), folder=str(tmp_path / "file" / "sub")))
    assert result.returncode == 4 and X.unmarked(result.stdout) == "plain\n" and X.unmarked(result.stderr) == ""


def test_ids_are_checked() -> None:
    with pytest.raises(ValueError):
        X.wrap("true", "../../etc")


def test_each_read_pair_is_handed_to_one_next_command() -> None:
    X.mark_read("p/vm", "a" * 16)
    X.mark_read("p/vm", "b" * 16)
    assert X.take_read("p/vm") == ["a" * 16, "b" * 16] and X.take_read("p/vm") == []
