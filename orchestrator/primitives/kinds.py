"""The kinds of VM orch makes, and what each kind is on the backend and in the state.

A kind's value is what the ``orch.kind`` label and the state file say; VMs and state files
made by an older orch carry these words, so a value never changes. Each kind keeps with
it what the rest of orch reads off it:

- ``suffix``: the form of its VM names after ``<prefix>-<checkout>-`` (a regular
  expression); ``naming`` makes and parses names of these forms;
- ``records``: the field of the state (``StateData``) that records its VMs: a table keyed
  by worker id (``per_worker``) or by VM name, a single record, or a list of names;
- ``seen_as``: for a kind whose VMs carry another kind's name and labels (trash: a
  worker's old VM swapped out under a standby's form of name), that other kind, which is
  all a name and labels can tell;
- ``of_worker``: its names carry a worker id (``<worker>-…``), which its labels must
  name too: every per-worker kind, and kept VMs (recorded by name, several per worker).

A kept VM (``pytest --orch-keep-failed``) is a failing test's worker VM renamed out of
its worker's name, as it was at the failure: its own form of name (the worker, the
time it was kept, a random part), so a lost state never mistakes it for anything else,
but the labels of what it was made as (a worker, or the standby swapped in under the
worker's name), since Docker cannot relabel a container. Ownership accepts those labels
under a kept name, never a kept VM's labels under another kind's name.

A one-off is one kind whether pooled or claimed: both have the same form of name, the
``oneoff`` label and a record in ``oneoffs``. A pooled one-off's record says ``pool`` (and
no run), and it has no ``orch.run`` label; claiming it changes only its record.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

#: A worker id, as pytest-xdist names its workers: ``gw0`` … (the range is checked in ``naming``).
WORKER_ID = r"gw(?:0|[1-9][0-9]{0,2})"

#: The word results and ``orch status`` show, in place of a worker id, for a one-off of the
#: warm pool that no run has claimed yet.
POOL = "pool"


@dataclass(frozen=True)
class Form:
    """What one kind is on the backend and in the state."""

    records: str
    suffix: str = ""
    per_worker: bool = False
    seen_as: str = ""
    of_worker: bool | None = None  # None: as per_worker


class Kind(str, Enum):
    """A kind of VM orch makes (its value: the ``orch.kind`` label, the word in the state)."""

    WORKER = "worker"
    STANDBY = "standby"
    ONEOFF = "oneoff"
    BASELINE = "baseline"
    TRASH = "trash"
    KEPT = "kept"

    # plain words wherever a kind is printed or formatted, as with enum.StrEnum (3.11+)
    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @property
    def form(self) -> Form:
        return _FORMS[self]

    @property
    def records(self) -> str:
        """The field of ``StateData`` that records VMs of this kind."""
        return self.form.records

    @property
    def per_worker(self) -> bool:
        """Its VMs are named after a worker id, and recorded by it."""
        return self.form.per_worker

    @property
    def of_worker(self) -> bool:
        """Its VM names begin with a worker id (``gw1-…``), which its labels must name too."""
        return self.per_worker if self.form.of_worker is None else self.form.of_worker

    @property
    def seen_as(self) -> Kind:
        """The kind a VM of this kind's name and labels show (itself, for most kinds)."""
        return Kind(self.form.seen_as) if self.form.seen_as else self

    @property
    def suffix(self) -> str:
        """The regular expression of its VM names after ``<prefix>-<checkout>-``."""
        return self.form.suffix or self.seen_as.form.suffix

    @property
    def made(self) -> bool:
        """Its VMs have a form of name of their own (trash's is a standby's). Most are made
        as this kind, named and labelled so; a kept VM is renamed into its form, and keeps
        the labels of what it was made as."""
        return not self.form.seen_as

    @classmethod
    def of_suffix(cls, suffix: str) -> Kind | None:
        """The kind a parsed VM name's suffix shows; None if it has no kind's form."""
        for kind in cls:
            if kind.made and re.fullmatch(kind.suffix, suffix):
                return kind
        return None

    @classmethod
    def suffixes(cls) -> str:
        """One regular expression matching the suffix of every kind's VM names."""
        return "|".join(f"(?:{k.suffix})" for k in cls if k.made)


_FORMS: dict[Kind, Form] = {
    Kind.WORKER: Form("workers", WORKER_ID, per_worker=True),
    Kind.STANDBY: Form("standbys", rf"{WORKER_ID}-s[0-9a-f]{{8}}", per_worker=True),
    Kind.ONEOFF: Form("oneoffs", r"x[0-9]{14}-[0-9]+-[0-9a-f]{12}"),
    Kind.BASELINE: Form("baseline", r"zbaseline-[0-9a-f]{8}"),
    Kind.TRASH: Form("trash", per_worker=True, seen_as=Kind.STANDBY.value),
    Kind.KEPT: Form("kept", rf"{WORKER_ID}-kept-[0-9]{{14}}-[0-9a-f]{{4}}", of_worker=True),
}
