"""Worker ids, checkout ids and VM names: what a user types or sees in `docker ps`."""

from __future__ import annotations

import multiprocessing
import os
import re
from pathlib import Path

import pytest

from orchestrator.primitives import naming
from orchestrator.primitives.errors import UsageError

CHECKOUT = "1a2b3c4d"


# -- worker ids ---------------------------------------------------------------------


@pytest.mark.parametrize("worker", ["gw0", "gw1", "gw9", "gw10", "gw99", "gw100", "gw255"])
def test_validate_worker_id_accepts_xdist_ids(worker: str) -> None:
    assert naming.validate_worker_id(worker) == worker


@pytest.mark.parametrize(
    "worker",
    [
        "gw256",
        "gw1000",
        "gw01",
        "gw00",
        "gw",
        "",
        " gw1",
        "gw1 ",
        "gw-1",
        "gw1.5",
        "../x",
        "gw1/../../etc",
        "gw1;rm -rf /",
        "$(id)",
        "`id`",
        "GW1",
        "Gw1",
        "gw１",  # a full-width digit: int() would accept it
        None,
        1,
        b"gw1",
    ],
)
def test_validate_worker_id_rejects_with_the_valid_range(worker: object) -> None:
    with pytest.raises(UsageError) as exc:
        naming.validate_worker_id(worker)  # type: ignore[arg-type]
    message = str(exc.value)
    assert "gw0" in message and "gw255" in message
    assert "\n" not in message


def test_worker_id_error_quotes_what_was_typed() -> None:
    with pytest.raises(UsageError, match=re.escape("'gw1;rm -rf /'")):
        naming.validate_worker_id("gw1;rm -rf /")


def test_validate_worker_id_rejects_trailing_newline() -> None:
    with pytest.raises(UsageError):
        naming.validate_worker_id("gw1\n")


def test_worker_index_and_ids() -> None:
    assert naming.worker_index("gw42") == 42
    assert naming.worker_ids(3) == ["gw0", "gw1", "gw2"]
    assert naming.worker_ids(256)[-1] == "gw255"


# -- worker counts ------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 2, 255, 256])
def test_validate_worker_count_accepts(count: int) -> None:
    assert naming.validate_worker_count(count) == count


@pytest.mark.parametrize("count", [0, -1, 257, 10000, True, False, 2.0, "2", None])
def test_validate_worker_count_rejects(count: object) -> None:
    with pytest.raises(UsageError) as exc:
        naming.validate_worker_count(count)  # type: ignore[arg-type]
    message = str(exc.value)
    assert "--workers" in message and "1" in message and "256" in message
    assert repr(count) in message


# -- prefixes -----------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["orch", "a", "ci2", "x" * 16, "myproj"])
def test_validate_prefix_accepts(prefix: str) -> None:
    assert naming.validate_prefix(prefix) == prefix


@pytest.mark.parametrize(
    "prefix", ["", "Orch", "1orch", "or-ch", "or_ch", "x" * 17, "orch ", " orch", "../x", "$(id)", "orch;ls", None, 3]
)
def test_validate_prefix_rejects(prefix: object) -> None:
    with pytest.raises(UsageError, match="invalid prefix"):
        naming.validate_prefix(prefix)  # type: ignore[arg-type]


def test_validate_prefix_rejects_trailing_newline() -> None:
    with pytest.raises(UsageError):
        naming.validate_prefix("orch\n")


# -- checkout ids -------------------------------------------------------------------


def test_checkout_id_is_eight_hex_chars(tmp_path: Path) -> None:
    cid = naming.checkout_id(tmp_path / "inventories")
    assert re.fullmatch(r"[0-9a-f]{8}", cid)
    assert naming.validate_checkout_id(cid) == cid


def test_checkout_id_is_stable_for_the_same_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inv = tmp_path / "inventories"
    inv.mkdir()
    first = naming.checkout_id(inv)
    assert naming.checkout_id(inv) == first
    assert naming.checkout_id(Path(str(inv) + "/")) == first
    assert naming.checkout_id(inv / "." / "sub" / "..") == first
    monkeypatch.chdir(tmp_path)
    assert naming.checkout_id(Path("inventories")) == first  # relative or absolute: one checkout


def test_checkout_id_differs_between_two_folders(tmp_path: Path) -> None:
    a, b = tmp_path / "clone-a" / "inventories", tmp_path / "clone-b" / "inventories"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    assert naming.checkout_id(a) != naming.checkout_id(b)


def test_checkout_id_same_through_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    assert naming.checkout_id(link) == naming.checkout_id(real)


@pytest.mark.parametrize("bad", ["", "1a2b3c4", "1a2b3c4d5", "1A2B3C4D", "zzzzzzzz", "../../x"])
def test_validate_checkout_id_rejects(bad: str) -> None:
    with pytest.raises(UsageError):
        naming.validate_checkout_id(bad)


# -- worker VM names ----------------------------------------------------------------


def test_worker_vm_name_format() -> None:
    assert naming.worker_vm_name("orch", CHECKOUT, "gw0") == f"orch-{CHECKOUT}-gw0"
    assert naming.worker_vm_name("ci", CHECKOUT, "gw255") == f"ci-{CHECKOUT}-gw255"


def test_worker_vm_name_is_stable_and_per_checkout(tmp_path: Path) -> None:
    a = naming.checkout_id(tmp_path / "a")
    b = naming.checkout_id(tmp_path / "b")
    assert naming.worker_vm_name("orch", a, "gw1") == naming.worker_vm_name("orch", a, "gw1")
    assert naming.worker_vm_name("orch", a, "gw1") != naming.worker_vm_name("orch", b, "gw1")


@pytest.mark.parametrize(
    "prefix, checkout, worker",
    [("Orch", CHECKOUT, "gw0"), ("orch", "nothex!!", "gw0"), ("orch", CHECKOUT, "gw256"), ("orch", CHECKOUT, "../x")],
)
def test_worker_vm_name_refuses_invalid_parts(prefix: str, checkout: str, worker: str) -> None:
    with pytest.raises(UsageError):
        naming.worker_vm_name(prefix, checkout, worker)


def test_worker_vm_name_parses_back() -> None:
    name = naming.worker_vm_name("orch", CHECKOUT, "gw17")
    assert naming.parse_vm_name("orch", name) == (CHECKOUT, "gw17")


# -- one-off VM names ---------------------------------------------------------------


def test_oneoff_vm_name_parses_back() -> None:
    name = naming.oneoff_vm_name("orch", CHECKOUT)
    parsed = naming.parse_vm_name("orch", name)
    assert parsed is not None
    checkout, suffix = parsed
    assert checkout == CHECKOUT
    assert suffix.startswith("x") and f"-{os.getpid()}-" in suffix
    assert name == f"orch-{CHECKOUT}-{suffix}"


def test_oneoff_vm_name_fits_in_a_hostname(monkeypatch: pytest.MonkeyPatch) -> None:
    # Containers get the VM name as their hostname: at most 63 characters, even with the
    # longest prefix and the largest pid Linux hands out.
    monkeypatch.setattr(naming.os, "getpid", lambda: 4194304)
    name = naming.oneoff_vm_name("x" * 16, CHECKOUT)
    assert len(name) <= 63
    assert naming.parse_vm_name("x" * 16, name) is not None


def test_oneoff_vm_name_refuses_invalid_prefix() -> None:
    with pytest.raises(UsageError):
        naming.oneoff_vm_name("../x", CHECKOUT)


def _make_names(count: int, start, out) -> None:  # runs in a child process
    start.wait(30)
    out.put((os.getpid(), [naming.oneoff_vm_name("orch", CHECKOUT) for _ in range(count)]))


def test_oneoff_vm_names_from_several_processes_never_collide() -> None:
    processes, per_process = 4, 5000
    ctx = multiprocessing.get_context()
    start = ctx.Barrier(processes)
    out = ctx.Queue()
    children = [ctx.Process(target=_make_names, args=(per_process, start, out)) for _ in range(processes)]
    for child in children:
        child.start()
    results = [out.get(timeout=60) for _ in children]
    for child in children:
        child.join(30)
        assert child.exitcode == 0
    pids = {pid for pid, _ in results}
    names = [name for _, batch in results for name in batch]
    assert len(pids) == processes
    assert len(names) == processes * per_process
    assert len(set(names)) == len(names), "duplicate one-off VM names"
    assert all(naming.parse_vm_name("orch", n) is not None for n in names)


# -- parsing names ------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "orchestra-db",
        "gw0",
        "orch-gw0",
        "orch",
        "orch-",
        f"orch-{CHECKOUT}",
        f"orch-{CHECKOUT}-",
        f"orch-{CHECKOUT}-db",
        f"orch-{CHECKOUT}-gw0-extra",
        f"orch-{CHECKOUT.upper()}-gw0",
        f"orch-{CHECKOUT[:7]}-gw0",
        f"other-{CHECKOUT}-gw0",
        f"orchx-{CHECKOUT}-gw0",
        f"xorch-{CHECKOUT}-gw0",
        f"/orch-{CHECKOUT}-gw0",
        f"orch-{CHECKOUT}-x2024-1-abc",
        "",
    ],
)
def test_parse_vm_name_ignores_foreign_names(name: str) -> None:
    assert naming.parse_vm_name("orch", name) is None


def test_parse_vm_name_only_matches_its_own_prefix() -> None:
    name = naming.worker_vm_name("ci", CHECKOUT, "gw0")
    assert naming.parse_vm_name("ci", name) == (CHECKOUT, "gw0")
    assert naming.parse_vm_name("orch", name) is None
    assert naming.parse_vm_name("c", name) is None


def test_parse_vm_name_rejects_trailing_newline() -> None:
    assert naming.parse_vm_name("orch", f"orch-{CHECKOUT}-gw0\n") is None
