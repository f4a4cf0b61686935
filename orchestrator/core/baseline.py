"""The baseline, from the core's side: what made it (its fingerprint), whether it is still
the one provisioning made, and making VMs — the baseline itself, and VMs from it.

One baseline per checkout. Building it creates a VM from the image, runs the provision
deploy in it and asks the provider to seal it; VMs made the same moment (the first
workers) are created from the image beside it and provisioned in the same pyinfra run.
Every later VM (a worker added, a hard reset, a one-off, a standby) is cloned from the
baseline and personalized (the personalize deploy gives it its own worker id).

Before a clone the baseline is verified: a changed provision deploy, image, orch version
or provider setting (the fingerprint), or a baseline that was started or changed outside
orch, is rebuilt first, and orch says why.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.machinery
import importlib.metadata
import importlib.util
import inspect
import json
import logging
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.core import baseline_cache
from orchestrator.core.steps import WorkerResult, guard, timed
from orchestrator.primitives import naming
from orchestrator.primitives.clock import now_iso
from orchestrator.primitives.errors import DeployError, OrchError, PermanentProviderError, VMExists
from orchestrator.primitives.kinds import Kind
from orchestrator.primitives.labels import Owner
from orchestrator.primitives.results import ExecResult
from orchestrator.providers.base import Baseline, BaselineTainted
from orchestrator.pyinfra.loading import source_hash
from orchestrator.pyinfra.runner import TAIL, DeployResult, _write_log
from orchestrator.settings.model import Settings
from orchestrator.state.records import CREATING, FAILED, PROVISIONING, READY, BaselineRecord

if TYPE_CHECKING:
    from orchestrator.core.context import Context

log = logging.getLogger(__name__)


@dataclass
class Fingerprint:
    """What a baseline is made of, hashed: the deploys' source, the image, orch's version
    and the provider settings that change a VM."""

    value: str
    parts: dict[str, str]

    def drift(self, recorded: dict[str, str]) -> str:
        """What changed since ``recorded`` was taken, in words ("" when nothing)."""
        words = {
            "deploy": "the provision deploy",
            "image": "the image",
            "orch": "orch's version",
            "provider": "the provider settings",
        }
        changed = [words.get(k, k) for k, v in self.parts.items() if recorded.get(k) != v]
        if not recorded:
            return "its fingerprint is unknown (made by an older orch)"
        return " and ".join(changed)


def fingerprint(ctx: Context) -> Fingerprint:
    settings, provider = ctx.settings, ctx.provider
    image_id = ctx.image_id()
    vm_settings = json.dumps([provider.name, provider.vm_settings()], sort_keys=True)
    parts = {
        "deploy": _short(
            f"{settings.provision}={deploy_hash(ctx, settings.provision)};{settings.personalize}={deploy_hash(ctx, settings.personalize)}"
        ),
        "image": _short(f"{ctx.image}={image_id}"),
        "orch": ctx.version,
        "provider": _short(f"{vm_settings};connector={ctx.connector.name};{ctx.connector.vm_settings()}"),
    }
    return Fingerprint(_short(json.dumps(parts, sort_keys=True)), parts)


#: The deploys' source hashes of the last computation, keyed on the stats of the files they
#: came from (under the state's folder): a warm start need not import them (pyinfra's import).
DEPLOY_HASHES = "deploy-hashes.json"
#: A file written this recently may change again within its mtime's granularity without a
#: new stat ("racy" in git's words): a hash made from it is not cached.
RACY_SECONDS = 2.0


def deploy_hash(ctx: Context, spec: str) -> str:
    """``source_hash`` of the deploy ``spec``, without importing it when nothing it was
    computed from changed: its module's folder's ``*.py`` (what the hash reads), its
    packages' ``__init__.py``, each found without executing anything (the import system's
    own finders, as ``load_callable`` looks), and compared by path, size, mtime, ctime and
    inode; orch's hashing code and pyinfra's version too. Any difference, a module imported
    already, or a deploy defined outside the module its spec names: computed as always."""
    cache = ctx.settings.inventory_dir / ".orch" / DEPLOY_HASHES
    key = _deploy_key(spec, ctx.settings.root)
    try:
        cached = json.loads(cache.read_text()) if key is not None else {}
    except (OSError, ValueError):
        cached = {}
    entry = cached.get(spec) if isinstance(cached, dict) else None
    if key is not None and isinstance(entry, dict) and entry.get("key") == key and isinstance(entry.get("hash"), str):
        return str(entry["hash"])
    func = ctx.load(spec)
    value = source_hash(func)
    if key is not None and _defined_in(func, spec, key) and not _racy(key):
        try:
            if not cache.parent.is_dir():  # never made here: a deleted checkout stays deleted
                return value
            fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=f".{DEPLOY_HASHES}.", suffix=".tmp")
            with os.fdopen(fd, "w") as out:
                json.dump({**(cached if isinstance(cached, dict) else {}), spec: {"key": key, "hash": value}}, out)
            os.replace(tmp, cache)
        except OSError as err:  # a cache: the next start computes it again
            log.debug("could not write %s: %s", cache, err)
    return value


def _deploy_key(spec: str, root: Path) -> dict[str, Any] | None:
    """What ``spec``'s hash depends on, read without importing it; None when that cannot
    be known so (the module is imported already, or is not a plain ``.py`` found by path)."""
    module_name = spec.partition(":")[0]
    if not module_name or module_name in sys.modules:
        return None
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))  # as load_callable looks: the project root first
    parts = module_name.split(".")
    files: list[Path] = []
    try:
        found = importlib.util.find_spec(parts[0])  # a top-level name: found, not executed
        for i in range(1, len(parts)):
            if found is None or found.submodule_search_locations is None:
                return None
            if found.origin:
                files.append(Path(found.origin))
            found = importlib.machinery.PathFinder.find_spec(".".join(parts[: i + 1]), list(found.submodule_search_locations))
    except (ImportError, ValueError):
        return None
    if found is None or not found.has_location or not found.origin or not found.origin.endswith(".py"):
        return None
    origin = Path(found.origin)
    files += [origin, *sorted(origin.parent.glob("*.py"))]
    try:
        pyinfra_version = importlib.metadata.version("pyinfra")
        hashing = Path(inspect.getsourcefile(source_hash) or "")  # orch's own hashing code
        stats = {str(f): _stat(f) for f in [*files, hashing]}
    except (OSError, importlib.metadata.PackageNotFoundError):
        return None
    return {"spec": spec, "root": str(root), "module": str(origin), "pyinfra": pyinfra_version, "files": stats}


def _stat(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _defined_in(func: Callable[..., Any], spec: str, key: dict[str, Any]) -> bool:
    """Whether the deploy is defined in the module its spec names, the file the key found:
    only then do the key's files decide its hash (one imported from elsewhere may change
    with a file the key does not know)."""
    module_name = spec.partition(":")[0]
    target = inspect.unwrap(func)
    module = sys.modules.get(module_name)
    try:
        source = inspect.getsourcefile(target)
    except TypeError:
        return False
    return (
        getattr(target, "__module__", None) == module_name
        and module is not None
        and getattr(module, "__file__", None) == key["module"]
        and source == key["module"]
    )


def _racy(key: dict[str, Any]) -> bool:
    """A file of the key written within the last ``RACY_SECONDS``."""
    now = time.time_ns()
    return any(now - stat[1] < RACY_SECONDS * 1e9 for stat in key["files"].values())


def _short(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass
class Target:
    """A VM the core is about to make: its result row, owner, deploy id, and how to record
    its progress in the state (``record(phase=…, **fields)``)."""

    result: WorkerResult
    owner: Owner
    ident: str
    record: Callable[..., None]
    tainted: bool = field(default=False)

    @property
    def vm(self) -> str:
        return self.result.vm


def _create(ctx: Context, target: Target, make: Callable[[], None]) -> None:
    """Create, tolerating that an earlier attempt that timed out already did: a VM of
    that name that is ours is deleted and made again; anyone else's is an error."""
    provider = ctx.provider
    attempts = ctx.settings.retries + 2
    for attempt in range(attempts):
        try:
            provider.call(f"create {target.vm}", make)
            return
        except VMExists as err:
            info = provider.inspect(target.vm)
            if info is not None and not ctx.owns(info, target.owner.worker or None):
                raise PermanentProviderError(ctx.not_ours(target.vm)) from err
            if attempt == attempts - 1:
                raise
            provider.call(f"delete {target.vm}", lambda: provider.delete(target.vm))


def _ready(ctx: Context, target: Target, *, waited: bool = False) -> None:
    """Recorded as provisioning, then ready through the backend and the connector
    (``waited``: the backend already answered, only the connector is left to ask: a
    second probe costs OrbStack an ``info`` and a ``run`` per machine)."""
    target.record(phase=PROVISIONING, engine=ctx.provider.engine_of(target.vm))
    with timed(target.result, "ready"):
        if waited:
            ctx.connector.ready(target.vm)
        else:
            ctx.wait_ready(target.vm)


def _finish(ctx: Context, targets: list[Target], funcs: list[Callable[..., object]], title: str, fp: str) -> None:
    """Run the deploys on the targets that got this far; record each as ready or failed."""
    live = [t for t in targets if t.result.ok]
    if not live:
        return
    for t in live:
        ctx.report(t.result.worker, f"{title} in {t.vm}")
    # lazy: the deploy imports pyinfra, which a command that builds no baseline need not pay for
    from orchestrator.deploys.provision import mark  # noqa: PLC0415

    with timed(live[0].result, "provision"):
        results = ctx.deploy([(t.ident, t.vm) for t in live], [*funcs, mark], title, orch_fingerprint=fp)
    took = live[0].result.seconds.get("provision", 0.0)
    for t in live:
        if t is not live[0]:
            t.result.add("provision", took)
        outcome = results[t.vm]
        t.result.log = outcome.log
        if outcome.ok:
            t.record(phase=READY, fingerprint=fp, error="")
        else:
            error = outcome.error + (f" (log: {outcome.log})" if outcome.log else "")
            t.result.fail(error)
            t.record(phase=FAILED, error=error)
            ctx.report(t.result.worker, f"failed: {error}")


def ensure(ctx: Context, fp: Fingerprint, *, first: list[Target] | None = None) -> tuple[Baseline, bool]:
    """A baseline that is current and intact, rebuilt if it is not (say why). With
    ``first``, VMs that need making anyway are made from the image beside a rebuilt
    baseline; returns (baseline, whether they were). With a baseline cache
    (``[tool.orch] baseline_cache``, ``--baseline-cache``), a baseline the cache has for
    this fingerprint is imported instead of built, and one built is exported to it."""
    cache = cache_dir(ctx)
    with ctx.baseline_lock():
        rec = ctx.store.read().baseline
        why = unusable(ctx, fp, rec)
        if why is None and rec is not None:
            usable = Baseline(rec.ref, rec.seal)
            if cache is not None and not baseline_cache.manifest_path(cache, fp.value).is_file():
                _to_cache(ctx, fp, usable, cache)
            return usable, False
        if cache is not None and (cached := _from_cache(ctx, fp, cache)) is not None:
            return cached, False
        ctx.report(Kind.BASELINE.value, f"building the baseline: {why}")
        built = build(ctx, fp, first or [])
        if cache is not None:
            _to_cache(ctx, fp, built, cache)
        return built, True


# -- the baseline as a cache entry (orch baseline export/import, --baseline-cache) -----------


def cache_dir(ctx: Context) -> Path | None:
    """The baseline cache folder the settings name (relative: to the project), or None."""
    named = ctx.settings.baseline_cache
    if named is None or not str(named):
        return None
    return named if named.is_absolute() else ctx.settings.root / named


def _from_cache(ctx: Context, fp: Fingerprint, cache: Path) -> Baseline | None:
    """The cache's baseline for ``fp``, imported (caller holds the baseline lock); None on
    a miss or a cache that cannot be used (a warning: the caller builds as usual)."""
    try:
        entry, archive = baseline_cache.find(cache, fp.value, ctx.provider.name)
        got = adopt(ctx, fp, archive)
    except baseline_cache.CacheMiss as err:
        ctx.report(Kind.BASELINE.value, f"baseline cache: {err}")
        return None
    except OrchError as err:
        log.warning("the baseline cache %s cannot be used (%s): provisioning as usual", cache, err)
        ctx.report(Kind.BASELINE.value, f"baseline cache not used: {err}")
        return None
    ctx.report(Kind.BASELINE.value, f"baseline from cache {cache} (key {fp.value}, exported by orch {entry.orch})")
    return got


def _to_cache(ctx: Context, fp: Fingerprint, baseline: Baseline, cache: Path) -> None:
    """Export to the cache; a failure is a warning (``up`` goes on)."""
    try:
        took, entry = timed_export(ctx, fp, baseline, cache)
    except OrchError as err:
        log.warning("cannot write the baseline to the cache %s (%s): going on without it", cache, err)
        ctx.report(Kind.BASELINE.value, f"baseline not written to the cache: {err}")
        return
    ctx.report(Kind.BASELINE.value, f"baseline written to cache {cache} ({entry.size / 1e6:.0f} MB, {took:.1f}s)")


def timed_export(ctx: Context, fp: Fingerprint, baseline: Baseline, cache: Path) -> tuple[float, baseline_cache.Entry]:
    """Write ``baseline`` to the cache folder as the entry of ``fp``: (seconds, entry)."""
    provider = ctx.provider
    entry = baseline_cache.Entry(
        fp.value, provider.name, dict(fp.parts), ctx.version, baseline.ref, dict(baseline.seal), ctx.checkout
    )
    started = time.monotonic()

    def save(path: Path) -> None:
        provider.call("export the baseline", lambda: provider.export_baseline(baseline, path))

    written = baseline_cache.write(cache, entry, save)
    return time.monotonic() - started, written


def adopt(ctx: Context, fp: Fingerprint, archive: Path) -> Baseline:
    """Load ``archive`` as this checkout's baseline (caller holds the baseline lock):
    recorded first as an unfinished baseline under this checkout's name (with the tag it
    will have), imported by the provider with this checkout's owner, verified, then
    recorded ready. A crash before the last record leaves an unfinished baseline, which
    the next command retires and deletes; what cannot be loaded is never recorded ready."""
    provider = ctx.provider
    clear_unfinished(ctx)
    base = _baseline_target(ctx, fp)
    if tag := provider.seal_name(base.vm, base.owner):  # recorded before it exists: a sweep meanwhile keeps it
        base.record(seal={"tag": tag})
    got: list[Baseline] = []
    try:
        with timed(base.result, "import"):
            _create(ctx, base, lambda: got.append(provider.import_baseline(archive, base.vm, base.owner)))
        why = provider.call("verify the baseline", lambda: provider.verify(got[-1]))
        if why is not None:
            raise PermanentProviderError(f"the imported baseline cannot be used: {why}", operation="import")
    except OrchError:
        base.record(phase=FAILED)
        if got:
            provider.call("delete the imported baseline", lambda: provider.drop(got[-1]))
        raise
    base.record(phase=READY, ref=got[-1].ref, seal=got[-1].seal)
    drop_retired(ctx)
    return got[-1]


def clear_unfinished(ctx: Context) -> None:
    """An unfinished baseline's name where it is not its VM's (an image tag recorded before
    the seal or import that a crash stopped): deleted before a new baseline takes it, so
    what it named is not left behind unnamed. Deleting a tag never deletes an image that
    another tag (another checkout's) still names, nor one a container uses."""
    rec = ctx.store.read().baseline
    tag = rec.seal.get("tag", "") if rec is not None and rec.phase != READY and not rec.ref else ""
    if not tag:
        return
    try:
        ctx.provider.call(f"delete {tag}", lambda: ctx.provider.drop(Baseline(tag, {})))
    except OrchError as err:
        log.info("the unfinished baseline %s stays for now: %s", tag, err)


def unusable(ctx: Context, fp: Fingerprint, rec: BaselineRecord | None) -> str | None:
    """Why the recorded baseline cannot be used for ``fp`` (None: it can)."""
    if rec is None:
        return "there is none yet"
    if rec.phase != READY or not rec.ref:
        return "the last one was not finished"
    if rec.fingerprint != fp.value:
        return f"{fp.drift(rec.parts)} changed since it was made"
    return ctx.provider.call("verify the baseline", lambda: ctx.provider.verify(Baseline(rec.ref, rec.seal)))


def build(ctx: Context, fp: Fingerprint, first: list[Target]) -> Baseline:
    """Make the baseline (and ``first``) from the image, provision, seal; caller holds
    the baseline lock. Raises when the baseline could not be made."""
    settings = ctx.settings
    clear_unfinished(ctx)
    base = _baseline_target(ctx, fp)
    everyone = [base, *first]
    for t in first:
        t.owner = ctx.owner(t.owner.kind, worker=t.owner.worker, run=t.owner.run, fingerprint=fp.value)
    ctx.report(Kind.BASELINE.value, f"creating {base.vm} and {len(first)} more from {ctx.image}")
    ctx.provider.map(lambda t: guard(t.result, ctx.report, lambda: _from_image(ctx, t)), everyone)
    _finish(
        ctx,
        everyone,
        [ctx.load(settings.provision), ctx.load(settings.personalize)],
        f"provisioning with {settings.provision}",
        fp.value,
    )
    if not base.result.ok:
        raise DeployError(f"the baseline could not be made: {base.result.error}")
    sealed = _seal(ctx, base)
    ctx.report(Kind.BASELINE.value, f"{base.vm} sealed ({base.result.seconds.get('total', 0):.1f}s)")
    drop_retired(ctx)
    return sealed


def _baseline_target(ctx: Context, fp: Fingerprint) -> Target:
    """The baseline about to be built, recorded as the current one (the one it replaces
    retired)."""
    name = naming.baseline_vm_name(ctx.settings.prefix, ctx.checkout, fp.value)
    with ctx.store.transaction() as data:
        if data.baseline is not None:
            data.retired.append(data.baseline)
        data.baseline = BaselineRecord(name, fp.value, dict(fp.parts), CREATING, created=now_iso())

    def record(**changes: object) -> None:
        ctx.store.update(Kind.BASELINE, name, vm=name, **changes)

    owner = ctx.owner(Kind.BASELINE, fingerprint=fp.value)
    return Target(WorkerResult(Kind.BASELINE.value, name, "created"), owner, Kind.BASELINE.value, record)


def _from_image(ctx: Context, t: Target) -> None:
    with timed(t.result, "create"):
        _create(ctx, t, lambda: ctx.provider.create(t.vm, ctx.image, t.owner))
        ctx.provider.wait_ready(t.vm)
        ctx.connector.prepare(t.vm)
    _ready(ctx, t, waited=True)


def _seal(ctx: Context, base: Target) -> Baseline:
    provider, name, owner = ctx.provider, base.vm, base.owner
    with timed(base.result, "seal"):
        if tag := provider.seal_name(name, owner):  # recorded before it exists: a sweep meanwhile keeps it
            base.record(seal={"tag": tag})
        sealed = provider.call(f"seal {name}", lambda: provider.seal(name, owner))
    base.record(phase=READY, ref=sealed.ref, seal=sealed.seal)
    return sealed


def worker_target(ctx: Context, result: WorkerResult, fp: Fingerprint) -> Target:
    """A worker's VM about to be made (by ``orch up`` or a reset): a worker made again is
    clean, so its owed reset is cleared with the record that says it is ready."""

    def record(**changes: Any) -> None:
        if changes.get("phase") == READY:
            changes["reset_pending"] = ""
        ctx.store.update(Kind.WORKER, result.worker, **changes)

    return Target(result, ctx.owner(Kind.WORKER, worker=result.worker, fingerprint=fp.value), result.worker, record)


def clone(ctx: Context, fp: Fingerprint, baseline: Baseline, targets: list[Target], *, replace: bool = False) -> None:
    """Make ``targets`` from the baseline (``replace``: in place of VMs of the same name)
    and personalize them. A baseline found changed after its seal is rebuilt once."""
    make_clones(ctx, fp, baseline, targets, replace=replace)
    personalize(ctx, fp, targets)


def make_clones(ctx: Context, fp: Fingerprint, baseline: Baseline, targets: list[Target], *, replace: bool = False) -> None:
    """The first half of :func:`clone`: the VMs made from the baseline and ready, at most
    ``parallel`` at once (safe off the main thread: no pyinfra runs here). A baseline
    found changed after its seal is rebuilt once (under the baseline lock)."""
    provider = ctx.provider

    why: list[str] = []

    def make(t: Target) -> None:
        with timed(t.result, "create"):
            if replace:
                provider.call(f"delete {t.vm}", lambda: provider.delete(t.vm))
            try:
                _create(ctx, t, lambda: provider.clone(baseline, t.vm, t.owner))
            except BaselineTainted as err:
                t.tainted = True
                why.append(str(err))
                return
        _ready(ctx, t, waited=provider.clone_ready)

    provider.map(lambda t: guard(t.result, ctx.report, lambda: make(t)), targets)
    tainted = [t for t in targets if t.tainted]
    if tainted:
        with ctx.baseline_lock():
            ctx.report(Kind.BASELINE.value, f"rebuilding the baseline: {why[0]}")
            baseline = build(ctx, fp, [])
        for t in tainted:
            t.tainted = False
        provider.map(lambda t: guard(t.result, ctx.report, lambda: make(t)), tainted)
        for t in tainted:
            if t.tainted:
                t.result.fail(f"the rebuilt baseline is still changed after its seal: {why[-1]}")


def personalize(ctx: Context, fp: Fingerprint, targets: list[Target]) -> None:
    """The second half of :func:`clone`: the personalize deploy (and orch's mark) on the
    targets that got this far, each recorded as ready or failed.

    With orch's default personalize deploy and the provider's own connector, no pyinfra
    session is started: what the deploy and ``mark`` write is one shell command per VM
    through the provider's exec (:func:`_cheap_personalize`, safe off the main thread).
    A project's own personalize deploy (or the ``@ssh`` connector, through which
    everything inside a VM goes) runs through pyinfra: call it then on the main thread,
    with every target ready at that moment (one batch)."""
    if _cheap(ctx):
        _cheap_personalize(ctx, targets, fp.value)
        return
    _finish(ctx, targets, [ctx.load(ctx.settings.personalize)], "personalizing", fp.value)


def _cheap(ctx: Context) -> bool:
    """Whether personalizing can skip pyinfra: the default deploy (whose whole effect is
    :func:`orchestrator.deploys.provision.personalize_and_mark_script`), reached through
    the provider's own exec (the native connector: with ``@ssh`` the VM is to be reached
    the way the connector under test reaches it)."""
    return ctx.settings.personalize == DEFAULT_PERSONALIZE and ctx.connector.name == "native"


#: The personalize deploy orch ships (``[tool.orch] personalize``'s default).
DEFAULT_PERSONALIZE: str = Settings.model_fields["personalize"].default

CHEAP_TITLE = "personalizing"
CHEAP_DEPLOYS = "orch: personalize + orch: mark"


def _cheap_personalize(ctx: Context, targets: list[Target], fp: str) -> None:
    """What the default personalize deploy and ``mark`` write, as one ``sh -c`` per VM
    through ``provider.exec`` (as root), at most ``parallel`` at once; each target
    recorded as ready or failed as :func:`_finish` records it (the same one-line error,
    the command and its output appended to the log the deploy would have written)."""
    # lazy, as in _finish: the scripts' module imports pyinfra (already paid for by the
    # fingerprint, which loads the personalize deploy, in every command that gets here)
    from orchestrator.deploys.provision import personalize_and_mark_script  # noqa: PLC0415

    live = [t for t in targets if t.result.ok]

    def one(t: Target) -> None:
        ctx.report(t.result.worker, f"{CHEAP_TITLE} in {t.vm}")
        argv = ["sh", "-c", personalize_and_mark_script(t.ident, fp, t.vm)]
        with timed(t.result, "provision"):
            try:
                got: ExecResult | OrchError = ctx.provider.exec(t.vm, argv)
            except OrchError as err:
                got = err
        outcome = _exec_outcome(argv, got)
        outcome.log = _write_log(ctx.host(t.ident, t.vm).data.get("orch_log"), CHEAP_TITLE, _exec_lines(argv, got), outcome)
        t.result.log = outcome.log
        if outcome.ok:
            t.record(phase=READY, fingerprint=fp, error="")
            return
        error = outcome.error + (f" (log: {outcome.log})" if outcome.log else "")
        log.warning("%s failed on %s: %s", CHEAP_TITLE, t.vm, error)
        t.result.fail(error)
        t.record(phase=FAILED, error=error)
        ctx.report(t.result.worker, f"failed: {error}")

    ctx.provider.map(one, live)


def _exec_outcome(argv: list[str], got: ExecResult | OrchError) -> DeployResult:
    """As the pyinfra runner words a failed operation: what, the command, its exit code,
    the last lines of its output (one line)."""
    if isinstance(got, OrchError):
        return DeployResult(False, f"{CHEAP_TITLE}: cannot run {CHEAP_DEPLOYS!r}: {' '.join(str(got).split())}")
    if got.ok:
        return DeployResult(True)
    tail = (got.stdout.splitlines() + got.stderr.splitlines())[-TAIL:]
    said = f": {' | '.join(line.strip() for line in tail)}" if tail else ": no output"
    return DeployResult(False, f"{CHEAP_TITLE}: {CHEAP_DEPLOYS!r}, command `{shlex.join(argv)}` exited with code {got.rc}{said}")


def _exec_lines(argv: list[str], got: ExecResult | OrchError) -> list[str]:
    """The log's lines, in the pyinfra runner's form."""
    if isinstance(got, OrchError):
        return [f"--- {CHEAP_DEPLOYS} (through the provider's exec): FAILED", f"$ {shlex.join(argv)}", f"error: {got}"]
    status = "changed" if got.ok else "FAILED"
    return [
        f"--- {CHEAP_DEPLOYS} (through the provider's exec): {status}",
        f"$ {shlex.join(argv)}",
        *[f"stdout: {x}" for x in got.stdout.splitlines()],
        *[f"stderr: {x}" for x in got.stderr.splitlines()],
    ]


def drop_retired(ctx: Context) -> None:
    """Delete replaced baselines (and unfinished baseline VMs) that nothing needs."""
    data = ctx.store.read()
    current = {data.baseline.vm, data.baseline.ref} - {""} if data.baseline is not None else set()
    kept = []
    for rec in data.retired:
        if {rec.vm, rec.ref} & current:
            continue  # rebuilt under the same name: that is the current one now
        try:
            if rec.vm and rec.vm != rec.ref:
                ctx.provider.call(f"delete {rec.vm}", functools.partial(ctx.provider.delete, rec.vm))
            if rec.ref and not ctx.provider.drop(Baseline(rec.ref, rec.seal)):
                kept.append(rec)
        except OrchError as err:
            log.warning("cannot delete the old baseline %s yet: %s", rec.ref or rec.vm, err)
            kept.append(rec)
    with ctx.store.transaction() as state:
        state.retired = [r for r in state.retired if r in kept or r not in data.retired]
