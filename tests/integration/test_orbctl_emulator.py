"""tests/fakes/orbctl behaves as orbctl does where orch and pyinfra-orbstack depend on it."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from pathlib import Path

import pytest

FAKE = str(Path(__file__).resolve().parents[1] / "fakes" / "orbctl")


@pytest.fixture
def orbctl(tmp_path: Path):
    env = {**os.environ, "ORBCTL_FAKE_STATE_DIR": str(tmp_path / "state")}
    made: list[str] = []

    def call(*args: str, **extra: str) -> subprocess.CompletedProcess:
        if args and args[0] in ("create", "clone"):
            made.append(args[-1])
        return subprocess.run([FAKE, *args], capture_output=True, text=True, env={**env, **extra}, timeout=120)

    yield call
    for name in made:
        subprocess.run(["docker", "rm", "-f", f"orbfake-{name}"], capture_output=True)


def name() -> str:
    return f"emu-{secrets.token_hex(3)}"


def test_says_it_is_a_test_double() -> None:
    assert "TEST DOUBLE" in Path(FAKE).read_text()[:400]


def test_create_list_info_shapes(orbctl) -> None:
    vm = name()
    assert orbctl("create", "-a", "amd64", "ubuntu:22.04", vm).returncode == 0
    [rec] = [m for m in json.loads(orbctl("list", "-f", "json").stdout) if m["name"] == vm]
    assert rec["state"] == "running"
    assert rec["image"] == {"distro": "ubuntu", "version": "22.04", "arch": "amd64", "variant": "default"}
    assert "default_username" in rec["config"]
    info = json.loads(orbctl("info", vm, "--format", "json").stdout)
    assert info["record"]["name"] == vm and info["record"]["state"] == "running" and info["ip4"]


def test_errors_have_orbctls_texts_and_exit_codes(orbctl) -> None:
    vm = name()
    missing = orbctl("delete", "-f", vm)
    assert missing.returncode == 1 and missing.stderr.strip() == f"machine not found: {vm}"
    assert orbctl("info", vm, "-f", "json").returncode == 1
    assert orbctl("create", "debian", vm).returncode == 0
    again = orbctl("create", "debian", vm)
    assert again.returncode == 1 and "already exists" in again.stderr
    assert "unsupported distro" in orbctl("create", "windows", name()).stderr
    assert "invalid machine name" in orbctl("create", "debian", "bad_name!").stderr
    assert 'unknown command "frobnicate"' in orbctl("frobnicate").stderr


def test_clone_comes_back_stopped_and_start_gives_an_ip(orbctl) -> None:
    src, new = name(), name()
    orbctl("create", "debian", src)
    orbctl("run", "-m", src, "sh", "-c", "echo golden > /root/mark")
    assert orbctl("clone", src, new).returncode == 0
    info = json.loads(orbctl("info", new, "-f", "json").stdout)
    assert info["record"]["state"] == "stopped" and info["ip4"] == ""
    assert orbctl("start", new).returncode == 0
    info = json.loads(orbctl("info", new, "-f", "json").stdout)
    assert info["record"]["state"] == "running" and info["ip4"]
    assert orbctl("run", "-m", new, "cat", "/root/mark").stdout.strip() == "golden"


def test_run_passes_exit_code_streams_user_and_workdir(orbctl) -> None:
    vm = name()
    orbctl("create", "debian", vm)
    proc = orbctl("run", "-m", vm, "-w", "/tmp", "sh", "-c", "pwd; echo oops >&2; exit 7")
    assert proc.returncode == 7 and proc.stdout.strip() == "/tmp" and proc.stderr.strip() == "oops"
    assert orbctl("run", "-m", vm, "-u", "nobody", "id", "-un").stdout.strip() == "nobody"


def test_stop_without_a_name_stops_orbstack_itself(orbctl) -> None:
    vm = name()
    orbctl("create", "debian", vm)
    assert orbctl("stop").returncode == 0
    assert orbctl("status").stdout.strip() == "Stopped"
    down = orbctl("list", "-f", "json")
    assert down.returncode == 1 and "OrbStack is not running" in down.stderr
    assert orbctl("start").returncode == 0 and orbctl("status").stdout.strip() == "Running"
    assert json.loads(orbctl("info", vm, "-f", "json").stdout)["record"]["state"] == "stopped"


def test_failure_knob_fails_with_transient_texts(orbctl) -> None:
    vm = name()
    proc = orbctl("create", "debian", vm, ORBCTL_FAKE_FAIL_RATE="1", ORBCTL_FAKE_FAIL_COMMANDS="create")
    assert proc.returncode == 1
    assert proc.stderr.strip() in {"timed out waiting for machine to start", "machine didn't start", "missing IP address", "connection refused"}


def test_hang_knob_hangs(orbctl) -> None:
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run([FAKE, "start", "x"], env={**os.environ, "ORBCTL_FAKE_HANG": "start", "ORBCTL_FAKE_HANG_SECONDS": "30"}, timeout=1)


def test_latency_knob_scales(orbctl) -> None:
    import time

    vm = name()
    orbctl("create", "debian", vm)
    t = time.monotonic()
    orbctl("stop", vm, ORBCTL_FAKE_SCALE="0.5")  # stop: 3 s x 0.5
    assert time.monotonic() - t >= 1.5
