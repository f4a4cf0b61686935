"""The run's report of what its tests did to their workers and to the backend, made on
the controller (or the only process of a run without xdist).

What a test's worker side finds it attaches to the test's report as a user property
(:data:`PROPERTY`: a JSON object of sections), so it travels from an xdist worker to the
controller as pytest-xdist sends every report, and lands in junit's ``properties``. The
controller's :class:`RunReport` gathers them by section, lets each section print its
part of pytest's terminal summary, and writes them all to
``<inventory dir>/.orch/reports/<run>.json``, which a CI job can keep.

A section is one feature's (the pollution check, kept workers, leaked VMs): it
registers a :class:`Section` once, and adds entries from the worker side with
:func:`attach`, or on the controller with :meth:`RunReport.add`.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from orchestrator.pytest_plugin.run import RUN_KEY, current_item

log = logging.getLogger(__name__)

#: The user property a test's report carries orch's findings under.
PROPERTY = "orch"
#: ... and the one its waits for a VM go under (every test that used orch has some: kept
#: apart so that junit's ``orch`` property stays what orch found of the test itself).
WAITS_PROPERTY = "orch_waits"
REPORT_KEY = pytest.StashKey["RunReport"]()


@dataclass(frozen=True)
class Section:
    """One part of the report: its name (a key of the JSON file), and what it prints in
    the terminal summary given its entries (nothing when it has none)."""

    name: str
    title: str
    lines: Callable[[list[dict[str, Any]]], list[str]]
    property: str = PROPERTY


SECTIONS: dict[str, Section] = {}


def section(name: str, title: str, lines: Callable[[list[dict[str, Any]]], list[str]], *, prop: str = PROPERTY) -> Section:
    """Declare a section (once, at import); ``prop``: the user property it travels under."""
    SECTIONS[name] = Section(name, title, lines, prop)
    return SECTIONS[name]


def attach(item: pytest.Item, name: str, entry: dict[str, Any]) -> None:
    """On the worker side, during the test's protocol (at the latest in its teardown hook):
    add ``entry`` to section ``name`` of the run's report, through the test's report."""
    prop = SECTIONS[name].property if name in SECTIONS else PROPERTY
    for i, (key, value) in enumerate(item.user_properties):
        if key == prop:
            found = json.loads(str(value))
            found.setdefault(name, []).append(entry)
            item.user_properties[i] = (prop, json.dumps(found, sort_keys=True))
            return
    item.user_properties.append((prop, json.dumps({name: [entry]}, sort_keys=True)))


# -- how long tests waited for a VM -----------------------------------------------------------

#: The section of what tests waited for: one entry per wait, ``{"what": "fresh_vm" |
#: "reset" | "handout", "kind": ..., "seconds": s, "test": nodeid, "worker": gwN, "why": ...}``.
WAITS = "waits"
#: The kinds of each wait, in the order the summary names them, with the words it uses.
WAIT_KINDS: dict[str, dict[str, str]] = {
    "fresh_vm": {"pool": "from the pool", "made": "made while the test waited", "failed": "failed"},
    "reset": {"swapped": "swapped in a standby", "hard": "hard", "failed": "failed"},
    "handout": {"ready": "as they were", "remade": "made again first", "failed": "failed"},
}


def waited(
    what: str, kind: str, seconds: float, worker: str, why: str = "", *, cause: str = "", item: pytest.Item | None = None
) -> None:
    """On the worker side: the test running now (or ``item``) waited ``seconds`` for a VM
    (``what``: a ``fresh_vm()``, a reset, its worker handed out) and got ``kind`` (``why``:
    what the summary says of it; ``cause``: what asked for a reset, kept in the JSON only);
    the run's summary and JSON report say how often and how long. Outside a test, nothing."""
    item = item or current_item()
    if item is None:
        return
    entry: dict[str, Any] = {"what": what, "kind": kind, "seconds": round(seconds, 4), "test": item.nodeid, "worker": worker}
    entry.update({k: v for k, v in (("why", why), ("cause", cause)) if v})
    attach(item, WAITS, entry)


def _secs(values: list[float], why: str = "") -> str:
    tail = f": {why}" if why else ""
    if len(values) == 1:
        return f"({values[0]:.2f} s{tail})"
    return f"(p50 {statistics.median(values):.2f} s, max {max(values):.2f} s{tail})"


def _wait_line(what: str, label: str, entries: list[dict[str, Any]]) -> str:
    parts = []
    for kind, words in WAIT_KINDS[what].items():
        got = [e for e in entries if e["kind"] == kind]
        if got:
            whys = sorted({str(e["why"]) for e in got if e.get("why")})
            parts.append(f"{len(got)} {words} {_secs([float(e['seconds']) for e in got], '; '.join(whys))}")
    return f"orch: {len(entries)} {label}: {', '.join(parts)}"


def _wait_lines(entries: list[dict[str, Any]]) -> list[str]:
    """One line per kind of wait; a worker handed out as it was is no wait worth a line."""
    lines = []
    for what, label in (("fresh_vm", "fresh_vm()"), ("reset", "resets"), ("handout", "workers handed out")):
        got = [e for e in entries if e.get("what") == what]
        if what == "handout" and all(e["kind"] == "ready" for e in got):
            continue
        if got:
            lines.append(_wait_line(what, label, got))
    return lines


section(WAITS, "how long tests waited for a VM", _wait_lines, prop=WAITS_PROPERTY)


@dataclass
class RunReport:
    """The controller's report: entries by section, printed and written at the end."""

    config: pytest.Config
    entries: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    path: Path | None = None

    def add(self, name: str, entry: dict[str, Any]) -> None:
        self.entries.setdefault(name, []).append(entry)

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "teardown":
            return  # user properties are complete only on the teardown's report
        for key, value in report.user_properties:
            if key not in (PROPERTY, WAITS_PROPERTY):
                continue
            for name, entries in json.loads(str(value)).items():
                self.entries.setdefault(name, []).extend(entries)

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        for sec in SECTIONS.values():
            entries = self.entries.get(sec.name, [])
            lines = sec.lines(entries) if entries else []
            if not lines:
                continue
            terminalreporter.write_sep("=", f"orch: {sec.title}")
            for line in lines:
                terminalreporter.write_line(line)
        if self.path is not None and self.entries:
            terminalreporter.write_line(f"orch: the run's report: {self.path}")

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """Written before the terminal summary (which names the file); sections that add
        entries at the session's end do so in a ``tryfirst`` ``pytest_sessionfinish``."""
        run = session.config.stash.get(RUN_KEY, None)
        if run is not None and run.held is not None:
            self.write(run.settings.inventory_dir / ".orch" / "reports", run.run_id)

    def write(self, folder: Path, run: str) -> Path | None:
        """Write the report (atomically) as ``<folder>/<run>.json``; None when there is
        nothing to say or the folder cannot be written (logged)."""
        if not self.entries:
            return None
        data = {"run": run, **{name: self.entries.get(name, []) for name in sorted(self.entries)}}
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{run}.", suffix=".tmp")
            with os.fdopen(fd, "w") as out:
                json.dump(data, out, indent=2, sort_keys=True)
                out.write("\n")
            os.replace(tmp, folder / f"{run}.json")
        except OSError as err:
            log.warning("orch: could not write the run's report in %s: %s", folder, err)
            return None
        self.path = folder / f"{run}.json"
        return self.path
