"""What only a real Incus shows: the machine identity of each copy of the golden
instance, its network (an address and DNS, by DHCP), a golden instance started behind
orch's back, Incus's own error texts, ``vm = true`` on this host, and the ``@incus``
pyinfra connector running real operations (and testinfra through ``incus exec``)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from backends import IncusBackend, remove_incus

from orchestrator.primitives import naming
from orchestrator.primitives.errors import (
    DeployError,
    EngineUnavailable,
    PermanentProviderError,
    ProviderError,
    UsageError,
    VMNotFound,
)
from orchestrator.primitives.kinds import Kind
from orchestrator.primitives.labels import Owner
from orchestrator.providers.incus import IncusProvider
from orchestrator.pyinfra.runner import PyinfraSession
from orchestrator.state.checkouts import CheckoutRef
from orchestrator.testing.conformance import contract_settings

incus = IncusBackend()


def make_provider(folder: Path, image: str, **table: object) -> IncusProvider:
    settings = contract_settings(folder, "incus", image=image)
    settings.tables["incus"] = dict(table)
    return IncusProvider(settings)


@pytest.fixture
def provider(tmp_path: Path, incus_engine: str) -> Iterator[IncusProvider]:
    """A provider with a prefix of its own; its instances are deleted afterwards, and checked gone."""
    made = make_provider(tmp_path, incus_engine)
    yield made
    remove_incus(made.settings.prefix)
    assert incus.names(made.settings.prefix) == []


def owner(provider: IncusProvider, worker: str = "gw0", kind: Kind = Kind.WORKER) -> tuple[str, Owner]:
    s = provider.settings
    where = CheckoutRef.here(s.inventory_dir)
    name = (
        naming.worker_vm_name(s.prefix, s.checkout, worker)
        if kind is Kind.WORKER
        else f"{s.prefix}-{s.checkout}-zbaseline-01234567"
    )
    return name, Owner(kind, s.checkout, where.inventory, where.host, where.fs, worker if kind is Kind.WORKER else "")


def test_each_copy_of_the_golden_instance_is_a_machine_of_its_own(provider: IncusProvider, incus_engine: str) -> None:
    base, base_owner = owner(provider, kind=Kind.BASELINE)
    provider.create(base, incus_engine, base_owner)
    provider.wait_ready(base)
    assert incus.sh(base, "test -s /etc/machine-id").returncode == 0  # systemd made one at first boot
    baseline = provider.seal(base, base_owner)
    assert not incus.running(base)
    pulled = subprocess.run(["incus", "file", "pull", f"{base}/etc/machine-id", "-"], capture_output=True, text=True)
    assert pulled.returncode == 0 and pulled.stdout == ""  # sealed: no identity to copy
    assert provider.verify(baseline) is None

    copies = [owner(provider, w) for w in ("gw0", "gw1")]
    for name, who in copies:
        provider.clone(baseline, name, who)
    seen = {}
    for name, _ in copies:
        provider.wait_ready(name)
        facts = incus.sh(name, "hostname; cat /etc/machine-id; systemctl is-system-running; grep -c nameserver /etc/resolv.conf")
        hostname, machine_id, systemd, dns = facts.stdout.split()
        assert hostname == name and systemd == "running" and int(dns) >= 1
        seen[name] = (machine_id, provider.address(name))
    (id0, ip0), (id1, ip1) = seen.values()
    assert id0 != id1 and ip0 != ip1 and all(len(i) == 32 for i in (id0, id1))
    assert ip0.startswith(ip1.rsplit(".", 1)[0] + ".")  # both on the bridge's subnet

    incus.sh(copies[0][0], "systemctl reboot")  # a reboot comes back by itself, with its files
    provider.wait_ready(copies[0][0])

    subprocess.run(["incus", "start", base], check=True, capture_output=True)  # someone starts the golden one
    assert "started outside orch" in (provider.verify(baseline) or "")
    subprocess.run(["incus", "stop", "--force", base], check=True, capture_output=True)
    assert "started outside orch since it was sealed" in (provider.verify(baseline) or "")
    assert provider.drop(baseline) and not incus.exists(base)
    assert incus.running(copies[1][0])  # copies do not need the golden instance


def test_incus_failures_are_classified_from_its_own_texts(
    provider: IncusProvider, incus_engine: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, who = owner(provider)
    with pytest.raises(VMNotFound):
        provider.start(name)
    with pytest.raises(PermanentProviderError, match="--image"):
        provider.image_id("nosuch/image")
    with pytest.raises(PermanentProviderError, match="--image"):
        provider.create(name, "nosuch/image", who)
    assert provider.inspect(name) is None
    provider.create(name, incus_engine, who)
    provider.wait_ready(name)
    provider.stop(name)
    provider.stop(name)  # stopping a stopped instance is no error
    with pytest.raises(ProviderError, match="not running"):
        provider.exec(name, ["true"])
    with pytest.raises(PermanentProviderError, match=r"\[tool.orch.incus\] project"):
        make_provider(tmp_path / "p", incus_engine, project="nosuchproject").check()
    monkeypatch.setenv("INCUS_SOCKET", str(tmp_path / "no.socket"))
    with pytest.raises(EngineUnavailable, match="start incusd"):
        provider.check()


def test_vm_true_is_refused_in_one_line_where_the_server_runs_no_vms(tmp_path: Path, incus_engine: str) -> None:
    """On this machine Incus runs no VMs (no vhost_vsock; /dev/kvm is kvm_pvm): one line
    says why, before any instance is made. On a host with KVM the same check passes."""
    provider = make_provider(tmp_path, incus_engine, vm=True)
    before = incus.names(provider.settings.prefix)
    server = json.loads(subprocess.run(["incus", "query", "/1.0"], capture_output=True, text=True, check=True).stdout)
    if "qemu" in server["environment"]["driver"].split(" | "):
        provider.check()
        return
    with pytest.raises(UsageError) as err:
        provider.check()
    message = str(err.value)
    assert "\n" not in message and "vm = false" in message and "cannot run virtual machines" in message
    assert "vhost_vsock" in message or "kvm" in message.lower()
    name, who = owner(provider)
    with pytest.raises(UsageError, match="vm = false"):
        provider.create(name, "images:debian/12", who)
    assert incus.names(provider.settings.prefix) == before == []


SHELL = 'id -un > /tmp/who; printf %s "$ORCH_T" > /tmp/env; pwd > /tmp/cwd'


def test_the_incus_connector_runs_pyinfra_operations(provider: IncusProvider, incus_engine: str, tmp_path: Path) -> None:
    from pyinfra.facts.files import File
    from pyinfra.facts.server import Hostname
    from pyinfra.operations import files, server

    name, who = owner(provider)
    provider.create(name, incus_engine, who)
    provider.wait_ready(name)
    host = provider.host(name)
    assert host == (f"@incus/{name}", {})
    with PyinfraSession([host]) as session:
        failed = session.operation(files.put, src=io.StringIO("uploaded\n"), dest="/root/up.txt", mode="640")
        assert failed == {}
        failed = session.operation(
            server.shell, commands=[SHELL], _sudo=True, _sudo_user="nobody", _env={"ORCH_T": "a b'c"}, _chdir="/tmp"
        )
        assert failed == {}
        assert session.fact(Hostname) == name
        assert session.fact(File, path="/root/up.txt")["mode"] == 640
        assert session.shell("exit 3").rc == 3
        assert session.operation(files.get, src="/etc/hostname", dest=str(tmp_path / "hostname")) == {}
    assert incus.sh(name, "cat /root/up.txt").stdout == "uploaded\n"
    assert incus.sh(name, "cat /tmp/who /tmp/env /tmp/cwd").stdout == "nobody\na b'c/tmp\n"
    assert (tmp_path / "hostname").read_text() == f"{name}\n"

    testinfra_host = IncusProvider.testinfra_host(*host)
    assert testinfra_host.file("/root/up.txt").mode == 0o640 and testinfra_host.check_output("id -un") == "root"

    cli = subprocess.run(
        [str(Path(sys.executable).with_name("pyinfra")), "-y", f"@incus/{name}", "exec", "--", "cat", "/root/up.txt"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0 and "uploaded" in cli.stdout + cli.stderr, cli.stderr

    provider.stop(name)  # the connector never starts an instance
    with pytest.raises(DeployError, match="not a running Incus instance"), PyinfraSession([host]):
        pass
    assert not incus.running(name)


def test_no_output_is_lost_under_load(provider: IncusProvider, incus_engine: str) -> None:
    """Under load, Incus 6.0.4's client drops a short command's whole stdout or stderr now
    and then (2-5 % of them with six at once here): orch's exec and the @incus connector
    read it again from the instance, so every command's output comes back whole."""
    name, who = owner(provider)
    provider.create(name, incus_engine, who)
    provider.wait_ready(name)

    def many(i: int) -> list[bool]:
        results = [provider.exec(name, ["sh", "-c", f"echo out-{i}-{k}; echo err-{i}-{k} >&2"]) for k in range(30)]
        return [r.stdout == f"out-{i}-{k}\n" and r.stderr == f"err-{i}-{k}\n" for k, r in enumerate(results)]

    with ThreadPoolExecutor(5) as pool:
        busy = [pool.submit(many, i) for i in range(5)]
        with PyinfraSession([provider.host(name)]) as session:
            seen = [session.shell(f"echo pyinfra-{k}").stdout for k in range(30)]
        whole = [ok for done in busy for ok in done.result()]
    assert seen == [f"pyinfra-{k}" for k in range(30)]
    assert len(whole) == 150 and all(whole)
    left = incus.sh(name, "ls /run/orch-exec | wc -l").stdout.strip()
    assert int(left) <= 2 * 2  # the last pairs read (the next command deletes them), no more
