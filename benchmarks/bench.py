#!/usr/bin/env python3
"""orch's benchmark harness: what orch exists for, measured side by side in one run.

    .venv/bin/python benchmarks/bench.py [--quick] [--providers docker,orbstack] [--scale 0.05]

Writes docs/BENCHMARKS.json and docs/BENCHMARKS.md (tables, the machine, this command).

For each provider, one workload (BENCH_TESTS tests, each running a small command in its
VM through pyinfra's connector) under three strategies, in one run:
  a. per_test     one VM per test (the ADR's "before")
  b. per_session  one VM per xdist worker, made in the session, deleted at its end (the seed)
  c. orch         `orch up` once, then pytest runs that reuse the workers (cold and warm apart)
Each: wall time, VM operations counted by the backend (docker events; orbctl calls through
a counting shim), and efficiency = time in test bodies / (wall time x workers).
Also: `orch up` time for 1, 2, 4, 8 workers against one VM create; reset latency p50/p95
(hard, soft); fixture overhead per test; sweep time for 50 and 200 orphans; orch's peak
memory. The orbstack provider runs the real pyinfra-orbstack package against
tests/fakes/orbctl with OrbStack's latencies scaled by --scale (ORBCTL_FAKE_SCALE).
Timings are reported, never asserted: compare the ratios, which hold on a noisy machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WORKLOAD = ROOT / "benchmarks" / "workload"
FAKES = ROOT / "tests" / "fakes"
SHIM = ROOT / "benchmarks" / "shim"
BASE_IMAGE = os.environ.get("ORCH_BASE_IMAGE", "orch-base:bookworm")


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


class Project:
    """A throwaway project folder on one provider, with a prefix of its own."""

    def __init__(self, provider: str, scale: float, tag: str) -> None:
        self.provider = provider
        self.prefix = f"b{secrets.token_hex(4)}"
        self.dir = Path(tempfile.mkdtemp(prefix=f"orch-bench-{tag}-"))
        image = BASE_IMAGE if provider == "docker" else "debian:bookworm"
        (self.dir / "pyproject.toml").write_text(
            f'[tool.orch]\nprovider = "{provider}"\nimage = "{image}"\nprefix = "{self.prefix}"\n'
        )
        for f in WORKLOAD.iterdir():
            if f.suffix == ".py":
                shutil.copy(f, self.dir / f.name)
        self.orbctl_log = self.dir / "orbctl.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "ORCH_", "BENCH_"))}
        self.env["PATH"] = f"{BIN}{os.pathsep}{self.env['PATH']}"
        if provider == "orbstack":
            self.env.update(
                PATH=f"{SHIM}{os.pathsep}{self.env['PATH']}",
                ORCH_BENCH_REAL_ORBCTL=str(FAKES / "orbctl"),
                ORCH_BENCH_ORBCTL_LOG=str(self.orbctl_log),
                ORBCTL_FAKE_SCALE=str(scale),
            )

    def run(self, *args: str, extra: dict | None = None, check: bool = True) -> tuple[float, subprocess.CompletedProcess]:
        t = time.perf_counter()
        proc = subprocess.run(list(args), cwd=self.dir, env={**self.env, **(extra or {})}, capture_output=True, text=True)
        took = time.perf_counter() - t
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        return took, proc

    def orch(self, *args: str, **kw) -> tuple[float, subprocess.CompletedProcess]:
        return self.run(str(BIN / "orch"), *args, **kw)

    def pytest(self, workers: int, tests: int, strategy: str, out: Path) -> float:
        took, _ = self.run(
            sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", str(workers), "test_workload.py",
            extra={"BENCH_STRATEGY": strategy, "BENCH_TESTS": str(tests), "BENCH_OUT": str(out)},
        )
        return took

    def start_counting(self) -> None:
        """Count VM operations from now on: orbctl calls through the shim, or Docker's
        event stream (the engine keeps too few past events to ask afterwards)."""
        self.orbctl_log.unlink(missing_ok=True)
        self._events = None
        if self.provider == "docker":
            # into a file, not a pipe: a full pipe stalls the stream and the engine drops events
            self._events_file = self.dir / "docker-events.jsonl"
            with self._events_file.open("w") as sink:
                self._events = subprocess.Popen(
                    ["docker", "events", "--filter", "type=container", "--format", "{{json .}}"],
                    stdout=sink, stderr=subprocess.DEVNULL,
                )
            time.sleep(0.3)

    def ops(self) -> dict[str, int]:
        if self.provider == "orbstack":
            lines = self.orbctl_log.read_text().split() if self.orbctl_log.exists() else []
            self.orbctl_log.unlink(missing_ok=True)
            counts = Counter(lines)
            return {k: counts.get(k, 0) for k in ("create", "clone", "start", "stop", "delete")}
        time.sleep(1.0)  # let the engine publish the last events
        self._events.terminate()
        self._events.wait()
        out = self._events_file.read_text()
        counts: Counter = Counter()
        for line in out.splitlines():
            event = json.loads(line)
            if event.get("Actor", {}).get("Attributes", {}).get("name", "").startswith(self.prefix):
                counts[event.get("Action") or event.get("status")] += 1
        return {"create": counts["create"], "clone": 0, "start": counts["start"], "stop": counts["stop"],
                "delete": counts["destroy"], "commit": counts["commit"]}

    def cleanup(self) -> None:
        with contextlib.suppress(Exception):
            self.orch("down", check=False)
        names = subprocess.run(["docker", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True).stdout.split()
        doomed = [n for n in names if n.startswith((self.prefix, f"orbfake-{self.prefix}"))]
        if doomed:
            subprocess.run(["docker", "rm", "-f", *doomed], capture_output=True)
        images = subprocess.run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True, text=True).stdout.split()
        doomed = [i for i in images if i.startswith((self.prefix, f"orbfake-{self.prefix}"))]
        if doomed:
            subprocess.run(["docker", "rmi", "-f", *doomed], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def bodies(out: Path) -> float:
    total = sum(sum(json.loads(p.read_text())) for p in out.glob("bodies-*.json"))
    shutil.rmtree(out, ignore_errors=True)
    return total


def entry(wall: float, body: float, workers: int, ops: dict) -> dict:
    return {"wall_s": round(wall, 2), "body_s": round(body, 2), "efficiency": round(body / (wall * workers), 4), "ops": ops}


def strategies(provider: str, scale: float, tests: int, workers: int, warm_runs: int) -> dict:
    results = {}
    for strategy in ("per_test", "per_session"):
        p = Project(provider, scale, strategy)
        try:
            if provider == "orbstack":
                p.orch("up", "--workers", "1")  # the emulator needs OrbStack "running"; no VM of the strategy's
                p.orch("down")
                p.orbctl_log.unlink(missing_ok=True)
            log(f"{provider}: {strategy}, {tests} tests on {workers} workers")
            out = p.dir / "out"
            p.start_counting()
            wall = p.pytest(workers, tests, strategy, out)
            results[strategy] = entry(wall, bodies(out), workers, p.ops())
        finally:
            p.cleanup()
    p = Project(provider, scale, "orch")
    try:
        log(f"{provider}: orch, cold (orch up + pytest) then {warm_runs} warm reruns")
        out = p.dir / "out"
        p.start_counting()
        up, _ = p.orch("up", "--workers", str(workers))
        run = p.pytest(workers, tests, "orch", out)
        results["orch_cold"] = {**entry(up + run, bodies(out), workers, p.ops()), "up_s": round(up, 2)}
        warm = []
        for _ in range(warm_runs):
            p.start_counting()
            wall = p.pytest(workers, tests, "orch", out)
            warm.append(entry(wall, bodies(out), workers, p.ops()))
        results["orch_warm"] = {
            "wall_s": round(statistics.mean(w["wall_s"] for w in warm), 2),
            "body_s": round(statistics.mean(w["body_s"] for w in warm), 2),
            "efficiency": round(statistics.mean(w["efficiency"] for w in warm), 4),
            "ops": warm[-1]["ops"],
            "runs": len(warm),
        }
        results["fixture_overhead"] = fixture_overhead(p, workers, tests)
    finally:
        p.cleanup()
    return results


def fixture_overhead(p: Project, workers: int, tests: int) -> dict:
    """Per-test cost of orch's fixtures: the same trivial tests with and without them."""
    (p.dir / "test_overhead.py").write_text(
        "import pytest\n"
        f"@pytest.mark.parametrize('i', range({tests}))\n"
        "def test_with(i, worker_vm, orch_worker):\n    assert worker_vm\n"
        f"@pytest.mark.parametrize('i', range({tests}))\n"
        "def test_without(i):\n    assert i >= 0\n"
    )
    def timed(k: str) -> float:
        took, _ = p.run(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", "test_overhead.py", "-k", k,
                        extra={"BENCH_STRATEGY": "orch"})
        return took
    with_, without = min(timed("with") for _ in range(3)), min(timed("without") for _ in range(3))
    return {"tests": tests, "with_s": round(with_, 3), "without_s": round(without, 3),
            "per_test_ms": round(1000 * (with_ - without) / tests, 2)}


def up_scaling(provider: str, scale: float, counts: list[int]) -> dict:
    p = Project(provider, scale, "scaling")
    try:
        rows = {}
        for n in counts:
            took, _ = p.orch("up", "--workers", str(n))
            rows[str(n)] = round(took, 2)
            log(f"{provider}: orch up --workers {n}: {took:.1f}s")
            p.orch("down")
        # one VM create, through the same provider code, for the ratio
        code = (
            "import time; from orchestrator import config, labels as L, naming; from orchestrator.providers import get_provider\n"
            "s = config.load(); pr = get_provider(s); n = naming.oneoff_vm_name(s.prefix, s.checkout)\n"
            "t = time.perf_counter()\n"
            "(pr.create_golden(n, s.image) if pr.uses_golden else pr.create(n, s.image, L.oneoff_labels(s.checkout, 'bench', 'bench')))\n"
            "pr.wait_ready(n); print(time.perf_counter() - t); pr.delete(n)\n"
        )
        if provider == "orbstack":
            p.orch("up", "--workers", "1")
        creates = [float(p.run(sys.executable, "-c", code)[1].stdout.strip()) for _ in range(3)]
        one = statistics.median(creates)
        return {"up_s": rows, "one_create_s": round(one, 2), "up4_over_one_create": round(rows.get("4", 0) / one, 2) if one else None}
    finally:
        p.cleanup()


def up_at_full_latency(scale_one: float = 1.0) -> dict:
    """OrbStack's own latencies (scale 1: create 60 s, clone 8 s, start 5 s): `orch up
    --workers 4` against one create, where the fixed costs of the emulator no longer hide
    the ratio the target is about."""
    p = Project("orbstack", scale_one, "fullscale")
    try:
        p.env["ORBCTL_FAKE_SCALE"] = "0"
        p.orch("up", "--workers", "1")  # OrbStack "running"; nothing of the measurement
        p.orch("down")
        p.env["ORBCTL_FAKE_SCALE"] = str(scale_one)
        create, _ = p.run("orbctl", "create", "debian:bookworm", f"{p.prefix}-one-create")
        p.run("orbctl", "delete", "-f", f"{p.prefix}-one-create", extra={"ORBCTL_FAKE_SCALE": "0"})
        up, _ = p.orch("up", "--workers", "4")
        log(f"orbstack at scale {scale_one}: one create {create:.1f}s, orch up --workers 4 {up:.1f}s")
        return {"scale": scale_one, "one_create_s": round(create, 1), "up4_s": round(up, 1), "ratio": round(up / create, 2)}
    finally:
        p.env["ORBCTL_FAKE_SCALE"] = "0"
        p.cleanup()


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def reset_latency(provider: str, scale: float, runs: int) -> dict:
    p = Project(provider, scale, "reset")
    try:
        p.orch("up", "--workers", "1")
        out = {}
        for mode, extra in (("hard", []), ("soft", ["--soft"])):
            lat = []
            for _ in range(runs):
                _, proc = p.orch("reset", "gw0", *extra, "--json")
                lat.append(json.loads(proc.stdout)[0]["seconds"]["total"])
            out[mode] = {"runs": runs, "p50_s": round(percentile(lat, 0.5), 3), "p95_s": round(percentile(lat, 0.95), 3)}
            log(f"{provider}: reset {mode}: p50 {out[mode]['p50_s']}s p95 {out[mode]['p95_s']}s")
        return out
    finally:
        p.cleanup()


def sweep_times(provider: str, scale: float, sizes: list[int]) -> dict:
    p = Project(provider, scale, "sweep")
    try:
        rows = {}
        gone = str(p.dir / "deleted-checkout" / "inventories")
        for size in sizes:
            names = [f"{p.prefix}-0badf00d-gw{i}" for i in range(size)]
            if provider == "docker":
                args = []
                labels = {"orch.managed-by": "orch", "orch.checkout": "0badf00d", "orch.kind": "worker",
                          "orch.created": "2026-01-01T00:00:00Z", "orch.inventory": gone}
                for k, v in labels.items():
                    args += ["--label", f"{k}={v}"]
                for name in names:
                    subprocess.run(["docker", "create", "--name", name, *args, BASE_IMAGE, "true"], check=True, capture_output=True)
            else:
                for name in names:
                    p.run("orbctl", "create", "debian:bookworm", name, extra={"ORBCTL_FAKE_SCALE": "0"})
            took, proc = p.orch("sweep", "--json")
            deleted = sum(r["result"] == "deleted" for r in json.loads(proc.stdout))
            rows[str(size)] = {"seconds": round(took, 2), "deleted": deleted}
            log(f"{provider}: sweep of {size} orphans: {took:.1f}s ({deleted} deleted)")
        return rows
    finally:
        p.cleanup()


MEASURE_RSS = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss if rc == 0 else -1)\n"
)


def peak_memory(provider: str, scale: float) -> dict:
    """Peak resident memory of one orch process, each command in a fresh measuring parent
    (RUSAGE_CHILDREN of that parent is the orch process alone)."""
    p = Project(provider, scale, "memory")
    try:
        peaks = {}
        for cmd in (["up", "--workers", "4"], ["status"], ["reset", "--all"], ["sweep"], ["down"]):
            _, proc = p.run(sys.executable, "-c", MEASURE_RSS, str(BIN / "orch"), *cmd)
            peaks[" ".join(cmd)] = round(int(proc.stdout.strip()) / 1024, 1)
        return {"peak_rss_mb": max(peaks.values()), "per_command_mb": peaks, "commands": ", ".join(peaks)}
    finally:
        p.cleanup()


def machine() -> dict:
    docker = subprocess.run(["docker", "version", "-f", "{{.Server.Version}}"], capture_output=True, text=True).stdout.strip()
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "os": platform.platform(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "docker_engine": docker,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a short run: 20 tests, fewer repetitions")
    ap.add_argument("--providers", default="docker,orbstack", help="comma list [docker,orbstack]")
    ap.add_argument("--scale", type=float, default=0.05, help="OrbStack latency scale for the emulator [0.05: create 3 s, delete 0.5 s]")
    ap.add_argument("--workers", type=int, default=2, help="xdist workers for the workload [2]")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "BENCHMARKS.json")
    ap.add_argument("--merge", action="store_true", help="keep the other providers' results already in --out")
    args = ap.parse_args()
    tests = 20 if args.quick else 100
    results = {
        "command": "python benchmarks/bench.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "quick": args.quick,
        "tests": tests,
        "workers": args.workers,
        "orbstack_scale": args.scale,
        "providers": {},
    }
    if args.merge and args.out.exists():
        previous = json.loads(args.out.read_text())
        results["providers"] = previous.get("providers", {})
        results["command"] = previous.get("command", "") + " ; " + results["command"]
    for provider in [p for p in args.providers.split(",") if p]:
        r: dict = {}
        r["strategies"] = strategies(provider, args.scale, tests, args.workers, 2 if args.quick else 3)
        r["up_scaling"] = up_scaling(provider, args.scale, [1, 2, 4] if args.quick else [1, 2, 4, 8])
        if provider == "orbstack" and not args.quick:
            r["up_full_latency"] = up_at_full_latency()
        r["reset"] = reset_latency(provider, args.scale, 5 if args.quick else 20)
        r["sweep"] = sweep_times(provider, args.scale, [50] if args.quick else [50, 200])
        r["memory"] = peak_memory(provider, args.scale)
        results["providers"][provider] = r
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    md = args.out.with_suffix(".md")
    md.write_text(render(results))
    log(f"wrote {args.out} and {md}")


def render(r: dict) -> str:
    m = r["machine"]
    lines = [
        "# Benchmarks",
        "",
        f"Produced by `{r['command']}` on {m['date']}: {m['os']}, {m['cpus']} CPUs, Python {m['python']}, "
        f"Docker engine {m['docker_engine']}. Raw numbers: `docs/BENCHMARKS.json`.",
        f"Workload: {r['tests']} tests, each running a small command in its VM through pyinfra's connector, "
        f"`pytest -n {r['workers']}`. orbstack = the real pyinfra-orbstack package against `tests/fakes/orbctl` "
        f"with OrbStack's latencies × {r['orbstack_scale']} (create 60 s → {60 * r['orbstack_scale']:g} s, "
        f"delete 10 s → {10 * r['orbstack_scale']:g} s).",
        "Efficiency = time in test bodies / (wall time × workers). Targets are reported against, not asserted. "
        "The rest of a warm run is pytest and pytest-xdist starting and collecting, not orch: its fixtures cost "
        "the overhead per test shown below; with test bodies this small (a few tens of ms) that startup weighs most.",
        "",
    ]
    for provider, p in r["providers"].items():
        s = p["strategies"]
        lines += [f"## {provider}", "", "| strategy | wall | efficiency | create | clone | start | delete |", "|---|---|---|---|---|---|---|"]
        names = {"per_test": "a. one VM per test", "per_session": "b. one VM per worker, per session (seed)",
                 "orch_cold": "c. orch, cold (`orch up` + pytest)", "orch_warm": f"c. orch, warm rerun (mean of {s['orch_warm']['runs']})"}
        for key, label in names.items():
            e = s[key]
            o = e["ops"]
            lines.append(f"| {label} | {e['wall_s']:.1f} s | {100 * e['efficiency']:.1f} % | {o.get('create', 0)} | {o.get('clone', 0)} | {o.get('start', 0)} | {o.get('delete', 0)} |")
        ratio = s["per_test"]["wall_s"] / s["orch_warm"]["wall_s"] if s["orch_warm"]["wall_s"] else 0
        lines += ["", f"Warm orch run vs one VM per test: {ratio:.1f}× faster. "
                  f"Target warm efficiency ≥ 95 %: {100 * s['orch_warm']['efficiency']:.1f} %.", ""]
        u = p["up_scaling"]
        lines += ["| `orch up --workers N` | " + " | ".join(u["up_s"]) + " | one VM create |",
                  "|---" * (len(u["up_s"]) + 2) + "|",
                  "| seconds | " + " | ".join(f"{v:.1f}" for v in u["up_s"].values()) + f" | {u['one_create_s']:.1f} |", "",
                  f"`orch up --workers 4` / one create = {u['up4_over_one_create']} (target ≤ 1.5).", ""]
        if "up_full_latency" in p:
            fl = p["up_full_latency"]
            lines += [f"At OrbStack's own latencies (scale {fl['scale']}: create 60 s, clone 8 s, start 5 s): one create "
                      f"{fl['one_create_s']:.1f} s, `orch up --workers 4` {fl['up4_s']:.1f} s, ratio {fl['ratio']} (target ≤ 1.5). "
                      "At the scaled-down latencies above, the emulator's fixed per-call cost (a Python start and docker calls, "
                      "not scaled) and provisioning dominate the ratio.", ""]
        elif provider == "docker":
            lines += ["On Docker a create costs 0.3 s, so `orch up` time is provisioning through pyinfra (about 1 s per batch), "
                      "the baseline commit and the CLI's start; the 1.5x target is about slow creates (OrbStack).", ""]
        rs = p["reset"]
        lines += ["| reset | p50 | p95 | runs |", "|---|---|---|---|"]
        for mode in ("hard", "soft"):
            lines.append(f"| {mode} | {rs[mode]['p50_s']:.3f} s | {rs[mode]['p95_s']:.3f} s | {rs[mode]['runs']} |")
        if provider == "docker":
            lines += ["", f"Target Docker hard reset p50 ≤ 1 s: {rs['hard']['p50_s']:.3f} s."]
        f = s["fixture_overhead"]
        lines += ["", f"Fixture overhead (`worker_vm` + `orch_worker`, no xdist): {f['per_test_ms']:.2f} ms per test "
                  f"({f['tests']} tests: {f['with_s']:.2f} s with, {f['without_s']:.2f} s without).", ""]
        lines += ["| sweep of N orphans | seconds | deleted |", "|---|---|---|"]
        for n, row in p["sweep"].items():
            lines.append(f"| {n} | {row['seconds']:.1f} | {row['deleted']} |")
        lines += ["", f"Peak memory of one orch process ({p['memory']['commands']}): {p['memory']['peak_rss_mb']} MB.", ""]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
