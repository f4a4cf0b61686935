"""The second Docker engine harness (scripts/engine2.sh, tests/engines.py): it is a separate
engine, reachable through its unix socket, with the docker CLI over ssh and with pyinfra's
@dockerssh connector; restarting it stops its containers and leaves the first engine alone;
stopping it leaves a first engine that still creates containers.

Every container a test makes (on either engine) carries the label ``orch.test-engine2=<token>``
and is removed afterwards. The tests that restart or stop the engine hold it exclusively (other
xdist workers' tests hold it shared), so they never pull it from under another test."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from engines import SecondEngine, ensure_second_engine, exclusive_use, shared_use, stop_second_engine

TAG = "orch.test-engine2"


def d1(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """docker against the FIRST engine."""
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def inspect(run, name: str) -> dict | None:
    proc = run("inspect", "--type", "container", name)
    return json.loads(proc.stdout)[0] if proc.returncode == 0 else None


@pytest.fixture
def token() -> str:
    return secrets.token_hex(4)


def d2(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """docker against the SECOND engine's socket, without needing it to be up (for cleanups)."""
    env = {**os.environ, "DOCKER_HOST": "unix:///run/orch-engine2/docker.sock"}
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, env=env)


@pytest.fixture
def cleanup(token: str):
    """The label for what this test makes; afterwards everything labelled with it is removed
    from both engines (the second may be gone by then: nothing left to remove there)."""
    yield f"{TAG}={token}"
    for run in (d1, d2):
        proc = run("ps", "-aq", "--filter", f"label={TAG}={token}")
        ids = proc.stdout.split() if proc.returncode == 0 else []
        if ids:
            run("rm", "-f", "-v", *ids)


@pytest.fixture
def engine2(second_engine: SecondEngine):
    """The second engine, running, and not restarted or stopped by anyone while the test runs
    (a test on another worker may have stopped it since the session started: start it again)."""
    with shared_use():
        yield ensure_second_engine()


@pytest.fixture
def engine2_alone(second_engine: SecondEngine):
    """The second engine, running, held exclusively: for tests that restart or stop it."""
    with exclusive_use():
        yield ensure_second_engine()


def test_unix_socket_creates_containers_from_the_base_image(
    engine2: SecondEngine, docker_engine: str, cleanup: str, token: str
) -> None:
    assert engine2.docker_host == "unix:///run/orch-engine2/docker.sock"
    # a different engine from the first one: its own name, containers and images
    assert engine2.docker("info", "--format", "{{.Name}}", check=True).stdout.strip() == "orch-engine2"
    assert d1("info", "--format", "{{.Name}}").stdout.strip() != "orch-engine2"
    name = f"e2test-{token}-unix"
    made = engine2.docker("run", "-d", "--pull", "never", "--name", name, "--label", cleanup, docker_engine, "sleep", "infinity")
    assert made.returncode == 0, made.stderr
    out = engine2.docker("exec", name, "cat", "/etc/debian_version", check=True).stdout
    assert out.strip().startswith("12")
    assert inspect(engine2.docker, name)["State"]["Running"]
    assert inspect(d1, name) is None  # not on the first engine


def test_bridge_lives_in_its_own_network_namespace(engine2: SecondEngine) -> None:
    subnet = engine2.docker("network", "inspect", "bridge", "--format", "{{(index .IPAM.Config 0).Subnet}}", check=True)
    assert subnet.stdout.strip() == "10.213.0.0/24"
    host_routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True, check=True).stdout
    assert "10.213." not in host_routes  # the second engine's bridge is not on the host
    assert d1("network", "inspect", "bridge", "--format", "{{(index .IPAM.Config 0).Subnet}}").stdout.strip() != "10.213.0.0/24"
    labels = inspect(d1, engine2.container)["Config"]["Labels"]
    assert labels["orch.test-infra"] == "engine2"
    assert not any(k.startswith("orch.") and k.endswith("managed-by") for k in labels)


def test_docker_cli_over_ssh(engine2: SecondEngine, docker_engine: str, cleanup: str, token: str) -> None:
    known = Path(engine2.known_hosts).read_text()
    assert engine2.ssh_url == f"ssh://root@127.0.0.1:{engine2.ssh_port}"
    assert engine2.docker("info", "--format", "{{.Name}}", via="ssh").stdout.strip() == "orch-engine2"
    name = f"e2test-{token}-ssh"
    made = engine2.docker("run", "--pull", "never", "--name", name, "--label", cleanup, docker_engine, "true", via="ssh")
    assert made.returncode == 0, made.stderr
    # created on the second engine, seen through its socket too
    assert inspect(engine2.docker, name)["State"]["ExitCode"] == 0
    # plain ssh with the key and known_hosts: strict host key checking, no prompt
    proc = subprocess.run(
        engine2.ssh_argv("docker", "ps", "-a", "--format", "{{.Names}}"),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    assert name in proc.stdout.split()
    assert Path(engine2.known_hosts).read_text() == known  # nothing was accepted or added
    key_mode = Path(engine2.ssh_key).stat().st_mode & 0o777
    assert key_mode == 0o600


def test_pyinfra_dockerssh_runs_a_command_in_a_container_on_it(engine2: SecondEngine, docker_engine: str, tmp_path: Path) -> None:
    """@dockerssh/HOST:IMAGE ssh-es to HOST, runs `docker run -d IMAGE tail -f /dev/null` there
    (an unnamed container), runs commands with `docker exec`, and on disconnect commits the
    container to an untagged image and removes the container."""
    known = Path(engine2.known_hosts).read_text()
    host = f"@dockerssh/{engine2.ssh_host}:{docker_engine}"
    (tmp_path / "inventory.py").write_text(f"hosts = [({host!r}, {engine2.pyinfra_host_data()!r})]\n")
    images_before = set(engine2.docker("images", "-aq", "--no-trunc", check=True).stdout.split())
    committed: list[str] = []
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pyinfra",
                "-y",
                "inventory.py",
                "exec",
                "--",
                "echo ID=$(cat /etc/hostname); test -f /.dockerenv && echo in-docker-$((6*7))",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )
        committed = [
            i for i in engine2.docker("images", "-aq", "--no-trunc", check=True).stdout.split() if i not in images_before
        ]
        assert proc.returncode == 0, proc.stdout + proc.stderr
        output = proc.stdout + proc.stderr
        assert "in-docker-42" in output  # (the command line, also in the output, says $((6*7)))
        container_id = re.search(r"ID=([0-9a-f]{12})\b", output).group(1)
        # the container ran on the second engine: the image committed on disconnect comes from it
        assert len(committed) == 1, committed
        origin = engine2.docker("image", "inspect", "-f", "{{.Container}}", committed[0], check=True).stdout.strip()
        assert origin.startswith(container_id)
        # ... and was removed on disconnect
        assert inspect(engine2.docker, container_id) is None
        assert Path(engine2.known_hosts).read_text() == known  # strict checking, nothing added
    finally:
        for image in committed:
            engine2.docker("rmi", "-f", image)


def test_restart_engine_stops_its_containers_and_leaves_the_first_engine_alone(
    engine2_alone: SecondEngine, docker_engine: str, cleanup: str, token: str
) -> None:
    e2 = engine2_alone
    plain, always, first = f"e2test-{token}-plain", f"e2test-{token}-always", f"e2test-{token}-first"
    for args in (["--name", plain], ["--name", always, "--restart", "always"]):
        made = e2.docker("run", "-d", "--init", "--pull", "never", "--label", cleanup, *args, docker_engine, "sleep", "infinity")
        assert made.returncode == 0, made.stderr
    made = d1("run", "-d", "--init", "--pull", "never", "--label", cleanup, "--name", first, docker_engine, "sleep", "infinity")
    assert made.returncode == 0, made.stderr
    before = inspect(d1, first)
    engine_before = inspect(d1, e2.container)

    e2.restart_engine()

    # like a reboot of the engine's host: containers stopped unless their restart policy says otherwise
    state = inspect(e2.docker, plain)["State"]
    assert not state["Running"] and state["Status"] == "exited"
    assert inspect(e2.docker, always)["State"]["Running"]
    # the same engine (data kept), still reachable over ssh, still with the base image
    assert e2.docker("image", "inspect", docker_engine).returncode == 0
    assert e2.docker("ps", "-aq", via="ssh").returncode == 0
    assert inspect(d1, e2.container)["Id"] == engine_before["Id"]
    # the first engine: untouched, its container never restarted, and it still creates containers
    after = inspect(d1, first)
    assert after["State"]["Running"] and after["State"]["StartedAt"] == before["State"]["StartedAt"]
    assert d1("run", "--rm", "--pull", "never", "--label", cleanup, docker_engine, "true").returncode == 0


def test_stop_removes_everything_and_the_first_engine_still_creates_containers(
    engine2_alone: SecondEngine, docker_engine: str, cleanup: str, token: str
) -> None:
    e2 = engine2_alone
    inner = f"e2test-{token}-inner"
    assert e2.docker("create", "--pull", "never", "--label", cleanup, "--name", inner, docker_engine).returncode == 0
    first = f"e2test-{token}-first"
    assert (
        d1(
            "run", "-d", "--init", "--pull", "never", "--label", cleanup, "--name", first, docker_engine, "sleep", "infinity"
        ).returncode
        == 0
    )
    started = inspect(d1, first)["State"]["StartedAt"]

    stop_second_engine()  # raises unless the first engine still creates containers afterwards

    assert inspect(d1, e2.container) is None
    assert d1("volume", "inspect", "orch-engine2-data").returncode != 0
    assert not Path("/run/orch-engine2").exists()
    proc = subprocess.run(["bash", str(e2.script), "status"], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    # the first engine: its container still running, and it creates new ones
    state = inspect(d1, first)["State"]
    assert state["Running"] and state["StartedAt"] == started
    probe = d1("run", "--rm", "--pull", "never", "--label", cleanup, docker_engine, "echo", "alive")
    assert probe.returncode == 0 and probe.stdout.strip() == "alive", probe.stderr
