"""orch's core on podman, end to end: rootful podman containers, provisioned and reset
through pyinfra's real ``@podman`` connector, swept and taken down; nothing is left in
podman afterwards (containers, baseline images, images a connector committed)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from backends import PodmanBackend, remove_podman, write_pyproject

from orchestrator.core import settings as config
from orchestrator.core.context import Context
from orchestrator.core.maintainer import spawn_maintainer
from orchestrator.primitives import labels as L
from orchestrator.primitives.errors import EngineUnavailable, PermanentProviderError, VMExists, VMNotFound
from orchestrator.primitives.kinds import Kind
from orchestrator.primitives.labels import Owner
from orchestrator.providers.podman import PodmanProvider
from orchestrator.providers.registry import get_provider
from orchestrator.verbs.down import down
from orchestrator.verbs.reset import reset
from orchestrator.verbs.sweep import sweep
from orchestrator.verbs.up import up

podman = PodmanBackend()


def make(project: Path, **overrides) -> Context:
    return Context(config.load(cwd=project, env={}, overrides=overrides), refill=spawn_maintainer)


def run_sweep(project: Path, **kwargs):
    """Sweep as the CLI does (this process is an xdist worker, where sweep refuses to run)."""
    settings = config.load(cwd=project, env={})
    saved = os.environ.pop("PYTEST_XDIST_WORKER", None)
    try:
        return {d.vm: d for d in sweep(settings, get_provider(settings), **kwargs)}
    finally:
        if saved is not None:
            os.environ["PYTEST_XDIST_WORKER"] = saved


def image_ids() -> set[str]:
    """Untagged images: what a connector's commit would add (other tests' tagged baseline
    images come and go meanwhile)."""
    argv = ["podman", "images", "-aq", "--no-trunc", "--filter", "dangling=true"]
    return set(subprocess.run(argv, capture_output=True, text=True).stdout.split())


@pytest.fixture
def podman_project(tmp_path: Path, podman_engine: str, prefix: str) -> Iterator[Path]:
    """A project on podman with a prefix of its own; everything podman holds that is named
    with the prefix or labelled as made under tmp_path is deleted afterwards, and checked gone."""
    project = tmp_path / "project"
    project.mkdir()
    write_pyproject(project, "podman", prefix, podman_engine)
    yield project
    remove_podman(prefix, tmp_path)
    assert podman.names(prefix) == [] and podman.images(prefix) == [] and podman.images_of(tmp_path) == []


def test_up_reset_sweep_down_on_podman(podman_project: Path, prefix: str, tmp_path: Path) -> None:
    orch = make(podman_project)
    assert orch.provider.name == "podman"

    # up: two workers, provisioned through @podman, recorded in inventories
    results = up(orch, 2)
    assert [(r.worker, r.ok) for r in results] == [("gw0", True), ("gw1", True)], [r.error for r in results]
    gw0, gw1 = orch.vm_name("gw0"), orch.vm_name("gw1")
    for worker, vm in (("gw0", gw0), ("gw1", gw1)):
        assert podman.running(vm)
        assert podman.sh(vm, "cat /etc/orch-worker").stdout.strip() == worker
        assert f"@podman/{vm}" in (podman_project / "inventories" / f"{worker}.py").read_text()
    labels = orch.provider.inspect(gw0).labels  # type: ignore[union-attr]
    assert labels[L.MANAGED_BY] == "orch" and labels[L.WORKER] == "gw0" and labels[L.CHECKOUT] == orch.checkout
    [baseline] = podman.images(prefix)  # one committed baseline image, under localhost/
    assert baseline.startswith(f"localhost/{prefix}-{orch.checkout}-baseline:")

    # the real @podman connector through the pyinfra CLI: a running container stays running
    # and nothing is committed
    images = image_ids()
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("pyinfra")), "-y", "inventories/gw1.py", "exec", "--", "cat", "/etc/orch-worker"],
        cwd=podman_project,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "gw1" in proc.stdout + proc.stderr
    assert podman.running(gw1) and image_ids() == images

    # up again reuses both
    assert {r.worker: r.action for r in up(orch, 2)} == {"gw0": "reused", "gw1": "reused"}

    # reset gw1: the pollution is gone, gw1 is still provisioned, gw0 is untouched
    gw0_id = podman.identity(gw0)
    assert podman.sh(gw1, "echo dirty > /root/dirty-file && echo mine > /root/mine").returncode == 0
    assert podman.sh(gw0, "echo mine > /root/gw0-keeps-this").returncode == 0
    [result] = reset(orch, ["gw1"])
    assert result.ok, result.error
    assert podman.sh(gw1, "test -e /root/dirty-file").returncode != 0
    assert podman.sh(gw1, "cat /etc/orch-worker").stdout.strip() == "gw1"
    assert podman.identity(gw0) == gw0_id and podman.sh(gw0, "cat /root/gw0-keeps-this").stdout.strip() == "mine"

    # sweep: keeps this checkout's workers and baseline; deletes the worker and baseline of a
    # checkout whose folder is gone, and an untagged image committed from orch's container
    gone = tmp_path / "gone"
    gone.mkdir()
    write_pyproject(gone, "podman", prefix, orch.settings.image)
    other = make(gone)
    [made] = up(other, 1)
    assert made.ok, made.error
    orphan = other.vm_name("gw0")
    [other_baseline] = [i for i in podman.images(prefix) if f"-{other.checkout}-" in i]
    subprocess.run(["rm", "-rf", str(gone / "inventories")], check=True)  # the checkout is deleted
    committed = subprocess.run(["podman", "commit", "-q", gw0], capture_output=True, text=True, check=True).stdout.strip()

    dry = run_sweep(podman_project, dry_run=True)
    assert dry[orphan].result == "would delete" and "inventory folder is gone" in dry[orphan].reason
    assert podman.exists(orphan)
    report = run_sweep(podman_project)
    assert report[orphan].result == "deleted" and not podman.exists(orphan)
    assert report[other_baseline.removeprefix("localhost/")].result == "deleted"
    assert podman.images(prefix) == [baseline]
    assert [d.result for d in report.values() if d.ref.removeprefix("sha256:") == committed] == ["deleted"]
    for vm in (gw0, gw1):
        assert report[vm].result == "kept" and podman.running(vm)

    # down: nothing of this checkout is left in podman
    down(orch)
    assert podman.names(prefix) == []
    assert podman.images(prefix) == []
    assert podman.images_of(tmp_path) == []
    assert not list((podman_project / "inventories").glob("*.py"))


def test_a_missing_image_fails_at_once_naming_the_fix(podman_project: Path, prefix: str) -> None:
    orch = make(podman_project, image="nosuchdistro:never")
    with pytest.raises(Exception, match="--image") as err:
        up(orch, 1)
    assert "nosuchdistro" in str(err.value)
    assert podman.names(prefix) == []


def test_stop_start_and_restart_policy(podman_project: Path) -> None:
    """A stopped worker is started again before it is used (podman restarts nothing after
    a reboot without podman-restart.service, which starts "always" containers)."""
    orch = make(podman_project)
    [result] = up(orch, 1)
    assert result.ok, result.error
    vm = orch.vm_name("gw0")
    policy = subprocess.run(
        ["podman", "inspect", "--type", "container", "-f", "{{.HostConfig.RestartPolicy.Name}}", vm],
        capture_output=True,
        text=True,
    )
    assert policy.stdout.strip() == "always"
    podman.stop(vm)
    assert not podman.running(vm)
    assert orch.ensure_running(vm, "gw0") and podman.running(vm)
    assert {r.worker: r.action for r in up(orch, 1)} == {"gw0": "reused"}
    down(orch)


@pytest.fixture
def provider(podman_project: Path) -> PodmanProvider:
    return PodmanProvider(config.load(cwd=podman_project, env={}))


def test_podman_errors_are_classified_from_its_own_texts(
    provider: PodmanProvider, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each failure as the real podman words it, and what orch makes of it."""
    image = provider.settings.image
    owner = Owner(Kind.WORKER, "0badc0de", "/nowhere/inventories", worker="gw0")
    a, b, missing = f"{prefix}-a", f"{prefix}-b", f"{prefix}-missing"
    for verb in (provider.start, provider.stop, lambda vm: provider.exec(vm, ["true"])):
        with pytest.raises(VMNotFound, match="no such container"):
            verb(missing)
    provider.create(a, image, owner)
    provider.create(b, image, owner)
    with pytest.raises(VMExists, match="is already in use"):
        provider.create(a, image, owner)
    with pytest.raises(VMExists, match="container already exists"):
        provider.rename(a, b)
    # the command's own failures are results, not errors
    assert provider.exec(a, ["nosuchcmd"]).rc == 127
    assert provider.exec(a, ["sh", "-c", "echo 'Error: mine' >&2; exit 125"]).rc == 125
    provider.stop(a)
    assert provider.inspect(a).state == "stopped"  # type: ignore[union-attr]
    with pytest.raises(PermanentProviderError, match="container state improper"):
        provider.exec(a, ["true"])
    # podman cannot set its default open-files limit: the fix is named
    provider.opts.run_args = ["--ulimit", "nofile=1048576:1048576"]
    if subprocess.run(["sh", "-c", "ulimit -Hn 1048576"], capture_output=True).returncode != 0:  # root may not raise it here
        with pytest.raises(EngineUnavailable, match=r"error setting rlimit.*default_ulimits.*containers\.conf"):
            provider.create(f"{prefix}-c", image, owner)
    provider.opts.run_args = ["--init-path", "/nonexistent/catatonit"]
    with pytest.raises(PermanentProviderError, match=r"container-init binary not found.*install catatonit"):
        provider.create(f"{prefix}-d", image, owner)
    provider.opts.run_args = []
    with pytest.raises(PermanentProviderError, match="image not known"):
        provider.create(f"{prefix}-e", "orch-no-such-baseline-0000", owner)
    with pytest.raises(PermanentProviderError, match=r"invalid image name.*--image"):
        provider.image_id("Bad:Name")
    # podman's service is not there (podman --remote, podman machine)
    monkeypatch.setenv("CONTAINER_HOST", "unix:///nonexistent/podman.sock")
    with pytest.raises(EngineUnavailable, match="Cannot connect to Podman"):
        provider.check()
