"""Generated pyinfra inventories: what `orch up` writes and `pyinfra inventories/gw1.py` reads."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.primitives.errors import StateError, UsageError
from orchestrator.state import inventory
from orchestrator.state.inventory import InventoryHost

CHECKOUT = "1a2b3c4d"


def host(i: int, **extra: object) -> InventoryHost:
    vm = f"orch-{CHECKOUT}-gw{i}"
    return InventoryHost(
        f"@docker/{vm}",
        {"orch_worker_id": f"gw{i}", "orch_vm": vm, "orch_provider": "docker", "orch_checkout": CHECKOUT, **extra},
    )


@pytest.fixture
def hosts() -> list[InventoryHost]:
    return [host(0), host(1), host(2)]


@pytest.fixture
def inv(tmp_path: Path) -> Path:
    folder = tmp_path / "inventories"
    folder.mkdir()
    return folder


def load_with_pyinfra(path: Path) -> list[dict]:
    """The hosts as `pyinfra PATH debug-inventory --json` shows them: pyinfra's own CLI
    and loader, in a subprocess (importing pyinfra_cli here would gevent-patch this pytest
    process). It only reads the inventory: no container is contacted."""
    env = {**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    proc = subprocess.run(
        [sys.executable, "-m", "pyinfra", str(path), "debug-inventory", "--json"],
        capture_output=True,
        text=True,
        cwd=path.parent.parent,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


# -- render and parse ---------------------------------------------------------------


def test_render_then_parse_gives_back_the_hosts(hosts: list[InventoryHost]) -> None:
    text = inventory.render(hosts, title="all workers", checkout=CHECKOUT)
    assert inventory.parse(text) == hosts


def test_round_trip_keeps_data_of_every_literal_type() -> None:
    odd = host(
        3,
        note='it\'s "quoted"\nand multi-line',
        port=2222,
        ratio=0.5,
        enabled=False,
        nothing=None,
        args=["--privileged", "-e", "A=1"],
        nested={"a": [1, (2, 3)]},
    )
    assert inventory.parse(inventory.render([odd], title="worker gw3", checkout=CHECKOUT)) == [odd]


def test_render_of_no_hosts_parses_to_no_hosts() -> None:
    assert inventory.parse(inventory.render([], title="all workers", checkout=CHECKOUT)) == []


def test_rendered_file_says_it_is_generated_and_how_to_use_it(hosts: list[InventoryHost]) -> None:
    text = inventory.render(hosts[:1], title="worker gw0", checkout=CHECKOUT)
    first, *rest = text.splitlines()
    assert first.startswith(inventory.HEADER)
    assert CHECKOUT in first and "gw0" in first
    assert any("Do not edit" in line for line in rest)
    assert "pyinfra" in text and "exec" in text


def test_inventory_host_properties(hosts: list[InventoryHost]) -> None:
    assert hosts[1].worker == "gw1"
    assert hosts[1].vm == f"orch-{CHECKOUT}-gw1"


# -- pyinfra reads what orch writes -------------------------------------------------


def test_worker_file_loads_in_pyinfra_with_its_host_and_data(inv: Path, hosts: list[InventoryHost]) -> None:
    inventory.write_all(inv, hosts, CHECKOUT)
    [h] = load_with_pyinfra(inv / "gw1.py")
    vm = f"orch-{CHECKOUT}-gw1"
    assert h["name"] == f"@docker/{vm}"
    assert h["data"]["orch_worker_id"] == "gw1"
    assert h["data"]["orch_vm"] == vm
    assert h["data"]["orch_provider"] == "docker"
    assert h["data"]["orch_checkout"] == CHECKOUT
    assert h["data"]["docker_identifier"] == vm  # pyinfra's @docker connector reaches that container
    assert {inventory.GROUP, "gw1", "@docker"} <= set(h["groups"])


def test_all_workers_file_loads_in_pyinfra_in_worker_order(inv: Path, hosts: list[InventoryHost]) -> None:
    inventory.write_all(inv, hosts, CHECKOUT)
    loaded = load_with_pyinfra(inv / inventory.ALL_FILE)
    assert [h["name"] for h in loaded] == [h.name for h in hosts]
    assert [h["data"]["orch_worker_id"] for h in loaded] == ["gw0", "gw1", "gw2"]
    assert all({inventory.GROUP, "workers"} <= set(h["groups"]) for h in loaded)


# -- write_all ----------------------------------------------------------------------


def test_write_all_writes_one_file_per_worker_and_workers_py(inv: Path, hosts: list[InventoryHost]) -> None:
    written = inventory.write_all(inv, hosts, CHECKOUT)
    assert written == [inv / "gw0.py", inv / "gw1.py", inv / "gw2.py", inv / "workers.py"]
    assert sorted(p.name for p in inv.iterdir()) == ["gw0.py", "gw1.py", "gw2.py", "workers.py"]  # no temp files
    for h in hosts:
        assert inventory.parse((inv / f"{h.worker}.py").read_text()) == [h]
        assert inventory.read_worker(inv, h.worker) == h
    assert inventory.parse((inv / "workers.py").read_text()) == hosts


def test_write_all_again_is_identical(inv: Path, hosts: list[InventoryHost]) -> None:
    inventory.write_all(inv, hosts, CHECKOUT)
    before = {p.name: p.read_text() for p in inv.iterdir()}
    inventory.write_all(inv, hosts, CHECKOUT)
    assert {p.name: p.read_text() for p in inv.iterdir()} == before


def test_read_worker_of_a_missing_worker_is_none(inv: Path) -> None:
    assert inventory.read_worker(inv, "gw7") is None


def test_worker_path_refuses_bad_worker_ids(inv: Path) -> None:
    assert inventory.worker_path(inv, "gw3") == inv / "gw3.py"
    with pytest.raises(UsageError):
        inventory.worker_path(inv, "../gw3")


def test_write_all_removes_files_of_workers_that_are_gone(inv: Path, hosts: list[InventoryHost]) -> None:
    inventory.write_all(inv, hosts, CHECKOUT)
    inventory.write_all(inv, hosts[:1], CHECKOUT)
    assert sorted(p.name for p in inv.iterdir()) == ["gw0.py", "workers.py"]
    assert inventory.parse((inv / "workers.py").read_text()) == hosts[:1]
    assert inventory.read_worker(inv, "gw2") is None


def test_write_all_with_no_hosts_removes_every_generated_file(inv: Path, hosts: list[InventoryHost]) -> None:
    inventory.write_all(inv, hosts, CHECKOUT)
    assert inventory.write_all(inv, [], CHECKOUT) == []
    assert list(inv.iterdir()) == []


USER_FILES = {
    "gw5.py": "# my own inventory for a lab box\ngw5 = ['10.0.0.5']\n",
    "gw1-old.py": "hosts = ['old']\n",
    "gwlab.py": "lab = ['lab.example']\n",
    "production.py": "web = ['web1.example']\n",
    "gw7.py": f"# hand-written, mentions {inventory.HEADER} on line 1 only after this text\nx = []\n",
    "gw8.py": f"\n{inventory.HEADER}: not on the first line\norch_workers = []\n",
    "notes.txt": "keep me\n",
}


def test_write_all_never_removes_a_user_file(inv: Path, hosts: list[InventoryHost]) -> None:
    for name, text in USER_FILES.items():
        (inv / name).write_text(text)
    (inv / "group_data").mkdir()
    (inv / "group_data" / "all.py").write_text("user = 'me'\n")
    inventory.write_all(inv, hosts, CHECKOUT)
    inventory.write_all(inv, hosts[:1], CHECKOUT)
    inventory.write_all(inv, [], CHECKOUT)
    for name, text in USER_FILES.items():
        assert (inv / name).read_text() == text, f"{name} was changed or removed"
    assert (inv / "group_data" / "all.py").read_text() == "user = 'me'\n"
    assert not (inv / "gw0.py").exists() and not (inv / "gw1.py").exists()


def test_write_all_never_removes_a_user_workers_py(inv: Path) -> None:
    mine = "# my own list of workers\nworkers = ['build1.example', 'build2.example']\n"
    (inv / "workers.py").write_text(mine)
    inventory.write_all(inv, [], CHECKOUT)
    assert (inv / "workers.py").read_text() == mine


def test_write_all_refuses_to_overwrite_a_user_workers_py(inv: Path, hosts: list[InventoryHost]) -> None:
    mine = "# my own list of workers\nworkers = ['build1.example']\n"
    (inv / "workers.py").write_text(mine)
    with pytest.raises(StateError, match="was not written by orch"):
        inventory.write_all(inv, hosts, CHECKOUT)
    assert (inv / "workers.py").read_text() == mine


def test_write_all_leaves_no_temp_file_when_a_write_fails(
    inv: Path, hosts: list[InventoryHost], monkeypatch: pytest.MonkeyPatch
) -> None:
    inventory.write_all(inv, hosts, CHECKOUT)
    before = {p.name: p.read_text() for p in inv.iterdir()}

    def disk_full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(inventory.os, "replace", disk_full)
    with pytest.raises(StateError, match="No space left on device"):
        inventory.write_all(inv, [host(0, changed=True)], CHECKOUT)
    monkeypatch.undo()
    assert {p.name: p.read_text() for p in inv.iterdir()} == before


# -- damaged files ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(None, id="truncated"),
        pytest.param("this is ((( not python\n", id="garbage"),
        pytest.param("", id="empty"),
        pytest.param("hosts = ['a']\n", id="no-group"),
        pytest.param(f"{inventory.GROUP} = [open('/etc/passwd').read()]\n", id="code-not-literal"),
        pytest.param(f"{inventory.GROUP} = 42\n", id="not-a-list"),
        pytest.param(f"{inventory.GROUP} = [1, 2]\n", id="not-tuples"),
        pytest.param(f"{inventory.GROUP} = [('@docker/x', {{}}, 'extra')]\n", id="triples"),
        pytest.param(f"{inventory.GROUP} = [('@docker/x', 'data')]\n", id="data-not-dict"),
    ],
)
def test_parse_of_a_damaged_file_raises_state_error(text: str | None, hosts: list[InventoryHost]) -> None:
    if text is None:
        full = inventory.render(hosts, title="all workers", checkout=CHECKOUT)
        text = full[: len(full) * 2 // 3]
    with pytest.raises(StateError) as exc:
        inventory.parse(text, "inventories/workers.py")
    message = str(exc.value)
    assert "inventories/workers.py" in message
    assert "orch up" in message


def test_parse_never_executes_the_file(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    text = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('x')\n{inventory.GROUP} = []\n"
    assert inventory.parse(text) == []
    assert not marker.exists()


def test_read_worker_of_a_damaged_file_names_the_file(inv: Path, hosts: list[InventoryHost]) -> None:
    inventory.write_all(inv, hosts, CHECKOUT)
    path = inv / "gw1.py"
    text = path.read_text()
    path.write_text(text[: text.index("orch_workers = [") + 30])
    with pytest.raises(StateError, match=re.escape(str(path))):
        inventory.read_worker(inv, "gw1")
