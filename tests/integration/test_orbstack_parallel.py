"""One deploy over several OrbStack machines runs its hosts' commands at once: the real
pyinfra-orbstack package, through orch's deployer and the orbstack provider's hook
(``watch_exit_codes``, which runs the package's ``orbctl run`` cooperatively under
pyinfra's gevent loop), against the orbctl emulator (tests/fakes/orbctl) on Docker.

Each test is an emulated OrbStack installation of its own (ORBCTL_FAKE_INSTANCE), its
machines removed afterwards."""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.providers import orbstack
from orchestrator.providers.orbstack import OrbStackProvider
from orchestrator.pyinfra.runner import PyinfraDeployer

FAKES = Path(__file__).resolve().parents[1] / "fakes"
SPAN = "/tmp/orch-span"


def _docker_out(*args: str) -> list[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True).stdout.split()


@pytest.fixture
def machines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, docker_engine: str) -> Iterator[list[str]]:
    """Three running machines of an emulated OrbStack of this test's own (the emulator
    first on PATH, where pyinfra-orbstack finds ``orbctl``)."""
    for key in list(os.environ):
        if key.startswith("ORBCTL_FAKE_"):
            monkeypatch.delenv(key)
    instance = f"tpar{secrets.token_hex(3)}"
    monkeypatch.setenv("PATH", f"{FAKES}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("ORBCTL_FAKE_STATE_DIR", str(tmp_path / "orbctl-state"))
    monkeypatch.setenv("ORBCTL_FAKE_INSTANCE", instance)
    names = [f"{instance}-m{i}" for i in range(3)]
    try:
        for name in names:
            made = subprocess.run(["orbctl", "create", "debian:bookworm", name], capture_output=True, text=True, timeout=120)
            assert made.returncode == 0, made.stderr
        yield names
    finally:
        ids = _docker_out("ps", "-a", "-q", "--filter", f"label=orbfake.instance={instance}")
        if ids:
            subprocess.run(["docker", "rm", "-f", "-v", *ids], capture_output=True)


def _hosts(names: list[str]) -> list[tuple[str, dict[str, Any]]]:
    return [(f"@orbstack/{name}", {"vm_name": name}) for name in names]


def _span(vm: str) -> tuple[float, float]:
    """When the deploy's command began and ended inside ``vm`` (the machine's clock)."""
    out = subprocess.run(["orbctl", "run", "-m", vm, "cat", SPAN], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    begin, end = out.stdout.split()
    return float(begin), float(end)


def stamp() -> None:
    from pyinfra.operations import server

    server.shell(name="stamp", commands=[f"b=$(date +%s.%N); sleep 2; echo $b $(date +%s.%N) > {SPAN}"])


def test_a_deploy_runs_its_hosts_commands_at_once(machines: list[str]) -> None:
    results = PyinfraDeployer(exit_codes=OrbStackProvider.watch_exit_codes).run(_hosts(machines), [stamp])
    assert {name: r.ok for name, r in results.items()} == {f"@orbstack/{vm}": True for vm in machines}, results
    spans = [_span(vm) for vm in machines]
    # one moment when every machine was running its command: the hosts did not wait for each other
    assert max(b for b, _ in spans) < min(e for _, e in spans), spans


def fail_on_first() -> None:
    from pyinfra import host
    from pyinfra.operations import server

    code = 7 if host.data.get("vm_name", "").endswith("-m0") else 0
    server.shell(name="maybe fail", commands=[f"echo out-$(hostname); echo err-$(hostname) >&2; exit {code}"])


def test_a_failing_command_still_fails_its_host_with_exit_code_and_output(machines: list[str]) -> None:
    results = PyinfraDeployer(exit_codes=OrbStackProvider.watch_exit_codes).run(_hosts(machines), [fail_on_first])
    failed, *others = machines
    error = results[f"@orbstack/{failed}"].error
    assert not results[f"@orbstack/{failed}"].ok
    assert "exited with code 7" in error and f"out-{failed}" in error and f"err-{failed}" in error, error
    assert all(results[f"@orbstack/{vm}"].ok for vm in others), results


class _Connector:
    """Not pyinfra-orbstack's: its ``_execute_with_retry`` runs nothing through subprocess."""

    def _execute_with_retry(self, cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(cmd, 5, "", "kept")


class _Host:
    def __init__(self) -> None:
        self.connector = _Connector()


def test_a_connector_not_as_expected_keeps_its_own_call_and_says_so_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(orbstack, "_unexpected", [])
    seen: list[int] = []
    hosts = [_Host(), _Host()]
    with caplog.at_level(logging.DEBUG, logger=orbstack.__name__):
        for h in hosts:
            OrbStackProvider.watch_exit_codes(h, seen.append)
            assert h.connector._execute_with_retry(["orbctl", "run", "true"]).stderr == "kept"
    assert seen == [5, 5]
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert "kept as it is" in caplog.records[0].message


def test_the_cooperative_run_off_the_main_thread_is_the_standard_librarys() -> None:
    done: list[subprocess.CompletedProcess[str]] = []
    thread = threading.Thread(
        target=lambda: done.append(orbstack._cooperative_run(["sh", "-c", "echo hi; exit 4"], capture_output=True, text=True))
    )
    thread.start()
    thread.join(30)
    assert [(d.returncode, d.stdout) for d in done] == [(4, "hi\n")]
    on_main = orbstack._cooperative_run(["sh", "-c", "echo hi >&2; exit 3"], capture_output=True, text=True)
    assert (type(on_main), on_main.returncode, on_main.stderr) == (subprocess.CompletedProcess, 3, "hi\n")
    with pytest.raises(subprocess.TimeoutExpired):
        orbstack._cooperative_run(["sleep", "5"], capture_output=True, text=True, timeout=0.2)
