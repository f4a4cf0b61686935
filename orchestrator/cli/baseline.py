"""``orch baseline``: the baseline as a CI cache entry (key, export, import)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click

from orchestrator.cli import Invocation, OrchGroup, cli, pass_invocation
from orchestrator.core.baseline_cache import CacheMiss
from orchestrator.verbs import baseline as verb

#: The exit code of ``orch baseline import`` when the folder has no entry for the key (a
#: cache miss: a CI script provisions as usual), apart from 1 (an entry that cannot be used).
MISS = 3

FOLDER = click.Path(file_okay=False, path_type=Path)
JSON = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
NO_WAIT = click.option("--no-wait", is_flag=True, help="Fail at once if another orch command holds the lock.")


@cli.group(cls=OrchGroup)
def baseline() -> None:
    """The baseline as a cache entry, so a cold CI job skips provisioning.

    \b
      orch baseline key           the baseline's fingerprint: a cache key (one line)
      orch baseline export DIR    write the current baseline to DIR/orch-baseline-<key>.tar (+ .json)
      orch baseline import DIR    load DIR's baseline for this key as this checkout's baseline
      orch up --baseline-cache DIR   import before provisioning, export after building
    """


@baseline.command()
@JSON
@pass_invocation
def key(obj: Invocation, as_json: bool) -> None:
    """Print the fingerprint of the baseline this checkout would build now (deploy
    sources, image id, orch's version, provider settings): the same key means the same
    baseline. Makes nothing and needs no VM."""
    context = obj.context()
    fp = verb.key(context)
    if as_json:
        click.echo(json.dumps({"key": fp.value, "parts": fp.parts, "provider": context.provider.name}, indent=2))
    else:
        click.echo(fp.value)


@baseline.command(name="export")
@click.argument("directory", metavar="DIR", type=FOLDER)
@NO_WAIT
@JSON
@pass_invocation
def export_(obj: Invocation, directory: Path, no_wait: bool, as_json: bool) -> None:
    """Write the current baseline to DIR (made if missing) as orch-baseline-<key>.tar with
    its manifest orch-baseline-<key>.json, atomically; DIR's entries of other keys are
    removed (a cache folder holds the current one)."""
    context = obj.context()
    outcome = verb.export(context, directory.resolve(), wait=not no_wait, on_wait=obj.waiting)
    _say(outcome, as_json, f"already in {outcome.path}" if outcome.action == "present" else f"exported to {outcome.path}")


@baseline.command(name="import")
@click.argument("directory", metavar="DIR", type=FOLDER)
@NO_WAIT
@JSON
@pass_invocation
def import_(obj: Invocation, directory: Path, no_wait: bool, as_json: bool) -> None:
    """Load DIR's baseline for this checkout's key as this checkout's baseline (owned by
    it: its own name and labels), so that `orch up` clones workers from it without
    provisioning. Exit 3 when DIR has none for the key (a miss), 1 when the entry there
    cannot be used (nothing is recorded then)."""
    context = obj.context()
    try:
        outcome = verb.import_(context, directory.resolve(), wait=not no_wait, on_wait=obj.waiting)
    except CacheMiss as err:
        if as_json:
            click.echo(json.dumps({"key": verb.key(context).value, "action": "miss", "path": ""}, indent=2))
        click.echo(f"orch: {err}", err=True)
        click.get_current_context().exit(MISS)
    said = "is already this checkout's" if outcome.action == "present" else "imported"
    _say(outcome, as_json, f"{said} from {outcome.path}")


def _say(outcome: verb.Outcome, as_json: bool, what: str) -> None:
    took = f" in {outcome.seconds:.1f}s" if outcome.seconds else ""
    click.echo(f"orch: baseline {outcome.key} {what} ({outcome.size / 1e6:.0f} MB){took}", err=True)
    if as_json:
        click.echo(json.dumps(asdict(outcome), indent=2))
