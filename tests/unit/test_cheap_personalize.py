"""orch's cheap personalize on the FakeProvider: with the default personalize deploy, a VM
made from the baseline gets its worker id, fingerprint and name through one exec, with
no deploy run; a failing exec fails that VM alone in one line; a project's own deploy
(and the @ssh connector) still goes through the deployer, in one batch."""

from __future__ import annotations

import shlex
import threading
from pathlib import Path

from fakes_core import fake_orch

from orchestrator.core import baseline as B
from orchestrator.core.connectors import Connector
from orchestrator.core.steps import WorkerResult
from orchestrator.deploys.provision import personalize_and_mark_script
from orchestrator.primitives.kinds import Kind
from orchestrator.primitives.results import ExecResult
from orchestrator.state.records import FAILED, READY
from orchestrator.verbs.oneoffs import create_oneoff
from orchestrator.verbs.up import up


def personalize_runs(orch) -> list[str]:
    return [vm for name, vm in orch.deployer.runs if "personalize" in name]


def marked(orch, worker: str) -> None:
    """What a user would check inside the worker's VM, and in the state."""
    data = orch.store.read()
    rec = data.workers[worker]
    files = orch.provider.vms[rec.vm].files
    assert rec.phase == READY and rec.error == ""
    assert files["/etc/orch-worker"] == f"{worker}\n"
    assert files["/var/lib/orch/fingerprint"] == f"{data.baseline.fingerprint}\n"
    assert files["/var/lib/orch/made-as"] == f"{rec.vm}\n"


def test_default_personalize_runs_no_deploy_and_one_exec_per_vm(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path)
    up(orch, 1)  # gw0 is made beside the baseline, provisioned with it (a deploy)
    before, execs = list(orch.deployer.runs), orch.provider.counts()["exec"]
    assert all(r.ok for r in up(orch, 3))  # gw1 and gw2 are cloned and personalized
    assert orch.deployer.runs == before  # no deploy ran
    assert orch.provider.counts()["exec"] - execs == 2
    for worker in ("gw0", "gw1", "gw2"):
        marked(orch, worker)


def test_a_oneoff_is_personalized_cheaply(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path)
    up(orch, 1)
    before = list(orch.deployer.runs)
    host = create_oneoff(orch, "run-1")
    files = orch.provider.vms[host.data["orch_vm"]].files
    assert files["/etc/orch-worker"] == "oneoff\n" and files["/var/lib/orch/made-as"] == f"{host.data['orch_vm']}\n"
    assert orch.deployer.runs == before


def test_a_failing_exec_fails_that_vm_in_one_line_with_its_log(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path)
    up(orch, 1)
    real = orch.provider.exec
    broken = orch.vm_name("gw2")

    def exec_(vm: str, argv: list[str], **kw: object) -> ExecResult:
        if vm == broken and argv[:2] == ["sh", "-c"]:
            return ExecResult(2, "", "sh: 1: cannot create /etc/orch-worker: Read-only file system\n")
        return real(vm, argv, **kw)

    orch.provider.exec = exec_
    gw0, gw1, gw2 = up(orch, 3)
    assert gw0.ok and gw1.ok and not gw2.ok
    assert "\n" not in gw2.error and "exited with code 2" in gw2.error and "Read-only file system" in gw2.error
    assert gw2.error.startswith("personalizing: ") and "(log: " in gw2.error
    rec = orch.store.read().workers["gw2"]
    assert rec.phase == FAILED and rec.error == gw2.error
    text = Path(gw2.log).read_text()  # what `orch logs gw2` shows
    assert "=== personalizing: FAILED" in text and "$ sh -c" in text and "Read-only file system" in text
    marked(orch, "gw1")
    orch.provider.exec = real
    assert [r.action for r in up(orch, 3)] == ["reused", "reused", "recreated"]
    marked(orch, "gw2")


def test_an_exec_the_backend_refuses_fails_that_vm(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path)
    up(orch, 1)
    orch.provider.faults.fail("exec", permanent=True)
    _, gw1 = up(orch, 2)
    assert not gw1.ok and gw1.error.startswith("personalizing: cannot run") and "\n" not in gw1.error
    assert orch.store.read().workers["gw1"].phase == FAILED


def test_a_log_is_written_where_the_deploy_writes_it(tmp_path: Path) -> None:
    orch = fake_orch(tmp_path)
    up(orch, 1)
    [_, gw1] = up(orch, 2)
    assert gw1.log == str(orch.logs_dir / "gw1.log")
    text = Path(gw1.log).read_text()
    assert "=== personalizing: ok" in text and shlex.quote(orch.vm_name("gw1")) in text


def test_a_projects_own_personalize_deploy_runs_through_the_deployer_in_one_batch(tmp_path: Path) -> None:
    project = tmp_path / "p"
    (project / "mypersonalize").mkdir(parents=True)
    (project / "mypersonalize" / "__init__.py").write_text(
        "from pyinfra.api import deploy\n\n@deploy('mine: personalize')\ndef personalize():\n    pass\n"
    )
    orch = fake_orch(project, personalize="mypersonalize:personalize")
    batches: list[int] = []
    run = orch.deployer.run

    def counted(hosts, funcs, **kw):  # type: ignore[no-untyped-def]
        batches.append(len(hosts))
        return run(hosts, funcs, **kw)

    orch.deployer.run = counted  # type: ignore[method-assign]
    up(orch, 1)
    batches.clear()
    execs = orch.provider.counts()["exec"]
    assert all(r.ok for r in up(orch, 3))
    assert batches == [2]  # gw1 and gw2 together
    assert sorted(personalize_runs(orch)[-2:]) == [orch.vm_name("gw1"), orch.vm_name("gw2")]
    assert orch.provider.counts()["exec"] == execs
    marked(orch, "gw2")


def test_the_ssh_connector_keeps_the_pyinfra_path(tmp_path: Path) -> None:
    """With @ssh everything inside a VM goes through the connector under test."""
    orch = fake_orch(tmp_path)
    ssh = Connector(orch)
    ssh.name = "ssh"
    orch.connector = ssh
    up(orch, 1)
    up(orch, 2)
    assert orch.vm_name("gw1") in personalize_runs(orch)
    marked(orch, "gw1")


def test_personalize_runs_off_the_main_thread(tmp_path: Path) -> None:
    """The maintainer personalizes spares from threads."""
    orch = fake_orch(tmp_path)
    up(orch, 1)
    fp = B.fingerprint(orch)
    base = orch.store.read().baseline
    vm = orch.vm_name("gw7")
    recorded: list[dict[str, object]] = []
    target = B.Target(
        WorkerResult("gw7", vm, "made"), orch.owner(Kind.WORKER, worker="gw7", fingerprint=fp.value), "gw7", recorded.append
    )
    target.record = lambda **changes: recorded.append(changes)
    B.make_clones(orch, fp, B.Baseline(base.ref, base.seal), [target])
    errors: list[BaseException] = []

    def work() -> None:
        try:
            B.personalize(orch, fp, [target])
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert not errors and target.result.ok
    assert recorded[-1]["phase"] == READY and recorded[-1]["fingerprint"] == fp.value
    assert orch.provider.vms[vm].files["/etc/orch-worker"] == "gw7\n"


def test_the_values_are_quoted() -> None:
    script = personalize_and_mark_script("gw1", "abc'; rm -rf /", "vm $(x)")
    assert shlex.split(script.split(" && ")[-2])[2] == "abc'; rm -rf /"
    assert shlex.split(script.split(" && ")[-1])[2] == "vm $(x)"
