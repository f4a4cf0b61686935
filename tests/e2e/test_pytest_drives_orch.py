"""pytest drives orch, and a failing worker can be looked into: `pytest --orch-up` on a
fresh checkout, `orch exec/shell/logs`, failures that explain themselves, deploys from the
project, what tests get from a worker, and inventories that fit pyinfra's CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from backends import both_providers, run_orch, run_pytest

SUITE = """
import pytest
from orchestrator import current_worker
from orchestrator.pytest_plugin.worker import CommandFailed


def helper():
    return current_worker()


@pytest.mark.parametrize("n", range(4))
def test_work(n, orch_worker):
    result = orch_worker.run("exit 3", check=False)
    assert (result.rc, result.ok) == (3, False)
    with pytest.raises(CommandFailed) as err:
        orch_worker.run("echo out; echo err >&2; exit 4")
    assert (err.value.rc, err.value.stdout.strip(), err.value.stderr.strip()) == (4, "out", "err")
    assert "exit code 4" in str(err.value)
    assert helper() is orch_worker


def test_testinfra(orch_host, orch_worker):
    assert orch_host.file("/etc/orch-worker").content_string.strip() == orch_worker.worker_id
    assert orch_host.run("id -u").stdout.strip() == "0"
"""


SEED_STYLE = '''
"""Tests written the way the seed's suite uses worker_vm: orbctl by hand, and pyinfra
operations through the @orbstack connector."""
import json
import subprocess

from pyinfra.facts.server import Hostname
from pyinfra.operations import files


def test_orbctl_info(worker_vm):
    info = json.loads(subprocess.run(["orbctl", "info", worker_vm, "-f", "json"], capture_output=True, text=True, check=True).stdout)
    assert info["record"]["name"] == worker_vm
    assert info["record"]["state"] == "running" and info["ip4"]


def test_orbctl_run(worker_vm):
    out = subprocess.run(["orbctl", "run", "-m", worker_vm, "cat", "/etc/orch-worker"], capture_output=True, text=True, check=True)
    assert out.stdout.strip().startswith("gw")


def test_operations_through_the_orbstack_connector(orch_worker, worker_vm):
    assert orch_worker.host == f"@orbstack/{worker_vm}"
    orch_worker.operation(files.directory, path="/srv/seed-style", mode="750")
    assert orch_worker.run("stat -c %a /srv/seed-style").stdout == "750"
    assert orch_worker.fact(Hostname) == worker_vm
'''


@both_providers
def test_pytest_orch_up_on_a_fresh_checkout_then_reuses_everything(project: Path, backend, prefix: str) -> None:
    """Then the workers it made can be entered (``orch exec``, ``orch shell``); on OrbStack
    the suite also has tests written as the seed's suite wrote them."""
    (project / "test_suite.py").write_text(SUITE)
    passed = "5 passed"
    if backend.name == "orbstack":
        (project / "test_seed_style.py").write_text(SEED_STYLE)
        passed = "8 passed"
    first = run_pytest(project, "-n", "2", "--orch-up")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "orch: bringing up 2 worker(s)" in first.stdout and passed in first.stdout
    vms = sorted(n for n in backend.names(prefix + "-") if "-gw" in n)
    ids = {vm: backend.identity(vm) for vm in vms}
    assert len(vms) == 2
    again = run_pytest(project, "-n", "2", "--orch-up")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "gw0 reused, gw1 reused" in again.stdout
    assert {vm: backend.identity(vm) for vm in vms} == ids
    _exec_and_shell_pass_output_and_exit_codes_through(project)


def _exec_and_shell_pass_output_and_exit_codes_through(project: Path) -> None:
    proc = run_orch(project, "exec", "gw1", "--", "sh", "-c", "cat /etc/orch-worker; echo err >&2; exit 3")
    assert (proc.returncode, proc.stdout.strip(), proc.stderr.strip()) == (3, "gw1", "err")
    shell = subprocess.run(
        [str(Path(sys.executable).with_name("orch")), "shell", "gw0"],
        input="cat /etc/orch-worker\nexit 5\n",
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
    )
    assert shell.returncode == 5 and "gw0" in shell.stdout, shell.stderr
    bad = run_orch(project, "exec", "gw7", "--", "true")
    assert bad.returncode == 2 and "gw7: not a worker of this checkout" in bad.stderr


def _env() -> dict[str, str]:
    from backends import clean_env

    return clean_env()


BROKEN = """
from pyinfra.api import deploy
from pyinfra.operations import server


@deploy("project provision")
def provision():
    server.shell(name="Break on purpose", commands=["echo before; echo boom >&2; exit 42"])
"""

FIXED = BROKEN.replace("echo before; echo boom >&2; exit 42", "true")


def test_a_failed_provision_explains_itself_and_stays_reachable(project: Path) -> None:
    """The failure line and the log come from the deploy runner, the same on every
    provider; entering a worker on OrbStack is proven by the exec test."""
    (project / "deploys").mkdir()
    (project / "deploys" / "provision.py").write_text(BROKEN)  # a namespace package in the project
    with (project / "pyproject.toml").open("a") as fh:
        fh.write('provision = "deploys.provision:provision"\n')
    up = run_orch(project, "up", "--workers", "1")
    assert up.returncode == 1
    for words in (
        "project provision",
        "Break on purpose",
        "exit 42",
        "exited with code 42",
        "boom",
        ".orch/logs/gw0.log",
        "orch logs gw0",
    ):
        assert words in up.stderr, words
    logs = run_orch(project, "logs", "gw0")
    assert logs.returncode == 0 and "boom" in logs.stdout and "Break on purpose" in logs.stdout
    status = [r for r in json.loads(run_orch(project, "status", "--json").stdout) if r["kind"] == "worker"]
    assert status[0]["phase"].startswith("failed") and status[0]["state"] == "running"
    entered = run_orch(project, "exec", "gw0", "--", "cat", "/etc/hostname")
    assert entered.returncode == 0 and entered.stdout.strip()  # look around in it
    (project / "deploys" / "provision.py").write_text(FIXED)
    retried = run_orch(project, "up", "--workers", "1")
    assert retried.returncode == 0, retried.stderr
    assert "retrying: it failed last time" in retried.stderr


def test_a_missing_deploy_module_says_where_orch_looked(project: Path) -> None:
    proc = run_orch(project, "up", "--workers", "1", env={"ORCH_PROVISION": "mydeploys:provision"})
    assert proc.returncode == 2
    assert f"cannot find deploy module 'mydeploys' (looked in the project root {project}" in proc.stderr


def test_limit_a_worker_with_the_pyinfra_cli_on_workers_py(project: Path) -> None:
    assert run_orch(project, "up", "--workers", "2").returncode == 0
    pyinfra = Path(sys.executable).with_name("pyinfra")
    proc = subprocess.run(
        [str(pyinfra), "-y", "inventories/workers.py", "--limit", "gw1", "exec", "--", "cat", "/etc/orch-worker"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    assert "gw1" in out and "-gw0]" not in out


def test_status_shows_oneoffs_and_the_baseline_and_quiet_lists_names(project: Path) -> None:
    from orchestrator.core import settings as config
    from orchestrator.core.context import Context
    from orchestrator.verbs.oneoffs import create_oneoff, delete_oneoff

    assert run_orch(project, "up", "--workers", "1").returncode == 0
    orch = Context(config.load(cwd=project, env={}))
    oneoff = create_oneoff(orch, "20260101000000-1-0123abcd").vm
    rows = json.loads(run_orch(project, "status", "--json").stdout)
    assert {r["kind"] for r in rows} == {"worker", "oneoff", "baseline"}
    assert [r["state"] for r in rows if r["kind"] == "baseline"] == ["sealed"]
    quiet = run_orch(project, "status", "-q")
    assert quiet.stdout.split()[:2] == [orch.vm_name("gw0"), oneoff]
    delete_oneoff(orch, oneoff)


def test_the_default_image_is_used_and_its_absence_names_the_fix(project: Path) -> None:
    text = "\n".join(line for line in (project / "pyproject.toml").read_text().splitlines() if not line.startswith("image ="))
    (project / "pyproject.toml").write_text(text + "\n")
    proc = run_orch(project, "up", "--workers", "1")
    assert proc.returncode == 1
    assert "image 'debian:bookworm' is not available here and could not be pulled" in proc.stderr
    assert "--image / ORCH_IMAGE / [tool.orch] image" in proc.stderr and "Traceback" not in proc.stderr


def test_shell_completion_completes_worker_ids(project: Path) -> None:
    assert run_orch(project, "up", "--workers", "2").returncode == 0
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("orch"))],
        cwd=project,
        capture_output=True,
        text=True,
        env={**_env(), "_ORCH_COMPLETE": "bash_complete", "COMP_WORDS": "orch reset g", "COMP_CWORD": "2"},
    )
    assert "gw0" in proc.stdout and "gw1" in proc.stdout
