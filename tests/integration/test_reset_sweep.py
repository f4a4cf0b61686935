"""Reset to baseline and sweep, on both providers (docker: labels; orbstack: names and
the state, through the real pyinfra-orbstack package and tests/fakes/orbctl)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from backends import clean_env, write_pyproject

from orchestrator.core import settings as config
from orchestrator.core.context import Context
from orchestrator.core.maintainer import spawn_maintainer
from orchestrator.primitives import naming
from orchestrator.primitives.kinds import Kind
from orchestrator.providers.registry import get_provider
from orchestrator.state.leases import Lease
from orchestrator.verbs.reset import reset
from orchestrator.verbs.sweep import sweep
from orchestrator.verbs.up import up

IMAGE = "orch-base:bookworm"

POLLUTE = r"""
set -e
echo dirty > /root/dirty-file
echo dirty > /tmp/dirty-tmp
useradd orchtestuser
mkdir -p /tmp/pkg/DEBIAN
printf 'Package: orch-test-pkg\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@example.com>\nDescription: test\n' > /tmp/pkg/DEBIAN/control
dpkg-deb --build /tmp/pkg /tmp/orch-test-pkg.deb >/dev/null
dpkg -i /tmp/orch-test-pkg.deb >/dev/null
nohup sleep 4242 >/dev/null 2>&1 &
"""


def make(project: Path, **overrides) -> Context:
    return Context(config.load(cwd=project, env={}, overrides=overrides), refill=spawn_maintainer)


def pollution(backend, vm: str) -> dict[str, bool]:
    sh = backend.sh
    return {
        "file": sh(vm, "test -e /root/dirty-file").returncode == 0,
        "tmp": sh(vm, "test -e /tmp/dirty-tmp").returncode == 0,
        "user": sh(vm, "id orchtestuser").returncode == 0,
        "package": sh(vm, "dpkg -s orch-test-pkg").returncode == 0,
        "process": "4242" in sh(vm, "cat /proc/[0-9]*/cmdline | tr '\\0' ' '").stdout,
    }


@pytest.mark.parametrize(
    "provider_name, soft",
    [("docker", False), ("orbstack", False), ("docker", True)],
    ids=["docker-hard", "orbstack-hard", "docker-soft"],
)
def test_reset_removes_every_kind_of_pollution_and_touches_no_other_worker(project: Path, backend, soft: bool) -> None:
    orch = make(project)
    up(orch, 2)
    gw0, gw1 = orch.vm_name("gw0"), orch.vm_name("gw1")
    sh = backend.sh
    assert sh(gw1, POLLUTE).returncode == 0
    assert sh(gw0, "echo mine > /root/gw0-keeps-this").returncode == 0
    assert all(pollution(backend, gw1).values()), pollution(backend, gw1)
    inventory_before = (project / "inventories" / "gw1.py").read_text()
    gw0_id = backend.identity(gw0)

    [result] = reset(orch, ["gw1"], soft=soft)

    assert result.ok, result.error
    assert result.seconds["total"] > 0 and "ready" in result.seconds
    expected = {"file": soft, "tmp": False, "user": False, "package": False, "process": False}
    # hard: exactly the baseline; soft: what the reset deploy documents (files outside
    # the scratch folders stay)
    assert pollution(backend, gw1) == expected
    assert sh(gw1, "cat /etc/orch-worker").stdout.strip() == "gw1"  # still provisioned
    assert (project / "inventories" / "gw1.py").read_text() == inventory_before  # same name, same inventory
    assert backend.identity(gw0) == gw0_id and sh(gw0, "cat /root/gw0-keeps-this").stdout.strip() == "mine"


def test_reset_all_and_several_ids(project: Path, backend) -> None:
    orch = make(project)
    up(orch, 3)
    for w in ("gw0", "gw1", "gw2"):
        backend.sh(orch.vm_name(w), "echo x > /root/dirty-file")
    assert {r.worker for r in reset(orch, ["gw0", "gw2"])} == {"gw0", "gw2"}
    assert [pollution(backend, orch.vm_name(w))["file"] for w in ("gw0", "gw1", "gw2")] == [False, True, False]
    assert {r.worker for r in reset(orch)} == {"gw0", "gw1", "gw2"}
    assert not pollution(backend, orch.vm_name("gw1"))["file"]


def run_sweep(project: Path, **kwargs):
    """Sweep as the CLI does. This test process is itself an xdist worker of orch's own
    suite, where sweep refuses to run, so it stands in for the CLI without that mark."""
    settings = config.load(cwd=project, env={})
    saved = os.environ.pop("PYTEST_XDIST_WORKER", None)
    try:
        return {d.vm: d for d in sweep(settings, get_provider(settings), **kwargs)}
    finally:
        if saved is not None:
            os.environ["PYTEST_XDIST_WORKER"] = saved


def make_vm(backend, name: str, labels: dict[str, str] | None = None) -> None:
    """A VM made behind orch's back: a container (with these labels) or an OrbStack machine."""
    if backend.name == "docker":
        args = ["docker", "run", "-d", "--name", name]
        for k, v in (labels or {}).items():
            args += ["--label", f"{k}={v}"]
        subprocess.run([*args, IMAGE, "sleep", "infinity"], check=True, capture_output=True)
    else:
        subprocess.run(["orbctl", "create", "debian:bookworm", name], check=True, capture_output=True)


def test_sweep_never_deletes_what_is_not_orchs(project: Path, backend, foreign: list[str]) -> None:
    prefix = make(project).settings.prefix
    checkout = naming.checkout_id(project / "inventories")
    unlabelled = f"{prefix}-{checkout}-gw7"  # orch's name, no labels
    unlabelled_oneoff = f"{prefix}-0badc0de-x20260101000000-1-0123456789ab"
    legacy_name = f"{prefix}legacy-vm1"  # [tool.orch] legacy_prefixes
    # names a user's own VMs may have (only this test uses them), and look-alikes of this prefix
    foreign += ["orchestra-db", "gw0", unlabelled, unlabelled_oneoff, legacy_name]
    for name in foreign:
        make_vm(backend, name)
    report = run_sweep(project)
    for name in foreign:
        assert backend.exists(name), f"sweep deleted {name}, which is not orch's"
    assert report[unlabelled].reason.startswith("not orch's") and not report[unlabelled].delete
    assert report[unlabelled_oneoff].result == "kept"
    # --legacy deletes the legacy prefixes, and only those
    legacy = run_sweep(project, legacy=True)
    assert legacy[legacy_name].result == "deleted" and not backend.exists(legacy_name)
    for name in ("orchestra-db", "gw0", unlabelled, unlabelled_oneoff):
        assert backend.exists(name)


@pytest.mark.parametrize("provider_name", ["orbstack"])  # no labels: the name and the state
def test_sweep_on_orbstack_keeps_what_is_not_orchs_by_name(project: Path, backend, foreign: list[str]) -> None:
    orch = make(project)
    up(orch, 1)
    prefix = orch.settings.prefix
    legacy_name = f"{prefix}legacy-vm1"
    foreign += [f"{prefix}stra-db", f"gw0-{prefix}", f"{prefix}-notorch", f"{prefix}-{orch.checkout}-gw01", legacy_name]
    for name in foreign:
        make_vm(backend, name)
    report = run_sweep(project)
    for name in foreign:
        assert backend.exists(name), f"sweep deleted {name}, which is not orch's"
    assert report[orch.vm_name("gw0")].result == "kept"
    golden = orch.store.read().baseline.vm
    assert report[golden].result == "kept" and backend.exists(golden)
    legacy = run_sweep(project, legacy=True)
    assert legacy[legacy_name].result == "deleted" and not backend.exists(legacy_name)


def test_sweep_deletes_orphan_workers_and_keeps_recorded_ones(
    project: Path, backend, provider_name: str, tmp_path_factory, foreign: list[str]
) -> None:
    orch = make(project)
    up(orch, 2)
    gone = tmp_path_factory.mktemp("gone-checkout")
    write_pyproject(gone, provider_name, orch.settings.prefix)
    other = make(gone)
    up(other, 1)
    orphan_vm = other.vm_name("gw0")
    subprocess.run(["rm", "-rf", str(gone / "inventories")], check=True)  # checkout deleted
    # A VM of this checkout (labelled so on docker) that its state does not record
    unknown = orch.vm_name("gw9")
    foreign.append(unknown)
    make_vm(backend, unknown, orch.owner(Kind.WORKER, worker="gw9").labels())

    dry = run_sweep(project, dry_run=True)
    assert dry[orphan_vm].result == "would delete" and "inventory folder is gone" in dry[orphan_vm].reason
    assert dry[unknown].result == "would delete" and "does not record it" in dry[unknown].reason
    assert backend.exists(orphan_vm) and backend.exists(unknown)  # dry run changed nothing

    report = run_sweep(project)
    assert report[orphan_vm].result == "deleted" and not backend.exists(orphan_vm)
    assert report[unknown].result == "deleted" and not backend.exists(unknown)
    for w in ("gw0", "gw1"):
        assert report[orch.vm_name(w)].result == "kept" and backend.exists(orch.vm_name(w))


def test_sweep_older_than_respects_a_live_run(project: Path, backend) -> None:
    orch = make(project)
    up(orch, 1)
    vm = orch.vm_name("gw0")
    lease = Lease(project / "inventories")
    try:
        report = run_sweep(project, older_than=0)
        assert report[vm].result == "kept" and "alive" in report[vm].reason
    finally:
        lease.release()
    report = run_sweep(project, older_than=0)
    assert report[vm].result == "deleted" and not backend.exists(vm)


def test_sweep_cli_json_and_exit_code(project: Path, backend, foreign: list[str]) -> None:
    name = make(project).settings.prefix + "legacy-json"
    foreign.append(name)
    make_vm(backend, name)
    orch_bin = str(Path(sys.executable).with_name("orch"))
    proc = subprocess.run(
        [orch_bin, "sweep", "--legacy", "--dry-run", "--json"], cwd=project, capture_output=True, text=True, env=clean_env()
    )
    assert proc.returncode == 0, proc.stderr
    rows = {r["vm"]: r for r in json.loads(proc.stdout)}
    assert rows[name]["result"] == "would delete"
    assert backend.exists(name)
    bad = subprocess.run(
        [orch_bin, "sweep", "--older-than", "soon"], cwd=project, capture_output=True, text=True, env=clean_env()
    )
    assert bad.returncode == 2 and "invalid duration 'soon'" in bad.stderr


def test_sweep_refuses_to_run_inside_an_xdist_worker(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw3")
    settings = config.load(cwd=project, env={})
    with pytest.raises(Exception, match="never inside an xdist worker"):
        sweep(settings, get_provider(settings))
