"""A fake Incus cluster for benchmarks/scale.py: one provider, one endpoint, several members,
and the *backend* (not orch) places every new VM.

orch's own scheduler (``orchestrator.providers.engines.Engines``) places ``gwN`` on engine
``N mod k`` and copies the baseline to every engine; a cluster places by itself: Incus's
scheduler puts a new instance on the member that holds the fewest instances, and orch
only reads where it went (``VMInfo.engine`` is the instance's ``location``). This fake
models that with the same cost model as scale.py's ``FakeEngine``: each member runs at
most ``slots`` VM operations at once, each taking its stated time, and the first clone of
a baseline onto a member that lacks it first copies the baseline there (``copy``, once
per member and baseline: ``incus copy`` across members on local storage moves the whole
instance). Nothing in orchestrator/ knows this class: it is the benchmark's model of a
backend, not a provider a user could name.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from dataclasses import replace
from typing import TYPE_CHECKING

from orchestrator.providers.base import Baseline, VMInfo
from orchestrator.providers.fake import FakeProvider

if TYPE_CHECKING:
    from orchestrator.primitives.labels import Owner
    from orchestrator.settings.model import Settings

WORKER = re.compile(r"-gw[0-9]+$")


class FakeCluster(FakeProvider):
    """A cluster of ``members`` behind one endpoint: places, copies and costs as above."""

    def __init__(self, settings: Settings, members: list[str], *, create: float, clone: float, copy: float, slots: int) -> None:
        super().__init__(settings, latency={})
        self.members = list(members)
        self.slots = {m: threading.Semaphore(slots) for m in self.members}
        self.cost = {"create": create, "clone": clone, "delete": 0.2 * create, "rename": 0.01}
        self.copy_cost = copy
        self.where: dict[str, str] = {}  # vm -> member (what Incus reports as its location)
        self.load: Counter[str] = Counter({m: 0 for m in self.members})  # instances per member, in-flight ones too
        self.home: dict[str, str] = {}  # baseline ref -> the member it was sealed on
        self.holders: dict[str, set[str]] = {}  # baseline ref -> members holding a copy
        self.copies = 0  # baseline copies across members, as "baseline copies" in the result
        self._copying = {m: threading.Lock() for m in self.members}  # one copy onto a member at a time
        self._placing = threading.Lock()

    # -- placement: the backend's, by instance count --------------------------------------

    def _place(self, vm: str) -> str:
        """The member with the fewest instances (the first of them on a tie), counted at
        once: a create in flight is an instance in the cluster's database already."""
        with self._placing:
            member = min(self.members, key=lambda m: self.load[m])
            self.load[member] += 1
            self.where[vm] = member
            return member

    def _unplace(self, vm: str) -> None:
        with self._placing:
            member = self.where.pop(vm, None)
            if member is not None:
                self.load[member] -= 1

    def _enter(self, operation: str, vm: str = "") -> str:
        member = self.where.get(vm)
        if operation in self.cost and member is not None:
            with self.slots[member]:
                time.sleep(self.cost[operation])
        return super()._enter(operation, vm)

    def create(self, vm: str, image: str, owner: Owner) -> None:
        self._place(vm)
        try:
            super().create(vm, image, owner)
        except BaseException:
            if vm not in self.vms:  # not made (a VM that exists already keeps its place)
                self._unplace(vm)
            raise

    def clone(self, baseline: Baseline, vm: str, owner: Owner) -> None:
        member = self._place(vm)
        try:
            self._copy_to(baseline.ref, member)
            super().clone(baseline, vm, owner)
        except BaseException:
            if vm not in self.vms:
                self._unplace(vm)
            raise

    def _copy_to(self, ref: str, member: str) -> None:
        """The baseline onto ``member`` before its first clone there (both members busy
        for the copy); clones that arrive meanwhile wait for that one copy."""
        if ref not in self.home:
            return  # an unknown baseline: the fake's clone says so
        with self._copying[member]:
            if member in self.holders[ref]:
                return
            source = self.home[ref]
            with self.slots[source], self.slots[member]:
                time.sleep(self.copy_cost)
            self.holders[ref].add(member)
            self.copies += 1

    def delete(self, vm: str) -> None:
        super().delete(vm)
        self._unplace(vm)

    def rename(self, vm: str, new: str) -> None:
        super().rename(vm, new)
        with self._placing:  # a rename stays on its member
            if vm in self.where:
                self.where[new] = self.where.pop(vm)

    def seal(self, vm: str, owner: Owner) -> Baseline:
        """The sealed VM stays an instance on its member (as Incus keeps the baseline
        instance): it still counts there, and that member holds the baseline."""
        member = self.where.get(vm, self.members[0])
        baseline = super().seal(vm, owner)
        with self._placing:
            self.where.pop(vm, None)
            self.home[baseline.ref] = member
            self.holders[baseline.ref] = {member}
        return baseline

    def drop(self, baseline: Baseline) -> bool:
        dropped = super().drop(baseline)
        with self._placing:
            member = self.home.pop(baseline.ref, None)
            self.holders.pop(baseline.ref, None)
            if member is not None:
                self.load[member] -= 1
        return dropped

    # -- what orch reads: each VM's member ---------------------------------------------------

    def engine_of(self, vm: str) -> str:
        return self.where.get(vm, "")

    def inspect(self, vm: str) -> VMInfo | None:
        info = super().inspect(vm)
        return None if info is None else replace(info, engine=self.where.get(info.name, ""))

    def list_vms(self, *, all_vms: bool = False) -> list[VMInfo]:
        return [replace(i, engine=self.where.get(i.name, "")) for i in super().list_vms(all_vms=all_vms)]

    def per_member(self) -> list[int]:
        """How many workers (VMs named ``…-gwN``) each member holds, fewest first."""
        with self._placing:
            placed = Counter(m for vm, m in self.where.items() if WORKER.search(vm) and vm in self.vms)
        return sorted(placed[m] for m in self.members)
