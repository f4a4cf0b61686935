"""Sweep: delete orphaned test VMs, and nothing that is not orch's.

A VM is orch's only if its name carries orch's prefix and a checkout id *and*, where the
backend has labels, it carries ``orch.managed-by=orch``. Among orch's VMs:

- a one-off VM is an orphan when the run that made it no longer holds its lease;
- a worker VM is an orphan when its checkout's inventory folder or state is gone, or
  when that state does not record it;
- with ``--older-than``, anything of orch's older than that is deleted too, unless a run
  of its checkout is alive (a live run's VMs are never deleted).

``--legacy`` adds VMs named with the seed's prefixes (and ``[tool.orch] legacy_prefixes``),
which predate labels; only with that flag. Every decision is reported with its reason.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from . import labels as L, leases, naming, registry, retry
from .concurrency import parallel_map, sleeper
from .config import Settings
from .errors import OrchError, StateError, UsageError
from .lifecycle import _age
from .providers import Provider, VMInfo
from .state import StateStore

log = logging.getLogger(__name__)

#: The seed's VM name prefixes (../shared/seed), swept only with --legacy.
SEED_PREFIXES = ("test-vm-", "e2e-test-vm-", "e2e-ops-vm-", "deploy-test-vm-", "pytest-worker-", "pytest-test-")

_DURATION_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([smhd]?)$")


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``2h``, ``7d`` → seconds."""
    m = _DURATION_RE.match(text.strip()) if isinstance(text, str) else None
    if not m:
        raise UsageError(f"invalid duration {text!r}: use a number with s, m, h or d, e.g. 2h")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


@dataclass
class Decision:
    vm: str
    delete: bool
    reason: str
    kind: str = ""  # worker, oneoff, legacy, foreign
    checkout: str = ""
    age_seconds: float | None = None
    result: str = ""  # deleted, would delete, kept, failed
    error: str = ""


class Sweeper:
    def __init__(self, settings: Settings, provider: Provider) -> None:
        self.settings = settings
        self.provider = provider
        self._live: dict[Path, list[str]] = {}

    def _live_runs(self, inventory_dir: Path) -> list[str]:
        if inventory_dir not in self._live:
            self._live[inventory_dir] = leases.live_runs(inventory_dir)
        return self._live[inventory_dir]

    def plan(self, *, older_than: float | None = None, legacy: bool = False) -> list[Decision]:
        prefixes = tuple(SEED_PREFIXES) + tuple(self.settings.legacy_prefixes)
        decisions = []
        for info in self.provider.list(all_vms=True):
            parsed = naming.parse_vm_name(self.settings.prefix, info.name)
            labelled = L.is_orchs(info.labels) or not self.provider.has_labels
            if parsed and labelled:
                decisions.append(self._decide(info, parsed, older_than))
            elif legacy and info.name.startswith(prefixes):
                decisions.append(Decision(info.name, True, "named with a legacy prefix (--legacy)", "legacy"))
            elif info.name.startswith(f"{self.settings.prefix}-") or L.is_orchs(info.labels):
                why = "no orch labels" if parsed else "not an orch name"
                decisions.append(Decision(info.name, False, f"not orch's ({why}): never touched", "foreign"))
        return sorted(decisions, key=lambda d: d.vm)

    def _decide(self, info: VMInfo, parsed: tuple[str, str], older_than: float | None) -> Decision:
        checkout, suffix = parsed
        kind = info.labels.get(L.KIND) or ("worker" if suffix.startswith("gw") else suffix if suffix == naming.GOLDEN else "oneoff")
        age = _age(info.labels.get(L.CREATED) or info.created)
        d = Decision(info.name, False, "", kind, checkout, age)
        # Labels carry the inventory folder; without labels (OrbStack) the machine's
        # registry of checkouts says where this checkout's state lives.
        label_inv = info.labels.get(L.INVENTORY)
        inv = Path(label_inv) if label_inv else registry.lookup(checkout)
        live = self._live_runs(inv) if inv else []
        state = None
        if inv is not None and inv.is_dir():
            store = StateStore(inv, checkout)
            if store.exists():
                try:
                    state = store.read()
                except StateError:
                    d.reason = f"state {store.path} unreadable: kept (run `orch repair` there)"
                    return d
        if kind == "oneoff":
            run = info.labels.get(L.RUN) or (state.oneoffs[info.name].run if state and info.name in state.oneoffs else "")
            if inv is not None and run and run in live:
                d.reason = f"its run {run} is alive"
            else:
                d.delete, d.reason = True, f"one-off VM of a run that is gone ({run or 'no run recorded'})"
            return d
        if inv is None or not inv.is_dir():
            d.delete, d.reason = True, f"its checkout's inventory folder is gone ({inv or 'unknown checkout'})"
            return d
        if state is None:
            d.delete, d.reason = True, f"its checkout has no state ({inv / '.orch' / 'state.json'})"
            return d
        if kind == naming.GOLDEN:
            recorded = state.golden == info.name
        else:
            worker = info.labels.get(L.WORKER) or suffix
            rec = state.workers.get(worker)
            recorded = rec is not None and rec.vm == info.name
        if not recorded:
            d.delete, d.reason = True, f"the state of {inv} does not record it"
        elif older_than is not None and age is not None and age > older_than:
            if live:
                d.reason = f"older than --older-than, but a run of its checkout is alive ({live[0]})"
            else:
                d.delete, d.reason = True, f"older than --older-than ({age / 3600:.1f}h)"
        else:
            d.reason = f"{kind} {suffix} of {inv}"
        return d

    def execute(self, decisions: list[Decision], *, dry_run: bool = False) -> list[Decision]:
        doomed = [d for d in decisions if d.delete]
        for d in decisions:
            d.result = "kept" if not d.delete else ("would delete" if dry_run else "")
        if dry_run or not doomed:
            return decisions

        def delete(d: Decision) -> None:
            try:
                retry.call(lambda: self.provider.delete(d.vm), what=f"delete {d.vm}",
                           attempts=self.settings.retries + 1, health_check=self.provider.check,
                           sleep=sleeper(self.provider.cooperative))
                if d.kind == "worker" and d.checkout and self.provider.has_labels:
                    self.provider.sweep_baseline(d.checkout, d.vm.rsplit("-", 1)[1])
                d.result = "deleted"
            except OrchError as err:
                d.result, d.error = "failed", str(err)

        parallel_map(delete, doomed, self.settings.parallel, cooperative=self.provider.cooperative)
        return decisions


def sweep(settings: Settings, provider: Provider, *, older_than: float | None = None, legacy: bool = False,
          dry_run: bool = False) -> list[Decision]:
    """Plan and carry out a sweep. Refused inside a pytest-xdist worker: a slow worker
    must never judge what its siblings are using (the seed's bug)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        raise UsageError("sweep runs from the CLI or the pytest controller (--orch-sweep), never inside an xdist worker")
    provider.check()
    t = time.monotonic()
    sweeper = Sweeper(settings, provider)
    decisions = sweeper.execute(sweeper.plan(older_than=older_than, legacy=legacy), dry_run=dry_run)
    log.info("sweep took %.1fs", time.monotonic() - t)
    return decisions
