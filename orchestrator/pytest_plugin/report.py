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
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from orchestrator.pytest_plugin.run import RUN_KEY

log = logging.getLogger(__name__)

#: The user property a test's report carries orch's findings under.
PROPERTY = "orch"
REPORT_KEY = pytest.StashKey["RunReport"]()


@dataclass(frozen=True)
class Section:
    """One part of the report: its name (a key of the JSON file), and what it prints in
    the terminal summary given its entries (nothing when it has none)."""

    name: str
    title: str
    lines: Callable[[list[dict[str, Any]]], list[str]]


SECTIONS: dict[str, Section] = {}


def section(name: str, title: str, lines: Callable[[list[dict[str, Any]]], list[str]]) -> Section:
    """Declare a section (once, at import)."""
    SECTIONS[name] = Section(name, title, lines)
    return SECTIONS[name]


def attach(item: pytest.Item, name: str, entry: dict[str, Any]) -> None:
    """On the worker side, during the test's protocol (at the latest in its teardown hook):
    add ``entry`` to section ``name`` of the run's report, through the test's report."""
    for i, (key, value) in enumerate(item.user_properties):
        if key == PROPERTY:
            found = json.loads(str(value))
            found.setdefault(name, []).append(entry)
            item.user_properties[i] = (PROPERTY, json.dumps(found, sort_keys=True))
            return
    item.user_properties.append((PROPERTY, json.dumps({name: [entry]}, sort_keys=True)))


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
            if key != PROPERTY:
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
