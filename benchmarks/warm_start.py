"""orch's own cost of a warm start: ``pytest -n 4 --orch-up`` when the 4 workers are
already up and current, against the same suite with no orch at all (``-p no:orch``).

Issue 21's target: orch's part of a warm start ≤ 0.3 s. One project folder on the Docker
provider, its 4 workers made once (``orch up --workers 4``, not timed), then rounds of
these runs, alternated so that the machine's drift falls on every variant alike:

- ``none``: ``pytest -n 4 -p no:orch`` on 12 trivial tests (no orch fixture);
- ``plugin``: the same with orch's plugin loaded, no ``--orch-up`` (its load and lease);
- ``up``: the same with ``--orch-up`` (the warm ``orch up`` on the controller);
- ``fixtures``: ``pytest -n 4`` on 12 tests that take ``orch_worker`` (the handout);
- ``fixtures_up``: the same with ``--orch-up``.

Reported as medians: ``orch_part`` (up - none: the target), ``plugin_part`` (plugin -
none), ``up_part`` (up - plugin) and ``up_part_fixtures`` (fixtures_up - fixtures).

Standalone (stdlib and subprocess only): ``benchmarks/bench.py`` imports :func:`measure`;
``python benchmarks/warm_start.py [--rounds N] [--dir DIR]`` prints the table.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
BASE_IMAGE = os.environ.get("ORCH_BASE_IMAGE", "orch-base:bookworm")
WORKERS = 4
TESTS = 12
TARGET = 0.3  # seconds: issue 21's target for orch's part of a warm start

PLAIN = f"""
import pytest


@pytest.mark.parametrize("n", range({TESTS}))
def test_plain(n):
    assert n >= 0
"""

FIXTURES = f"""
import pytest


@pytest.mark.parametrize("n", range({TESTS}))
def test_worker(n, orch_worker):
    assert orch_worker.vm
"""

#: variant -> (pytest arguments, test file)
VARIANTS: dict[str, tuple[tuple[str, ...], str]] = {
    "none": (("-p", "no:orch"), "test_plain.py"),
    "plugin": ((), "test_plain.py"),
    "up": (("--orch-up",), "test_plain.py"),
    "fixtures": ((), "test_fixtures.py"),
    "fixtures_up": (("--orch-up",), "test_fixtures.py"),
}

_READY = re.compile(r"orch: \d+ worker\(s\) ready in ([0-9.]+)s")


class Project:
    """A project folder on the Docker provider with a prefix of its own, the two suites,
    and an environment free of the caller's ORCH_/PYTEST_ variables (and its own registry
    of checkouts, never the user's)."""

    def __init__(self, folder: Path, env_extra: dict[str, str] | None = None) -> None:
        self.dir = folder
        self.dir.mkdir(parents=True, exist_ok=True)
        self.prefix = "ws" + secrets.token_hex(3)
        (self.dir / "pyproject.toml").write_text(
            f'[tool.orch]\nprovider = "docker"\nimage = "{BASE_IMAGE}"\nprefix = "{self.prefix}"\n'
        )
        (self.dir / "test_plain.py").write_text(PLAIN)
        (self.dir / "test_fixtures.py").write_text(FIXTURES)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "ORCH_"))}
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
        env["ORCH_HOME"] = str(self.dir / ".orch-home")
        # as a user's Python does: bytecode cached, or every process compiles orch's modules anew
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.env = {**env, **(env_extra or {})}

    def run(self, *args: str, timeout: float = 900) -> tuple[float, subprocess.CompletedProcess[str]]:
        start = time.perf_counter()
        proc = subprocess.run(list(args), cwd=self.dir, env=self.env, capture_output=True, text=True, timeout=timeout)
        took = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return took, proc

    def pytest(self, variant: str) -> tuple[float, float | None]:
        """One run of ``variant``: its wall time, and the bring-up time it printed (if any)."""
        extra, suite = VARIANTS[variant]
        argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "-n", str(WORKERS)]
        took, proc = self.run(*argv, *extra, suite)
        if f"{TESTS} passed" not in proc.stdout:
            raise RuntimeError(f"{variant}: expected {TESTS} passed:\n{proc.stdout[-3000:]}")
        ready = _READY.search(proc.stdout)
        return took, float(ready.group(1)) if ready else None

    def up(self) -> None:
        self.run(str(BIN / "orch"), "up", "--workers", str(WORKERS))

    def down(self) -> None:
        """Delete everything of this project: ``orch down``, then whatever still carries its
        prefix (a run that failed halfway)."""
        subprocess.run(
            [str(BIN / "orch"), "down", "--force"], cwd=self.dir, env=self.env, capture_output=True, text=True, timeout=900
        )
        names = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"name=^{self.prefix}-"], capture_output=True, text=True, timeout=120
        ).stdout.split()
        if names:
            subprocess.run(["docker", "rm", "-f", *names], capture_output=True, timeout=300)


def measure(project_dir: Path, rounds: int, *, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Make the project in ``project_dir``, bring its workers up once, run every variant
    once to warm the caches, then ``rounds`` rounds of all variants (the order rotated
    each round); always deletes its VMs. Returns the walls, their medians and the parts.
    ``env``: more variables for every command (``PYTHONPATH`` naming another orch, to
    compare two versions)."""
    project = Project(project_dir, env)
    walls: dict[str, list[float]] = {v: [] for v in VARIANTS}
    reported: dict[str, list[float]] = {"up": [], "fixtures_up": []}
    names = list(VARIANTS)
    try:
        project.up()
        for variant in names:  # warm: bytecode, the engine's caches, the baseline verified once
            project.pytest(variant)
        for i in range(rounds):
            order = names[i % len(names) :] + names[: i % len(names)]
            for variant in order:
                took, ready = project.pytest(variant)
                walls[variant].append(took)
                if ready is not None and variant in reported:
                    reported[variant].append(ready)
    finally:
        project.down()
    median = {v: statistics.median(w) for v, w in walls.items()}
    parts = {
        "orch_part": median["up"] - median["none"],
        "plugin_part": median["plugin"] - median["none"],
        "up_part": median["up"] - median["plugin"],
        "up_part_fixtures": median["fixtures_up"] - median["fixtures"],
    }
    return {
        "rounds": rounds,
        "workers": WORKERS,
        "tests": TESTS,
        "walls": walls,
        "median": median,
        "up_reported": {v: statistics.median(r) if r else None for v, r in reported.items()},
        **parts,
        "target": TARGET,
        "met": parts["orch_part"] <= TARGET,
    }


def table(result: dict[str, Any]) -> str:
    rows = [f"warm start, pytest -n {result['workers']}, {result['tests']} tests, {result['rounds']} rounds (medians)"]
    for variant, (extra, suite) in VARIANTS.items():
        args = " ".join(extra) or "(orch loaded)" if variant != "none" else "-p no:orch"
        rows.append(f"  {variant:<12} {result['median'][variant]:6.2f} s   {suite} {args}")
    for name, value in result["up_reported"].items():
        if value is not None:
            rows.append(f"  {name:<12} bring-up printed by the plugin: {value:.2f} s")
    rows.append(
        f"  orch's part (up - none):            {result['orch_part']:+.2f} s  "
        f"(target ≤ {result['target']} s: {'met' if result['met'] else 'missed'})"
    )
    rows.append(f"  plugin loaded (plugin - none):      {result['plugin_part']:+.2f} s")
    rows.append(f"  --orch-up, plain tests (up - plugin): {result['up_part']:+.2f} s")
    rows.append(f"  --orch-up, orch_worker tests:       {result['up_part_fixtures']:+.2f} s")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None, help="the project folder [default: a new temporary one]")
    args = parser.parse_args()
    folder = args.dir or Path(tempfile.mkdtemp(prefix="orch-warm-start-"))
    try:
        print(table(measure(folder, args.rounds)))
    finally:
        if args.dir is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
