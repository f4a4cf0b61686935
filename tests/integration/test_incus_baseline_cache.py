"""The Incus baseline as a file, on the real incusd (``orch baseline export/import``): one
checkout's golden instance exported, imported as another checkout's (its labels, its
name), a worker cloned from the imported one; the exporting checkout's baseline is left as
it was, and a failed or half-done import leaves no instance behind.

The baseline is the machine image sealed through the provider (no provisioning run): the
cache only moves what ``seal`` made."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from backends import IncusBackend, remove_incus

from orchestrator.core import settings as config
from orchestrator.core.ownership import identify
from orchestrator.primitives import naming
from orchestrator.primitives.errors import PermanentProviderError, ProviderError
from orchestrator.primitives.kinds import Kind
from orchestrator.primitives.labels import Owner
from orchestrator.providers.base import Baseline
from orchestrator.providers.incus import IncusProvider
from orchestrator.state.checkouts import CheckoutRef

incus = IncusBackend()
FINGERPRINT = "0123456789ab"


def checkout(folder: Path, prefix: str) -> IncusProvider:
    """A provider for a checkout in ``folder``: its own checkout id, the test's prefix."""
    folder.mkdir(parents=True)
    (folder / "pyproject.toml").write_text(f'[tool.orch]\nprovider = "incus"\nprefix = "{prefix}"\nretries = 1\n')
    (folder / "inventories").mkdir()
    return IncusProvider(config.load(cwd=folder, env={}))


def owner(provider: IncusProvider, kind: Kind, worker: str = "") -> tuple[str, Owner]:
    s = provider.settings
    where = CheckoutRef.here(s.inventory_dir)
    if kind is Kind.BASELINE:
        name = naming.baseline_vm_name(s.prefix, s.checkout, FINGERPRINT)
    else:
        name = naming.worker_vm_name(s.prefix, s.checkout, worker)
    return name, Owner(kind, s.checkout, where.inventory, where.host, where.fs, worker, fingerprint=FINGERPRINT)


def raw(name: str) -> dict[str, Any]:
    found = incus._info(name)
    assert found is not None, f"{name} does not exist"
    return found


def user_keys(name: str) -> dict[str, str]:
    return {k: v for k, v in raw(name)["config"].items() if k.startswith("user.")}


@pytest.fixture
def prefix(incus_engine: str) -> Iterator[str]:
    made = f"x{secrets.token_hex(4)}"
    yield made
    remove_incus(made)
    assert incus.names(made) == []


@pytest.fixture
def exported(tmp_path: Path, prefix: str, incus_engine: str) -> tuple[IncusProvider, Baseline, Path]:
    """Checkout A's sealed baseline, and the file it was exported to."""
    a = checkout(tmp_path / "a", prefix)
    name, who = owner(a, Kind.BASELINE)
    a.create(name, incus_engine, who)
    a.wait_ready(name)
    sealed = a.seal(name, who)
    archive = tmp_path / "cache" / ".orch-baseline.tmp"  # the caller's temporary name, not yet there
    archive.parent.mkdir()
    a.export_baseline(sealed, archive)
    return a, sealed, archive


def test_an_exported_baseline_is_imported_as_another_checkouts_and_cloned(
    exported: tuple[IncusProvider, Baseline, Path], tmp_path: Path, prefix: str
) -> None:
    a, a_baseline, archive = exported
    a_keys = user_keys(a_baseline.ref)
    assert archive.stat().st_size > 10_000_000 and a.verify(a_baseline) is None  # exporting changed nothing

    b = checkout(tmp_path / "b", prefix)
    assert b.settings.checkout != a.settings.checkout
    b_name, b_owner = owner(b, Kind.BASELINE)
    b_baseline = b.import_baseline(archive, b_name, b_owner)
    assert b_baseline.ref == b_name and b.verify(b_baseline) is None and not incus.running(b_name)
    keys = user_keys(b_name)
    assert keys["user.orch.checkout"] == b.settings.checkout and keys["user.orch.hostname"] == b_name
    assert keys["user.orch.fs"] == b_owner.fs and keys["user.orch.created"] == b_owner.created
    assert not {v for k, v in keys.items() if k != "user.orch.fingerprint"} & {a.settings.checkout, a_baseline.ref}
    info = b.inspect(b_name)
    assert info is not None
    found, why = identify(info, prefix, True)
    assert found is not None and (found.checkout, found.kind) == (b.settings.checkout, Kind.BASELINE), why

    worker, worker_owner = owner(b, Kind.WORKER, "gw0")
    b.clone(b_baseline, worker, worker_owner)
    b.wait_ready(worker)
    ran = incus.sh(worker, "hostname; cat /etc/machine-id")
    hostname, machine_id = ran.stdout.split()
    assert hostname == worker and len(machine_id) == 32
    keys = user_keys(worker)
    assert keys["user.orch.checkout"] == b.settings.checkout and keys["user.orch.worker"] == "gw0"
    assert keys["user.orch.kind"] == "worker"
    assert raw(worker)["config"]["volatile.eth0.hwaddr"] != raw(a_baseline.ref)["config"]["volatile.eth0.hwaddr"]

    # checkout A's baseline: still A's, untouched (labels, seal), stopped
    assert user_keys(a_baseline.ref) == a_keys and a.verify(a_baseline) is None and not incus.running(a_baseline.ref)
    a_info = a.inspect(a_baseline.ref)
    assert a_info is not None and identify(a_info, prefix, True)[0] is not None
    assert b.drop(b_baseline) and not incus.exists(b_name) and incus.exists(a_baseline.ref)


def test_a_failed_or_half_done_import_leaves_no_instance(
    exported: tuple[IncusProvider, Baseline, Path], tmp_path: Path, prefix: str
) -> None:
    a, a_baseline, archive = exported
    b = checkout(tmp_path / "b", prefix)
    b_name, b_owner = owner(b, Kind.BASELINE)

    cut = tmp_path / "cut.tar"  # an archive cut short: Incus cannot unpack it
    with archive.open("rb") as whole:
        cut.write_bytes(whole.read(1_000_000))
    with pytest.raises(ProviderError):
        b.import_baseline(cut, b_name, b_owner)
    assert not incus.exists(b_name)

    real = b.runner

    def relabel_fails(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        if argv[1:3] == ["config", "set"]:
            raise PermanentProviderError("injected: config set failed", operation="import")
        return real(argv, **kw)

    b.runner = relabel_fails  # imported, then not made ours: deleted
    with pytest.raises(PermanentProviderError, match="injected"):
        b.import_baseline(archive, b_name, b_owner)
    assert not incus.exists(b_name)
    b.runner = real

    # a crash between import and relabel left the archive's labels (checkout A's) under B's name
    subprocess.run(["incus", "import", str(archive), b_name, "-q"], check=True, capture_output=True)
    assert user_keys(b_name)["user.orch.checkout"] == a.settings.checkout
    b_baseline = b.import_baseline(archive, b_name, b_owner)
    assert user_keys(b_name)["user.orch.checkout"] == b.settings.checkout and b.verify(b_baseline) is None
    assert a.verify(a_baseline) is None


def test_export_of_a_missing_baseline_fails_and_writes_nothing(tmp_path: Path, prefix: str, incus_engine: str) -> None:
    a = checkout(tmp_path / "a", prefix)
    name, _ = owner(a, Kind.BASELINE)
    target = tmp_path / "out.tmp"
    with pytest.raises(PermanentProviderError, match="is gone"):
        a.export_baseline(Baseline(name, {}), target)
    assert not target.exists()
