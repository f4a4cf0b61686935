"""``orch doctor``: what is wrong with this setup, one line per check, each saying ok or
what to do.

Every check is fast, reads only, and catches its own errors: a check that raises is one
failing line, never a traceback. Nothing is changed: no state file, lock file or folder
is made, no checkout registered, no image pulled (the registry is asked whether it could
be), no dead run's lease tidied, no lock waited for (a lock another command holds is
said, not waited on). "fail" is what makes ``orch up`` or pytest fail; "warn" what is
merely not as it should be (a stale baseline ``orch up`` rebuilds, a dead run's lease).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from filelock import FileLock, Timeout

from orchestrator.core import spares
from orchestrator.core.baseline import Fingerprint, fingerprint
from orchestrator.core.connectors import SSHSettings
from orchestrator.core.context import Context
from orchestrator.core.maintainer import wanted
from orchestrator.primitives import naming
from orchestrator.primitives.errors import OrchError
from orchestrator.primitives.kinds import Kind
from orchestrator.primitives.version import DISTRIBUTION, __version__
from orchestrator.providers import registry
from orchestrator.pyinfra.loading import load_callable
from orchestrator.settings.loader import recorded_provider
from orchestrator.settings.model import Settings
from orchestrator.state import checkouts, leases
from orchestrator.state.location import Seen, judge
from orchestrator.state.records import FAILED, READY, StateData
from orchestrator.state.store import StateStore
from orchestrator.verbs.status import StatusRow, baseline_state, rows

log = logging.getLogger(__name__)

OK, WARN, FAIL = "ok", "warn", "fail"
#: Lines of the maintainer's log shown.
LOG_LINES = 3


@dataclass
class Check:
    """One line of ``orch doctor``: what was checked, ok/warn/fail, what was seen, and
    the fix ("" when ok, or when ``detail`` is orch's own error that names it)."""

    check: str
    status: str
    detail: str
    fix: str = ""


@dataclass
class _Seen:
    """What earlier checks found, for the later ones (which skip what they cannot see)."""

    settings: Settings | None = None
    ctx: Context | None = None
    engine: bool = False  # some engine answers
    image: str | None = None  # the image's id, when the backend has it
    deploys: bool = False  # every deploy imports
    data: StateData | None = None  # the state, when it can be read
    fp: Fingerprint | None = None


def _context(settings: Settings) -> Context:
    return Context(settings)


def diagnose(load: Callable[[], Settings], *, make: Callable[[Settings], Context] = _context) -> list[Check]:
    """Every check, in order. ``load`` gives the settings (the CLI's, with its options);
    ``make`` the checkout's context (tests give one on the FakeProvider)."""
    seen = _Seen()
    steps: list[tuple[str, Callable[[_Seen], list[Check]]]] = [
        ("settings", lambda s: _settings(s, load)),
        ("provider", lambda s: _provider(s, make)),
        ("engine", _engines),
        ("image", _image),
        ("deploy", _deploys),
        ("state", _state),
        ("baseline", _baseline),
        ("workers", _workers),
        ("maintainer", _maintainer),
        ("leases", _leases),
        ("checkouts", _checkouts),
        ("connector", _connector),
        ("tools", _tools),
    ]
    found: list[Check] = []
    for name, step in steps:
        try:
            found += step(seen)
        except Exception as err:
            log.debug("check %s raised", name, exc_info=True)
            found.append(
                Check(name, FAIL, f"the check itself failed: {type(err).__name__}: {err}", "run `orch -vv doctor` and report it")
            )
    return found


def failed(checks: list[Check]) -> bool:
    return any(c.status == FAIL for c in checks)


# -- settings, provider, engines, image ------------------------------------------------------


def _settings(seen: _Seen, load: Callable[[], Settings]) -> list[Check]:
    try:
        settings = load()
    except OrchError as err:
        return [Check("settings", FAIL, str(err))]
    seen.settings = settings
    if settings.provider_origin:
        why = f"from {settings.provider_origin}"
    elif recorded_provider(settings):
        why = "the one this checkout's state records"
    else:
        why = f"the default: {registry.DEFAULT_RULE}"
    source = settings.root / "pyproject.toml"
    where = str(source) if source.exists() else f"{settings.root} (no pyproject.toml: defaults)"
    return [Check("settings", OK, f"{where}; provider {settings.provider} ({why}); inventories {settings.inventory_dir}")]


def _provider(seen: _Seen, make: Callable[[Settings], Context]) -> list[Check]:
    if seen.settings is None:
        return []
    try:
        seen.ctx = make(seen.settings)
    except OrchError as err:
        return [Check("provider", FAIL, str(err))]
    return []


def _engines(seen: _Seen) -> list[Check]:
    if seen.ctx is None:
        return []
    provider = seen.ctx.provider
    found = []
    for about in provider.about():
        client = f" (client {about.client})" if about.client else ""
        if about.error:
            where = f"{about.where}: " if about.where else ""
            found.append(Check("engine", FAIL, f"{about.what} {where}{about.error}"))
        else:
            seen.engine = True
            found.append(Check("engine", OK, f"{about.what}" + (f" at {about.where}" if about.where else "") + client))
    if seen.engine:
        with contextlib.suppress(OrchError):
            provider.check()  # several engines: which do not answer, for the checks below
    return found


def _image(seen: _Seen) -> list[Check]:
    ctx = seen.ctx
    if ctx is None or not seen.engine:
        return []
    image = ctx.image
    named = ctx.settings.image
    what = image if named else f"{image} (the {ctx.provider.name} provider's {'machine ' if ctx.settings.machine else ''}default)"
    try:
        found = ctx.provider.image_here(image)
    except OrchError as err:
        return [Check("image", FAIL, str(err))]
    if found is None:
        return [
            Check(
                "image",
                WARN,
                f"{what} is not here yet; its registry has it, so `orch up` pulls it",
                f"pull it now ({ctx.provider.name} pull {image}) to save the wait",
            )
        ]
    seen.image = found
    return [Check("image", OK, f"{what}: {found[:19]}")]


def _deploys(seen: _Seen) -> list[Check]:
    settings = seen.settings
    if settings is None:
        return []
    found = []
    for role, spec in (("provision", settings.provision), ("personalize", settings.personalize), ("reset", settings.reset)):
        try:
            func = load_callable(spec, settings.root)
        except OrchError as err:
            found.append(Check("deploy", FAIL, f"{role}: {err}"))
            continue
        try:
            source = inspect.getsourcefile(inspect.unwrap(func)) or "?"
        except TypeError:
            source = "?"
        found.append(Check("deploy", OK, f"{role}: {spec} ({source})"))
    seen.deploys = all(c.status == OK for c in found)
    return found


# -- the state, the baseline, the workers ------------------------------------------------------


def _store(seen: _Seen) -> StateStore | None:
    settings = seen.settings
    return None if settings is None else StateStore(settings.inventory_dir, settings.checkout)


def _state(seen: _Seen) -> list[Check]:
    store = _store(seen)
    if store is None:
        return []
    if not store.exists():
        seen.data = StateData(checkout=store.checkout)
        return [
            Check(
                "state",
                WARN,
                f"none yet in {store.dir} (orch has not run in this checkout)",
                "bring workers up: `orch up --workers N`, or `pytest -n N --orch-up`",
            )
        ]
    try:
        data = store.read()
    except OrchError as err:
        return [Check("state", FAIL, str(err))]
    seen.data = data
    kinds = {"workers": len(data.workers), "standbys": len(data.standbys), "one-offs": len(data.oneoffs), "kept": len(data.kept)}
    counts = ", ".join(f"{n} {k}" for k, n in kinds.items() if n or k == "workers")
    found = [Check("state", OK, f"{store.path}: provider {data.provider or '(none yet)'}, {counts}")]
    if _held(store.dir / "command.lock"):
        found.append(
            Check(
                "state",
                WARN,
                "another orch command is running in this checkout (it holds the command lock): doctor does not wait, "
                "so what follows may change under it",
                "run `orch doctor` again once it ends",
            )
        )
    return found


def _held(path: Path) -> bool:
    """Whether another process holds the lock at ``path`` (asked, never waited on; a lock
    file that does not exist is not made)."""
    if not path.is_file():
        return False
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    except OSError:
        return False
    lock.release()
    return False


def _baseline(seen: _Seen) -> list[Check]:
    ctx, data = seen.ctx, seen.data
    if ctx is None or seen.image is None or not seen.deploys:
        return []
    fp = seen.fp = fingerprint(ctx)
    rec = data.baseline if data is not None else None
    if rec is None:
        return [Check("baseline", OK, f"fingerprint {fp.value}; none built yet (`orch up` builds it)")]
    if rec.phase != READY:
        return [Check("baseline", WARN, f"fingerprint {fp.value}; the recorded one is {rec.phase}", "`orch up` builds it again")]
    if rec.fingerprint != fp.value:
        changed = fp.drift(rec.parts)
        return [
            Check(
                "baseline",
                WARN,
                f"stale: built as {rec.fingerprint}, now {fp.value} ({changed} changed)",
                "`orch up` provisions a new one and remakes the workers (the next `pytest --orch-up` too)",
            )
        ]
    state = baseline_state(ctx, rec)
    if state != "sealed":
        return [Check("baseline", WARN, f"fingerprint {fp.value}, {state}", "`orch up` rebuilds it")]
    return [Check("baseline", OK, f"fingerprint {fp.value}, current and sealed")]


def _workers(seen: _Seen) -> list[Check]:
    ctx, data = seen.ctx, seen.data
    if ctx is None or data is None or not data.workers:
        return []
    if not seen.engine:
        return [Check("workers", FAIL, f"{len(data.workers)} recorded, not looked at: no engine answers (see engine above)")]
    found = rows(ctx, data, lambda _: seen.fp)
    workers = [r for r in found if r.kind == Kind.WORKER]
    healthy = [r.worker for r in workers if _healthy(r)]
    checks = [Check("workers", OK, f"{len(healthy)} ready: {' '.join(healthy)}")] if healthy else []
    checks += [_worker_problem(r) for r in workers if not _healthy(r)]
    if not checks:
        checks.append(Check("workers", OK, "none"))
    return checks


def _healthy(row: StatusRow) -> bool:
    return row.state == "running" and row.phase == READY and not row.drift


def _worker_problem(row: StatusRow) -> Check:
    """A worker that is not ready and running, with what makes it so again."""
    who = f"{row.worker} ({row.vm})"
    if row.state.startswith("unreachable"):
        return Check("workers", FAIL, f"{who} {row.state}", "start its engine, or `orch down` it")
    if row.state == "missing":
        return Check("workers", FAIL, f"{who}: its VM is missing", "`orch up` makes it again")
    if row.phase.startswith(FAILED):
        return Check("workers", FAIL, f"{who} {row.phase}", f"`orch logs {row.worker}`; `orch up` makes it again")
    if "reset pending" in row.phase:
        return Check(
            "workers", WARN, f"{who} {row.phase}", f"the next test there remakes it first (or `orch reset {row.worker}`)"
        )
    if row.phase != READY:
        return Check("workers", WARN, f"{who} unfinished ({row.phase}: a command was interrupted?)", "`orch up` finishes it")
    if row.drift:
        return Check("workers", WARN, f"{who} made from an older baseline ({row.drift})", "`orch up` remakes it")
    return Check("workers", WARN, f"{who} is {row.state}", "orch starts it when it is next used (or `orch up`)")


# -- the maintainer, leases, the checkout registry ---------------------------------------------


def _maintainer(seen: _Seen) -> list[Check]:
    settings, data = seen.settings, seen.data
    store = _store(seen)
    if settings is None or store is None:
        return []
    log_path = store.dir / "logs" / "maintain.log"
    running = _held(store.dir / "maintain.lock")
    tail = _tail(log_path)
    logged = f"; {log_path} ends: {' | '.join(tail)}" if tail else ""
    if running:
        return [Check("maintainer", OK, f"running (refilling spares){logged}")]
    missing = _missing_spares(settings, data)
    asked = seen.ctx is not None and wanted(seen.ctx).exists()
    if asked or missing:
        why = "a refill was asked for (maintain.wanted)" if asked else missing
        return [
            Check(
                "maintainer",
                WARN,
                f"not running, though {why}{logged}",
                "`orch up` refills the spares (or pytest does after its next claim)",
            )
        ]
    return [Check("maintainer", OK, f"not running (nothing to refill){logged}" if tail else "not running (nothing to refill)")]


def _tail(path: Path) -> list[str]:
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, path.stat().st_size - 4096))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return []
    return [line.strip()[:200] for line in text.splitlines() if line.strip()][-LOG_LINES:]


def _missing_spares(settings: Settings, data: StateData | None) -> str:
    if data is None or not data.workers:
        return ""
    pool = sum(1 for o in data.oneoffs.values() if o.pool and o.phase == READY)
    standbys = sum(1 for s in data.standbys.values() if s.phase == READY)
    short = []
    size = spares.pool_size(settings, data)  # pool = "auto": the size the claims ask for now
    if pool < size:
        short.append(f"{size - pool} of {size} pool VMs are missing")
    if settings.standby and standbys < len(data.workers):
        short.append(f"{len(data.workers) - standbys} of {len(data.workers)} standbys are missing")
    return " and ".join(short)


def _leases(seen: _Seen) -> list[Check]:
    settings = seen.settings
    if settings is None:
        return []
    runs = leases.scan(settings.inventory_dir, tidy=False)
    found = []
    for run in runs.live:
        workers = " ".join(sorted(runs.workers.get(run, []), key=naming.worker_index)) or "no worker yet"
        found.append(Check("leases", OK, f"live pytest run {run} (pid {_pid(settings.inventory_dir, run)}) uses {workers}"))
    if runs.dead:
        found.append(
            Check(
                "leases",
                WARN,
                f"{len(runs.dead)} lease(s) of runs that are gone: {', '.join(runs.dead[:3])}",
                "harmless: the next orch command or pytest run tidies them",
            )
        )
    for damaged in runs.damaged:
        found.append(Check("leases", WARN, damaged, "remove it (orch made no such file)"))
    if not found:
        found.append(Check("leases", OK, "no live pytest run"))
    return found


def _pid(inventory_dir: Path, run: str) -> str:
    try:
        data = json.loads(leases.lease_path(inventory_dir, run).read_text() or "{}")
    except (OSError, ValueError):
        return "?"
    return str(data.get("pid", "?")) if isinstance(data, dict) else "?"


def _checkouts(seen: _Seen) -> list[Check]:
    settings = seen.settings
    if settings is None:
        return []
    folder = checkouts.home() / "checkouts"
    if folder.exists() and not (folder.is_dir() and os.access(folder, os.R_OK | os.X_OK)):
        return [Check("checkouts", FAIL, f"{folder} is not a folder orch can read", "point ORCH_HOME at one (or unset it)")]
    entries = checkouts.entries()
    mine = entries.get(settings.checkout)
    found = []
    if mine is not None:
        found.append(Check("checkouts", OK, f"this checkout ({settings.checkout}) is registered in {folder}"))
    elif seen.data is not None and seen.data.all_vms():
        found.append(
            Check(
                "checkouts",
                WARN,
                f"this checkout ({settings.checkout}) has VMs but is not registered in {folder}: "
                "sweep judges its VMs without labels by age only",
                "the next orch command that records a VM registers it (e.g. `orch up`)",
            )
        )
    else:
        found.append(
            Check("checkouts", OK, f"this checkout is not registered (nothing here yet); {len(entries)} other(s) in {folder}")
        )
    return found + _gone_checkouts(entries, settings.checkout)


def _gone_checkouts(entries: dict[str, checkouts.CheckoutRef], mine: str) -> list[Check]:
    """Registered checkouts whose folder is gone (or that say nowhere where it was): what
    ``orch sweep`` deletes the VMs of, and forgets."""
    gone = [
        f"{c} ({ref.inventory})"
        for c, ref in sorted(entries.items())
        if c != mine and (not ref.host or judge(Path(ref.inventory), ref.host, ref.fs).seen is Seen.GONE)
    ]
    if gone:
        return [
            Check(
                "checkouts",
                WARN,
                f"{len(gone)} checkout(s) whose folder is gone: {', '.join(gone[:3])}{' …' if len(gone) > 3 else ''}",
                "`orch sweep` deletes the VMs of theirs it sees, then forgets them",
            )
        ]
    return []


# -- the connector, the tools ------------------------------------------------------------------


def _connector(seen: _Seen) -> list[Check]:
    ctx = seen.ctx
    if ctx is None:
        return []
    if ctx.connector.name != "ssh":
        return [Check("connector", OK, f"native: the {ctx.provider.name} provider's own")]
    user = SSHSettings(**ctx.settings.tables.get("ssh", {})).user
    key = ctx.store.dir / "ssh" / "id_ed25519"
    ssh = shutil.which("ssh")
    found = [Check("connector", OK, f"ssh as {user} (sudo), key {key}{'' if key.exists() else ' (made by the first `orch up`)'}")]
    if seen.data is not None and seen.data.workers and not key.exists():
        found = [Check("connector", FAIL, f"ssh: the key {key} is missing", "`orch up` makes a new one and authorizes it")]
    if not ssh:
        found.append(
            Check("connector", WARN, "ssh: no ssh command on PATH (`orch exec`/`orch shell` need it)", "install openssh-client")
        )
    return found


def _dist(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return ""


def _tools(seen: _Seen) -> list[Check]:
    found = [Check("tools", OK, f"orch {__version__} ({DISTRIBUTION}), pyinfra {_dist('pyinfra') or '?'}")]
    xdist = _dist("pytest-xdist")
    if xdist:
        found.append(Check("tools", OK, f"pytest-xdist {xdist}"))
    else:
        found.append(Check("tools", FAIL, "pytest-xdist is not installed (pytest -n N needs it)", "pip install pytest-xdist"))
    found += _other_providers(seen)
    return found


def _other_providers(seen: _Seen) -> list[Check]:
    """The backends configured beside the one in use (a ``[tool.orch.<name>]`` table):
    their command found, and their version."""
    settings = seen.settings
    if settings is None:
        return []
    found = []
    for name in sorted(set(settings.tables) & set(registry.names()) - {settings.provider}):
        try:
            abouts = registry.provider_class(name)(settings).about()
        except OrchError as err:
            found.append(Check("tools", WARN, f"{name} ([tool.orch.{name}]): {err}"))
            continue
        for about in abouts:
            client = f" (client {about.client})" if about.client else ""
            if about.error:
                found.append(Check("tools", WARN, f"{name} ([tool.orch.{name}], not in use): {about.error}{client}"))
            else:
                found.append(Check("tools", OK, f"{about.what} ([tool.orch.{name}], not in use){client}"))
    return found


def counts(checks: list[Check]) -> Counter[str]:
    return Counter(c.status for c in checks)
