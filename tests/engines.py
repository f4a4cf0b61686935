"""The SECOND Docker engine for tests (scripts/engine2.sh): Docker-in-Docker in the container
``orch-engine2`` of the first engine, reached through a unix socket on the host or over ssh on
127.0.0.1. Tests get it from the session fixture ``second_engine`` (tests/conftest.py), which
calls :func:`ensure_second_engine`.

Several pytest-xdist workers share the one second engine. A test that disturbs it for everybody
(restarts or stops it) holds :func:`exclusive_use` around that; a test that needs it undisturbed
for a while holds :func:`shared_use`. Both are flock(2) locks, released by the OS when a worker
dies. Nothing here stops the engine: scripts/test.sh does that at the end of the run that
started it (or run ``scripts/engine2.sh stop``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock, Timeout

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "engine2.sh"
CONTAINER = "orch-engine2"
# Not the script's own lock (/run/lock/orch-engine2.lock): the script takes that one itself.
START_LOCK = Path(os.environ.get("ORCH_ENGINE2_PYTEST_LOCK", "/run/lock/orch-engine2.pytest.lock"))
USE_LOCK = START_LOCK.with_name("orch-engine2.users.lock")
START_TIMEOUT = float(os.environ.get("ORCH_ENGINE2_START_TIMEOUT", "900"))


class SecondEngineUnavailable(RuntimeError):
    """scripts/engine2.sh could not start (or reach) the second engine."""


@dataclass(frozen=True)
class SecondEngine:
    docker_host: str  # unix:///run/orch-engine2/docker.sock
    ssh_host: str  # 127.0.0.1
    ssh_port: int  # 2222 (ORCH_ENGINE2_SSH_PORT)
    ssh_user: str  # root
    ssh_key: str  # private key, mode 600
    known_hosts: str  # holds the engine's host key: strict checking works without prompting
    ssh_config: str  # Host/Port/User/IdentityFile/UserKnownHostsFile/BatchMode for OpenSSH
    ssh_bin: str  # folder with an `ssh` that reads ssh_config: put first on PATH for DOCKER_HOST=ssh://
    container: str = CONTAINER
    script: Path = field(default=SCRIPT, compare=False)

    @property
    def ssh_url(self) -> str:
        """DOCKER_HOST for the docker CLI over ssh (needs :meth:`docker_env` ``via="ssh"``)."""
        return f"ssh://{self.ssh_user}@{self.ssh_host}:{self.ssh_port}"

    def docker_env(self, via: str = "unix", base: dict[str, str] | None = None) -> dict[str, str]:
        """An environment whose ``docker`` talks to the second engine, through its unix socket
        (``via="unix"``) or over ssh (``via="ssh"``: DOCKER_HOST=ssh://… and, first on PATH, the
        ssh that uses the generated key and known_hosts; the docker CLI takes no ssh options)."""
        env = dict(os.environ if base is None else base)
        env.pop("DOCKER_CONTEXT", None)
        if via == "unix":
            env["DOCKER_HOST"] = self.docker_host
        elif via == "ssh":
            env["DOCKER_HOST"] = self.ssh_url
            env["PATH"] = f"{self.ssh_bin}{os.pathsep}{env.get('PATH', '')}"
        else:
            raise ValueError(f"via must be 'unix' or 'ssh', not {via!r}")
        return env

    def docker(self, *args: str, via: str = "unix", timeout: float = 120, check: bool = False) -> subprocess.CompletedProcess:
        """Run ``docker ARGS`` against the second engine."""
        return subprocess.run(
            ["docker", *args],
            env=self.docker_env(via),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
            stdin=subprocess.DEVNULL,
        )

    def ssh_argv(self, *command: str) -> list[str]:
        """argv of ssh to the engine's host (the DinD container), strict host key checking."""
        return [
            "ssh",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-i",
            self.ssh_key,
            "-p",
            str(self.ssh_port),
            f"{self.ssh_user}@{self.ssh_host}",
            *command,
        ]

    def pyinfra_host_data(self) -> dict:
        """Host data for pyinfra's ssh-based connectors (``@dockerssh/127.0.0.1:IMAGE``, ssh).
        Strict host key checking: pyinfra's default (accept-new) would write to known_hosts."""
        return {
            "ssh_port": self.ssh_port,
            "ssh_user": self.ssh_user,
            "ssh_key": self.ssh_key,
            "ssh_known_hosts_file": self.known_hosts,
            "ssh_strict_host_key_checking": "yes",
        }

    def restart_engine(self, timeout: float = 300) -> None:
        """Restart the second engine only (``docker restart orch-engine2``, like a reboot of its
        host): its dockerd stops its containers, which are then stopped (Exited) unless their
        restart policy starts them again. Returns once it answers again. Hold
        :func:`exclusive_use` around it when other workers may be using the engine."""
        proc = subprocess.run(
            ["bash", str(self.script), "restart-engine"],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if proc.returncode != 0:
            raise SecondEngineUnavailable(f"scripts/engine2.sh restart-engine failed:\n{proc.stderr.strip()}")


def parse_env(text: str) -> dict[str, str]:
    """``export NAME=value`` lines (scripts/engine2.sh env) as a dict."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("export ") and "=" in line:
            name, _, value = line[len("export ") :].partition("=")
            out[name] = value
    return out


def _script(*args: str, timeout: float) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as err:
        raise SecondEngineUnavailable(f"scripts/engine2.sh {' '.join(args)} timed out after {timeout:.0f}s") from err
    except OSError as err:
        raise SecondEngineUnavailable(f"cannot run scripts/engine2.sh: {err}") from err


def ensure_second_engine(timeout: float = START_TIMEOUT) -> SecondEngine:
    """Start the second engine unless it runs and answers (``scripts/engine2.sh start``:
    idempotent, under a second ago when it runs already) and describe how to reach it. Safe
    when several processes call it at once (a file lock serializes them)."""
    START_LOCK.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    try:
        with FileLock(str(START_LOCK), timeout=timeout):
            proc = _script("start", timeout=max(deadline - time.monotonic(), 1))
            if proc.returncode != 0:
                raise SecondEngineUnavailable(f"scripts/engine2.sh start failed:\n{proc.stderr.strip()}")
            env_proc = _script("env", timeout=60)
    except Timeout as err:
        raise SecondEngineUnavailable(f"waited {timeout:.0f}s for {START_LOCK} (another start still running?)") from err
    if env_proc.returncode != 0:
        raise SecondEngineUnavailable(f"scripts/engine2.sh env failed:\n{env_proc.stderr.strip()}")
    env = parse_env(env_proc.stdout)
    try:
        return SecondEngine(
            docker_host=env["ORCH_ENGINE2_DOCKER_HOST"],
            ssh_host=env["ORCH_ENGINE2_SSH_HOST"],
            ssh_port=int(env["ORCH_ENGINE2_SSH_PORT"]),
            ssh_user=env["ORCH_ENGINE2_SSH_USER"],
            ssh_key=env["ORCH_ENGINE2_SSH_KEY"],
            known_hosts=env["ORCH_ENGINE2_KNOWN_HOSTS"],
            ssh_config=env["ORCH_ENGINE2_SSH_CONFIG"],
            ssh_bin=env["ORCH_ENGINE2_SSH_BIN"],
            container=env.get("ORCH_ENGINE2_CONTAINER", CONTAINER),
        )
    except (KeyError, ValueError) as err:
        raise SecondEngineUnavailable(f"unexpected output of scripts/engine2.sh env: {env_proc.stdout!r}") from err


def stop_second_engine(timeout: float = 300) -> None:
    """``scripts/engine2.sh stop``: remove the engine and prove the first one still creates
    containers (raises when it does not). Hold :func:`exclusive_use` around it."""
    with FileLock(str(START_LOCK), timeout=timeout):
        proc = _script("stop", timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"scripts/engine2.sh stop failed:\n{proc.stderr.strip()}")


@contextlib.contextmanager
def _flock(mode: int, timeout: float) -> Iterator[None]:
    USE_LOCK.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(USE_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    kind = "exclusive" if mode == fcntl.LOCK_EX else "shared"
                    raise TimeoutError(f"no {kind} hold of {USE_LOCK} within {timeout:.0f}s") from None
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)  # releases the lock


def shared_use(timeout: float = 900) -> contextlib.AbstractContextManager[None]:
    """Hold while using the second engine: no other process restarts or stops it meanwhile
    (any number of holders at once)."""
    return _flock(fcntl.LOCK_SH, timeout)


def exclusive_use(timeout: float = 900) -> contextlib.AbstractContextManager[None]:
    """Hold while restarting or stopping the second engine: waits until nobody else uses it."""
    return _flock(fcntl.LOCK_EX, timeout)
