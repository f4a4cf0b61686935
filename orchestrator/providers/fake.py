"""An in-memory provider with fault injection, for orch's own fast tests and for yours.

``FakeProvider`` keeps VMs, baselines and images in memory and records every call, so a
test can assert what the core did to the backend and inject what real backends do:
transient errors, permanent ones, hangs (a call that ends in a time-out) and creates
that fail after the VM was made. It passes the same conformance suite as the real
providers (``orchestrator.testing.conformance``). Deploys cannot reach a fake VM
through pyinfra; ``FakeDeployer`` stands in for the pyinfra runner and writes what
orch's own deploys write (``/etc/orch-worker``) into the fake VM's files.

    fake = FakeProvider(settings)
    fake.faults.fail("create", times=2)              # two transient failures
    fake.faults.fail("delete", permanent=True)       # a permanent one
    fake.faults.created_but_failed("create")         # made, then "failed"
    ctx = Context(settings, provider=fake, deployer=FakeDeployer(fake))  # no refill unless one is passed
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock
from pydantic import Field

from orchestrator.primitives.clock import iso_ms
from orchestrator.primitives.errors import (
    EngineUnavailable,
    PermanentProviderError,
    ProviderTimeout,
    TransientProviderError,
    VMExists,
    VMNotFound,
)
from orchestrator.primitives.results import ExecResult
from orchestrator.providers.base import (
    RUNNING,
    STOPPED,
    About,
    Baseline,
    BaselineTainted,
    Provider,
    ProviderSettings,
    VMInfo,
)
from orchestrator.providers.faults import Crash, Faults
from orchestrator.pyinfra.loading import deploy_name
from orchestrator.pyinfra.runner import DeployResult

if TYPE_CHECKING:
    from orchestrator.primitives.labels import Owner
    from orchestrator.pyinfra.runner import HostSpec
    from orchestrator.settings.model import Settings

FAKE_IMAGE = "fake:bookworm"


@dataclass
class FakeVM:
    name: str
    state: str
    labels: dict[str, str]
    image: str
    created: str = field(default_factory=lambda: iso_ms(datetime.now(timezone.utc).isoformat()))  # to the ms, as Docker's
    files: dict[str, str] = field(default_factory=dict)
    touched_after_seal: bool = False


class FakeSettings(ProviderSettings):
    """``[tool.orch.fake]``."""

    #: A JSON file that keeps the fake backend between processes (a pytest run's
    #: controller and workers, the CLI); empty: in memory, per process.
    path: str = ""
    #: Images the fake "has".
    images: list[str] = Field(default_factory=lambda: [FAKE_IMAGE])


class _Guard:
    """The fake's lock: a thread lock, and with a ``path`` also a file lock around a
    load-change-save of the backend file (outermost entry only)."""

    def __init__(self, fake: FakeProvider) -> None:
        self.fake = fake
        self.thread = threading.RLock()
        self.depth = 0
        self.file: Any = None
        if fake.opts.path:
            self.file = FileLock(fake.opts.path + ".lock")

    def __enter__(self) -> _Guard:
        self.thread.acquire()
        self.depth += 1
        if self.depth == 1 and self.file is not None:
            self.file.acquire()
            self.fake._load()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.depth == 1 and self.file is not None:
                try:
                    self.fake._save()
                finally:
                    self.file.release()
        finally:
            self.depth -= 1
            self.thread.release()


class FakeProvider(Provider):
    name = "fake"
    settings_model = FakeSettings
    opts: FakeSettings
    has_labels = True
    can_rename = True
    default_image = FAKE_IMAGE
    machine_image = FAKE_IMAGE
    retry_delay = 0.0

    def __init__(self, settings: Settings, *, latency: dict[str, float] | None = None) -> None:
        super().__init__(settings)
        self.vms: dict[str, FakeVM] = {}
        self.baselines: dict[str, dict[str, str]] = {}
        self.images = set(self.opts.images)
        self.faults = Faults()
        self.latency = dict(latency or {})
        self.calls: list[tuple[str, str]] = []
        self.up = True
        #: The deployers made for it: their ``fail``/``hook`` apply to orch's cheap personalize too.
        self.deployers: list[FakeDeployer] = []
        self._lock = _Guard(self)

    # -- bookkeeping ------------------------------------------------------------------

    def deployer(self) -> FakeDeployer:
        return FakeDeployer(self)

    def _load(self) -> None:
        """With a ``path``, the backend lives in that file: read it before each call."""
        if not self.opts.path:
            return
        try:
            raw = json.loads(Path(self.opts.path).read_text())
        except (OSError, ValueError):
            return
        self.vms = {k: FakeVM(**v) for k, v in raw.get("vms", {}).items()}
        self.baselines = raw.get("baselines", {})

    def _save(self) -> None:
        if not self.opts.path:
            return
        path = Path(self.opts.path)
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps({"vms": {k: asdict(v) for k, v in self.vms.items()}, "baselines": self.baselines}))
        os.replace(tmp, path)

    def _enter(self, operation: str, vm: str = "") -> str:
        with self._lock:
            self.calls.append((operation, vm))
        if self.latency.get(operation):
            time.sleep(self.latency[operation])
        if not self.up and operation != "check":
            raise PermanentProviderError("the fake backend is down", operation=operation, vm=vm)
        fault = self.faults.next(operation)
        if fault == "transient":
            raise TransientProviderError(f"fake: {operation} {vm} failed (transient)", operation=operation, vm=vm)
        if fault == "permanent":
            raise PermanentProviderError(f"fake: {operation} {vm} failed (permanent)", operation=operation, vm=vm)
        if fault == "hang":
            raise ProviderTimeout(f"fake {operation} {vm} timed out (the command was killed)", operation=operation, vm=vm)
        if fault == "crash":
            raise Crash(f"crash before {operation} {vm}")
        return fault

    def counts(self) -> Counter[str]:
        """VM operations by kind, as a backend's event log would count them."""
        with self._lock:
            return Counter(op for op, _ in self.calls)

    def _vm(self, vm: str, operation: str) -> FakeVM:
        found = self.vms.get(vm)
        if found is None:
            raise VMNotFound(f"fake: no such VM {vm}", operation=operation, vm=vm)
        return found

    # -- the backend --------------------------------------------------------------------

    def check(self) -> None:
        self._enter("check")
        if not self.up:
            raise EngineUnavailable("the fake backend is down: set provider.up = True")

    def about(self) -> list[About]:
        where = self.opts.path or "in memory"
        if not self.up:
            return [About(self.name, where, error="the fake backend is down: set provider.up = True")]
        return [About(f"{self.name} 1.0", where)]

    def image_id(self, image: str) -> str:
        self._enter("image")
        if image not in self.images:
            raise PermanentProviderError(f"image {image!r} is not available here: name another with --image / ORCH_IMAGE")
        return "sha256:" + hashlib.sha256(image.encode()).hexdigest()

    # -- VMs ------------------------------------------------------------------------------

    def _make(self, vm: str, image: str, owner: Owner, files: dict[str, str], operation: str) -> None:
        if not vm:
            raise PermanentProviderError("refusing an empty name", operation=operation)
        fault = self._enter(operation, vm)
        with self._lock:
            if vm in self.vms:
                raise VMExists(f"fake: {vm} already exists", operation=operation, vm=vm)
            self.vms[vm] = FakeVM(vm, RUNNING, owner.labels(), image, files=dict(files))
        if fault == "after":
            raise TransientProviderError(f"fake: {operation} {vm} failed after making it", operation=operation, vm=vm)
        if fault == "crash-after":
            raise Crash(f"crash after {operation} {vm}")

    def create(self, vm: str, image: str, owner: Owner) -> None:
        if image not in self.images:
            self._enter("create", vm)
            raise PermanentProviderError(f"image {image!r} is not available here", operation="create", vm=vm)
        self._make(vm, image, owner, {}, "create")

    def start(self, vm: str) -> None:
        self._enter("start", vm)
        with self._lock:
            self._vm(vm, "start").state = RUNNING

    def stop(self, vm: str) -> None:
        if not vm:
            raise PermanentProviderError("refusing to stop a VM with an empty name", operation="stop")
        self._enter("stop", vm)
        with self._lock:
            self._vm(vm, "stop").state = STOPPED

    def delete(self, vm: str) -> None:
        if not vm:
            raise PermanentProviderError("refusing to delete a VM with an empty name", operation="delete")
        fault = self._enter("delete", vm)
        with self._lock:
            self.vms.pop(vm, None)
        if fault == "crash-after":
            raise Crash(f"crash after delete {vm}")

    def rename(self, vm: str, new: str) -> None:
        self._enter("rename", vm)
        with self._lock:
            found = self._vm(vm, "rename")
            if new in self.vms:
                raise VMExists(f"fake: {new} already exists", operation="rename", vm=new)
            del self.vms[vm]
            found.name = new
            self.vms[new] = found

    def inspect(self, vm: str) -> VMInfo | None:
        self._enter("inspect", vm)
        with self._lock:
            found = self.vms.get(vm)
            return None if found is None else VMInfo(found.name, found.state, dict(found.labels), found.created, found.image)

    def list_vms(self, *, all_vms: bool = False) -> list[VMInfo]:
        self._enter("list")
        with self._lock:
            infos = [VMInfo(v.name, v.state, dict(v.labels), v.created, v.image) for v in self.vms.values()]
        return infos if all_vms else [i for i in infos if i.labels.get("orch.managed-by") == "orch"]

    def wait_ready(self, vm: str) -> float:
        self._enter("ready", vm)
        with self._lock:
            found = self._vm(vm, "ready")
            if found.state != RUNNING:
                raise ProviderTimeout(f"{vm} not ready; last seen: state {found.state}", operation="ready", vm=vm)
        return 0.0

    _WRITE = re.compile(r"^printf %s (?P<text>.*) > (?P<path>\S+)$", re.S)

    def exec(self, vm: str, argv: list[str], *, timeout: float | None = None) -> ExecResult:
        """Understands ``true``, ``false``, ``cat PATH``, ``sh -c 'printf %s TEXT > PATH'``
        and orch's cheap personalize (records written with printf, ``&&``-chained)."""
        self._enter("exec", vm)
        with self._lock:
            found = self._vm(vm, "exec")
            if found.state != RUNNING:
                return ExecResult(1, "", f"{vm} is not running")
            if argv == ["true"]:
                return ExecResult(0, "", "")
            if argv == ["false"]:
                return ExecResult(1, "", "")
            if len(argv) == 2 and argv[0] == "cat":
                if argv[1] in found.files:
                    return ExecResult(0, found.files[argv[1]], "")
                return ExecResult(1, "", f"cat: {argv[1]}: No such file or directory")
            if len(argv) == 3 and argv[:2] == ["sh", "-c"] and (m := self._WRITE.match(argv[2])):
                found.files[m.group("path")] = shlex.split(m.group("text"))[0] if m.group("text") else ""
                found.touched_after_seal = True
                return ExecResult(0, "", "")
            if len(argv) == 3 and argv[:2] == ["sh", "-c"] and (records := self._records(argv[2])) is not None:
                return self._personalize(found, records)
        return ExecResult(127, "", f"fake exec does not understand {argv!r}")

    @staticmethod
    def _records(script: str) -> dict[str, str] | None:
        """``cmd && cmd ...`` of ``printf '%s\\n' VALUE > PATH``, ``mkdir -p DIR`` and
        ``chmod MODE DIR`` (orch's cheap personalize): {path: text}; None for anything else."""
        records: dict[str, str] = {}
        for part in script.split(" && "):
            try:
                words = shlex.split(part)
            except ValueError:
                return None
            if len(words) == 5 and words[:2] == ["printf", "%s\\n"] and words[3] == ">":
                records[words[4]] = words[2] + "\n"
            elif not (len(words) == 3 and words[0] in ("mkdir", "chmod")):
                return None
        return records

    def _personalize(self, found: FakeVM, records: dict[str, str]) -> ExecResult:
        """Write ``records``; a :class:`FakeDeployer`'s ``hook`` and ``fail`` apply as to
        the personalize deploy they stand in for (the worker id is what goes to
        /etc/orch-worker)."""
        worker = records.get("/etc/orch-worker", "").strip()
        for deployer in self.deployers:
            if deployer.hook is not None:
                deployer.hook("orch: personalize + orch: mark (exec)", found.name)
            if worker in deployer.fail:
                return ExecResult(1, "", deployer.fail[worker])
        found.files.update(records)
        found.touched_after_seal = True
        return ExecResult(0, "", "")

    def exec_argv(self, vm: str, argv: list[str], *, interactive: bool = False) -> list[str]:
        return ["sh", "-c", f"echo 'fake VM {vm}: cannot run' {shlex.join(argv)} >&2; exit 1"]

    def host(self, vm: str) -> tuple[str, dict[str, Any]]:
        return f"@fake/{vm}", {"fake_vm": vm}

    # -- baseline: a snapshot of the files --------------------------------------------------

    def seal(self, vm: str, owner: Owner) -> Baseline:
        self._enter("seal", vm)
        with self._lock:
            found = self._vm(vm, "seal")
            ref = f"fake-baseline-{owner.checkout}-{owner.fingerprint[:12]}"
            self.baselines[ref] = dict(found.files)
            del self.vms[vm]
        return Baseline(ref, {"files": str(len(found.files))})

    def clone(self, baseline: Baseline, vm: str, owner: Owner) -> None:
        with self._lock:
            files = self.baselines.get(baseline.ref)
        if files is None:
            self._enter("clone", vm)
            raise VMNotFound(f"fake: no baseline {baseline.ref}", operation="clone", vm=vm)
        if files.get("/tainted"):
            raise BaselineTainted(
                f"the baseline {baseline.ref} was changed after it was sealed (/tainted)", operation="clone", vm=vm
            )
        self._make(vm, "baseline:" + baseline.ref, owner, files, "clone")

    def verify(self, baseline: Baseline) -> str | None:
        self._enter("verify")
        with self._lock:
            return None if baseline.ref in self.baselines else f"its snapshot {baseline.ref} is gone"

    def drop(self, baseline: Baseline) -> bool:
        self._enter("drop")
        with self._lock:
            self.baselines.pop(baseline.ref, None)
        return True

    def export_baseline(self, baseline: Baseline, path: Path) -> None:
        """The snapshot's files as JSON (``crash("export", after=True)``: the file is
        half written, then the caller dies)."""
        fault = self._enter("export", baseline.ref)
        with self._lock:
            files = self.baselines.get(baseline.ref)
        if files is None:
            raise VMNotFound(f"fake: no baseline {baseline.ref}", operation="export")
        text = json.dumps({"fake-baseline": baseline.ref, "files": files})
        if fault == "crash-after":
            path.write_text(text[: len(text) // 2])
            raise Crash(f"crash after export {baseline.ref}")
        path.write_text(text)

    def import_baseline(self, path: Path, name: str, owner: Owner) -> Baseline:
        """The file's files as this checkout's snapshot (``crash("import", after=True)``:
        loaded, then the caller dies before it records it)."""
        fault = self._enter("import", name)
        try:
            raw = json.loads(path.read_text())
            files = dict(raw["files"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise PermanentProviderError(f"fake: {path} is not a fake baseline ({err})", operation="import") from err
        ref = f"fake-baseline-{owner.checkout}-{owner.fingerprint[:12]}"
        with self._lock:
            self.baselines[ref] = files
        if fault == "crash-after":
            raise Crash(f"crash after import {name}")
        return Baseline(ref, {"files": str(len(files))})


class FakeDeployer:
    """Runs "deploys" on fake VMs: records them, and writes what orch's deploys write
    (``/etc/orch-worker``; ``mark``'s fingerprint and VM name under ``/var/lib/orch``).

    ``fail[worker id] = message`` makes the deploy fail on that worker's VM.
    """

    def __init__(self, provider: FakeProvider) -> None:
        self.provider = provider
        self.runs: list[tuple[str, str]] = []  # (deploy name, vm)
        self.fail: dict[str, str] = {}
        self.hook: Callable[[str, str], None] | None = None
        provider.deployers.append(self)

    def run(self, hosts: list[HostSpec], funcs: list[Callable[..., Any]], *, title: str = "") -> dict[str, DeployResult]:
        name = " + ".join(deploy_name(f) for f in funcs)
        results = {}
        for host, data in hosts:
            vm = data["orch_vm"]
            self.runs.append((name, vm))
            if self.hook is not None:
                self.hook(name, vm)
            worker = data.get("orch_worker_id", "")
            if worker in self.fail:
                results[host] = DeployResult(False, f"{name}: {self.fail[worker]}")
                continue
            with self.provider._lock:
                found = self.provider.vms.get(vm)
                if found is None or found.state != RUNNING:
                    results[host] = DeployResult(False, f"cannot connect to {host}")
                    continue
                found.files["/etc/orch-worker"] = worker + "\n"
                if any(deploy_name(f) == "orch: mark" for f in funcs):  # orch's own last step
                    found.files["/var/lib/orch/fingerprint"] = str(data.get("orch_fingerprint", "")) + "\n"
                    found.files["/var/lib/orch/made-as"] = vm + "\n"
            results[host] = DeployResult(True, "")
        return results
