"""Where a cold ``orch up --workers N`` on (emulated) OrbStack spends its ``orbctl`` calls.

Every ``orbctl`` call costs a process and an RPC on OrbStack (the emulator,
tests/fakes/orbctl, charges each ``run``/``info``/``list`` 0.2 s x scale on top of its own
fixed cost), so the number of calls per machine is what provisioning costs. This script
runs one cold ``orch up --workers N`` in a throwaway project against the emulator with
two counting shims in front of it: orch's own calls go through the one its settings name
(``[tool.orch.orbstack] orbctl``), pyinfra-orbstack's through the ``orbctl`` on PATH (it
runs the bare name). Each call is attributed to the machine it names (``-m NAME``, or
the name argument of info/start/stop/delete/create/clone), and the table says, per
subcommand and caller, how many calls the baseline, each worker (mean) and no machine
(list, status, version) took.

    .venv/bin/python benchmarks/orbctl_calls.py --json /tmp/after.json
    git worktree add /tmp/wt-before HEAD~1
    .venv/bin/python benchmarks/orbctl_calls.py --repo /tmp/wt-before --json /tmp/before.json
    .venv/bin/python benchmarks/orbctl_calls.py --order baseline-first --scale 0.25   # the other ordering

``--repo`` measures another checkout of orch (its ``orchestrator`` package first on
PYTHONPATH, this machine's venv). ``--order baseline-first`` builds the baseline alone
first (``baseline.ensure`` without ``first``) and then runs ``up``, which clones every
worker from it and personalizes them: the alternative to making the first workers from
the image beside the baseline. Needs Docker and the emulator's image (scripts/setup.sh).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
FAKES = REPO / "tests" / "fakes"
BIN = Path(sys.executable).parent

SHIM = """#!/bin/sh
# counts an orbctl call: time, caller, the first arguments (newlines flattened), one write
T=$(printf '\t')
line="$(date +%s.%N)${{T}}{tag}"
n=0; for a in "$@"; do n=$((n+1)); [ $n -gt 8 ] && break; line="$line${{T}}$(printf %s "$a" | tr '\n\t' '  ' | cut -c1-200)"; done
printf '%s\n' "$line" >> "$ORBCTL_CALLS_LOG"
exec {real} "$@"
"""

#: subcommands whose machine is the last argument (create IMAGE NAME, clone SRC DST, ...)
LAST_ARG = {"create", "clone"}
#: subcommands whose machine is the first argument after the options
FIRST_ARG = {"info", "start", "stop", "delete", "restart", "rename"}

UP_BASELINE_FIRST = """
import sys, json
from orchestrator.core import settings as config
from orchestrator.core import baseline as B
from orchestrator.core.context import Context
from orchestrator.verbs.up import up
ctx = Context(config.load())
fp = B.fingerprint(ctx)
B.ensure(ctx, fp)
print(json.dumps([{"worker": r.worker, "ok": r.ok, "error": r.error, "seconds": r.seconds} for r in up(ctx, int(sys.argv[1]))]))
"""


#: one VM made as the seed made its VMs (provider.create + wait_ready), deleted after (untimed)
ONE_CREATE = """
import time
from orchestrator.core import settings as config
from orchestrator.primitives.kinds import Kind
from orchestrator.primitives.labels import Owner
from orchestrator.providers.registry import get_provider
s = config.load(); pr = get_provider(s)
owner = Owner(Kind.ONEOFF, s.checkout, str(s.inventory_dir), run="bench")
name = f"{s.prefix}-one-create"
t = time.perf_counter(); pr.create(name, s.image, owner); pr.wait_ready(name)
took = time.perf_counter() - t
pr.delete(name); print(took)
"""


def machine_of(args: list[str]) -> str:
    if not args:
        return ""
    sub, rest = args[0], args[1:]
    if "-m" in rest and rest.index("-m") + 1 < len(rest):
        return rest[rest.index("-m") + 1]
    names = [a for a in rest if not a.startswith("-") and a != "json"]
    if sub in LAST_ARG and names:
        return names[-1]
    if sub in FIRST_ARG and names:
        return names[0]
    return ""


def parse(log: Path) -> list[dict[str, Any]]:
    calls = []
    for line in log.read_text().splitlines():
        if line.count("\t") < 1:
            raise SystemExit(f"{log}: a line that is not a call: {line!r}")
        stamp, caller, *args = line.split("\t")
        calls.append(
            {
                "t": float(stamp),
                "caller": caller,
                "sub": args[0] if args else "",
                "machine": machine_of(args),
                "line": " ".join([caller, *args])[:160],
            }
        )
    return calls


def table(calls: list[dict[str, Any]], baseline: str, workers: list[str]) -> dict[str, dict[str, float]]:
    """{"caller subcommand": {"baseline": n, "per_worker": mean, "no_machine": n, "total": n}}."""
    rows: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for c in calls:
        key = f"{c['caller']} {c['sub']}"
        where = "baseline" if c["machine"] == baseline else "worker" if c["machine"] in workers else "no_machine"
        if where == "no_machine" and c["machine"]:
            where = "other"  # a machine neither the baseline nor a worker (none expected)
        rows[key][where] += 1
        rows[key]["total"] += 1
    n = max(len(workers), 1)
    return {
        key: {
            "baseline": got["baseline"],
            "per_worker": round(got["worker"] / n, 2),
            "no_machine": got["no_machine"] + got["other"],
            "total": got["total"],
        }
        for key, got in sorted(rows.items())
    }


def measure(a: argparse.Namespace) -> dict[str, Any]:
    run_id = "oc" + secrets.token_hex(3)
    tmp = Path(tempfile.mkdtemp(prefix=f"orbctl-calls-{run_id}-")).resolve()
    shims = tmp / "shims"
    shims.mkdir()
    log = tmp / "calls.log"
    for name, tag in (("orbctl", "pyinfra-orbstack"), ("orch-orbctl", "orch")):
        shim = shims / name
        shim.write_text(SHIM.format(tag=tag, real=str(FAKES / "orbctl")))
        shim.chmod(0o755)
    project = tmp / "project"
    project.mkdir()
    prefix = run_id
    (project / "pyproject.toml").write_text(
        f'[tool.orch]\nprovider = "orbstack"\nimage = "debian:bookworm"\nprefix = "{prefix}"\n'
        f'[tool.orch.orbstack]\norbctl = "{shims / "orch-orbctl"}"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "ORCH_", "ORBCTL_FAKE_"))}
    env.update(
        PATH=f"{shims}{os.pathsep}{BIN}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}",
        ORCH_HOME=str(tmp / "orch-home"),
        ORBCTL_CALLS_LOG=str(log),
        ORBCTL_FAKE_SCALE=str(a.scale),
        ORBCTL_FAKE_STATE_DIR=str(tmp / "orbfake-state"),
        ORBCTL_FAKE_INSTANCE=run_id,
    )
    repo = Path(a.repo).resolve()
    env["PYTHONPATH"] = str(repo) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    where = subprocess.run(
        [sys.executable, "-c", "import orchestrator; print(orchestrator.__file__)"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if not where.startswith(str(repo)):
        raise SystemExit(f"orchestrator is imported from {where}, not from {repo}")
    orch = [sys.executable, "-c", "from orchestrator.cli import main; main()"]
    try:
        one = None
        if a.one_create:
            got = subprocess.run([sys.executable, "-c", ONE_CREATE], cwd=project, env=env, capture_output=True, text=True)
            if got.returncode != 0:
                raise SystemExit(f"one create failed:\n{got.stderr[-2000:]}")
            one = float(got.stdout.strip())
            log.write_text("")  # count only the up
        if a.order == "baseline-first":
            argv = [sys.executable, "-c", UP_BASELINE_FIRST, str(a.workers)]
        else:
            argv = [*orch, "up", "--workers", str(a.workers), "--json"]
        started = time.perf_counter()
        proc = subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True, timeout=3600)
        took = time.perf_counter() - started
        if proc.returncode != 0:
            raise SystemExit(f"orch up failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
        results = json.loads(proc.stdout.strip().splitlines()[-1] if a.order == "baseline-first" else proc.stdout)
        state = json.loads((project / "inventories" / ".orch" / "state.json").read_text())
        baseline = state["baseline"]["vm"]
        workers = [rec["vm"] for rec in state["workers"].values()]
        calls = parse(log)
        return {
            "repo": str(repo),
            "order": a.order,
            "scale": a.scale,
            "workers": a.workers,
            "up_s": round(took, 2),
            "one_create_s": None if one is None else round(one, 2),
            "ratio": None if one is None else round(took / one, 2),
            "calls": len(calls),
            "phases": {r["worker"]: {k: round(v, 2) for k, v in r["seconds"].items()} for r in results},
            "table": table(calls, baseline, workers),
            "log": [f"{c['t'] - calls[0]['t']:7.2f} {c['line']}" for c in calls] if calls else [],
        }
    finally:
        subprocess.run([*orch, "down", "--force"], cwd=project, env={**env, "ORBCTL_FAKE_SCALE": "0"}, capture_output=True)
        left = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"name=orbfake-{prefix}"], capture_output=True, text=True
        ).stdout.split()
        if left:
            subprocess.run(["docker", "rm", "-f", *left], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


def render(out: dict[str, Any]) -> str:
    lines = [
        f"cold `orch up --workers {out['workers']}` ({out['order']}), emulated OrbStack at scale {out['scale']:g}: "
        f"{out['up_s']:.1f}s"
        + (f" = {out['ratio']:.2f} x one create ({out['one_create_s']:.1f}s)" if out["ratio"] else "")
        + f", {out['calls']} orbctl calls ({out['repo']})",
        "",
        "| caller | subcommand | baseline | per worker | no machine | total |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for key, row in out["table"].items():
        caller, sub = key.split(" ", 1)
        lines.append(f"| {caller} | {sub} | {row['baseline']} | {row['per_worker']:g} | {row['no_machine']} | {row['total']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=0.05, help="the emulator's latency scale (1: OrbStack's own)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--repo", default=str(REPO), help="the orch checkout to measure (default: this one)")
    parser.add_argument("--order", choices=("up", "baseline-first"), default="up")
    parser.add_argument("--one-create", action="store_true", help="first time one create + ready (the ratio's unit)")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    a = parser.parse_args()
    out = measure(a)
    print(render(out))
    if a.json:
        a.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
