"""The pollution check after each test, and what the isolation policy does with it
(``[tool.orch] isolation``, ``--orch-isolation``, ``@pytest.mark.orch_isolation``).

A test's policy is its marker's, else the run's setting:

- ``shared``: nothing is checked or reset (no cost);
- ``report``: after the test, its worker is checked and what changed is reported; never
  reset. A later test on that worker that fails says, in its failure output, which tests
  changed the worker before it (since its last reset) and what they changed;
- ``on-dirty``: checked; a worker its test changed (or that could not be checked) is reset
  before the next test (a standby swapped in where there is one, else made again);
- ``per-test``: reset after every test, with no check.

Only tests that use their worker (``orch_worker`` or a fixture made from it) are checked
or reset: a test that never reaches the worker costs nothing. A test marked
``orch_reset`` is not checked (its reset follows).

The checker is the provider's where its backend tells cheaply
(``Provider.pollution_checker``), else one command inside the VM
(:class:`orchestrator.core.isolation.ExecChecker`). It is made for the worker's VM when
the first checked test takes it, armed before that test, and made and armed again after
the VM is replaced (``handout.reset_worker`` tells: any reset, swap or keep).

Crash safety ("no dirty VM reaches a test"): under ``on-dirty`` and ``per-test`` the
worker's record says, before the test starts, that it owes a reset (``reset_pending``);
a clean check clears it. A run killed mid-test leaves a worker that the next taker (the
next run's first test, ``orch up``) makes again first.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from orchestrator.primitives.changes import Changes, Checker, Ignore
from orchestrator.primitives.errors import OrchError
from orchestrator.pytest_plugin import handout
from orchestrator.pytest_plugin.report import attach, section
from orchestrator.pytest_plugin.run import RUN_KEY, OrchRun, orch_run
from orchestrator.pytest_plugin.worker import current_worker_id

log = logging.getLogger(__name__)

MARKER = "orch_isolation"
#: The policies, as ``orchestrator.settings.model.ISOLATIONS`` names them (the model imports
#: pydantic, which the plugin must not at load: tests/unit/test_warm_start.py keeps the two equal).
ISOLATIONS: tuple[str, ...] = ("shared", "report", "on-dirty", "per-test")
#: The report's section (and the key of its entries in the JSON report).
SECTION = "pollution"
#: The policies that check after the test, and those that owe a reset before it.
CHECKED = ("report", "on-dirty")
OWING = ("on-dirty", "per-test")
#: How many items of one kind of change an entry of the report keeps (the rest counted).
KEEP_ITEMS = 200
#: How many tests the terminal summary lists, and lines of changes for each.
SHOW_TESTS = 20
SHOW_LINES = 4


@dataclass
class _Isolation:
    """This process's pollution checking: its worker VM's checker, the test being checked
    now, and (for ``report``) the tests that changed the worker since its last reset."""

    checker: Checker | None = None
    arm_error: str = ""
    current: str = ""
    since_reset: list[dict[str, Any]] = field(default_factory=list)


_KEY = pytest.StashKey[_Isolation]()
#: The worker's use count before a test that does not name ``orch_worker``.
_USES = pytest.StashKey[int]()


def _lines(entries: list[dict[str, Any]]) -> list[str]:
    lines: list[str] = []
    for e in entries[:SHOW_TESTS]:
        then = "; reset" if e.get("reset") else ""
        if e.get("reset_error"):
            then = f"; its reset failed: {e['reset_error']}"
        if e.get("error"):
            lines.append(f"{e['test']} ({e['worker']}): not checked: {e['error']}{then}")
            continue
        lines.append(f"{e['test']} ({e['worker']}) changed its worker{then}:")
        shown = _readable(Changes.from_dict(e.get("changes", {})))
        lines += [f"    {line}" for line in shown[:SHOW_LINES]]
        if len(shown) > SHOW_LINES:
            lines.append(f"    (+{len(shown) - SHOW_LINES} more kinds of change)")
    if len(entries) > SHOW_TESTS:
        lines.append(f"... and {len(entries) - SHOW_TESTS} more tests")
    return lines


def _readable(changes: Changes) -> list[str]:
    """``changes.lines()``, what a person looks for first (processes, packages, users,
    groups) before the files (a package or a user comes with many)."""
    lines = changes.lines()
    return sorted(lines, key=lambda line: line.startswith(("created:", "changed:", "deleted:")))


section(SECTION, "tests that changed their worker (isolation)", _lines)


# -- the policy -------------------------------------------------------------------------


def marker_error(item: pytest.Item) -> str | None:
    """What is wrong with the test's ``orch_isolation`` marker, or None."""
    marker = item.get_closest_marker(MARKER)
    if marker is None:
        return None
    if len(marker.args) == 1 and not marker.kwargs and marker.args[0] in ISOLATIONS:
        return None
    given = ", ".join([*map(repr, marker.args), *(f"{k}={v!r}" for k, v in marker.kwargs.items())])
    return (
        f"orch: {item.nodeid}: @pytest.mark.{MARKER}({given}): name one policy of "
        f'{", ".join(ISOLATIONS)}, e.g. @pytest.mark.{MARKER}("per-test")'
    )


def validate(report: pytest.CollectReport, *, worker: bool) -> None:
    """At collection: a bad marker stops the run in one line (``pytest.UsageError``; an
    xdist worker, where a usage error would be an internal error, fails the collection of
    its module with that line instead)."""
    for node in report.result or ():
        why = marker_error(node) if isinstance(node, pytest.Item) else None
        if why is None:
            continue
        if not worker:
            raise pytest.UsageError(why)
        report.outcome = "failed"
        report.longrepr = why
        report.result = []
        return


def policy(item: pytest.Item) -> str:
    """The test's policy: its marker's, else the run's setting."""
    marker = item.get_closest_marker(MARKER)
    if marker is not None and marker_error(item) is None:
        return str(marker.args[0])
    return orch_run(item.config).settings.isolation


def _applies(item: pytest.Item, *, after: bool = False) -> str:
    """The policy that applies to the test ("" when none does: ``shared``, a test that does
    not use its worker, or one marked ``orch_reset``). After the test, one that reached its
    worker without naming ``orch_worker`` (``request.getfixturevalue``, ``current_worker()``)
    is checked too: its worker's use count moved."""
    if item.get_closest_marker("orch_reset"):
        return ""
    if not _names_worker(item) and not (after and _used(item)):
        return ""
    wanted = policy(item)
    return "" if wanted == "shared" else wanted


# -- the checker of this process's worker VM ----------------------------------------------


def _state(run: OrchRun, config: pytest.Config) -> _Isolation:
    if _KEY not in config.stash:
        config.stash[_KEY] = iso = _Isolation()
        run.on_replace.append(lambda: _replaced(run, iso))
    return config.stash[_KEY]


def _make(run: OrchRun) -> Checker:
    """The provider's checker of the worker's VM where it has one, else the command inside,
    run through the provider's own channel: as root on every provider (pyinfra's OrbStack
    connector runs commands as the machine's default user, who cannot see all of it)."""
    from orchestrator.core.isolation import ExecChecker  # noqa: PLC0415  (on first use: not at plugin load)

    worker, provider = run.worker, run.ctx.provider
    assert worker is not None
    ignore = Ignore.of(run.settings.isolation_ignore, machine=provider.machine)
    made = provider.pollution_checker(worker.vm, ignore)
    return made if made is not None else ExecChecker(lambda cmd: provider.exec(worker.vm, ["sh", "-c", cmd]), ignore)


def _arm(run: OrchRun, iso: _Isolation) -> None:
    """Make and arm the checker (once per VM); an arm that fails is remembered: the test
    after it cannot be found clean."""
    if iso.checker is not None:
        return
    try:
        checker = _make(run)
        checker.arm()
    except OrchError as err:  # CheckFailed, or a provider error of its checker
        iso.arm_error = str(err)
        log.warning("orch: could not arm the pollution check: %s", err)
        return
    iso.checker, iso.arm_error = checker, ""


def _replaced(run: OrchRun, iso: _Isolation) -> None:
    """The worker's VM was replaced: its checker and its polluters are the old VM's. During
    a checked test (``orch_worker.reset()`` inside it, a keep in its teardown) a checker of
    the new VM is armed at once, so the check after the test sees what followed."""
    iso.checker, iso.arm_error = None, ""
    iso.since_reset.clear()
    if iso.current:
        _arm(run, iso)


# -- the test's protocol ----------------------------------------------------------------


def _used(item: pytest.Item) -> bool:
    """Whether a test that does not name ``orch_worker`` reached inside its worker."""
    run = item.config.stash.get(RUN_KEY, None)
    worker = run.worker if run is not None else None
    return worker is not None and worker.uses > item.stash.get(_USES, 0)


def _names_worker(item: pytest.Item) -> bool:
    """Whether the test names ``orch_worker`` (or a fixture made from it), or reached it
    through ``current_worker()``."""
    return "orch_worker" in getattr(item, "fixturenames", ()) or item.stash.get(handout.REACHED_KEY, False)


def before_test(item: pytest.Item) -> None:
    """Before the test's fixtures (after the handout's): the reset a test owes under
    ``on-dirty``/``per-test`` is recorded, and the checker armed."""
    wanted = _applies(item)
    if not wanted:
        run = item.config.stash.get(RUN_KEY, None)
        item.stash[_USES] = run.worker.uses if run is not None and run.worker is not None else 0
        return
    _prepare(item, wanted)


def reached(item: pytest.Item) -> None:
    """``current_worker()`` in a test that does not name ``orch_worker``: from this call on
    it is checked as if it did (the reset it may owe recorded, the checker armed now). Nothing
    reached the worker before this call, so nothing it did is missed; and a worker first made
    by this call is checked all the same, not reset for want of a check armed before."""
    if _names_worker(item):
        return
    item.stash[handout.REACHED_KEY] = True
    wanted = _applies(item)
    if wanted:
        _prepare(item, wanted)


def _prepare(item: pytest.Item, wanted: str) -> None:
    run = orch_run(item.config)
    try:
        handout.get_worker(item.config)
        if wanted in OWING:
            handout.owe(run, f"after {item.nodeid} (isolation {wanted})")
    except OrchError as err:
        handout.fail(err)
    if wanted in CHECKED:
        iso = _state(run, item.config)
        _arm(run, iso)
        iso.current = item.nodeid


def after_test(item: pytest.Item) -> None:
    """Called by the switchboard in each test's teardown (see ``plugin.py`` for the order)."""
    wanted = _applies(item, after=True)
    run = item.config.stash.get(RUN_KEY, None)
    if not wanted or run is None or run.worker is None:
        return
    if wanted == "per-test":
        _reset(item, run)
        return
    iso = _state(run, item.config)
    entry = _check(item, run, iso)
    if entry is None:
        if wanted == "on-dirty":
            handout.forgive(run)
        return
    if wanted == "on-dirty":
        entry["reset"] = True
        error = _reset(item, run, report=False)
        if error:
            entry["reset_error"] = error
    else:
        iso.since_reset.append(entry)
    attach(item, SECTION, entry)
    if entry.get("reset_error"):
        handout.fail(OrchError(entry["reset_error"]))


def _check(item: pytest.Item, run: OrchRun, iso: _Isolation) -> dict[str, Any] | None:
    """The report's entry of what the test changed, or None when it changed nothing."""
    iso.current = ""
    worker_id = current_worker_id(run.workerinput)
    entry: dict[str, Any] = {"test": item.nodeid, "worker": worker_id, "vm": run.worker.vm if run.worker else ""}
    start = time.monotonic()
    if iso.checker is None:
        entry["error"] = iso.arm_error or "the check was not armed before the test"
        _arm(run, iso)  # for the next test
        return entry
    try:
        changes = iso.checker.check()
    except OrchError as err:  # CheckFailed, or a provider error of its checker
        log.warning("orch: %s: %s", item.nodeid, err)
        entry["error"] = str(err)
        return entry
    finally:
        entry["seconds"] = round(time.monotonic() - start, 3)
    if not changes:
        log.debug("orch: %s left %s clean (checked in %.3f s)", item.nodeid, worker_id, entry["seconds"])
        return None
    entry["changes"], counts = _trimmed(changes)
    if counts:
        entry["counts"] = counts
    return entry


def _trimmed(changes: Changes) -> tuple[dict[str, list[str]], dict[str, int]]:
    """The changes as the JSON report keeps them (at most ``KEEP_ITEMS`` of each kind), and
    how many there were of each kind that was trimmed."""
    full = changes.as_dict()
    counts = {k: len(v) for k, v in full.items() if len(v) > KEEP_ITEMS}
    return {k: v[:KEEP_ITEMS] for k, v in full.items()}, counts


def _reset(item: pytest.Item, run: OrchRun, *, report: bool = True) -> str:
    """Reset the worker after the test; a reset that fails is owed to the next test (whose
    setup tries again). Returns the error ("" when it worked); with ``report``, a failure
    fails the test's teardown in one line."""
    run.marking = ""  # the reset it owes is being done
    try:
        handout.reset_worker(run, current_worker_id(run.workerinput))
    except OrchError as err:
        run.owes_reset = f"after {item.nodeid}"
        if report:
            handout.fail(err)
        return str(err)
    return ""


def explain(item: pytest.Item, report: pytest.TestReport) -> None:
    """A failed test under ``report`` that ran after tests that changed its worker (not
    reset since) says so in its failure output."""
    if report.when != "call" or not report.failed or _KEY not in item.config.stash:
        return
    if _applies(item) != "report":
        return
    earlier = item.config.stash[_KEY].since_reset
    if not earlier:
        return
    lines = [f"this test ran on {earlier[0]['worker']} after tests that changed it (not reset since):"]
    for e in earlier[-SHOW_TESTS:]:
        if e.get("error"):
            lines.append(f"  {e['test']}: not checked ({e['error']})")
            continue
        lines.append(f"  {e['test']}:")
        lines += [f"    {line}" for line in _readable(Changes.from_dict(e.get("changes", {})))]
    report.sections.append(("orch isolation", "\n".join(lines)))
