#!/usr/bin/env python3
"""How orch scales out: measured on this machine with two real Docker engines and a
two-member Incus cluster, and simulated for 100 and 256 workers on 10 engines or members.

    .venv/bin/python benchmarks/scale.py --skip-real --out /tmp/scale-sim.json  # simulation only (< 2 min)
    .venv/bin/python benchmarks/scale.py [--workers 8]             # + real Docker: one engine, two engines
    .venv/bin/python benchmarks/scale.py --cluster [--workers 8]   # + real Incus cluster: one member, two
    .venv/bin/python benchmarks/scale.py --only-cluster            # the real Incus cluster part alone

Real Docker: `orch up --workers N`, a warm `pytest -n N` of a small suite (after one
warm-up run), and `orch reset --all`, first with every worker on this machine's engine,
then spread over it and a second engine (scripts/engine2.sh: Docker-in-Docker on this
same machine, so its CPUs are the same two: the point is that nothing in orch serializes
engines, not that two engines on one machine are faster). orch places those: `gwN` on
engine `N mod k`.

Real Incus cluster (`--cluster`, off by default: it needs scripts/incus-cluster.sh's
two-member cluster on this machine, started here when `status` fails): the same three
numbers with every worker pinned to member m1 (`[tool.orch.incus] target = "m1"`), then
with no target, where the cluster's own scheduler places each instance; and how many
workers landed on each member (`incus list orch-cluster:`, each instance's location).
`orch down --force` always ends each project.

Simulated: the same core code (state, baseline, clones) on fake backends whose VM
operations take a stated time and run at most `slots` at once per engine or member, as a
real engine's throughput is bounded. "orch places": one FakeEngine per engine behind
orch's own `Engines` (placement `N mod k`, the baseline copied to every engine). "cluster
places": one provider for the whole cluster (benchmarks/fake_cluster.py) that puts each
new VM on its least-loaded member by instance count, as Incus does, and copies the
baseline to a member at its first clone there ("baseline copies").
Writes docs/SCALING.json (or --out) and prints one line per mode and size, the table
docs/SCALING.md shows.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
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
from fake_cluster import FakeCluster  # noqa: E402  (beside this file: on the path as the script's folder)

CLUSTER_SCRIPT = ROOT / "scripts" / "incus-cluster.sh"
CLUSTER_REMOTE = "orch-cluster"

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
    if proc.returncode != 0:  # the end of its output: pytest's summary, orch's one-line error
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-30:])
        raise SystemExit(f"{shlex.join(argv)} failed (in {cwd}):\n{tail}")
    return time.monotonic() - start


def measure(label: str, table: str, prefix: str, workers: int, where: Any = None) -> dict[str, Any]:
    """`orch up --workers N`, a warm `pytest -n N` (after one warm-up run) and `orch reset
    --all` in a new project of ``table``; ``where(prefix)``: where the workers are, after up
    and after the reset. Always `orch down --force` at the end."""
    orch = str(Path(sys.executable).with_name("orch"))
    pytest_argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", str(workers)]
    project = Path(tempfile.mkdtemp(prefix="orch-scale-"))
    (project / "pyproject.toml").write_text(table)
    (project / "test_work.py").write_text(SUITE)
    env = clean_env()
    try:
        log(f"{label}: orch up --workers {workers}")
        row: dict[str, Any] = {"up": timed([orch, "up", "--workers", str(workers)], project, env)}
        if where is not None:
            row["per member after up"] = where(prefix)
        timed(pytest_argv, project, env)  # warms imports
        row["pytest warm"] = timed(pytest_argv, project, env)
        row["reset --all"] = timed([orch, "reset", "--all"], project, env)
        if where is not None:
            row["per member after reset"] = where(prefix)
        return row
    finally:
        subprocess.run([orch, "down", "--force"], cwd=project, env=env, capture_output=True)


def real(workers: int) -> dict[str, dict[str, Any]]:
    engine2 = ensure_second_engine()
    results = {}
    for label, engines in (("one engine", None), ("two engines", ["unix:///var/run/docker.sock", engine2.docker_host])):
        prefix = f"s{secrets.token_hex(3)}"
        table = f'[tool.orch]\nprovider = "docker"\nimage = "orch-base:bookworm"\nprefix = "{prefix}"\nparallel = 8\n'
        if engines:
            table += f"\n[tool.orch.docker]\nengines = {json.dumps(engines)}\n"
        results[label] = measure(label, table, prefix, workers)
    return results


def real_cluster(workers: int) -> dict[str, dict[str, Any]]:
    """The Docker part's three numbers on the Incus cluster, pinned to m1 and then placed
    by the cluster, with where the workers landed after up and after the reset."""
    if not CLUSTER_SCRIPT.exists():
        raise SystemExit(f"{CLUSTER_SCRIPT.relative_to(ROOT)} is missing: the Incus cluster part needs it")
    if subprocess.run([str(CLUSTER_SCRIPT), "status"], capture_output=True).returncode != 0:
        log("the Incus cluster is not up: scripts/incus-cluster.sh start")
        proc = subprocess.run([str(CLUSTER_SCRIPT), "start"], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"scripts/incus-cluster.sh start failed:\n{proc.stdout}\n{proc.stderr}")
    results: dict[str, dict[str, Any]] = {}
    for label, target in (("one member", "m1"), ("two members", "")):
        prefix = f"c{secrets.token_hex(3)}"
        table = (
            f'[tool.orch]\nprovider = "incus"\nimage = "orch-machine/bookworm"\nstandby = false\n'
            f'prefix = "{prefix}"\nparallel = 8\n\n[tool.orch.incus]\nremote = "{CLUSTER_REMOTE}"\n'
        )
        if target:
            table += f'target = "{target}"\n'
        results[label] = measure(f"cluster, {label}", table, prefix, workers, where=cluster_placement)
    return results


def cluster_placement(prefix: str) -> dict[str, int]:
    """How many of this project's workers (``{prefix}-{checkout}-gwN``) each member holds,
    as the cluster reports it (each instance's ``location``)."""
    proc = subprocess.run(
        ["incus", "list", f"{CLUSTER_REMOTE}:", "--format", "json"], capture_output=True, text=True, timeout=120
    )
    if proc.returncode != 0:
        raise SystemExit(f"incus list {CLUSTER_REMOTE}: failed: {proc.stderr.strip()}")
    worker = re.compile(rf"{re.escape(prefix)}-[0-9a-f]{{8}}-gw[0-9]+")
    placed: dict[str, int] = {}
    for instance in json.loads(proc.stdout):
        if worker.fullmatch(instance.get("name", "")):
            where = instance.get("location") or "?"
            placed[where] = placed.get(where, 0) + 1
    return dict(sorted(placed.items()))


class Provisioned:
    """Every deploy succeeds on every host, whichever engine holds its VM (provisioning
    through pyinfra is not modelled: it runs every host of a batch at once)."""

    def run(self, hosts: list[HostSpec], funcs: list[Any], *, title: str = "") -> dict[str, DeployResult]:
        return {name: DeployResult(True) for name, _ in hosts}


def _sim_settings() -> config.Settings:
    project = Path(tempfile.mkdtemp(prefix="orch-sim-"))
    (project / "pyproject.toml").write_text(
        '[tool.orch]\nprovider = "fake"\nimage = "fake:bookworm"\nparallel = 64\nretries = 0\n'
    )
    return config.load(cwd=project, env={})


def _up_and_reset(ctx: Context, workers: int, spread: Any) -> dict[str, Any]:
    """`orch up --workers N` then `orch reset --all`, timed; ``spread()`` (workers per
    engine, sorted) read after up."""
    start = time.monotonic()
    results = bring_up(ctx, workers)
    up = time.monotonic() - start
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
    after_up = spread()
    start = time.monotonic()
    reset_all(ctx)
    reset = time.monotonic() - start
    return {"up": round(up, 2), "reset --all": round(reset, 2), "spread": after_up, "after reset": spread()}


def simulate(workers: int, engines: int, *, create: float, clone: float, copy: float, slots: int) -> dict[str, float]:
    """`orch up --workers N` and `orch reset --all` on fake engines that orch places on
    (VM operations only)."""

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

    settings = _sim_settings()
    members = [FakeEngine(settings, f"unix:///sim/engine{i}.sock") for i in range(engines)]
    provider = Engines(settings, members)  # type: ignore[arg-type]
    ctx = Context(settings, provider=provider, deployer=Provisioned())  # no refill: no spares to make
    row = _up_and_reset(ctx, workers, lambda: sorted(sum(1 for v in m.vms if "-gw" in v) for m in members))
    return {
        "up": row["up"],
        "reset --all": row["reset --all"],
        "fewest per engine": row["spread"][0],
        "most per engine": row["spread"][-1],
    }


def simulate_cluster(workers: int, members: int, *, create: float, clone: float, copy: float, slots: int) -> dict[str, float]:
    """The same on one fake cluster of ``members`` members that places every VM itself."""
    settings = _sim_settings()
    cluster = FakeCluster(settings, [f"m{i + 1}" for i in range(members)], create=create, clone=clone, copy=copy, slots=slots)
    ctx = Context(settings, provider=cluster, deployer=Provisioned())
    row = _up_and_reset(ctx, workers, cluster.per_member)
    return {
        "up": row["up"],
        "reset --all": row["reset --all"],
        "fewest per member": row["spread"][0],
        "most per member": row["spread"][-1],
        "fewest per member after reset": row["after reset"][0],
        "most per member after reset": row["after reset"][-1],
        "baseline copies": cluster.copies,
    }


SIZES = ((100, 1), (100, 10), (256, 10))


def table(out: dict[str, Any]) -> str:
    """One line per mode and size: what docs/SCALING.md shows."""
    head = f"{'mode':<48} {'workers':>7} {'up s':>7} {'pytest s':>8} {'reset s':>8} {'per eng/mem':>12} {'copies':>6}"
    lines = [head, "-" * len(head)]

    def line(mode: str, workers: object, row: dict[str, Any], spread: str = "", copies: object = "") -> None:
        def num(key: str) -> str:
            return f"{row[key]:.2f}" if key in row else "-"

        lines.append(
            f"{mode:<48} {workers!s:>7} {num('up'):>7} {num('pytest warm'):>8} {num('reset --all'):>8} {spread:>12} {copies!s:>6}"
        )

    def plural(size: str) -> str:  # "1 engine(s)" -> "1 engine", "10 member(s)" -> "10 members"
        return size.replace("(s)", "" if size.startswith("1 ") else "s")

    def members(placed: dict[str, int]) -> str:
        return " ".join(f"{m}:{n}" for m, n in placed.items()) or "-"

    if "real" in out:
        for label, row in out["real"]["results"].items():
            line(f"real docker, {label} (orch places)", out["real"]["workers"], row)
    if "real_cluster" in out:
        for label, row in out["real_cluster"]["results"].items():
            how = "target m1" if label == "one member" else "cluster places"
            line(f"real incus cluster, {label} ({how})", out["real_cluster"]["workers"], row, members(row["per member after up"]))
    if "simulation" in out:
        sim = out["simulation"]
        for key, row in sim["results"].items():
            workers, engines = key.split(" workers, ")
            spread = f"{row['fewest per engine']}-{row['most per engine']}"
            line(f"sim, {plural(engines)} (orch places)", workers, row, spread)
        for key, row in sim.get("cluster", {}).items():
            workers, size = key.split(" workers, ")
            spread = f"{row['fewest per member']}-{row['most per member']}"
            line(f"sim, {plural(size)} (cluster places)", workers, row, spread, row["baseline copies"])
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--skip-real", action="store_true", help="no real part at all (Docker or Incus): only the simulation")
    parser.add_argument(
        "--cluster", action="store_true", help="also the real Incus cluster part (off by default; scripts/incus-cluster.sh)"
    )
    parser.add_argument(
        "--only-cluster",
        action="store_true",
        help="only the real Incus cluster part: no Docker part, no simulation; its key replaces"
        " out['real_cluster'] in an existing --out file, the others are kept",
    )
    parser.add_argument("--workers", type=int, default=8, help="workers for the real measurements (default 8)")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "docs" / "SCALING.json", help="where the JSON goes (default docs/SCALING.json)"
    )
    args = parser.parse_args()
    if args.only_cluster and args.skip_real:
        parser.error("--only-cluster is a real part: it cannot go with --skip-real")
    out: dict[str, Any] = {"machine": {"cpus": os.cpu_count()}, "command": "python benchmarks/scale.py"}
    if args.only_cluster and args.out.exists():
        out = json.loads(args.out.read_text())
    if not args.skip_real and not args.only_cluster:
        out["real"] = {"workers": args.workers, "results": real(args.workers)}
    if not args.skip_real and (args.cluster or args.only_cluster):
        out["real_cluster"] = {"workers": args.workers, "remote": CLUSTER_REMOTE, "results": real_cluster(args.workers)}
    if not args.only_cluster:
        model = {"create": 0.5, "clone": 0.5, "copy": 5.0, "slots": 4}
        # Each simulation in a process of its own, two at a time (the orch-placed and the
        # cluster-placed run of one size side by side): they mostly sleep (the model's
        # costs), so the pair shares this machine's cores without slowing each other, and
        # the whole simulation takes half as long as one after the other.
        jobs = [job for w, n in SIZES for job in ((simulate, w, n, "engine(s)"), (simulate_cluster, w, n, "member(s)"))]
        with ProcessPoolExecutor(max_workers=2) as pool:
            futures = {}
            for func, workers, n, unit in jobs:
                log(f"simulating {workers} workers on {n} {unit}, {'orch' if func is simulate else 'the cluster'} placing")
                futures[(func, f"{workers} workers, {n} {unit}")] = pool.submit(func, workers, n, **model)  # type: ignore[arg-type]
            sims = {key: f.result() for (func, key), f in futures.items() if func is simulate}
            cluster = {key: f.result() for (func, key), f in futures.items() if func is simulate_cluster}
        out["simulation"] = {"model": model, "results": sims, "cluster": cluster}
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    log(f"wrote {args.out}")
    print(table(out))


if __name__ == "__main__":
    main()
