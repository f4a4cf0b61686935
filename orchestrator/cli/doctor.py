"""``orch doctor``: what is wrong with this setup, in a few lines."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict

import click

from orchestrator.cli import Invocation, cli, pass_invocation
from orchestrator.verbs import doctor as doctor_verb

#: How each status is shown (FAIL in capitals: the line to read first).
WORDS = {doctor_verb.OK: ("ok", "green"), doctor_verb.WARN: ("warn", "yellow"), doctor_verb.FAIL: ("FAIL", "red")}


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON on stdout: [{check, status, detail, fix}].")
@pass_invocation
def doctor(obj: Invocation, as_json: bool) -> None:
    """Check this setup and say what to do about what is wrong.

    \b
    One line per check, each ok, warn or FAIL with the fix:
      settings    pyproject.toml, the provider and where it was chosen
      engine      each engine the provider reaches: its version, or why it does not answer
      image       the image (or the machine image) is here, or can be pulled
      deploy      provision, personalize and reset: found where, importable
      state       the state file: readable, its provider and what it records
      baseline    its fingerprint now, and whether the recorded one matches (drift, in words)
      workers     each worker's health: ready, failed, unfinished, reset pending, missing VM
      maintainer  the background refiller of spares: running or not, its log's last lines
      leases      live pytest runs and the workers each holds; leases of dead runs
      checkouts   the checkout registry: this checkout, others whose folder is gone
      connector   native or ssh (and what ssh needs)
      tools       orch, pyinfra, pytest-xdist; other configured providers' commands

    Changes nothing and waits for no lock: it may run while another orch command works
    (it says so). Exit code 1 if a check failed (something that makes `orch up` or pytest
    fail), 0 otherwise, warnings included.
    """
    if not obj.verbose:  # what the library would log (an engine that does not answer) is a line below
        logging.getLogger("orchestrator").setLevel(logging.ERROR)
    checks = doctor_verb.diagnose(obj.settings)
    if as_json:
        click.echo(json.dumps([asdict(c) for c in checks], indent=2))
    else:
        width = max((len(c.check) for c in checks), default=0)
        for c in checks:
            word, colour = WORDS.get(c.status, (c.status, "white"))
            fix = f": {c.fix}" if c.fix else ""
            click.echo(
                f"{click.style(f'{word:<5}', fg=colour, bold=c.status == doctor_verb.FAIL)} {c.check:<{width}}  {c.detail}{fix}"
            )
    seen = doctor_verb.counts(checks)
    click.echo(
        f"doctor: {seen[doctor_verb.OK]} ok, {seen[doctor_verb.WARN]} warning(s), {seen[doctor_verb.FAIL]} failing", err=True
    )
    if doctor_verb.failed(checks):
        click.get_current_context().exit(1)
