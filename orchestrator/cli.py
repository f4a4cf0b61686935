"""The ``orch`` command line: a thin front end over :mod:`orchestrator.lifecycle`.

Progress goes to stderr for people, ``--json`` to stdout for scripts. Every error orch
knows about becomes one line on stderr (``Error: …`` with the fix) and a non-zero exit
code: 2 for a usage error, 1 for anything else.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import click

from . import __version__, config, naming
from .errors import OrchError, UsageError
from .lifecycle import Orch, WorkerResult


class Context:
    """Shared by all commands: the global options, and the core built from them lazily."""

    def __init__(self, inventory_dir: Path | None, provider: str | None, prefix: str | None) -> None:
        self.overrides = {"inventory_dir": inventory_dir, "provider": provider, "prefix": prefix}
        self.started = time.monotonic()
        self._lock = threading.Lock()

    def settings(self, **more: object) -> config.Settings:
        return config.load(overrides={**self.overrides, **more})

    def orch(self, **more: object) -> Orch:
        return Orch(self.settings(**more), report=self.progress)

    def progress(self, worker: str, message: str) -> None:
        with self._lock:
            click.echo(f"[{time.monotonic() - self.started:6.1f}s] {worker}: {message}", err=True)

    def waiting(self) -> None:
        click.echo("orch: another orch command is running in this checkout; waiting for it to finish…", err=True)


pass_ctx = click.make_pass_decorator(Context)


class OrchGroup(click.Group):
    """Turns orch's own errors into one line on stderr at the CLI boundary."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except UsageError as err:
            click.echo(f"Error: {err}", err=True)
            ctx.exit(2)
        except OrchError as err:
            click.echo(f"Error: {err}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("orch: interrupted; run the command again to finish (the state is consistent)", err=True)
            ctx.exit(130)


@click.group(cls=OrchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--inventory-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="ORCH_INVENTORY_DIR",
    help="Where state and generated inventories live [default: <project>/inventories].",
)
@click.option("--provider", help="VM backend: docker, or orbstack [default: orbstack if orbctl is on PATH, else docker].")
@click.option("--prefix", help="Prefix of orch's VM names [default: orch].")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(__version__, prog_name="orch")
@click.pass_context
def cli(ctx: click.Context, inventory_dir: Path | None, provider: str | None, prefix: str | None, verbose: int) -> None:
    """orch: one persistent VM per pytest-xdist worker, provisioned by pyinfra deploys.

    \b
      orch up --workers 4     bring up gw0..gw3, provision them, write inventories/
      pytest -n 4             each xdist worker finds its VM (fixtures worker_vm, orch_worker)
      orch status             list workers, their VMs, state and age
      orch down               delete the workers and their inventories

    Settings come from [tool.orch] in pyproject.toml, then ORCH_* variables, then flags.
    """
    logging.basicConfig(
        level=logging.WARNING - 10 * min(verbose, 2),
        format="orch: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    if verbose < 2:
        # pyinfra's own messages stay out of orch's output; orch still reads them (to
        # report why a command failed), so the logger keeps its level
        logging.getLogger("pyinfra").propagate = False
    ctx.obj = Context(inventory_dir, provider, prefix)


def _summary(results: list[WorkerResult], took: float, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    phases: list[str] = []
    for r in results:
        phases += [k for k in r.seconds if k not in phases and k != "total"]
    phases.append("total")
    table = Table(title=f"{title} in {took:.1f}s", title_justify="left")
    for col in ("worker", "vm", "action", *phases, "error"):
        table.add_column(col, justify="right" if col in phases else "left")
    for r in sorted(results, key=lambda r: naming.worker_index(r.worker)):
        secs = [f"{r.seconds[k]:.1f}s" if k in r.seconds else "" for k in phases]
        table.add_row(r.worker, r.vm, r.action, *secs, r.error)
    Console(stderr=True, width=200 if not sys.stderr.isatty() else None).print(table)


def _finish(results: list[WorkerResult], started: float, title: str, as_json: bool, failure: str) -> None:
    """The end of every per-worker command: summary table, optional JSON, exit code."""
    if results:
        _summary(results, time.monotonic() - started, title)
    if as_json:
        _json([asdict(r) for r in results])
    if any(not r.ok for r in results):
        raise OrchError(failure)


def _json(payload: object) -> None:
    click.echo(json.dumps(payload, indent=2))


@cli.command()
@click.option("-n", "--workers", type=int, help="How many workers (gw0..gwN-1) [default: [tool.orch] workers, or 2].")
@click.option("--image", help="Image to create workers from [default: ORCH_IMAGE or [tool.orch] image].")
@click.option("--parallel", type=int, help="How many VMs to create or delete at once [default: 4].")
@click.option("--prune", is_flag=True, help="Delete workers beyond --workers (otherwise left alone).")
@click.option("--no-wait", is_flag=True, help="Fail at once if another orch command holds the lock.")
@click.option("--json", "as_json", is_flag=True, help="Print the per-worker results as JSON on stdout.")
@pass_ctx
def up(obj: Context, workers: int | None, image: str | None, parallel: int | None, prune: bool, no_wait: bool, as_json: bool) -> None:
    """Bring up one provisioned VM per worker and write their inventories.

    Idempotent: healthy workers are reused, stopped ones started, missing or unfinished
    ones recreated. Asking for more workers adds them; asking for fewer leaves the extra
    ones alone unless --prune.
    """
    orch = obj.orch(image=image, parallel=parallel)
    count = workers if workers is not None else orch.settings.workers
    naming.validate_worker_count(count)
    t = time.monotonic()
    results = orch.up(count, prune=prune, wait=not no_wait, on_wait=obj.waiting)
    click.echo(f"inventories: {orch.settings.inventory_dir}", err=True)
    failed = sum(not r.ok for r in results)
    _finish(results, t, f"orch up: {count} worker(s) on {orch.provider.name}", as_json,
            f"{failed} worker(s) failed (see above); run `orch up` again to retry them")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the workers as JSON on stdout.")
@pass_ctx
def status(obj: Context, as_json: bool) -> None:
    """List each worker: its VM, state (running, stopped, missing), phase and age."""
    orch = obj.orch()
    rows = orch.status()
    if as_json:
        _json([asdict(r) for r in rows])
        return
    if not rows:
        click.echo("no workers in this checkout; run `orch up --workers N`", err=True)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"orch workers ({orch.settings.inventory_dir}, {orch.provider.name})", title_justify="left")
    for col in ("worker", "vm", "state", "phase", "age", "inventory"):
        table.add_column(col)
    for r in rows:
        age = "" if r.age_seconds is None else _human(r.age_seconds)
        table.add_row(r.worker, r.vm, r.state, r.phase, age, r.inventory)
    Console(width=200 if not sys.stdout.isatty() else None).print(table)


def _human(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


@cli.command()
@click.argument("workers", nargs=-1)
@click.option("--no-wait", is_flag=True, help="Fail at once if another orch command holds the lock.")
@click.option("--json", "as_json", is_flag=True, help="Print the per-worker results as JSON on stdout.")
@pass_ctx
def down(obj: Context, workers: tuple[str, ...], no_wait: bool, as_json: bool) -> None:
    """Delete WORKERS (default: all of this checkout's) and their inventories.

    Only VMs that orch recorded and labelled for this checkout are deleted.
    """
    orch = obj.orch()
    t = time.monotonic()
    results = orch.down(workers, wait=not no_wait, on_wait=obj.waiting)
    if not results:
        click.echo("no workers to delete", err=True)
    _finish(results, t, "orch down", as_json, "some workers could not be deleted (see above); run `orch down` again")


@cli.command()
@click.option("--no-wait", is_flag=True, help="Fail at once if another orch command holds the lock.")
@pass_ctx
def repair(obj: Context, no_wait: bool) -> None:
    """Rebuild a lost, corrupt or truncated state file from the backend.

    Every VM carrying this checkout's labels is recorded again (the damaged file is kept
    as state.json.damaged); workers without a baseline are marked unfinished so the next
    `orch up` recreates them. Inventories are rewritten.
    """
    data = obj.orch().repair(wait=not no_wait, on_wait=obj.waiting)
    click.echo(f"state rebuilt: {len(data.workers)} worker(s); run `orch up` to finish any unfinished one", err=True)


@cli.command()
@click.argument("workers", nargs=-1)
@click.option("--all", "all_workers", is_flag=True, help="Reset every worker of this checkout.")
@click.option("--soft", is_flag=True, help="Run the reset deploy inside the VM instead of restoring the baseline.")
@click.option("--no-wait", is_flag=True, help="Fail at once if another orch command holds the lock.")
@click.option("--json", "as_json", is_flag=True, help="Print the per-worker results as JSON on stdout.")
@pass_ctx
def reset(obj: Context, workers: tuple[str, ...], all_workers: bool, soft: bool, no_wait: bool, as_json: bool) -> None:
    """Put WORKERS (e.g. gw1 gw3, or --all) back to their baseline.

    \b
    Default (hard): the VM is recreated from the baseline kept after provisioning (Docker:
    a committed image) under the same name and inventory: files, packages, users and
    processes that tests left are all gone. --soft runs the reset deploy instead
    (orchestrator.deploys.reset:reset, or [tool.orch] reset) and keeps the VM.
    Other workers are not touched. Ends with a readiness check.
    """
    if not workers and not all_workers:
        raise UsageError("name the workers to reset (e.g. `orch reset gw1`), or pass --all")
    if workers and all_workers:
        raise UsageError("give worker ids or --all, not both")
    orch = obj.orch()
    t = time.monotonic()
    results = orch.reset(workers, soft=soft, wait=not no_wait, on_wait=obj.waiting)
    _finish(results, t, f"orch reset{' --soft' if soft else ''}", as_json,
            "some workers could not be reset (see above); run `orch reset` again, or `orch up`")


@cli.command()
@click.option("--dry-run", is_flag=True, help="Report what would be deleted; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print every decision as JSON on stdout (for nightly jobs).")
@click.option("--older-than", metavar="AGE", help="Also delete orch's VMs older than AGE (e.g. 12h, 2d), unless a live run uses them.")
@click.option("--legacy", is_flag=True, help="Also delete VMs named with the seed's prefixes (test-vm-, pytest-worker-, …) and [tool.orch] legacy_prefixes.")
@pass_ctx
def sweep(obj: Context, dry_run: bool, as_json: bool, older_than: str | None, legacy: bool) -> None:
    """Delete orphaned test VMs: only orch's, never a live run's.

    \b
    Orphans: one-off VMs whose pytest run is gone; worker VMs whose checkout, inventory
    folder or state is gone, or that their state does not record; with --older-than,
    anything of orch's older than that. A VM is orch's only if it has orch's name AND
    orch's labels. Each decision is reported with its reason. Exit code 1 if a deletion
    failed.
    """
    from .providers import get_provider
    from .sweep import parse_duration, sweep as do_sweep

    age = parse_duration(older_than) if older_than is not None else None
    settings = obj.settings()
    t = time.monotonic()
    decisions = do_sweep(settings, get_provider(settings), older_than=age, legacy=legacy, dry_run=dry_run)
    took = time.monotonic() - t
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"orch sweep{' --dry-run' if dry_run else ''} in {took:.1f}s", title_justify="left")
    for col in ("vm", "kind", "result", "reason", "error"):
        table.add_column(col)
    for d in decisions:
        table.add_row(d.vm, d.kind, d.result, d.reason, d.error)
    Console(stderr=True, width=200 if not sys.stderr.isatty() else None).print(table)
    deleted = sum(d.result == "deleted" for d in decisions)
    would = sum(d.result == "would delete" for d in decisions)
    click.echo(f"sweep: {deleted} deleted, {would} would be deleted, {sum(d.result == 'kept' for d in decisions)} kept", err=True)
    if as_json:
        _json([asdict(d) for d in decisions])
    if any(d.result == "failed" for d in decisions):
        raise OrchError(f"{sum(d.result == 'failed' for d in decisions)} deletion(s) failed (see above); run `orch sweep` again")


def main() -> None:
    cli(prog_name="orch")
