"""Every kind of VM round-trips through naming, labels, ownership and the state store.

A new Kind fails here until it has a name form (MAKERS), a record (RECORDS) and is judged
for what it is: the table below is what adding a kind asks of these layers."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

import pytest

from orchestrator.core.ownership import identify, owned
from orchestrator.primitives import labels as L
from orchestrator.primitives import naming
from orchestrator.primitives.kinds import Kind
from orchestrator.primitives.labels import Owner
from orchestrator.providers.base import VMInfo
from orchestrator.state.records import (
    READY,
    BaselineRecord,
    KeptRecord,
    OneoffRecord,
    Record,
    StandbyRecord,
    StateData,
    WorkerRecord,
)
from orchestrator.state.store import StateStore

PREFIX, CHECKOUT, WORKER, FP = "orch", "0badc0de", "gw3", "0123456789abcdef"

#: How orch names a VM of each kind (trash: the name a swap renames a worker's old VM to).
MAKERS: dict[Kind, Callable[[], str]] = {
    Kind.WORKER: lambda: naming.worker_vm_name(PREFIX, CHECKOUT, WORKER),
    Kind.STANDBY: lambda: naming.standby_vm_name(PREFIX, CHECKOUT, WORKER),
    Kind.ONEOFF: lambda: naming.oneoff_vm_name(PREFIX, CHECKOUT),
    Kind.BASELINE: lambda: naming.baseline_vm_name(PREFIX, CHECKOUT, FP),
    Kind.TRASH: lambda: naming.standby_vm_name(PREFIX, CHECKOUT, WORKER),
    Kind.KEPT: lambda: naming.kept_vm_name(PREFIX, CHECKOUT, WORKER),
}

#: The record of a VM of each kind (None: the state keeps only its name).
RECORDS: dict[Kind, Callable[[str], Record | None]] = {
    Kind.WORKER: lambda vm: WorkerRecord(WORKER, vm),
    Kind.STANDBY: lambda vm: StandbyRecord(WORKER, vm),
    Kind.ONEOFF: lambda vm: OneoffRecord(vm, "run-1"),
    Kind.BASELINE: lambda vm: BaselineRecord(vm, FP),
    Kind.TRASH: lambda vm: None,
    Kind.KEPT: lambda vm: KeptRecord(vm, WORKER, "t.py::test_x", "run-1"),
}

KINDS = list(Kind)


#: Kinds whose VMs are renamed into their name, carrying the labels of what they were made as.
RENAMED_INTO = {Kind.TRASH, Kind.KEPT}


def owner(kind: Kind) -> Owner:
    """The owner a VM of this kind is made with (trash, kept: the worker it was made as)."""
    made = Kind.WORKER if kind in RENAMED_INTO else kind
    return Owner(made, CHECKOUT, "/p/inventories", worker=WORKER if made.per_worker else "", fingerprint=FP)


def key(kind: Kind, vm: str) -> str:
    return WORKER if kind.per_worker else vm


def test_the_values_are_the_words_of_labels_and_state_files() -> None:
    """Old VMs' labels and old state files carry these words: they never change."""
    assert {k.value for k in Kind} == {"worker", "standby", "oneoff", "baseline", "trash", "kept"}
    assert {k.records for k in Kind} <= {f.name for f in fields(StateData)}
    assert (str(Kind.WORKER), f"{Kind.ONEOFF}", f"{Kind.BASELINE:>9}") == ("worker", "oneoff", " baseline")
    assert json.dumps({"kind": Kind.STANDBY}) == '{"kind": "standby"}'


@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_a_name_made_for_a_kind_is_judged_of_that_kind(kind: Kind) -> None:
    name = MAKERS[kind]()
    parsed = naming.parse_vm_name(PREFIX, name)
    assert parsed is not None and parsed[0] == CHECKOUT
    assert naming.kind_of(parsed[1]) is kind.seen_as
    assert naming.worker_of(parsed[1]) == (WORKER if kind.of_worker else "")
    for has_labels in (True, False):
        found, why = identify(VMInfo(name, "running", owner(kind).labels()), PREFIX, has_labels)
        assert found is not None, why
        assert (found.checkout, found.kind, found.worker) == (CHECKOUT, kind.seen_as, WORKER if kind.of_worker else "")
        assert owned(VMInfo(name, "running", owner(kind).labels()), PREFIX, has_labels, CHECKOUT)


@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_labels_say_the_kind_a_vm_was_made_as(kind: Kind) -> None:
    labels = owner(kind).labels()
    assert labels[L.KIND] == (Kind.WORKER.value if kind in RENAMED_INTO else kind.value)
    assert L.kind(labels) is (Kind.WORKER if kind in RENAMED_INTO else kind)
    assert type(labels[L.KIND]) is str  # a plain word, whatever the backend does with it


@pytest.mark.parametrize("kind", [k for k in KINDS if k.made], ids=str)
def test_labels_of_another_kind_under_its_name_are_not_orchs(kind: Kind) -> None:
    """Only a swap's renames put one kind's labels under another's name."""
    name = MAKERS[kind]()
    compatible = {Kind.WORKER: {Kind.STANDBY}, Kind.STANDBY: {Kind.WORKER}, Kind.KEPT: {Kind.WORKER, Kind.STANDBY}}
    compatible = compatible.get(kind, set())
    for other in (k for k in KINDS if k.made and k is not kind):
        labels = {**owner(kind).labels(), L.KIND: other.value}
        found, why = identify(VMInfo(name, "running", labels), PREFIX, True)
        if other in compatible:
            assert found is not None and found.kind is kind
        else:
            assert found is None and f"labels say {other}, the name says {kind}" in why


@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_the_store_updates_a_record_of_each_kind(tmp_path: Path, kind: Kind) -> None:
    store = StateStore(tmp_path, CHECKOUT)
    name = MAKERS[kind]()
    rec = RECORDS[kind](name)
    with store.transaction() as data:
        held = getattr(data, kind.records)
        if rec is None:
            held.append(name)
        elif isinstance(held, dict):
            held[key(kind, name)] = rec
        else:
            setattr(data, kind.records, rec)
    if rec is None:
        with pytest.raises(TypeError):
            store.update(kind, name, vm=name, phase=READY)
        assert store.read().trash == [name]
        return
    assert store.update(kind, key(kind, name), vm=name, phase=READY, fingerprint="f2") is not None
    back = store.read().record(kind, key(kind, name))
    assert back is not None and (back.vm, back.phase, back.fingerprint) == (name, READY, "f2")
    assert store.update(kind, key(kind, name), vm=f"{name}-other", phase="failed") is None
    assert store.read().record(kind, key(kind, name)) == back


def test_an_owner_given_a_kinds_word_has_that_kind() -> None:
    """Code outside orch's core (a provider, a test helper) may name a kind by its word."""
    from orchestrator.primitives.labels import Owner

    assert Owner("worker", "0badc0de", "/x/inventories", worker="gw0").labels()["orch.kind"] == "worker"
    with pytest.raises(ValueError):
        Owner("workr", "0badc0de", "/x/inventories")


def test_a_kept_vm_is_named_after_its_worker_and_the_time_it_was_kept() -> None:
    """Its labels say when its worker was made: its name says when it was kept (what
    sweep's --older-than judges), and two keeps of one worker in a second differ."""
    name = naming.kept_vm_name(PREFIX, CHECKOUT, WORKER, now=1767225600.0)  # 2026-01-01 00:00:00 UTC
    assert name.startswith(f"{PREFIX}-{CHECKOUT}-{WORKER}-kept-20260101000000-")
    parsed = naming.parse_vm_name(PREFIX, name)
    assert parsed is not None and naming.kind_of(parsed[1]) is Kind.KEPT
    assert naming.kept_at(parsed[1]) == "2026-01-01T00:00:00Z"
    assert naming.kept_at(WORKER) == ""
    assert len({naming.kept_vm_name(PREFIX, CHECKOUT, WORKER, now=1767225600.0) for _ in range(20)}) > 1
    assert len(naming.kept_vm_name("p" * 16, CHECKOUT, "gw255")) <= 63  # a host name (Incus, OrbStack)


def test_a_kept_name_with_another_workers_labels_or_a_kept_label_elsewhere_is_not_orchs() -> None:
    kept = naming.kept_vm_name(PREFIX, CHECKOUT, WORKER)
    labels = {**owner(Kind.WORKER).labels(), L.WORKER: "gw4"}
    found, why = identify(VMInfo(kept, "running", labels), PREFIX, True)
    assert found is None and "labels say worker gw4" in why
    worker = naming.worker_vm_name(PREFIX, CHECKOUT, WORKER)
    found, why = identify(VMInfo(worker, "running", {**owner(Kind.WORKER).labels(), L.KIND: "kept"}), PREFIX, True)
    assert found is None and "labels say kept, the name says worker" in why
