"""Entering a worker: ``orch exec``, ``orch shell`` and ``orch logs``. They work on a
worker whose provisioning failed, too: that is when they are needed most. ``exec`` and
``shell`` also enter a kept VM (a failing test's worker, ``--orch-keep-failed``) by its
name, only one this checkout's state records as kept (and orch's by name and labels)."""

from __future__ import annotations

import os
import subprocess
import sys

import click

from orchestrator.cli import Invocation, cli, complete_workers, pass_invocation
from orchestrator.core.context import Context
from orchestrator.primitives.errors import UsageError
from orchestrator.state import inventory


def _running(context: Context, target: str) -> str:
    """The VM of a worker id, or of a kept VM's name, running (started if it was stopped)."""
    data = context.store.read()
    if not target.startswith("gw") and target not in data.kept:
        raise UsageError(
            f"{target!r} is neither a worker id nor a VM this checkout kept (see `orch status`): "
            "name a worker (gw0 …) or a kept VM"
        )
    if target in data.kept:
        context.ensure_running(target)  # refused when the VM under that name is not orch's
        return target
    [rec] = context.records([target], data)
    context.ensure_running(rec.vm, rec.worker)
    return rec.vm


@cli.command(name="exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("worker", shell_complete=complete_workers)
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@pass_invocation
def exec_(obj: Invocation, worker: str, command: tuple[str, ...]) -> None:
    """Run COMMAND in WORKER's VM: `orch exec gw1 -- ls -l /etc`.

    WORKER is a worker id, or the name of a kept VM (`orch status` lists them). Its
    stdout, stderr and exit code are passed through. A stopped VM is started first.
    """
    argv = list(command[1:] if command[:1] == ("--",) else command)
    if not argv:  # checked here, not by click, to name the fix in one line
        raise UsageError(f"name a command to run: orch exec {worker} -- CMD ARGS…")
    context = obj.context()
    vm = _running(context, worker)
    proc = subprocess.run(context.connector.exec_argv(vm, argv, interactive=False), stdin=None)
    sys.exit(proc.returncode)


@cli.command()
@click.argument("worker", shell_complete=complete_workers)
@pass_invocation
def shell(obj: Invocation, worker: str) -> None:
    """Open an interactive shell (bash if the VM has it, else sh) in WORKER's VM.

    WORKER is a worker id, or the name of a kept VM (`orch status` lists them)."""
    context = obj.context()
    vm = _running(context, worker)
    argv = context.connector.exec_argv(
        vm, ["sh", "-c", "command -v bash >/dev/null && exec bash -l || exec sh -l"], interactive=sys.stdin.isatty()
    )
    sys.stdout.flush()
    os.execvp(argv[0], argv)


@cli.command()
@click.argument("worker", shell_complete=complete_workers)
@pass_invocation
def logs(obj: Invocation, worker: str) -> None:
    """Print pyinfra's output of the deploys run in WORKER (provision, personalize, reset).

    The file is <inventory dir>/.orch/logs/WORKER.log; the newest run is at its end.
    """
    context = obj.context()
    inventory.worker_path(context.settings.inventory_dir, worker)  # validates the id
    path = context.logs_dir / f"{worker}.log"
    if not path.is_file():
        raise UsageError(f"no log for {worker} yet ({path}): logs are written when a deploy runs in it (orch up, reset)")
    click.echo(path.read_text(encoding="utf-8", errors="replace"), nl=False)
