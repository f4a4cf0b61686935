"""The lifecycle commands: up, status, reset, down, repair, sweep."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from orchestrator.cli import Invocation, cli, complete_workers, pass_invocation
from orchestrator.core import maintainer
from orchestrator.core.steps import WorkerResult
from orchestrator.primitives import naming
from orchestrator.primitives.clock import human, parse_duration
from orchestrator.primitives.errors import OrchError, UsageError
from orchestrator.providers.registry import get_provider
from orchestrator.state.checkouts import check_home
from orchestrator.verbs import down as down_verb
from orchestrator.verbs import repair as repair_verb
from orchestrator.verbs import reset as reset_verb
from orchestrator.verbs import status as status_verb
from orchestrator.verbs import sweep as sweep_verb
from orchestrator.verbs import up as up_verb

NO_WAIT = click.option("--no-wait", is_flag=True, help="Fail at once if another orch command holds the lock.")
JSON = click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout.")
FORCE = click.option("--force", is_flag=True, help="Go on although a live pytest run uses the workers (that run may fail).")


def _table(title: str, columns: list[str], rows: list[list[str]], *, stderr: bool = True, right: tuple[str, ...] = ()) -> None:
    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(col, justify="right" if col in right else "left")
    for row in rows:
        table.add_row(*row)
    stream = sys.stderr if stderr else sys.stdout
    Console(stderr=stderr, width=200 if not stream.isatty() else None).print(table)


def _summary(results: list[WorkerResult], took: float, title: str) -> None:
    phases: list[str] = []
    for r in results:
        phases += [k for k in r.seconds if k not in phases and k != "total"]
    phases.append("total")
    order = sorted(
        results, key=lambda r: (not r.worker.startswith("gw"), naming.worker_index(r.worker) if r.worker.startswith("gw") else 0)
    )
    rows = [
        [r.worker, r.vm, r.action, *[f"{r.seconds[k]:.1f}s" if k in r.seconds else "" for k in phases], r.error] for r in order
    ]
    _table(f"{title} in {took:.1f}s", ["worker", "vm", "action", *phases, "error"], rows, right=tuple(phases))


def _finish(results: list[WorkerResult], started: float, title: str, as_json: bool, failure: str) -> None:
    """The end of every per-worker command: summary table, optional JSON, exit code."""
    if results:
        _summary(results, time.monotonic() - started, title)
    if as_json:
        _json([asdict(r) for r in results])
    if any(not r.ok for r in results):
        raise OrchError(failure)


def _json(payload: Any) -> None:
    click.echo(json.dumps(payload, indent=2))


def auto_workers(kind: str = "auto") -> int:
    """The number of workers ``pytest -n auto`` (or ``-n logical``) would start here."""
    # lazy: xdist pulls in pytest, which only `-n auto` needs
    from xdist.plugin import pytest_xdist_auto_num_workers  # noqa: PLC0415

    return int(pytest_xdist_auto_num_workers(SimpleNamespace(option=SimpleNamespace(numprocesses=kind))))


def _count(value: str | None, default: int) -> int:
    if value is None:
        return default
    if value in ("auto", "logical"):
        return min(auto_workers(value), naming.MAX_WORKERS)
    try:
        count = int(value)
    except ValueError:
        raise UsageError(f"--workers must be a number between 1 and {naming.MAX_WORKERS}, or auto (got {value!r})") from None
    return naming.validate_worker_count(count)


class PoolSize(click.ParamType):  # type: ignore[type-arg]  # generic from click 8.2 on; 8.1 is allowed
    """``--pool``: a number of pool VMs, or ``auto`` (the settings check the range)."""

    name = "N|auto"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | str:
        if isinstance(value, int):
            return value
        if value == "auto":
            return "auto"
        try:
            return int(value)
        except ValueError:
            self.fail(f"{value!r} is neither a number nor auto", param, ctx)


@cli.command()
@click.option(
    "-n",
    "--workers",
    metavar="N|auto",
    help="How many workers (gw0..gwN-1); auto: as many as `pytest -n auto` starts [default: [tool.orch] workers, or 2].",
)
@click.option("--image", help="Image to create workers from [default: ORCH_IMAGE, [tool.orch] image, or the provider's default].")
@click.option("--parallel", type=int, help="How many VMs to create or delete at once [default: 8].")
@click.option("--prune", is_flag=True, help="Delete workers beyond --workers (otherwise left alone).")
@click.option("--reprovision", is_flag=True, help="Make every worker again from a freshly provisioned baseline.")
@click.option(
    "--pool",
    type=PoolSize(),
    help='Keep this many one-off VMs ready for fresh_vm(), or "auto" (sized from the claims of this run and the last, '
    "between pool_min and pool_max) [default: [tool.orch] pool, or 0].",
)
@click.option(
    "--standby/--no-standby",
    default=None,
    help="Keep a ready standby per worker, swapped in by a reset [default: [tool.orch] standby].",
)
@click.option(
    "--machine/--no-machine",
    default=None,
    help="Workers are machines with systemd as PID 1 (services, reboots); with no image named, "
    "the provider's machine image [default: ORCH_MACHINE, [tool.orch] machine].",
)
@click.option(
    "--baseline-cache",
    metavar="DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="Import this key's baseline from DIR instead of provisioning, export a baseline built to it "
    "(a CI cache; `orch baseline key` is its key) [default: ORCH_BASELINE_CACHE, [tool.orch] baseline_cache].",
)
@FORCE
@NO_WAIT
@JSON
@pass_invocation
def up(
    obj: Invocation,
    workers: str | None,
    image: str | None,
    parallel: int | None,
    prune: bool,
    reprovision: bool,
    pool: int | str | None,
    standby: bool | None,
    machine: bool | None,
    baseline_cache: Path | None,
    force: bool,
    no_wait: bool,
    as_json: bool,
) -> None:
    """Bring up one provisioned VM per worker and write their inventories.

    Idempotent: healthy workers are reused, stopped ones started, missing, unfinished or
    failed ones made again, and workers whose baseline is stale (the provision deploy,
    image, orch or provider settings changed) re-provisioned, each saying why. Asking for
    more workers adds them; fewer leaves the extra ones alone unless --prune.
    """
    cache = baseline_cache.resolve() if baseline_cache is not None else None
    context = obj.context(image=image, parallel=parallel, pool=pool, standby=standby, machine=machine, baseline_cache=cache)
    count = _count(workers, context.settings.workers)
    t = time.monotonic()
    results = up_verb.up(context, count, prune=prune, wait=not no_wait, on_wait=obj.waiting, reprovision=reprovision, force=force)
    click.echo(f"inventories: {context.settings.inventory_dir}", err=True)
    failed = [r for r in results if not r.ok]
    hint = (
        f"; see `orch logs {failed[0].worker}` or enter it with `orch shell {failed[0].worker}`"
        if failed and failed[0].log
        else ""
    )
    _finish(
        results,
        t,
        f"orch up: {count} worker(s) on {context.provider.name}",
        as_json,
        f"{len(failed)} worker(s) failed (see above){hint}; run `orch up` again to retry them",
    )


@cli.command()
@JSON
@click.option("-q", "--quiet", "names_only", is_flag=True, help="Print only the VM names, one per line.")
@pass_invocation
def status(obj: Invocation, as_json: bool, names_only: bool) -> None:
    """List this checkout's VMs: workers, one-offs, standbys, kept VMs (failing tests'
    workers, --orch-keep-failed) and the baseline, with their state (running, stopped,
    missing, or unreachable when its engine or cluster member does not answer), phase (with
    "reset pending" for a worker a marked test left to reset), age and drift (what changed
    since made); with several engines or on an Incus cluster, the location (engine or
    member) of each; then, for each kept VM, its test and the command that enters it."""
    context = obj.context()
    rows = status_verb.status(context)
    if as_json:
        _json([asdict(r) for r in rows])
        return
    if names_only:
        for r in rows:
            click.echo(r.vm)
        return
    if not rows:
        click.echo("no workers in this checkout; run `orch up --workers N`", err=True)
        return
    located = any(r.location for r in rows)  # several engines, or an Incus cluster: where each VM is
    table = [
        [
            r.kind,
            r.worker,
            r.vm,
            *([r.location] if located else []),
            r.state,
            r.phase,
            "" if r.age_seconds is None else human(r.age_seconds),
            r.drift,
            r.inventory,
        ]
        for r in rows
    ]
    _table(
        f"orch ({context.settings.inventory_dir}, {context.provider.name})",
        ["kind", "worker", "vm", *(["location"] if located else []), "state", "phase", "age", "drift", "inventory"],
        table,
        stderr=False,
    )
    for r in rows:
        if r.kind == "kept":
            click.echo(f"kept after {r.test or 'a failing test (unknown: the state was rebuilt)'}: {r.enter}")


@cli.command()
@click.argument("workers", nargs=-1, shell_complete=complete_workers)
@FORCE
@NO_WAIT
@JSON
@pass_invocation
def down(obj: Invocation, workers: tuple[str, ...], force: bool, no_wait: bool, as_json: bool) -> None:
    """Delete WORKERS (default: all of this checkout's) and their inventories.

    Only VMs that orch recorded and labelled for this checkout are deleted. When no worker
    is left, one-offs of finished runs, the pool, kept VMs (failing tests' workers,
    --orch-keep-failed) and the baseline go too; a kept VM named alone (`orch down
    <name>`, see `orch status`) is deleted by itself. Refused while a pytest run uses the
    workers, unless --force.
    """
    context = obj.context()
    t = time.monotonic()
    results = down_verb.down(context, workers, wait=not no_wait, on_wait=obj.waiting, force=force)
    if not results:
        click.echo("no workers to delete", err=True)
    _finish(results, t, "orch down", as_json, "some VMs could not be deleted (see above); run `orch down` again")


@cli.command()
@NO_WAIT
@pass_invocation
def repair(obj: Invocation, no_wait: bool) -> None:
    """Rebuild a lost, corrupt or truncated state file from the backend.

    Every VM that is this checkout's by name and labels is recorded again (the damaged
    file is kept as state.json.damaged); workers whose baseline is unknown are marked
    unfinished so the next `orch up` makes them again. Inventories are rewritten. Refused
    while an engine or cluster member does not answer: its VMs would be forgotten.
    """
    data = repair_verb.repair(obj.context(), wait=not no_wait, on_wait=obj.waiting)
    click.echo(f"state rebuilt: {len(data.workers)} worker(s); run `orch up` to finish any unfinished one", err=True)


@cli.command()
@click.argument("workers", nargs=-1, shell_complete=complete_workers)
@click.option("--all", "all_workers", is_flag=True, help="Reset every worker of this checkout.")
@click.option("--soft", is_flag=True, help="Run the reset deploy inside the VM instead of restoring the baseline.")
@FORCE
@NO_WAIT
@JSON
@pass_invocation
def reset(
    obj: Invocation, workers: tuple[str, ...], all_workers: bool, soft: bool, force: bool, no_wait: bool, as_json: bool
) -> None:
    """Put WORKERS (e.g. gw1 gw3, or --all) back to their baseline.

    \b
    Default (hard): the VM is made again from the baseline kept after provisioning, under
    the same name and inventory: files, packages, users and processes that tests left are
    all gone. --soft runs the reset deploy instead (orchestrator.deploys.reset:reset, or
    [tool.orch] reset) and keeps the VM. Other workers are not touched. Refused while a
    pytest run uses the workers, unless --force. Ends with a readiness check.
    """
    if not workers and not all_workers:
        raise UsageError("name the workers to reset (e.g. `orch reset gw1`), or pass --all")
    if workers and all_workers:
        raise UsageError("give worker ids or --all, not both")
    context = obj.context()
    t = time.monotonic()
    results = reset_verb.reset(context, workers, soft=soft, wait=not no_wait, on_wait=obj.waiting, force=force)
    _finish(
        results,
        t,
        f"orch reset{' --soft' if soft else ''}",
        as_json,
        "some workers could not be reset (see above); run `orch reset` again, or `orch up`",
    )


@cli.command()
@click.option("--dry-run", is_flag=True, help="Report what would be deleted; change nothing.")
@JSON
@click.option(
    "--older-than",
    metavar="AGE",
    help="Also delete orch's VMs older than AGE (e.g. 12h, 2d), unless a live run uses them; the only rule for VMs whose checkout cannot be seen from here.",
)
@click.option(
    "--legacy",
    is_flag=True,
    help="Also delete VMs named with legacy test prefixes (test-vm-, pytest-worker-, …) and [tool.orch] legacy_prefixes.",
)
@pass_invocation
def sweep(obj: Invocation, dry_run: bool, as_json: bool, older_than: str | None, legacy: bool) -> None:
    """Delete orphaned test VMs: only orch's, never a live run's.

    \b
    Orphans: one-off VMs whose pytest run is gone; workers, standbys and baselines whose
    checkout, inventory folder or state is gone, or that their state does not record;
    with --older-than, anything of orch's older than that. A VM is orch's only if its
    name AND its labels say so. A VM whose checkout this sweep cannot see (another host,
    another mount namespace, a container sharing the Docker socket) is deleted only by
    --older-than. Each decision is reported with its reason. Exit code 1 if a deletion
    failed.
    """
    age = parse_duration(older_than) if older_than is not None else None
    settings = obj.settings()
    check_home()  # sweep finds checkouts through the registry
    t = time.monotonic()
    decisions = sweep_verb.sweep(settings, get_provider(settings), older_than=age, legacy=legacy, dry_run=dry_run)
    rows = [[d.vm, d.kind, d.result, d.reason, d.error] for d in decisions]
    _table(
        f"orch sweep{' --dry-run' if dry_run else ''} in {time.monotonic() - t:.1f}s",
        ["vm", "kind", "result", "reason", "error"],
        rows,
    )
    counts = {
        k: sum(d.result == k for d in decisions) for k in ("deleted", "would delete", "kept", "failed", "gone", "forgotten")
    }
    extra = "".join(f", {counts[k]} {k}" for k in ("gone", "forgotten") if counts[k])
    click.echo(
        f"sweep: {counts['deleted']} deleted, {counts['would delete']} would be deleted, {counts['kept']} kept{extra}", err=True
    )
    if as_json:
        _json([asdict(d) for d in decisions])
    if counts["failed"]:
        raise OrchError(f"{counts['failed']} deletion(s) failed (see above); run `orch sweep` again")


@cli.command(hidden=True)
@pass_invocation
def maintain(obj: Invocation) -> None:
    """Make missing spares (pool VMs, standbys) and delete swapped-out VMs: what orch
    starts in the background after a claim or a swap."""
    failed = maintainer.maintain(obj.context())
    if failed:
        raise OrchError(f"{len(failed)} spare(s) could not be made: {failed[0].error}")
