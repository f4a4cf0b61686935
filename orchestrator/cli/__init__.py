"""The ``orch`` command line: a thin front end over the core (:mod:`orchestrator.core.context`).

Progress goes to stderr for people, ``--json`` to stdout for scripts. Every error orch
knows about becomes one line on stderr (``Error: …`` with the fix) and a non-zero exit
code: 2 for a usage error, 1 for anything else. Commands live in ``commands.py`` (the
lifecycle) and ``inside.py`` (entering a worker: exec, shell, logs).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click

from orchestrator.core import settings as config
from orchestrator.core.context import Context
from orchestrator.core.maintainer import spawn_maintainer
from orchestrator.primitives import naming
from orchestrator.primitives.errors import OrchError, UsageError
from orchestrator.primitives.version import __version__
from orchestrator.providers import registry
from orchestrator.settings.model import Settings
from orchestrator.state.store import StateStore


class Invocation:
    """Shared by all commands: the global options, and the core built from them lazily."""

    def __init__(self, inventory_dir: Path | None, provider: str | None, prefix: str | None) -> None:
        self.overrides: dict[str, Any] = {"inventory_dir": inventory_dir, "provider": provider, "prefix": prefix}
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self.quiet = False
        self.verbose = 0

    def apply(self, key: str, value: Any) -> None:
        """A global option given after the command: the same meaning as before it."""
        if key == "quiet":
            self.quiet = True
        elif key == "verbose":
            self.verbose = max(self.verbose, int(value))
            _configure_logging(self.verbose, again=True)
        else:
            self.overrides[key] = value

    def settings(self, **more: object) -> Settings:
        return config.load(overrides={**self.overrides, **more})

    def context(self, **more: object) -> Context:
        return Context(self.settings(**more), report=self.progress, refill=spawn_maintainer)

    def progress(self, worker: str, message: str) -> None:
        if self.quiet:
            return
        with self._lock:
            click.echo(f"[{time.monotonic() - self.started:6.1f}s] {worker}: {message}", err=True)

    def waiting(self) -> None:
        click.echo("orch: another orch command is running in this checkout; waiting for it to finish…", err=True)


pass_invocation = click.make_pass_decorator(Invocation)


class OneLineUsageError(click.ClickException):
    """A usage error click found (a bad option value, a missing argument, an unknown
    command), shown as orch shows its own: one line, with where the help is, instead of
    click's usage line, hint and error (three lines)."""

    exit_code = 2

    @classmethod
    def of(cls, err: click.UsageError) -> OneLineUsageError:
        where = err.ctx.command_path if err.ctx is not None else "orch"
        return cls(f"{err.format_message().rstrip('.')} (see {where} --help)")


class OrchGroup(click.Group):
    """Turns orch's own errors, and click's usage errors, into one line on stderr at the
    CLI boundary; and gives every command the global options too, so that they work where
    users type them: before the command (``orch --provider podman up``) or after it
    (``orch up --provider podman``), with the same meaning (after the command wins)."""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        taken = {opt for param in cmd.params for opt in param.opts}
        cmd.params.extend(o for o in _global_options(after=True) if not set(o.opts) & taken)
        super().add_command(cmd, name)

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.exceptions.NoArgsIsHelpError:
            raise  # `orch` alone prints the help
        except click.UsageError as err:  # the group's own options (--connector telnet)
            raise OneLineUsageError.of(err) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as err:  # a command's options and arguments, or no such command
            raise OneLineUsageError.of(err) from None
        except UsageError as err:
            click.echo(f"Error: {err}", err=True)
            ctx.exit(2)
        except OrchError as err:
            click.echo(f"Error: {err}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("orch: interrupted; run the command again to finish (the state is consistent)", err=True)
            ctx.exit(130)


def _path(ctx: click.Context, param: click.Parameter, value: str | None) -> Path | None:
    if value is None:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise click.UsageError("--inventory-dir is not valid UTF-8: choose a folder with a UTF-8 name") from None
    return Path(value)


def complete_workers(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """Shell completion of worker ids: the workers this checkout's state records."""
    try:
        settings = config.load(overrides={"inventory_dir": (ctx.find_root().params or {}).get("inventory_dir")})
        data = StateStore(settings.inventory_dir, settings.checkout).read()
    except (OrchError, OSError):
        return []
    return [w for w in sorted(data.workers, key=naming.worker_index) if w.startswith(incomplete)]


def _provider_names() -> str:
    """The registry's provider names, for --help."""
    try:
        return ", ".join(registry.names())
    except UsageError as err:
        return str(err)


def _global_option_specs(*, after: bool) -> list[tuple[list[str], dict[str, Any]]]:
    """The global options (declarations, attributes): as the group declares them
    (``after=False``: with their environment variable, passed to :func:`cli`), or as every
    command declares them (``after=True``: applied, when given, to the invocation that the
    group made)."""

    def apply(key: str) -> Any:
        def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
            if after and value not in (None, False, 0):
                ctx.find_object(Invocation).apply(key, value)  # type: ignore[union-attr]
            return value

        return callback

    def inventory(ctx: click.Context, param: click.Parameter, value: str | None) -> Path | None:
        return apply("inventory_dir")(ctx, param, _path(ctx, param, value))  # type: ignore[no-any-return]

    specs: list[tuple[list[str], dict[str, Any]]] = [
        (
            ["--inventory-dir"],
            {
                "callback": inventory,
                "envvar": None if after else "ORCH_INVENTORY_DIR",
                "help": "Where state and generated inventories live [default: <project>/inventories].",
            },
        ),
        (
            ["--provider"],
            {
                "callback": apply("provider"),
                "help": f"VM backend, one of the installed providers: {_provider_names()} [default: the one this "
                f"checkout's VMs are on; for a new checkout {registry.DEFAULT_RULE}].",
            },
        ),
        (["--prefix"], {"callback": apply("prefix"), "help": "Prefix of orch's VM names [default: orch]."}),
        (
            ["--connector"],
            {
                "type": click.Choice(["native", "ssh"]),
                "callback": apply("connector"),
                "help": "How pyinfra reaches inside VMs: the provider's own connector, or ssh [default: native].",
            },
        ),
        (
            ["-v", "--verbose"],
            {"count": True, "callback": apply("verbose"), "help": "More log output (-vv for debug, pyinfra's too)."},
        ),
        (
            ["-q", "--quiet"],
            {"is_flag": True, "callback": apply("quiet"), "help": "No progress lines; only errors, tables and --json."},
        ),
    ]
    return [(decls, {**attrs, "expose_value": not after}) for decls, attrs in specs]


def _global_options(*, after: bool) -> list[click.Option]:
    return [click.Option(decls, **attrs) for decls, attrs in _global_option_specs(after=after)]


def _with_global_options(func: Any) -> Any:
    """The group's own copy of the global options (before the command)."""
    for decls, attrs in reversed(_global_option_specs(after=False)):
        func = click.option(*decls, **attrs)(func)
    return func


def _configure_logging(verbose: int, *, again: bool = False) -> None:
    """``again``: -v given after the command, replacing the set-up made before it."""
    logging.basicConfig(
        level=logging.WARNING - 10 * min(verbose, 2),
        format="orch: %(levelname)s: %(message)s",
        stream=sys.stderr,
        force=again,
    )
    # pyinfra's own messages stay out of orch's output below -vv (orch reads them to say
    # why a deploy failed, and writes them to the per-VM logs)
    logging.getLogger("pyinfra").propagate = verbose >= 2


@click.group(cls=OrchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@_with_global_options
@click.version_option(__version__, prog_name="orch")
@click.pass_context
def cli(
    ctx: click.Context,
    inventory_dir: Path | None,
    provider: str | None,
    prefix: str | None,
    connector: str | None,
    verbose: int,
    quiet: bool,
) -> None:
    """orch: one persistent VM per pytest-xdist worker, provisioned by pyinfra deploys.

    \b
      orch up --workers 4     bring up gw0..gw3, provision them, write inventories/
      pytest -n 4             each xdist worker finds its VM (fixtures worker_vm, orch_worker)
      pytest -n auto --orch-up   the same, with bring-up done by pytest
      orch reset gw1          put a worker back to its baseline
      orch exec gw1 -- CMD    run a command in a worker (orch shell gw1 for a shell)
      orch status             workers, one-offs and the baseline: state, age, drift
      orch sweep              delete orphaned VMs, never anything that is not orch's
      orch down               delete the workers and their inventories

    Settings come from [tool.orch] in pyproject.toml, then ORCH_* variables, then flags.
    The options below work before or after the command (orch up --provider podman).
    Shell completion: eval "$(_ORCH_COMPLETE=bash_source orch)" (zsh_source, fish_source).
    """
    _configure_logging(verbose)
    ctx.obj = Invocation(inventory_dir, provider, prefix)
    ctx.obj.overrides["connector"] = connector
    ctx.obj.quiet = quiet
    ctx.obj.verbose = verbose


from orchestrator.cli import baseline, commands, doctor, inside  # noqa: E402,F401  (registers the commands)


def main() -> None:
    cli(prog_name="orch")
