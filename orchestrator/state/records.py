"""The state file: the single source of truth of what orch has (or is about to have).

Every VM is recorded here *before* the backend is asked to create it, so a crash at any
point leaves either a record without a VM (the next ``orch up`` recreates it, ``orch
down`` forgets it) or a VM with a record — never a VM that orch does not know about.

The records of every kind of VM, their phases, and the file's codec (JSON, with the
migration from orch 0.1's format); ``store`` reads and writes the file under its locks.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from orchestrator.primitives.kinds import Kind

log = logging.getLogger(__name__)

VERSION = 2

#: Phases of a VM: recorded before create, then after create, then once provisioned
#: (or failed: kept so it can be entered, retried by the next ``orch up``).
CREATING = "creating"
PROVISIONING = "provisioning"
READY = "ready"
FAILED = "failed"
#: A kept VM's phase while it is recorded and not yet renamed (or copied) to its name.
KEEPING = "keeping"


@dataclass
class BaselineRecord:
    """The VM provisioning made into this checkout's baseline, and the provider's handle."""

    vm: str
    fingerprint: str = ""
    parts: dict[str, str] = field(default_factory=dict)
    phase: str = CREATING
    ref: str = ""  # the provider's reference once sealed (image id, machine name)
    seal: dict[str, str] = field(default_factory=dict)  # what the provider saw when sealing
    created: str = ""


@dataclass
class WorkerRecord:
    worker: str
    vm: str
    phase: str = CREATING
    created: str = ""
    fingerprint: str = ""  # of the baseline it was made from
    error: str = ""  # why it failed (phase failed)
    engine: str = ""  # where it lives, with several engines
    #: Why this worker owes a reset (the test that may have changed it): recorded before
    #: that test's fixtures and body run, cleared only when the worker's VM is made again,
    #: swapped for its standby or soft-reset. Whoever takes the worker next (a fixture,
    #: ``orch up``) resets it first.
    reset_pending: str = ""


@dataclass
class OneoffRecord:
    vm: str
    run: str
    created: str = ""
    pid: int = 0
    phase: str = CREATING
    fingerprint: str = ""
    pool: bool = False  # an unclaimed VM of the warm pool (run is then "")
    engine: str = ""


@dataclass
class StandbyRecord:
    """A worker's standby: a VM made from the baseline, ready to be swapped in."""

    worker: str
    vm: str
    phase: str = CREATING
    created: str = ""
    fingerprint: str = ""
    engine: str = ""


@dataclass
class KeptRecord:
    """A failing test's worker VM, kept as it was at the failure (``--orch-keep-failed``),
    by its VM name. Recorded (phase keeping) before the worker's VM is renamed to it, so a
    crash never loses it; ready once renamed. Deleted by ``orch down`` and ``orch sweep
    --older-than``, never handed to a test."""

    vm: str
    worker: str
    test: str = ""  # the failing test's node id ("" when the state was rebuilt)
    session: str = ""  # the pytest session (run) that kept it: the cap counts per session
    by: str = ""  # the lease of the process keeping it: while it is alive, a keep in flight
    source: str = ""  # the worker's VM it was kept from
    phase: str = KEEPING
    created: str = ""  # when it was kept
    engine: str = ""
    fingerprint: str = ""  # of the baseline its worker was made from


@dataclass
class NamedVMRecord:
    """A name orch handed a test for a VM the test makes itself (``orchestrator.vm_name``),
    recorded before the test has it. Such a VM is not orch's (no labels, a name of the
    test's choosing): only this record lets orch delete it, after its test (or at the end
    of its session), or by ``orch sweep``/``orch down`` once its run is gone."""

    vm: str
    run: str  # the lease of the process that asked: while it is alive, the VM is in use
    session: str = ""  # the pytest session that process belongs to
    worker: str = ""
    test: str = ""  # the node id of the test that asked
    scope: str = "test"  # deleted after that test, or at the end of the session ("session")
    provider: str = ""  # the backend it was handed out for (judged only through that one)
    created: str = ""


#: Claims kept (the newest), spare makes kept, and the quiet that ends a run's claims.
CLAIMS_KEPT = 256
MAKES_KEPT = 16
RUN_GAP = 120.0
#: The window the claim rate is taken over (seconds).
RATE_WINDOW = 60.0


@dataclass
class Demand:
    """What the self-sizing pool (``pool = "auto"``) is sized from: when this run claimed
    a one-off (a pool VM or, the pool empty, a made one), the peak claim rate of the run
    before, and how long the maintainer's last spares took to make. Bounded lists, written
    with the state (atomically, in the claim's own transaction)."""

    claims: list[float] = field(default_factory=list)  # epoch seconds, this run's
    peak: float = 0.0  # this run's highest claim rate so far (claims per second)
    last_peak: float = 0.0  # the run before's
    makes: list[float] = field(default_factory=list)  # seconds, the newest last

    def claimed(self, now: float, make_seconds: float) -> None:
        """Record a claim at ``now``; a claim after ``RUN_GAP`` of quiet starts a new run
        (this run's peak becomes the last run's)."""
        if self.claims and now - self.claims[-1] > RUN_GAP:
            self.last_peak, self.peak, self.claims = self.peak, 0.0, []
        self.claims = [*self.claims, now][-CLAIMS_KEPT:]
        self.peak = max(self.peak, self.rate(now, make_seconds))

    def rate(self, now: float, horizon: float) -> float:
        """Claims per second over the last ``RATE_WINDOW`` seconds: the gaps between them
        over the time they span, or, spanning less than ``horizon`` (the time a spare
        takes to make), their number over ``horizon`` (a burst of n claims needs n spares
        within that time, not n per second forever)."""
        horizon = max(horizon, 1.0)
        recent = [t for t in self.claims if now - t <= RATE_WINDOW]
        if not recent:
            return 0.0
        span = recent[-1] - recent[0]
        return (len(recent) - 1) / span if span >= horizon else len(recent) / horizon

    def made(self, seconds: float) -> None:
        self.makes = [*self.makes, round(seconds, 3)][-MAKES_KEPT:]


#: The record of one VM, of any kind that has records (trash is a list of names).
Record = BaselineRecord | WorkerRecord | OneoffRecord | StandbyRecord | KeptRecord


def _build(cls: type, raw: Any) -> Any:
    if not isinstance(raw, dict):
        raise ValueError(f"{cls.__name__} must be a table")
    unknown = set(raw) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"{cls.__name__} has unknown field(s) {', '.join(sorted(unknown))}")
    return cls(**raw)


@dataclass
class StateData:
    checkout: str
    provider: str = ""
    image: str = ""
    prefix: str = ""
    baseline: BaselineRecord | None = None
    #: Baselines replaced by a newer one, deleted once nothing made from them is left.
    retired: list[BaselineRecord] = field(default_factory=list)
    workers: dict[str, WorkerRecord] = field(default_factory=dict)
    oneoffs: dict[str, OneoffRecord] = field(default_factory=dict)
    standbys: dict[str, StandbyRecord] = field(default_factory=dict)
    #: VMs swapped out of a worker's name, deleted in the background.
    trash: list[str] = field(default_factory=list)
    #: Failing tests' worker VMs kept for ``orch shell`` (by VM name).
    kept: dict[str, KeptRecord] = field(default_factory=dict)
    #: Names handed to tests for VMs they make themselves (by name): not orch's VMs.
    testvms: dict[str, NamedVMRecord] = field(default_factory=dict)
    #: The claims and spare makes the self-sizing pool is sized from.
    demand: Demand = field(default_factory=Demand)
    version: int = VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> StateData:
        raw = json.loads(text)
        if not isinstance(raw, dict) or not isinstance(raw.get("checkout"), str):
            raise ValueError("not an orch state")
        if raw.get("version") == 1:
            raw = _from_v1(raw)
        if raw.get("version") != VERSION:
            raise ValueError(f"state version {raw.get('version')!r} is not {VERSION}")
        for key in ("workers", "oneoffs", "standbys", "kept", "testvms"):
            if not isinstance(raw.get(key, {}), dict):
                raise ValueError(f"{key} must be a table")
        if not isinstance(raw.get("retired", []), list) or not isinstance(raw.get("trash", []), list):
            raise ValueError("retired and trash must be lists")
        return cls(
            checkout=raw["checkout"],
            provider=str(raw.get("provider", "")),
            image=str(raw.get("image", "")),
            prefix=str(raw.get("prefix", "")),
            baseline=_build(BaselineRecord, raw["baseline"]) if raw.get("baseline") else None,
            retired=[_build(BaselineRecord, r) for r in raw.get("retired", [])],
            workers={k: _build(WorkerRecord, v) for k, v in raw.get("workers", {}).items()},
            oneoffs={k: _build(OneoffRecord, v) for k, v in raw.get("oneoffs", {}).items()},
            standbys={k: _build(StandbyRecord, v) for k, v in raw.get("standbys", {}).items()},
            trash=[str(v) for v in raw.get("trash", [])],
            kept={k: _build(KeptRecord, v) for k, v in raw.get("kept", {}).items()},
            testvms={k: _build(NamedVMRecord, v) for k, v in raw.get("testvms", {}).items()},
            demand=_build(Demand, raw["demand"]) if raw.get("demand") else Demand(),
        )

    def record(self, kind: Kind, key: str) -> Record | None:
        """The record of a VM of this kind: by worker id for per-worker kinds, else by
        the VM's name (the baseline's: the current baseline, while it is that VM)."""
        held = getattr(self, kind.records)
        if isinstance(held, dict):
            found: Record | None = held.get(key)
            return found
        if isinstance(held, BaselineRecord):
            return held if held.vm == key else None
        if held is None:
            return None
        raise TypeError(f"a {kind} VM has no record, only its name in {kind.records}")

    def sorted_workers(self) -> list[WorkerRecord]:
        return sorted(self.workers.values(), key=lambda r: int(r.worker[2:]))

    def engines(self) -> dict[str, str]:
        """{VM: engine} of every VM recorded with one."""
        recs: list[WorkerRecord | OneoffRecord | StandbyRecord | KeptRecord] = [
            *self.workers.values(),
            *self.oneoffs.values(),
            *self.standbys.values(),
            *self.kept.values(),
        ]
        return {r.vm: r.engine for r in recs if r.engine}

    def all_vms(self) -> set[str]:
        """Every VM name this state records."""
        names = {r.vm for r in self.workers.values()} | set(self.oneoffs) | {s.vm for s in self.standbys.values()}
        names |= {b.vm for b in self.retired if b.vm} | set(self.trash) | set(self.kept)
        if self.baseline is not None:
            names.add(self.baseline.vm)
        return names


def _from_v1(raw: dict[str, Any]) -> dict[str, Any]:
    """orch 0.1's state: per-worker baselines and a golden machine. Both become retired
    baselines (deleted once unused); the workers keep their VMs, and having no fingerprint
    they are re-provisioned by the next ``orch up``, which says why."""
    retired: list[dict[str, Any]] = []
    workers = raw.get("workers", {})
    if not isinstance(workers, dict):
        return {**raw, "version": VERSION}  # let the checks name what is wrong
    workers = dict(workers)
    for key, rec in workers.items():
        if isinstance(rec, dict):
            rec = dict(rec)
            if rec.get("baseline"):
                retired.append({"vm": "", "ref": rec["baseline"], "phase": READY})
            rec.pop("baseline", None)
        workers[key] = rec
    if raw.get("golden"):
        retired.append({"vm": raw["golden"], "ref": raw["golden"], "phase": READY})
    rest = {k: v for k, v in raw.items() if k not in ("golden", "golden_ready")}
    return {**rest, "version": VERSION, "workers": workers, "retired": retired, "baseline": None}
