"""The Incus provider against a recorded ``incus`` command line (no Incus needed): the
argv it sends, the JSON it reads, Incus's own error texts turned into orch's errors, the
refusal of ``vm = true`` where the server runs no VMs, and the VM path that this machine
cannot run (``--vm``, readiness that waits for the incus agent).

The texts below are Incus 6.0.4's, read off real failures on this machine (see
tests/integration/test_incus.py for the ones a real Incus gives here)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.core.ownership import owned
from orchestrator.primitives import labels as L
from orchestrator.primitives import naming
from orchestrator.primitives.errors import (
    EngineUnavailable,
    PermanentProviderError,
    ProviderError,
    ProviderTimeout,
    TransientProviderError,
    UsageError,
    VMExists,
    VMNotFound,
)
from orchestrator.primitives.kinds import Kind
from orchestrator.primitives.labels import Owner
from orchestrator.primitives.results import ExecResult
from orchestrator.providers.base import Baseline
from orchestrator.providers.incus import IncusProvider, kvm_facts
from orchestrator.providers.incus_errors import classify
from orchestrator.pyinfra.incus_exec import END
from orchestrator.testing.conformance import contract_settings

VM = "orch-1a2b3c4d-gw0"

CASES = [
    pytest.param(
        "Error: The incus daemon doesn't appear to be started (socket path: /var/lib/incus/unix.socket)",
        EngineUnavailable,
        id="daemon-down",
    ),
    pytest.param(
        'Error: Failed to fetch instance "orch-1a2b3c4d-gw0" in project "default": Instance not found',
        VMNotFound,
        id="not-found",
    ),
    pytest.param(
        'Error: Failed checking instance exists "local:x": Failed to fetch instance "x" in project "default": Instance not found',
        VMNotFound,
        id="delete-not-found",
    ),
    pytest.param(
        'Error: Failed creating instance record: Add instance info to the database: Failed to create "instances" '
        "entry: UNIQUE constraint failed: instances.project_id, instances.name",
        VMExists,
        id="exists",
    ),
    pytest.param('Error: Name "orch-1a2b3c4d-gw0" already in use', VMExists, id="rename-exists"),
    pytest.param('Error: Image "nosuch/image" not found', PermanentProviderError, id="no-image"),
    pytest.param('Error: The remote "nosuchdistro" doesn\'t exist', PermanentProviderError, id="no-remote"),
    pytest.param("Error: Project not found", PermanentProviderError, id="no-project"),
    pytest.param(
        "Error: Invalid instance name: Name can only contain alphanumeric and hyphen characters",
        PermanentProviderError,
        id="bad-name",
    ),
    pytest.param("Error: Asked for a VM but image is of type container", PermanentProviderError, id="container-image"),
    pytest.param(
        'Error: Failed creating instance record: Instance type "virtual-machine" is not supported on this server: '
        "vhost_vsock kernel module not loaded",
        PermanentProviderError,
        id="no-vms",
    ),
    pytest.param("Error: VM agent isn't currently running", TransientProviderError, id="vm-agent"),
    pytest.param('Error: Instance is busy running a "stop" operation', TransientProviderError, id="busy"),
    pytest.param("Error: database is locked", TransientProviderError, id="db-locked"),
    pytest.param(
        'Error: Get "https://10.0.0.2:8443/1.0": dial tcp 10.0.0.2:8443: i/o timeout',
        TransientProviderError,
        id="remote-timeout",
    ),
    pytest.param("Error: Renaming of running instance not allowed", PermanentProviderError, id="rename-running"),
]


@pytest.mark.parametrize(("text", "kind"), CASES)
def test_incus_texts_are_classified(text: str, kind: type[ProviderError]) -> None:
    err = classify("create", VM, 1, text)
    assert type(err) is kind
    assert err.transient == issubclass(kind, TransientProviderError)
    assert "\n" not in str(err)


def test_the_classified_errors_name_the_fix() -> None:
    assert "scripts/setup.sh" in str(classify("list", "", 1, CASES[0].values[0]))
    assert "[tool.orch.incus] project" in str(classify("list", "", 1, "Error: Project not found"))
    assert "[tool.orch.incus] remote" in str(classify("list", "", 1, 'Error: The remote "far" doesn\'t exist'))


# -- a recorded incus ------------------------------------------------------------------------

SERVER = {"environment": {"driver": "lxc", "server_version": "6.0.4"}}
WARNINGS = [
    {"type": "AppArmor support has been disabled", "last_message": "Disabled because of lack of kernel support"},
    {"type": "Instance type not operational", "last_message": "vhost_vsock kernel module not loaded"},
]


class FakeIncus:
    """Answers the ``incus`` argv the provider sends (``command.run``'s signature), from
    instances kept in memory; ``exec_answers`` scripts what ``incus exec`` prints."""

    def __init__(self, server: dict[str, Any] | None = None) -> None:
        self.calls: list[list[str]] = []
        self.instances: dict[str, dict[str, Any]] = {}
        self.server = server or SERVER
        self.exec_answers: list[tuple[int, str, str]] = []
        self.exec_default: tuple[int, str, str] = (0, "running\n", "")
        #: How many of the next execs lose their stdout (as Incus does under load).
        self.lose = 0
        self.kept: tuple[int, str, str] = (0, "", "")

    def __call__(self, argv: list[str], *, operation: str, timeout: float, classify: Callable, vm: str = "", **kw: Any):
        self.calls.append(argv)
        rc, out, err = self.answer(argv[1:])
        if kw.get("check", True) and rc:
            raise classify(operation, vm, rc, err)
        return subprocess.CompletedProcess(argv, rc, out, err)

    def _missing(self, name: str) -> tuple[int, str, str]:
        return 1, "", f'Error: Failed to fetch instance "{name}" in project "default": Instance not found'

    def answer(self, args: list[str]) -> tuple[int, str, str]:
        if args[0] == "--project":
            args = args[2:]
        verb, rest = args[0], args[1:]
        words = [a for a in rest if not a.startswith("-")]
        if verb == "query":
            return 0, json.dumps(self.server), ""
        if verb == "warning":
            return 0, json.dumps(WARNINGS), ""
        if verb == "list":
            name = next((w.strip("^$") for w in words if w.startswith("^")), None)
            found = [i for n, i in self.instances.items() if name is None or n == name]
            return 0, json.dumps(found), ""
        if verb == "launch":
            name = words[1].rpartition(":")[2]
            if name in self.instances:
                return (
                    1,
                    "",
                    "Error: Failed creating instance record: UNIQUE constraint failed: instances.project_id, instances.name",
                )
            config = dict(rest[i + 1].split("=", 1) for i, a in enumerate(rest) if a == "-c")
            self.instances[name] = self._instance(name, config, "virtual-machine" if "--vm" in rest else "container")
            return 0, "", ""
        if verb == "copy":
            source, name = (w.rpartition(":")[2] for w in words[:2])
            if source not in self.instances:
                return self._missing(source)
            config = dict(self.instances[source]["config"])
            for i, a in enumerate(rest):
                if a == "-c":
                    key, _, value = rest[i + 1].partition("=")
                    config[key] = value
            self.instances[name] = self._instance(name, {k: v for k, v in config.items() if v}, "container", "Stopped")
            return 0, "", ""
        name = words[0].rpartition(":")[2] if words else ""
        if name not in self.instances:
            return self._missing(name)
        inst = self.instances[name]
        if verb == "start":
            inst["status"] = "Running"
        elif verb == "stop":
            inst["status"] = "Stopped"
        elif verb == "delete":
            del self.instances[name]
        elif verb == "exec":
            if inst["status"] != "Running":
                return 1, "", "Error: Instance is not running"
            script = rest[-1]
            if script.startswith("cat "):  # a kept pair read again (incus_exec.reread)
                rc, out, err = 0, *self.kept[1:]
            else:
                rc, out, err = self.exec_answers.pop(0) if self.exec_answers else self.exec_default
                if err.startswith("Error: VM agent"):
                    return rc, out, err  # Incus's own failure: the command never ran
                self.kept = (rc, out, err)
            if self.lose:  # Incus lost the stream: no end mark
                self.lose -= 1
                return rc, "", err + END
            return rc, out + END, err + END
        return 0, "", ""

    @staticmethod
    def _instance(name: str, config: dict[str, str], kind: str, status: str = "Running") -> dict[str, Any]:
        return {
            "name": name,
            "status": status,
            "type": kind,
            "config": config,
            "devices": {},
            "profiles": ["default"],
            "created_at": "2026-12-02T06:08:18.596583804Z",
            "last_used_at": "2026-12-02T06:08:18.733538741Z",
            "state": {"network": {"eth0": {"addresses": [{"family": "inet", "address": "10.77.0.9", "scope": "global"}]}}},
        }


def incus_provider(tmp_path: Path, fake: FakeIncus, **table: Any) -> IncusProvider:
    settings = contract_settings(tmp_path, "incus")
    settings.tables["incus"] = table
    return IncusProvider(settings, runner=fake)


def owner_of(provider: IncusProvider, worker: str = "gw0", kind: Kind = Kind.WORKER, **extra: Any) -> tuple[str, Owner]:
    s = provider.settings
    name = naming.worker_vm_name(s.prefix, s.checkout, worker)
    return name, Owner(kind, s.checkout, str(s.inventory_dir), "host", "fs", worker, fingerprint="0123456789ab", **extra)


def test_create_sends_one_launch_with_the_owner_as_user_orch_keys(tmp_path: Path) -> None:
    fake = FakeIncus()
    provider = incus_provider(
        tmp_path,
        fake,
        remote="far",
        project="ci",
        profiles=["default", "small"],
        storage_pool="fast",
        config={"limits.memory": "1GiB"},
    )
    name, owner = owner_of(provider)
    provider.create(name, "orch-machine/bookworm", owner)
    [launch] = [c for c in fake.calls if "launch" in c]
    assert launch[:5] == ["incus", "--project", "ci", "launch", "far:orch-machine/bookworm"]  # the image from the same remote
    assert launch[5] == f"far:{name}" and "--vm" not in launch
    pairs = [launch[i + 1] for i, a in enumerate(launch) if a == "-c"]
    assert "user.orch.worker=gw0" in pairs and f"user.{L.MANAGED_BY}=orch" in pairs and "limits.memory=1GiB" in pairs
    assert f"user.orch.hostname={name}" in pairs  # the templates write it into /etc/hostname
    assert [launch[i + 1] for i, a in enumerate(launch) if a == "-p"] == ["default", "small"]
    assert launch[launch.index("--storage") + 1] == "fast"
    info = provider.inspect(name)
    assert info is not None and info.running and info.labels[L.WORKER] == "gw0"
    assert owned(info, provider.settings.prefix, provider.has_labels, owner.checkout, "gw0")


def test_list_vms_asks_incus_for_orchs_instances_only(tmp_path: Path) -> None:
    fake = FakeIncus()
    provider = incus_provider(tmp_path, fake)
    provider.list_vms()
    assert fake.calls[-1][-3:] == [f"user.{L.MANAGED_BY}=orch", "--format", "json"]
    provider.list_vms(all_vms=True)
    assert not any(a.startswith("user.") for a in fake.calls[-1])


def test_a_clone_is_a_copy_of_the_stopped_golden_instance_relabelled_and_started(tmp_path: Path) -> None:
    fake = FakeIncus()
    provider = incus_provider(tmp_path, fake)
    base, base_owner = owner_of(provider, kind=Kind.BASELINE, run="r1")
    provider.create(base, "orch-machine/bookworm", base_owner)
    baseline = provider.seal(base, base_owner)
    seal_script = next(c for c in fake.calls if "exec" in c)[-1]
    assert ": > /etc/machine-id" in seal_script and "rm -f /var/lib/dbus/machine-id" in seal_script
    assert fake.instances[base]["status"] == "Stopped" and provider.verify(baseline) is None
    copy, copy_owner = owner_of(provider, "gw1")
    provider.clone(baseline, copy, copy_owner)
    [cp] = [c for c in fake.calls if "copy" in c]
    assert cp[1:5] == ["copy", base, copy, "--instance-only"]
    labels = provider.inspect(copy).labels  # type: ignore[union-attr]
    assert labels[L.KIND] == "worker" and labels[L.WORKER] == "gw1" and L.RUN not in labels  # the golden's run cleared
    assert fake.instances[copy]["status"] == "Running"


def test_verify_sees_a_golden_instance_started_changed_or_gone(tmp_path: Path) -> None:
    fake = FakeIncus()
    provider = incus_provider(tmp_path, fake)
    base, owner = owner_of(provider, kind=Kind.BASELINE)
    provider.create(base, "orch-machine/bookworm", owner)
    baseline = provider.seal(base, owner)
    golden = fake.instances[base]
    golden["status"] = "Running"
    assert "started outside orch" in (provider.verify(baseline) or "")
    golden["status"] = "Stopped"
    golden["last_used_at"] = "2026-12-03T00:00:00Z"
    assert "started outside orch" in (provider.verify(baseline) or "")
    golden["last_used_at"] = baseline.seal["last_used_at"]
    golden["config"]["limits.cpu"] = "1"
    assert "reconfigured" in (provider.verify(baseline) or "")
    del fake.instances[base]
    assert "gone" in (provider.verify(baseline) or "")
    with pytest.raises(PermanentProviderError, match="baseline"):
        provider.clone(baseline, owner_of(provider, "gw1")[0], owner_of(provider, "gw1")[1])


def test_wait_ready_waits_for_systemd_and_says_what_it_saw_last(tmp_path: Path) -> None:
    fake = FakeIncus()
    provider = incus_provider(tmp_path, fake)
    provider.settings.timeouts.ready = 0.3
    name, owner = owner_of(provider)
    provider.create(name, "orch-machine/bookworm", owner)
    fake.exec_answers = [(1, "starting\n", ""), (0, "running\n", "")]
    assert provider.wait_ready(name) >= 0
    fake.exec_default = (1, "starting\n", "")
    with pytest.raises(ProviderTimeout, match="systemctl is-system-running: starting"):
        provider.wait_ready(name)


def test_address_is_the_instances_ipv4(tmp_path: Path) -> None:
    fake = FakeIncus()
    provider = incus_provider(tmp_path, fake)
    name, owner = owner_of(provider)
    provider.create(name, "orch-machine/bookworm", owner)
    assert provider.address(name) == "10.77.0.9"


def test_exec_tells_incus_failures_from_the_commands(tmp_path: Path) -> None:
    fake = FakeIncus()
    provider = incus_provider(tmp_path, fake)
    name, owner = owner_of(provider)
    provider.create(name, "orch-machine/bookworm", owner)
    fake.exec_answers = [(1, "", "Error: fake, printed by the command"), (127, "", "sh: 1: nosuch: not found")]
    assert provider.exec(name, ["sh", "-c", "exit 1"]).rc == 1
    assert provider.exec(name, ["nosuch"]).rc == 127
    fake.exec_answers, fake.lose = [(3, "out\n", "err\n")], 2  # lost twice, read again from the kept files
    assert provider.exec(name, ["sh", "-c", "echo out; echo err >&2; exit 3"]) == ExecResult(3, "out\n", "err\n")
    assert [c[-1].startswith("cat ") for c in fake.calls[-3:]] == [False, True, True]
    provider.stop(name)
    with pytest.raises(ProviderError, match="not running"):
        provider.exec(name, ["true"])
    assert provider.exec_argv(name, ["id"]) == ["incus", "exec", name, "-T", "--", "id"]


def test_host_and_its_data_name_the_remote_and_project(tmp_path: Path) -> None:
    provider = incus_provider(tmp_path, FakeIncus(), remote="far", project="ci")
    assert provider.host(VM) == (f"@incus/{VM}", {"incus_remote": "far", "incus_project": "ci"})
    assert incus_provider(tmp_path, FakeIncus()).host(VM) == (f"@incus/{VM}", {})


def test_standby_is_refused_in_one_line(tmp_path: Path) -> None:
    settings = contract_settings(tmp_path, "incus", standby=True)
    with pytest.raises(UsageError, match="standby = false") as err:
        IncusProvider(settings, runner=FakeIncus())
    assert "\n" not in str(err.value) and "renames only stopped instances" in str(err.value)


@pytest.mark.parametrize(
    ("table", "bad"),
    [({"remote": "a b"}, "remote"), ({"profiles": [""]}, "profiles"), ({"config": {"user.orch.kind": "x"}}, "config")],
)
def test_settings_are_validated(tmp_path: Path, table: dict[str, Any], bad: str) -> None:
    with pytest.raises(Exception, match=bad):
        incus_provider(tmp_path, FakeIncus(), **table)


# -- virtual machines -------------------------------------------------------------------------


def test_vm_true_is_refused_in_one_line_before_any_instance_is_made(tmp_path: Path) -> None:
    fake = FakeIncus()
    provider = incus_provider(tmp_path, fake, vm=True)
    with pytest.raises(UsageError, match="vhost_vsock kernel module not loaded") as err:
        provider.check()
    message = str(err.value)
    assert "\n" not in message and "vm = false" in message and "[tool.orch.incus]" in message
    name, owner = owner_of(provider)
    with pytest.raises(UsageError, match="vm = false"):
        provider.create(name, "images:debian/12", owner)
    assert not fake.instances and not any("launch" in c for c in fake.calls)


def test_kvm_facts_say_what_the_host_lacks(tmp_path: Path) -> None:
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "kvm").write_text("")
    (tmp_path / "sys" / "module" / "kvm_pvm").mkdir(parents=True)
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "cpuinfo").write_text("flags\t\t: fpu vme de pse hypervisor\n")
    facts = kvm_facts(tmp_path)
    assert "/dev/kvm is kvm_pvm (PVM guests only)" in facts and "no vmx/svm CPU flags" in facts
    assert "no /dev/vhost-vsock" in facts
    (tmp_path / "proc" / "cpuinfo").write_text("flags\t\t: fpu vmx\n")
    (tmp_path / "dev" / "vhost-vsock").write_text("")
    (tmp_path / "sys" / "module" / "kvm_pvm").rmdir()
    assert kvm_facts(tmp_path) == []


def test_the_vm_path_launches_with_vm_and_waits_for_the_incus_agent(tmp_path: Path) -> None:
    """Where the server runs VMs (its driver lists qemu): ``--vm``, a VM image by default,
    and readiness that tolerates the agent starting after the instance runs."""
    fake = FakeIncus(server={"environment": {"driver": "lxc | qemu", "server_version": "6.0.4"}})
    provider = incus_provider(tmp_path, fake, vm=True)
    provider.check()
    assert provider.default_image == provider.machine_image == "images:debian/12"
    name, owner = owner_of(provider)
    provider.create(name, provider.default_image, owner)
    [launch] = [c for c in fake.calls if "launch" in c]
    assert "--vm" in launch and launch[2] == "images:debian/12"
    assert fake.instances[name]["type"] == "virtual-machine"
    fake.exec_answers = [(1, "", "Error: VM agent isn't currently running")] * 2 + [(0, "running\n", "")]
    assert provider.wait_ready(name) >= 0
    assert not fake.exec_answers  # asked until the agent answered
    assert "vm" in provider.vm_settings() and provider.vm_settings()["vm"] is True


def test_a_vm_that_never_gets_its_agent_times_out_naming_it(tmp_path: Path) -> None:
    fake = FakeIncus(server={"environment": {"driver": "lxc | qemu"}})
    provider = incus_provider(tmp_path, fake, vm=True)
    provider.settings.timeouts.ready = 0.3
    name, owner = owner_of(provider)
    provider.create(name, "images:debian/12", owner)
    fake.exec_default = (1, "", "Error: VM agent isn't currently running")
    with pytest.raises(ProviderTimeout, match="VM agent isn't currently running"):
        provider.wait_ready(name)


def test_drop_deletes_the_golden_instance(tmp_path: Path) -> None:
    fake = FakeIncus()
    provider = incus_provider(tmp_path, fake)
    base, owner = owner_of(provider, kind=Kind.BASELINE)
    provider.create(base, "orch-machine/bookworm", owner)
    baseline = provider.seal(base, owner)
    assert provider.drop(baseline) and base not in fake.instances
    assert provider.drop(Baseline(base, baseline.seal))  # twice is fine


def test_an_incus_instance_is_a_machine_without_machine_true(tmp_path: Path) -> None:
    """The fixtures wait through its reboots whatever ``machine`` says: it boots its own init."""
    provider = incus_provider(tmp_path, FakeIncus())
    assert provider.settings.machine is False and provider.machine is True


def test_the_host_names_the_client_when_it_is_not_incus(tmp_path: Path) -> None:
    provider = incus_provider(tmp_path, FakeIncus(), incus="/opt/incus/bin/incus")
    assert provider.host(VM)[1] == {"incus_client": "/opt/incus/bin/incus"}


def test_keep_copies_the_running_instance_as_it_is_and_leaves_the_copy_stopped(tmp_path: Path) -> None:
    """Incus renames only stopped instances: a failing test's worker is kept as a copy
    (its files as they were, its labels the worker's), and the worker is made again after."""
    fake = FakeIncus()
    provider = incus_provider(tmp_path, fake, remote="far", storage_pool="fast")
    name, owner = owner_of(provider)
    provider.create(name, "orch-machine/bookworm", owner)
    kept = naming.kept_vm_name(provider.settings.prefix, owner.checkout, "gw0")
    provider.keep(name, kept)
    [cp] = [c for c in fake.calls if "copy" in c]
    assert cp[1:5] == ["copy", f"far:{name}", f"far:{kept}", "--instance-only"] and cp[cp.index("--storage") + 1] == "fast"
    assert not any(a == "-c" for a in cp)  # its labels as they are: nothing relabelled
    info = provider.inspect(kept)
    assert info is not None and info.state == "stopped" and info.labels == provider.inspect(name).labels  # type: ignore[union-attr]
    assert owned(info, provider.settings.prefix, provider.has_labels, owner.checkout)
    assert fake.instances[name]["status"] == "Running"  # the worker's, until its reset
