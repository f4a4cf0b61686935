"""The commands of docs/CI.md's recipes, run in order as a pipeline would, on a real
Docker engine: what the docs tell a team to run works."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

from backends import run_orch, run_pytest

ROOT = Path(__file__).resolve().parents[2]
COMMAND = re.compile(r"^\s*(?:-\s+)?(?:run:\s+)?((?:orch|pytest)\s[^#]*?)\s*(?:#.*)?$")


def recipe_commands() -> list[list[str]]:
    """Every `orch …` / `pytest …` line of docs/CI.md's YAML blocks, in order."""
    text = (ROOT / "docs" / "CI.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    return [shlex.split(m.group(1)) for block in blocks for line in block.splitlines() if (m := COMMAND.match(line))]


def test_the_recipes_have_the_documented_commands() -> None:
    commands = [" ".join(c) for c in recipe_commands()]
    assert commands.count("pytest -n auto --orch-up") == 2
    assert commands.count("orch down --force") == 2
    assert commands.count("orch sweep --older-than 12h --json") == 2


def test_the_recipes_commands_run(project: Path) -> None:
    shutil.copy(ROOT / "examples" / "test_example.py", project / "test_example.py")
    seen: list[list[str]] = []
    for argv in recipe_commands():
        if argv in seen:
            continue  # the GitLab recipe runs the same commands as the GitHub one
        seen.append(argv)
        if argv[0] == "pytest":
            proc = run_pytest(project, *argv[1:])
            assert proc.returncode == 0, f"{argv}: {proc.stdout}{proc.stderr}"
            assert "orch: bringing up" in proc.stdout
        else:
            proc = run_orch(project, *argv[1:])
            assert proc.returncode == 0, f"{argv}: {proc.stderr}"
            if "--json" in argv:
                json.loads(proc.stdout)
