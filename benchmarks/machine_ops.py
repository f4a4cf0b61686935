#!/usr/bin/env python3
"""The machine measures of bench.py's ``machines`` section that need orch's Python API,
run by bench.py in a project folder after ``orch up`` (its pyproject.toml and the
bench's environment: ORCH_HOME, the prefix). Prints one JSON object of seconds lists.

    python benchmarks/machine_ops.py RUNS [--round I] [--reboot] [--rename-swap]

For each of RUNS repetitions, on VMs of its own named ``<prefix>-bench-…``:
  create   ``provider.create(name, image, owner)`` (the project's image: the machine image
           with ``machine = true``), then ``Context.wait_ready`` (the backend's readiness:
           systemd says running or degraded on a machine, then the connector's);
  clone    ``provider.clone(sealed baseline, name, owner)``, then ``Context.wait_ready``;
  reboot   (``--reboot``) on that clone: a marker in /run, ``systemctl reboot`` inside,
           then until the machine answers again with a new /run (a new boot) and systemd
           says it has booted;
  rename_swap  (``--rename-swap``: Incus, where ``standby = true`` is refused) what the
           core's standby swap would cost there: two clones booted (not timed), then
           delete the worker's, stop the standby, ``incus rename`` it, start it, wait
           until ready (Incus renames only stopped instances).
Each VM is deleted after its measure (not timed). What bench.py does not get here (the
hard reset, the swap with a standby) it measures through the ``orch`` command line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from orchestrator.core import settings as config
from orchestrator.core.context import Context
from orchestrator.primitives.errors import OrchError
from orchestrator.primitives.kinds import Kind
from orchestrator.providers.base import BOOTED, Baseline

#: Until a rebooted machine is seen booted again, at most.
REBOOT_LIMIT = 180.0


def reboot_to_ready(ctx: Context, vm: str) -> float:
    """Seconds from ``systemctl reboot`` inside ``vm`` until it answers from a new boot
    (its /run, a tmpfs, lost the marker) with systemd booted."""
    provider = ctx.provider
    marked = provider.exec(vm, ["touch", "/run/orch-bench-boot"])
    if not marked.ok:
        raise RuntimeError(f"{vm}: cannot write /run/orch-bench-boot: {marked.stderr.strip()}")
    start = time.perf_counter()
    with contextlib.suppress(OrchError):  # the command may lose its machine under it
        provider.exec(vm, ["systemctl", "reboot"], timeout=30)
    last = "nothing yet"
    while time.perf_counter() - start < REBOOT_LIMIT:
        try:
            seen = provider.exec(vm, ["sh", "-c", "test ! -e /run/orch-bench-boot && systemctl is-system-running"], timeout=10)
            state = seen.stdout.strip()
            if state in BOOTED:
                took = time.perf_counter() - start
                ctx.connector.ready(vm)  # as orch would hand it out (not in the time: usually nothing)
                return took
            last = state or f"exit {seen.rc} (the old boot's /run, or no answer yet)"
        except OrchError as err:
            last = f"{type(err).__name__}: {str(err)[:120]}"
        time.sleep(0.05)
    raise RuntimeError(f"{vm} not booted again {REBOOT_LIMIT:.0f}s after systemctl reboot; last seen: {last}")


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", type=int)
    ap.add_argument("--round", type=int, default=0, help="numbers the VMs' names (bench.py measures in rounds)")
    ap.add_argument("--reboot", action="store_true")
    ap.add_argument("--rename-swap", action="store_true")
    a = ap.parse_args()
    settings = config.load()
    ctx = Context(settings, refill=None)
    provider = ctx.provider
    record = ctx.store.read().baseline
    if record is None or not record.ref:
        raise SystemExit("no sealed baseline: run `orch up` first")
    baseline = Baseline(record.ref, record.seal)
    owner = ctx.owner(Kind.ONEOFF, run="bench")
    out: dict[str, list[float]] = {"create": [], "clone": [], "reboot": [], "rename_swap": []}
    made: list[str] = []

    def vm(kind: str, i: int) -> str:
        name = f"{settings.prefix}-bench-{kind}-{a.round}-{i}"
        made.append(name)
        return name

    def gone(name: str) -> None:
        provider.delete(name)
        made.remove(name)

    try:
        for i in range(a.runs):
            name = vm("create", i)
            out["create"].append(timed(lambda n=name: (provider.create(n, ctx.image, owner), ctx.wait_ready(n))))
            gone(name)
            name = vm("clone", i)
            out["clone"].append(timed(lambda n=name: (provider.clone(baseline, n, owner), ctx.wait_ready(n))))
            if a.reboot:
                out["reboot"].append(reboot_to_ready(ctx, name))
            gone(name)
            if a.rename_swap:
                old, standby = vm("old", i), vm("standby", i)
                for n in (old, standby):
                    provider.clone(baseline, n, owner)
                    ctx.wait_ready(n)

                def swap(old: str = old, standby: str = standby) -> None:
                    provider.delete(old)
                    provider.stop(standby)
                    subprocess.run(["incus", "rename", standby, old], check=True, capture_output=True, timeout=60)
                    provider.start(old)
                    ctx.wait_ready(old)

                out["rename_swap"].append(timed(swap))
                made.remove(standby)
                gone(old)
            print(f"machine_ops: run {i + 1}/{a.runs} done", file=sys.stderr, flush=True)
    finally:
        for name in list(made):
            with contextlib.suppress(OrchError):
                provider.delete(name)
    print(json.dumps({k: [round(v, 4) for v in vs] for k, vs in out.items() if vs}))


if __name__ == "__main__":
    main()
