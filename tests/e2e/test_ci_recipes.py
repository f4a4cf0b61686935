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
#: A command run for its output (`echo "key=$(orch baseline key)" >> "$GITHUB_OUTPUT"`).
SUBSTITUTED = re.compile(r"\$\(((?:orch|pytest)\s[^)]*)\)")


def recipe_commands() -> list[list[str]]:
    """Every `orch …` / `pytest …` line of docs/CI.md's YAML blocks, in order."""
    text = (ROOT / "docs" / "CI.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    found = []
    for line in (line for block in blocks for line in block.splitlines()):
        if m := COMMAND.match(line) or SUBSTITUTED.search(line):
            found.append(shlex.split(m.group(1)))
    return found


def test_the_recipes_have_the_documented_commands() -> None:
    commands = [" ".join(c) for c in recipe_commands()]
    assert commands.count("pytest -n auto --orch-up --orch-baseline-cache .orch-cache") == 1
    assert commands.count("pytest -n auto --orch-up") == 1
    assert commands.count("orch baseline key") == 1
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


def test_the_cache_recipe_in_two_cold_jobs(project: Path, tmp_path: Path) -> None:
    """The GitHub recipe as two cold jobs (each a new clone, so a checkout of its own, its
    workers dropped at the end), with actions/cache in between: restore the key's entry,
    save the folder only on a miss. The first builds the baseline and saves it; the
    second restores it and provisions nothing."""
    github = recipe_commands()[: recipe_commands().index(["orch", "down", "--force"]) + 1]
    store = tmp_path / "actions-cache"  # what actions/cache keeps, one folder per key
    outputs = []
    for job in ("job1", "job2"):
        clone = tmp_path / job
        clone.mkdir()
        shutil.copy(project / "pyproject.toml", clone / "pyproject.toml")
        shutil.copy(ROOT / "examples" / "test_example.py", clone / "test_example.py")
        key = ""
        hit = False
        for argv in github:
            if argv[0] == "pytest":
                if (store / key).is_dir():  # actions/cache: restore
                    shutil.copytree(store / key, clone / ".orch-cache")
                    hit = True
                proc = run_pytest(clone, *argv[1:])
                assert proc.returncode == 0, f"{job} {argv}: {proc.stdout}{proc.stderr}"
                outputs.append(proc.stdout)
                if not hit:  # actions/cache: save on a miss, at the end of the job
                    shutil.copytree(clone / ".orch-cache", store / key)
            else:
                proc = run_orch(clone, *argv[1:])
                assert proc.returncode == 0, f"{job} {argv}: {proc.stderr}"
                if argv[1:] == ["baseline", "key"]:
                    key = f"orch-baseline-{proc.stdout.strip()}"
        assert hit is (job == "job2")
    first, second = outputs
    assert "building the baseline" in first and "baseline written to cache" in first
    assert "baseline from cache" in second, second
    assert "provisioning with" not in second and "building the baseline" not in second
