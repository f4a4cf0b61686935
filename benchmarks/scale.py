#!/usr/bin/env python3
"""How orch scales out: measured on this machine with two real engines, and simulated
for 100 workers on 10 engines with the FakeProvider.

    .venv/bin/python benchmarks/scale.py [--skip-real] [--workers 8]

Real: `orch up --workers N`, a warm `pytest -n N` of a small suite, and `orch reset --all`,
first with every worker on this machine's engine, then spread over it and a second
engine (scripts/engine2.sh: Docker-in-Docker on this same machine, so its CPUs are the
same two: the point is that nothing in orch serializes engines, not that two engines
on one machine are faster). Simulated: the same core code (placement, state, baseline
copies) on fake engines whose VM operations take a stated time and run at most
`engine_slots` at once per engine, as a real engine's throughput is bounded.
Writes docs/SCALING.json (or --out) and prints the tables that docs/SCALING.md shows.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from orchestrator.core import settings as config
from orchestrator.core.context import Context
from orchestrator.providers.engines import Engines, EngineSettings
from orchestrator.providers.fake import FakeProvider, FakeSettings
from orchestrator.pyinfra.runner import DeployResult, HostSpec
from orchestrator.verbs.reset import reset as reset_all
from orchestrator.verbs.up import up as bring_up

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from backends import clean_env  # noqa: E402  (tests/ helpers, on the path just above)
from engines import ensure_second_engine  # noqa: E402

SUITE = """
import pytest

@pytest.mark.parametrize("n", range(32))
def test_work(n, orch_worker):
    assert orch_worker.run("cat /etc/orch-worker").stdout.strip() == orch_worker.worker_id
"""


def log(msg: str) -> None:
    print(f"scale: {msg}", file=sys.stderr, flush=True)


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.monotonic()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{argv} failed:\n{proc.stdout}\n{proc.stderr}")
    return time.monotonic() - start


def real(workers: int) -> dict[str, dict[str, float]]:
    engine2 = ensure_second_engine()
    orch = str(Path(sys.executable).with_name("orch"))
    results = {}
    for label, engines in (("one engine", None), ("two engines", ["unix:///var/run/docker.sock", engine2.docker_host])):
        project = Path(tempfile.mkdtemp(prefix="orch-scale-"))
        prefix = f"s{secrets.token_hex(3)}"
        table = f'[tool.orch]\nprovider = "docker"\nimage = "orch-base:bookworm"\nprefix = "{prefix}"\nparallel = 8\n'
        if engines:
            table += f"\n[tool.orch.docker]\nengines = {json.dumps(engines)}\n"
        (project / "pyproject.toml").write_text(table)
        (project / "test_work.py").write_text(SUITE)
        env = clean_env()
        try:
            log(f"{label}: orch up --workers {workers}")
            row = {"up": timed([orch, "up", "--workers", str(workers)], project, env)}
            timed(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", str(workers)], project, env
            )  # warms imports
            row["pytest warm"] = timed(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", str(workers)], project, env
            )
            row["reset --all"] = timed([orch, "reset", "--all"], project, env)
            results[label] = row
        finally:
            subprocess.run([orch, "down", "--force"], cwd=project, env=env, capture_output=True)
    return results


def simulate(workers: int, engines: int, *, create: float, clone: float, copy: float, slots: int) -> dict[str, float]:
    """`orch up --workers N` and `orch reset --all` on fake engines (VM operations only;
    provisioning through pyinfra is not modelled: it runs every host of a batch at once)."""

    class FakeEngineSettings(FakeSettings, EngineSettings):
        """The fake's settings with the engines' (``engine_cap``: 0, no cap)."""

    class FakeEngine(FakeProvider):
        """One engine: VM operations take time, at most ``slots`` at once."""

        settings_model = FakeEngineSettings

        def __init__(self, settings: config.Settings, engine: str) -> None:
            super().__init__(settings, latency={})
            self.engine = engine
            self.slots = threading.Semaphore(slots)
            self.cost = {"create": create, "clone": clone, "delete": 0.2 * create, "rename": 0.01}

        def _enter(self, operation: str, vm: str = "") -> str:
            if operation in self.cost:
                with self.slots:
                    time.sleep(self.cost[operation])
            return super()._enter(operation, vm)

        def has_image(self, ref: str) -> bool:
            return ref in self.baselines or not ref.startswith("fake-baseline")

        def send_image(self, ref: str, tag: str, to: FakeEngine) -> None:
            with self.slots, to.slots:
                time.sleep(copy)
            to.baselines[ref] = dict(self.baselines[ref])

    class Provisioned:
        """Every deploy succeeds on every host, whichever engine holds its VM."""

        def run(self, hosts: list[HostSpec], funcs: list[Any], *, title: str = "") -> dict[str, DeployResult]:
            return {name: DeployResult(True) for name, _ in hosts}

    project = Path(tempfile.mkdtemp(prefix="orch-sim-"))
    names = [f"unix:///sim/engine{i}.sock" for i in range(engines)]
    (project / "pyproject.toml").write_text(
        '[tool.orch]\nprovider = "fake"\nimage = "fake:bookworm"\nparallel = 64\nretries = 0\n'
    )
    settings = config.load(cwd=project, env={})
    members = [FakeEngine(settings, name) for name in names]
    provider = Engines(settings, members)  # type: ignore[arg-type]
    ctx = Context(settings, provider=provider, deployer=Provisioned())  # no refill: no spares to make
    start = time.monotonic()
    results = bring_up(ctx, workers)
    up = time.monotonic() - start
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
    spread = sorted(sum(1 for v in m.vms if "-gw" in v) for m in members)
    start = time.monotonic()
    reset_all(ctx)
    reset = time.monotonic() - start
    return {"up": round(up, 2), "reset --all": round(reset, 2), "fewest per engine": spread[0], "most per engine": spread[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-real", action="store_true", help="only the simulation")
    parser.add_argument("--workers", type=int, default=8, help="workers for the real measurement (default 8)")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "docs" / "SCALING.json", help="where the JSON goes (default docs/SCALING.json)"
    )
    args = parser.parse_args()
    out: dict[str, object] = {"machine": {"cpus": os.cpu_count()}, "command": "python benchmarks/scale.py"}
    if not args.skip_real:
        out["real"] = {"workers": args.workers, "results": real(args.workers)}
    model = {"create": 0.5, "clone": 0.5, "copy": 5.0, "slots": 4}
    sims = {}
    for workers, engines in ((100, 1), (100, 10), (256, 10)):
        log(f"simulating {workers} workers on {engines} engine(s)")
        sims[f"{workers} workers, {engines} engine(s)"] = simulate(workers, engines, **model)  # type: ignore[arg-type]
    out["simulation"] = {"model": model, "results": sims}
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
