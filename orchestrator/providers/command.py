"""Running a backend's command line (docker, podman, orbctl): argv lists, output captured,
a time limit that kills the process orch started (by its pid: portable, no ``/proc``),
and failures turned into classified errors by the provider's own ``classify``.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable

from orchestrator.primitives.errors import EngineUnavailable, ProviderError, ProviderTimeout

log = logging.getLogger(__name__)

Classify = Callable[[str, str, int, str], ProviderError]


def run(
    argv: list[str],
    *,
    operation: str,
    timeout: float,
    classify: Classify,
    vm: str = "",
    missing: str = "",
    env: dict[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv``; return the finished process, or (with ``check``) raise what
    ``classify`` makes of a non-zero exit. ``subprocess.run`` kills the child when the
    time limit passes."""
    log.debug("run %s", argv)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, env=env)
    except FileNotFoundError as err:
        raise EngineUnavailable(missing or f"{argv[0]} is not installed", operation=operation) from err
    except subprocess.TimeoutExpired as err:
        # info, not a warning: the error below says it (one line), and a retry warns of its own
        log.info("killed %s after %.0fs (pid ended with the time limit)", " ".join(argv[:3]), timeout)
        raise ProviderTimeout(
            f"{argv[0]} {operation} {vm} timed out after {timeout:.0f}s (the command was killed)".replace("  ", " "),
            operation=operation,
            vm=vm,
        ) from err
    if check and proc.returncode != 0:
        raise classify(operation, vm, proc.returncode, proc.stderr or proc.stdout)
    return proc
