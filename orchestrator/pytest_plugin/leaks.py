"""VMs that tests make themselves: collision-free names orch records
(``orchestrator.vm_name``), deleted after their test, and the run's leak check.

A connector's own suite creates, starts, stops and deletes VMs through the connector it
tests, with names it chooses. Two things go wrong without help, and this module is the
help:

- **Names.** ``test-vm-{int(time.time())}`` collides when two xdist workers pick it in the
  same second, and one test's teardown deletes the other's VM. :func:`vm_name` hands out
  ``{base}-{checkout}-{timestamp}-{pid}-{random}``, recorded in the state under the run's
  lease before the test has it (never twice, across workers and runs). After the test
  (:func:`after_test`, the last of orch's teardown steps) whatever exists under the name is
  deleted, and the record dropped; ``scope="session"`` waits for the session's end. If
  the run dies, ``orch sweep`` (or ``orch down``) deletes it once its lease is gone.
- **Leaks.** A test that makes a VM under a name of its own and leaves it: the controller
  lists every VM on the backend when the session starts and again when it ends
  (:class:`LeakCheck`). Each VM that appeared meanwhile, is not orch's (labels, or an orch
  name of any checkout), is not a name handed out (by this run or another), and is still
  there, is a leak, named with the test that was running when it appeared: its creation
  time (every provider reports one, to the millisecond) against the start and stop of each
  test's setup, call and teardown, which reach the controller from xdist workers with
  the tests' reports. ``--orch-reap-leaks`` deletes the leaks a test was running for, and
  nothing else: never a VM that existed before the run, an orch VM, another checkout's
  or another run's handed-out name, nor one that appeared while no test ran.

Per-test listing was measured and left out (see the report of issue 19): the end-of-run
list, with creation times, names the same test at no cost per test.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from orchestrator.primitives import labels as L
from orchestrator.primitives import naming
from orchestrator.primitives.clock import epoch, now_iso
from orchestrator.primitives.errors import OrchError, UsageError
from orchestrator.pytest_plugin.report import REPORT_KEY, attach, section
from orchestrator.pytest_plugin.run import RUN_KEY, OrchRun, current_item, orch_run
from orchestrator.pytest_plugin.worker import current_worker_id

if TYPE_CHECKING:  # the core, imported on first use (an xdist worker of plain tests never needs it)
    from orchestrator.providers.base import VMInfo
    from orchestrator.state.records import NamedVMRecord
    from orchestrator.verbs.testvms import Deleted

log = logging.getLogger(__name__)

#: The report's sections: names handed out (what became of them), and leaks.
NAMED = "testvms"
LEAKS = "leaks"
#: The names a test was handed (scope "test"), deleted in its teardown.
NAMES_KEY = pytest.StashKey[list[str]]()
#: Where an xdist worker hands the controller what became of its session-scoped names.
WORKEROUTPUT_KEY = "orch_testvms"


def _named_lines(entries: list[dict[str, Any]]) -> list[str]:
    lines = []
    for e in entries:
        who = f"{e.get('test') or 'a test'}" + (f" ({e['worker']})" if e.get("worker") else "")
        when = "at the end of the session" if e.get("when") == "session" else "after the test"
        if e["result"] == "deleted":
            lines.append(f"{who}: left {e['vm']}: deleted {when}")
        elif e["result"] == "failed":
            lines.append(
                f"{who}: left {e['vm']}, which could not be deleted ({e.get('error', '')[:200]}): `orch sweep` deletes it once this run is over"
            )
        elif e["result"] == "left":
            lines.append(f"{who}: {e['vm']} carries orch's labels (not a VM the test made): left alone")
    return lines


def _leak_lines(entries: list[dict[str, Any]]) -> list[str]:
    lines = []
    for e in entries:
        tests = e.get("tests") or []
        who = tests[0] if len(tests) == 1 else f"one of {', '.join(tests)}" if tests else "no test (none was running)"
        worker = f" ({e['worker']})" if e.get("worker") else ""
        lines.append(f"{who}{worker}: left {e['vm']} (made {e.get('created') or 'at an unknown time'}): {e['result']}")
    if any(e["result"] == "still there" for e in entries):
        lines.append(
            "`pytest --orch-reap-leaks` deletes the ones a test left (only those); `orchestrator.vm_name()` names VMs orch deletes after their test"
        )
    return lines


section(NAMED, "VMs tests made under names orch handed out (orchestrator.vm_name)", _named_lines)
section(LEAKS, "VMs the run's tests made and left behind (not orch's)", _leak_lines)


# -- names (the worker side) -------------------------------------------------------------------


def vm_name(base: str = "test-vm", *, scope: str = "test", item: pytest.Item | None = None) -> str:
    """A VM name no other test gets, recorded before it is returned, for a VM the test
    makes itself; whatever exists under it is deleted after the test (``scope="session"``:
    at the end of the session)."""
    from orchestrator.verbs.testvms import SCOPES, hand_out  # noqa: PLC0415  (on first use: not at plugin load)

    naming.validate_vm_base(base)
    if scope not in SCOPES:
        raise UsageError(f"invalid scope {scope!r}: use {' or '.join(repr(s) for s in SCOPES)}")
    item = item or current_item()
    if item is None:
        raise UsageError("orchestrator.vm_name() names a VM for the test running now: call it in a test or a fixture")
    run = orch_run(item.config)
    worker = current_worker_id(run.workerinput)
    lease = run.lease
    name = hand_out(
        run.ctx.store,
        run.ctx.provider.name,
        base,
        run=lease.run,
        session=lease.session,
        worker=worker,
        test=item.nodeid,
        scope=scope,
    )
    if scope == "test":
        item.stash.setdefault(NAMES_KEY, []).append(name)
    else:
        run.session_named = True
    log.info("orch: %s handed %s", item.nodeid, name)
    return name


def after_test(item: pytest.Item) -> None:
    """Called by the switchboard in each test's teardown (see ``plugin.py`` for the order):
    what exists under the names the test was handed is deleted, and said in its report."""
    names = item.stash.get(NAMES_KEY, [])
    if not names:
        return
    from orchestrator.verbs.testvms import delete_named  # noqa: PLC0415  (on first use: not at plugin load)

    run = item.config.stash[RUN_KEY]
    worker = current_worker_id(run.workerinput)
    try:
        done = delete_named(run.ctx, names)
    except OrchError as err:  # the state cannot be read or written: sweep judges them later
        log.warning("orch: could not delete the VMs %s was handed: %s", item.nodeid, err)
        return
    for d in done:
        entry = {"test": item.nodeid, "worker": worker, "vm": d.vm, "result": d.result}
        attach(item, NAMED, {**entry, "error": d.error} if d.error else entry)


# -- the leak check (the controller) ---------------------------------------------------------


@dataclass
class Window:
    """When one test ran (its setup's start to its teardown's stop), and where."""

    worker: str
    start: float
    stop: float


def running_at(created: str, windows: dict[str, Window]) -> list[str]:
    """The tests that were running when a VM made at ``created`` appeared: as precisely as
    the backend says when (to the millisecond on Docker, podman, Incus and OrbStack; a
    backend that says only the second names every test running in that second)."""
    when = epoch(created)
    if when is None:
        return []
    t, precision = when
    return sorted(nodeid for nodeid, w in windows.items() if w.start < t + precision and w.stop >= t)


class LeakCheck:
    """Registered in every process of a run. On the controller (or the only process): what
    the backend holds at the session's start and end, the tests' times, and the report's
    leaks. In every process that handed out names: its ``scope="session"`` names, deleted
    at the end of its session (an xdist worker sends what became of them to the controller
    in its ``workeroutput``)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.controller = not hasattr(config, "workerinput")
        self.run: OrchRun | None = None  # set when the session starts, if it checks
        self.since = ""  # when the session started (as the state writes times)
        self.before: dict[str, VMInfo] | None = None
        self.windows: dict[str, Window] = {}
        self._listing: threading.Thread | None = None  # the first listing, until it is joined

    def _run(self) -> OrchRun | None:
        """The run, when its project uses orch: it holds a lease (orch ran here before, or
        brings workers up), has a ``[tool.orch]`` table (a suite that only names VMs), or
        asks for leaks to be reaped."""
        run = self.config.stash.get(RUN_KEY, None)
        if run is None or getattr(self.config.option, "collectonly", False):
            return None
        if run.held is None and not run.settings.reap_leaks:
            from orchestrator.settings.loader import read_pyproject  # noqa: PLC0415  (on first use: not at plugin load)

            try:
                if not read_pyproject(run.settings.root):
                    return None
            except OrchError:
                return None
        return run

    @pytest.hookimpl
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        """On the controller, as the session starts: the backend's VMs, listed in a thread
        while the controller goes on (the bring-up, xdist making its workers' processes),
        and waited for before any test can start (:meth:`_listed`)."""
        run = self._run() if self.controller else None
        if run is None:
            return
        try:
            self.since = now_iso()
            provider = run.ctx.provider  # made here, on the main thread
        except (OrchError, pytest.UsageError) as err:
            log.warning("orch: no leak check in this run (the backend could not be listed): %s", err)
            return

        def listing() -> None:
            try:
                self.before = {i.name: i for i in provider.list_vms(all_vms=True)}
                self.run = run
            except OrchError as err:
                log.warning("orch: no leak check in this run (the backend could not be listed): %s", err)

        self._listing = threading.Thread(target=listing, name="orch-leak-listing", daemon=True)
        self._listing.start()

    def _listed(self) -> None:
        """The first listing done: before xdist hands any worker its first test (its
        ``pytest_configure_node``) or the only process runs one (``pytest_runtestloop``),
        so a VM a test makes is never in it."""
        if self._listing is not None:
            self._listing.join()
            self._listing = None

    @pytest.hookimpl(optionalhook=True, tryfirst=True)
    def pytest_configure_node(self, node: Any) -> None:
        self._listed()

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> None:
        self._listed()

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.run is None:
            return
        w = self.windows.get(report.nodeid)
        if w is None:
            self.windows[report.nodeid] = Window(str(getattr(report, "worker_id", "") or ""), report.start, report.stop)
        else:
            w.start, w.stop = min(w.start, report.start), max(w.stop, report.stop)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        """An xdist worker's session-scoped names, as it reported them."""
        report = self.config.stash.get(REPORT_KEY, None)
        for entry in json.loads(getattr(node, "workeroutput", {}).get(WORKEROUTPUT_KEY, "[]")):
            if report is not None:
                report.add(NAMED, entry)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self._listed()  # a session that ended before its loop (an error at collection)
        run = self.config.stash.get(RUN_KEY, None)
        try:
            if run is not None and run.held is not None and run.session_named:
                self._own_session_names(run)
            if self.run is not None and self.before is not None:
                self._dead_names(self.run)
                self._leaks(self.run)
                report = self.config.stash.get(REPORT_KEY, None)
                if report is not None and report.entries and self.run.held is None:
                    self.run.hold([])  # a run of a fresh checkout: the report is written under its lease's id
        except (OrchError, pytest.UsageError) as err:
            log.warning("orch: the leak check could not finish: %s", err)

    def _add(self, entries: list[dict[str, Any]]) -> None:
        report = self.config.stash.get(REPORT_KEY, None)
        if report is not None:
            for entry in entries:
                report.add(NAMED, entry)

    def _own_session_names(self, run: OrchRun) -> None:
        """This process's ``scope="session"`` names: deleted now that its tests are done."""
        from orchestrator.verbs.testvms import delete_named, session_names  # noqa: PLC0415  (on first use: not at plugin load)

        assert run.held is not None
        names = session_names(run.ctx.store, run.held.run)
        if not names:
            return
        entries = _entries(names, delete_named(run.ctx, [r.vm for r in names]))
        if self.controller:
            self._add(entries)
        else:
            self.config.workeroutput[WORKEROUTPUT_KEY] = json.dumps(entries)  # type: ignore[attr-defined]

    def _dead_names(self, run: OrchRun) -> None:
        """Names handed out during this session whose process is gone (a crashed xdist
        worker's), deleted now, as ``orch sweep`` would."""
        from orchestrator.verbs.testvms import dead, delete_named  # noqa: PLC0415  (on first use: not at plugin load)

        names = dead(run.ctx, since=self.since)
        if names:
            self._add(_entries(names, delete_named(run.ctx, [r.vm for r in names])))

    def _leaks(self, run: OrchRun) -> None:
        assert self.before is not None
        report = self.config.stash.get(REPORT_KEY, None)
        found = leaked(self.before, run.ctx.provider.list_vms(all_vms=True), run)
        for info in found:
            tests = running_at(info.created, self.windows)
            workers = sorted({self.windows[t].worker for t in tests if self.windows[t].worker})
            entry: dict[str, Any] = {"vm": info.name, "created": info.created, "tests": tests, "worker": ", ".join(workers)}
            entry["result"] = "still there"
            if not tests:
                entry["result"] = "still there (appeared while no test of this run was running: never reaped)"
            elif run.settings.reap_leaks:
                entry["result"] = _reap(run, info)
            if report is not None:
                report.add(LEAKS, entry)


def _entries(records: list[NamedVMRecord], done: list[Deleted]) -> list[dict[str, Any]]:
    """The report's entries of names deleted at the end of the session (what was there)."""
    by_name = {r.vm: r for r in records}
    entries = []
    for d in done:
        if d.result == "absent":
            continue
        rec = by_name[d.vm]
        entry = {"test": rec.test, "worker": rec.worker, "vm": d.vm, "result": d.result, "when": "session"}
        entries.append({**entry, "error": d.error} if d.error else entry)
    return entries


def leaked(before: dict[str, VMInfo], after: list[VMInfo], run: OrchRun) -> list[VMInfo]:
    """The VMs of ``after`` that the run's tests made and left: new since ``before`` (by
    name), not orch's, and not a name handed out (this checkout's records, or another
    checkout's form of name)."""
    from orchestrator.core.ownership import identify  # noqa: PLC0415  (on first use: not at plugin load)

    settings, provider = run.settings, run.ctx.provider
    recorded = run.ctx.store.read().testvms
    found = []
    for info in after:
        if info.name in before or info.name in recorded:
            continue
        if identify(info, settings.prefix, provider.has_labels)[0] is not None or L.is_orchs(info.labels):
            continue
        if naming.orch_form(info.name) or naming.parse_named_vm_name(info.name) is not None:
            continue  # an orch VM without labels, or a name handed out (this run's were deleted)
        found.append(info)
    return sorted(found, key=lambda i: i.name)


def _reap(run: OrchRun, seen: VMInfo) -> str:
    """Delete a leak, only while its name is still the VM the check saw."""
    provider = run.ctx.provider
    try:
        now = provider.inspect(seen.name)
        if now is None:
            return "gone before it was reaped"
        if (now.created, now.labels) != (seen.created, seen.labels):
            return "still there (another VM has its name now: not reaped)"
        provider.call(f"delete {seen.name}", lambda: provider.delete(seen.name))
    except OrchError as err:
        return f"could not be reaped ({str(err)[:200]})"
    return "deleted (--orch-reap-leaks)"
