"""Several Docker engines behind one provider (``[tool.orch.docker] engines = [...]``).

Each engine is a provider of its own (``DockerProvider(settings, engine=...)``); this one
routes every call to the engine that holds the VM, places new VMs, and keeps the baseline
on every engine:

- placement: worker ``gwN`` goes to engine ``N mod len(engines)`` (``--workers 8`` over two
  engines: four on each), unless that engine holds ``engine_cap`` workers already, then to
  the least loaded engine with room; a standby goes where its worker is (a swap is a rename
  on one engine); one-offs and pool VMs go to the least loaded engine; the baseline is
  built on the first engine that answers and copied to the others (``docker save | load``:
  the image id is the same everywhere), or to an engine when a VM is first cloned there.
- an engine that does not answer fails only the VMs on it, with one line naming it; the
  others go on. Listings leave it out and say so (``unreachable``): sweep never judges,
  let alone deletes, what it cannot see.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, field_validator

from orchestrator.primitives import labels as L
from orchestrator.primitives import naming
from orchestrator.primitives.errors import EngineUnavailable, OrchError, PermanentProviderError
from orchestrator.primitives.kinds import Kind
from orchestrator.primitives.results import ExecResult
from orchestrator.providers.base import About, Baseline, Provider, ProviderSettings, StoredBaseline, VMInfo

if TYPE_CHECKING:
    from orchestrator.primitives.changes import Checker, Ignore
    from orchestrator.primitives.labels import Owner
    from orchestrator.providers.docker_images import DockerImages
    from orchestrator.settings.model import Settings

log = logging.getLogger(__name__)


class EngineSettings(ProviderSettings):
    """The settings of a provider that spreads VMs over several engines (Docker's)."""

    moved_keys: ClassVar[tuple[str, ...]] = ("engines", "engine_cap")

    #: Docker engines to spread VMs over (``unix://…``, ``ssh://user@host``, ``tcp://…``).
    engines: list[str] = Field(default_factory=list)
    #: The most workers one engine takes (0: no cap).
    engine_cap: int = Field(0, ge=0, le=naming.MAX_WORKERS)

    @field_validator("engines")
    @classmethod
    def _engines(cls, value: list[str]) -> list[str]:
        for engine in value:
            if not engine.startswith(("unix://", "ssh://", "tcp://", "npipe://")) or any(c.isspace() for c in engine):
                raise ValueError(
                    f"engine {engine!r} is not a Docker host: write unix:///path, ssh://user@host or tcp://host:port"
                )
        if len(set(value)) != len(value):
            raise ValueError("an engine is named twice")
        return value


class Engines(Provider):
    """One provider over several engines of the same kind."""

    opts: EngineSettings

    def __init__(self, settings: Settings, members: list[DockerImages]) -> None:
        first = members[0]
        self.name = first.name  # type: ignore[misc]
        self.settings_model = first.settings_model  # type: ignore[misc]
        self.has_labels = first.has_labels  # type: ignore[misc]
        self.can_rename = first.can_rename  # type: ignore[misc]
        self.default_image = first.default_image  # type: ignore[misc]
        self.machine_image = first.machine_image  # type: ignore[misc]
        super().__init__(settings)
        self.members = {m.engine: m for m in members}
        self.where: dict[str, str] = {}  # vm -> engine
        self.unreachable: dict[str, str] = {}  # engine -> why
        self._load: Counter[str] | None = None

    # -- engines -----------------------------------------------------------------------

    def check(self) -> None:
        errors = {}
        for engine, member in self.members.items():
            try:
                member.check()
                self.unreachable.pop(engine, None)
            except EngineUnavailable as err:
                errors[engine] = str(err)
                self.unreachable[engine] = str(err)
                log.warning("engine %s does not answer: %s", engine, err)
        if len(errors) == len(self.members):
            raise EngineUnavailable(f"none of the engines answers ({'; '.join(f'{e}: {m}' for e, m in errors.items())})")

    def about(self) -> list[About]:
        """Every engine, each asked on its own: one that does not answer is named."""
        return [a for member in self.members.values() for a in member.about()]

    def image_here(self, image: str) -> str | None:
        """Its id on the first engine that has it (``image_id`` copies it to the others),
        None when none has it but one could pull it."""
        if not self.reachable():
            raise EngineUnavailable("no engine answers")
        first: OrchError | None = None
        pullable = False
        for member in self.reachable():
            try:
                found = member.image_here(image)
            except OrchError as err:
                first = first or err
                continue
            if found is not None:
                return found
            pullable = True
        if pullable or first is None:
            return None
        raise first

    def unreachable_engines(self) -> dict[str, str]:
        return dict(self.unreachable)

    def reachable(self) -> list[DockerImages]:
        return [m for e, m in self.members.items() if e not in self.unreachable]

    def locate(self, where: dict[str, str]) -> None:
        self.where.update({vm: e for vm, e in where.items() if e in self.members})

    def engine_of(self, vm: str) -> str:
        return self._member(vm).engine

    def _member(self, vm: str) -> DockerImages:
        engine = self.where.get(vm)
        if engine is not None:
            member = self.members[engine]
            if engine in self.unreachable:
                raise EngineUnavailable(f"engine {engine} does not answer: {vm} is on it ({self.unreachable[engine]})", vm=vm)
            return member
        for member in self.reachable():
            if member.inspect(vm) is not None:
                self.where[vm] = member.engine
                return member
        if self.unreachable:  # not on the engines that answer: it may be on one that does not
            down = ", ".join(self.unreachable)
            raise EngineUnavailable(f"{vm} is on none of the engines that answer, and {down} does not answer", vm=vm)
        return self.reachable()[0] if self.reachable() else next(iter(self.members.values()))

    def load(self) -> Counter[str]:
        """Workers (and standbys) on each engine, counted once per command."""
        if self._load is None:
            self._load = Counter({e: 0 for e in self.members})
            for info in self.list_vms():
                if L.kind(info.labels) in (Kind.WORKER, Kind.STANDBY):
                    self._load[self.where.get(info.name, "")] += 1
        return self._load

    def place(self, vm: str, owner: Owner) -> DockerImages:
        """Which engine a new VM goes to (see the module's docstring)."""
        engines = list(self.members)
        cap = self.opts.engine_cap
        if owner.kind == Kind.STANDBY and owner.worker:
            worker_vm = naming.worker_vm_name(self.settings.prefix, owner.checkout, owner.worker)
            chosen = self._member(worker_vm)
        elif owner.kind == Kind.WORKER and owner.worker:
            load = self.load()
            wanted = engines[naming.worker_index(owner.worker) % len(engines)]
            if cap and load[wanted] >= cap:
                room = [e for e in engines if load[e] < cap and e not in self.unreachable]
                if not room:
                    raise PermanentProviderError(
                        f"every engine holds {cap} workers (engine_cap): add an engine or raise engine_cap", vm=vm
                    )
                wanted = min(room, key=lambda e: load[e])
            load[wanted] += 1
            chosen = self.members[wanted]
            if wanted in self.unreachable:
                raise EngineUnavailable(
                    f"engine {wanted} does not answer: {owner.worker} goes there ({self.unreachable[wanted]})", vm=vm
                )
        else:
            members = self.reachable()
            if not members:
                raise EngineUnavailable("no engine answers")
            chosen = members[0] if owner.kind == Kind.BASELINE else min(members, key=lambda m: self.load()[m.engine])
        self.where[vm] = chosen.engine
        return chosen

    # -- VMs, routed ---------------------------------------------------------------------

    def image_id(self, image: str) -> str:
        found = ""
        missing = []
        for member in self.reachable():
            if member.has_image(image):
                found = found or member.image_id(image)
            else:
                missing.append(member)
        for member in missing:
            if found:
                source = next(m for m in self.reachable() if m not in missing)
                source.send_image(image, image, member)
            else:
                found = member.image_id(image)  # pulls, or names the fix
        if not found:
            raise PermanentProviderError(f"image {image!r} is on no engine: name another with --image / ORCH_IMAGE")
        return found

    def create(self, vm: str, image: str, owner: Owner) -> None:
        self.place(vm, owner).create(vm, image, owner)

    def start(self, vm: str) -> None:
        self._member(vm).start(vm)

    def stop(self, vm: str) -> None:
        self._member(vm).stop(vm)

    def delete(self, vm: str) -> None:
        if not vm:
            raise PermanentProviderError("refusing to delete a VM with an empty name", operation="delete")
        self._member(vm).delete(vm)

    def rename(self, vm: str, new: str) -> None:
        member = self._member(vm)
        member.rename(vm, new)
        self.where[new] = member.engine
        self.where.pop(vm, None)

    def address(self, vm: str) -> str:
        return self._member(vm).address(vm)

    def inspect(self, vm: str) -> VMInfo | None:
        """The VM, or None when it does not exist; a VM that may be on an engine that does
        not answer raises ``EngineUnavailable`` (None would let the caller forget it)."""
        member = self._member(vm)
        info = member.inspect(vm)
        if info is not None:
            info.engine = member.engine
        return info

    def list_vms(self, *, all_vms: bool = False) -> list[VMInfo]:
        infos = []
        for member in self.reachable():
            try:
                found = member.list_vms(all_vms=all_vms)
            except EngineUnavailable as err:
                self.unreachable[member.engine] = str(err)
                continue
            for info in found:
                info.engine = member.engine
                self.where[info.name] = member.engine
            infos += found
        return infos

    def wait_ready(self, vm: str) -> float:
        return self._member(vm).wait_ready(vm)

    def pollution_checker(self, vm: str, ignore: Ignore) -> Checker | None:
        return self._member(vm).pollution_checker(vm, ignore)

    def exec(self, vm: str, argv: list[str], *, timeout: float | None = None) -> ExecResult:
        return self._member(vm).exec(vm, argv, timeout=timeout)

    def exec_argv(self, vm: str, argv: list[str], *, interactive: bool = False) -> list[str]:
        return self._member(vm).exec_argv(vm, argv, interactive=interactive)

    def host(self, vm: str) -> tuple[str, dict[str, Any]]:
        """Its engine's connector and address: known from the state without asking the
        engine, so the inventories are written while an engine does not answer."""
        engine = self.where.get(vm)
        return (self.members[engine] if engine is not None else self._member(vm)).host(vm)

    # -- the baseline, on every engine -----------------------------------------------------

    def seal_name(self, vm: str, owner: Owner) -> str:
        return self._member(vm).seal_name(vm, owner)

    def seal(self, vm: str, owner: Owner) -> Baseline:
        member = self._member(vm)
        baseline = member.seal(vm, owner)

        def copy(other: DockerImages) -> None:
            try:
                member.send_image(baseline.ref, baseline.seal.get("tag", ""), other)
            except OrchError as err:
                log.warning("baseline not copied to %s yet (%s): it will be when a VM is made there", other.engine, err)

        self.map(copy, [m for m in self.reachable() if m is not member])  # to every engine at once
        return baseline

    def clone(self, baseline: Baseline, vm: str, owner: Owner) -> None:
        target = self.place(vm, owner)
        if not target.has_image(baseline.ref):
            source = next((m for m in self.reachable() if m is not target and m.has_image(baseline.ref)), None)
            if source is None:
                raise PermanentProviderError(f"the baseline {baseline.ref[:19]} is on no engine", operation="clone", vm=vm)
            source.send_image(baseline.ref, baseline.seal.get("tag", ""), target)
        target.clone(baseline, vm, owner)

    def verify(self, baseline: Baseline) -> str | None:
        reasons = [m.verify(baseline) for m in self.reachable()]
        return None if any(r is None for r in reasons) else (reasons[0] if reasons else "no engine answers")

    def drop(self, baseline: Baseline) -> bool:
        """False (dropped later) while an engine that may hold a copy does not answer."""
        return all([m.drop(baseline) for m in self.reachable()]) and not self.unreachable

    def stored_baselines(self) -> list[StoredBaseline]:
        return [b for m in self.reachable() for b in m.stored_baselines()]

    def dangling(self) -> list[str]:
        return [ref for m in self.reachable() for ref in m.dangling()]

    def drop_dangling(self, ref: str) -> None:
        for member in self.reachable():
            member.drop_dangling(ref)
