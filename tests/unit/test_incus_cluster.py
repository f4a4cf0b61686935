"""The Incus provider on a cluster, against a recorded ``incus`` command line (no Incus
needed): ``target`` passed as ``--target``, each instance's member as its engine, the
instances of a member that does not answer left out (and the member named), the baseline
published as an image on a cluster (and only there), and Incus's member-down texts turned
into orch's errors.

The texts are Incus 6.0.4's, read off the two-member cluster of scripts/incus-cluster.sh:
an instance on a member that is down is listed with ``"status": "Error"`` and its
``location``; ``incus exec`` to it ends with ``Error: Missing event connection with target
cluster member`` (the first time, after 10 s) or ``Error: Server isn't ready yet``; a
server that is not a cluster lists ``"location": "none"``."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from fakes_core import fake_orch
from test_incus_recorded import FakeIncus, incus_provider, owner_of

from orchestrator.primitives.errors import EngineUnavailable, TransientProviderError, UsageError
from orchestrator.primitives.kinds import Kind
from orchestrator.providers.base import Baseline
from orchestrator.providers.incus import ERROR_STATUS, IncusProvider
from orchestrator.providers.incus_errors import classify
from orchestrator.pyinfra.incus_exec import member_down
from orchestrator.verbs.status import rows
from orchestrator.verbs.up import up

IMAGE = "orch-machine/bookworm"
HEARTBEAT = "No heartbeat for 21.770543136s (2026-12-03 13:37:00.988347142 +0000 UTC)"
MISSING_EVENT = "Error: Missing event connection with target cluster member"
NOT_READY = "Error: Server isn't ready yet"


class FakeCluster(FakeIncus):
    """A recorded cluster of ``members`` (or, with ``clustered=False``, one server): each
    instance carries its ``location`` (the member ``--target`` named, else the least loaded
    online one, as the scheduler does), a member can be taken down (its instances then list
    with status Error and ``incus exec`` to them fails as Incus's does), and images are
    published, looked up by alias or fingerprint, made into instances and deleted."""

    def __init__(self, members: tuple[str, ...] = ("m1", "m2"), *, clustered: bool = True) -> None:
        env = {"driver": "lxc", "server_version": "6.0.4", "server_clustered": clustered}
        super().__init__(server={"environment": env})
        self.clustered = clustered
        self.members: dict[str, tuple[str, str]] = {m: ("Online", "Fully operational") for m in members}
        #: fingerprint -> the instance it was published from; alias -> fingerprint.
        self.images: dict[str, str] = {}
        self.aliases: dict[str, str] = {}

    def down(self, member: str, message: str = HEARTBEAT) -> None:
        self.members[member] = ("Offline", message)

    def up(self, member: str) -> None:
        self.members[member] = ("Online", "Fully operational")

    def located(self, name: str) -> str:
        return str(self.instances[name]["location"])

    def _place(self, rest: list[str]) -> str:
        if not self.clustered:
            return "none"
        if "--target" in rest:
            return rest[rest.index("--target") + 1]
        online = [m for m, (status, _) in self.members.items() if status == "Online"]
        load = {m: sum(i["location"] == m for i in self.instances.values()) for m in online}
        return min(sorted(online), key=lambda m: load[m])

    def _is_down(self, name: str) -> bool:
        where = self.instances.get(name, {}).get("location", "none")
        return where in self.members and self.members[where][0] != "Online"

    def _query(self, path: str) -> tuple[int, str, str]:
        path = path.rpartition(":")[2] if not path.startswith("/") else path
        path = path.split("?project=")[0]
        if path == "/1.0":
            return 0, json.dumps(self.server), ""
        if path == "/1.0/cluster/members?recursion=1":
            if not self.clustered:
                return 1, "", "Error: Server isn't part of a cluster"
            found = [{"server_name": m, "status": s, "message": why} for m, (s, why) in self.members.items()]
            return 0, json.dumps(found), ""
        if path.startswith("/1.0/images/aliases/"):
            alias = path.removeprefix("/1.0/images/aliases/")
            if alias not in self.aliases:
                return 1, "", "Error: Image alias not found"
            return 0, json.dumps({"name": alias, "target": self.aliases[alias], "type": "container"}), ""
        if path.startswith("/1.0/images/"):
            fp = path.removeprefix("/1.0/images/")
            if fp not in self.images:
                return 1, "", "Error: Image not found"
            return 0, json.dumps({"fingerprint": fp, "aliases": [{"name": a} for a, f in self.aliases.items() if f == fp]}), ""
        return 1, "", "Error: not found"

    def answer(self, args: list[str]) -> tuple[int, str, str]:
        if args[0] == "--project":
            args = args[2:]
        verb, rest = args[0], args[1:]
        words = [a for i, a in enumerate(rest) if not a.startswith("-") and (i == 0 or not rest[i - 1].startswith("-"))]
        if verb == "query":
            return self._query(rest[0])
        if verb == "list":
            rc, out, err = super().answer(args)
            listed = json.loads(out)
            for inst in listed:  # what the cluster can say of an instance on a member that is down
                if self._is_down(inst["name"]):  # as Incus lists it: no config, no state
                    inst["status"], inst["state"], inst["config"] = "Error", None, {}
            return rc, json.dumps(listed), err
        if verb in ("launch", "copy"):
            name = words[1].rpartition(":")[2]
            rc, out, err = super().answer(args)
            if not rc:
                self.instances[name]["location"] = self._place(rest)
            return rc, out, err
        if verb == "init":
            source, name = (w.rpartition(":")[2] for w in words[:2])
            fp = self.aliases.get(source, source)  # a published baseline, or an image such as orch-machine/bookworm
            if fp not in self.images and "zbaseline" in source:
                return 1, "", f'Error: Failed getting image: Image "{source}" not found'
            config = dict(rest[i + 1].split("=", 1) for i, a in enumerate(rest) if a == "-c")
            inst = self._instance(name, {k: v for k, v in config.items() if v}, "container", "Stopped")
            inst["config"]["volatile.base_image"] = fp
            inst["location"] = self._place(rest)
            self.instances[name] = inst
            return 0, "", ""
        if verb == "publish":
            name = words[0].rpartition(":")[2]
            if name not in self.instances:
                return self._missing(name)
            if self.instances[name]["status"] != "Stopped":
                return 1, "", "Error: The instance is running, stop it first or pass --force"
            alias = rest[rest.index("--alias") + 1]
            if alias in self.aliases:
                return 1, "", "Error: Alias already exists"
            fp = hashlib.sha256(f"{name}{len(self.calls)}".encode()).hexdigest()
            self.images[fp], self.aliases[alias] = name, fp
            return 0, "", ""
        if verb == "image" and rest[0] == "delete":
            ref = rest[1].rpartition(":")[2]
            fp = self.aliases.get(ref, ref)
            if fp not in self.images:
                return 1, "", "Error: not found"
            del self.images[fp]
            self.aliases = {a: f for a, f in self.aliases.items() if f != fp}
            return 0, "", ""
        if verb == "import":
            name = next(w for w in words if not w.endswith(":") and not w.endswith(".tar.zst"))
            config = {"user.orch.managed-by": "orch", "user.orch.checkout": "another", "user.orch.kind": "baseline"}
            inst = self._instance(name, config, "container", "Stopped")
            inst["location"] = self._place(rest)
            self.instances[name] = inst
            return 0, "", ""
        if verb == "config" and rest[0] == "set":
            name = rest[1].rpartition(":")[2]
            if name not in self.instances:
                return self._missing(name)
            for pair in rest[2:]:
                key, _, value = pair.partition("=")
                if value:
                    self.instances[name]["config"][key] = value
                else:
                    self.instances[name]["config"].pop(key, None)
            return 0, "", ""
        if verb == "exec" and words and self._is_down(words[0].rpartition(":")[2]):
            return 1, "", MISSING_EVENT
        return super().answer(args)

    def _instance(self, name: str, config: dict[str, str], kind: str, status: str = "Running") -> dict[str, Any]:  # type: ignore[override]
        inst = FakeIncus._instance(name, config, kind, status)
        inst["location"] = "none"  # placed by the verb that made it
        return inst


def calls(fake: FakeIncus, verb: str) -> list[list[str]]:
    """The argvs of one incus verb (``image delete``: "image")."""
    return [c for c in fake.calls if len(c) > 1 and c[1 if c[1] != "--project" else 3] == verb]


def target_of(argv: list[str]) -> str | None:
    return argv[argv.index("--target") + 1] if "--target" in argv else None


def make_baseline(provider: IncusProvider) -> tuple[str, Baseline]:
    base, owner = owner_of(provider, "gw9", kind=Kind.BASELINE, run="r1")  # a name no worker of these tests has
    provider.create(base, IMAGE, owner)
    return base, provider.seal(base, owner)


def make_worker(provider: IncusProvider, worker: str) -> str:
    name, owner = owner_of(provider, worker)
    provider.create(name, IMAGE, owner)
    return name


# -- target ------------------------------------------------------------------------------------


def test_target_is_passed_to_every_new_instance(tmp_path: Path) -> None:
    """``target = "m1"``: create and both clone paths (from the image, and a copy of a golden
    instance sealed without one) name the member and land there; ``incus import`` takes no
    ``--target`` (Incus 6.0.4's client has none): an imported golden instance goes where
    the cluster puts it, and its published image serves every member."""
    fake = FakeCluster()
    provider = incus_provider(tmp_path, fake, target="m1")
    provider.check()
    worker = make_worker(provider, "gw0")
    base, baseline = make_baseline(provider)
    clone, clone_owner = owner_of(provider, "gw1")
    provider.clone(baseline, clone, clone_owner)
    copied, copied_owner = owner_of(provider, "gw2")
    provider.clone(Baseline(base, {k: v for k, v in baseline.seal.items() if k != "image"}), copied, copied_owner)
    archive = tmp_path / "baseline.tar.zst"
    archive.write_text("")
    imported, imported_owner = owner_of(provider, "gw3", kind=Kind.BASELINE)
    provider.import_baseline(archive, imported, imported_owner)

    made = [*calls(fake, "launch"), *calls(fake, "init"), *calls(fake, "copy")]
    assert len(made) == 4
    assert [target_of(c) for c in made] == ["m1"] * 4
    assert {fake.located(n) for n in (worker, base, clone, copied)} == {"m1"}
    assert [target_of(c) for c in calls(fake, "import")] == [None] and imported in fake.instances


def test_without_target_the_cluster_places_and_no_target_is_sent(tmp_path: Path) -> None:
    fake = FakeCluster()
    provider = incus_provider(tmp_path, fake)
    provider.check()
    make_worker(provider, "gw0")
    _, baseline = make_baseline(provider)
    for worker in ("gw1", "gw2"):
        provider.clone(baseline, *owner_of(provider, worker))
    made = [*calls(fake, "launch"), *calls(fake, "init")]
    assert len(made) == 4 and not any("--target" in c for c in made)
    assert {fake.located(n) for n in fake.instances} == {"m1", "m2"}  # the scheduler's choice, both used


def test_a_kept_copy_stays_on_the_failed_workers_member(tmp_path: Path) -> None:
    """No ``target``: the keep's copy names the worker's own member (a copy across members
    would move its files)."""
    fake = FakeCluster()
    provider = incus_provider(tmp_path, fake)
    make_worker(provider, "gw0")
    worker = make_worker(provider, "gw1")
    assert fake.located(worker) == "m2"
    provider.keep(worker, f"{worker}-kept")
    [cp] = calls(fake, "copy")
    assert target_of(cp) == "m2" and fake.located(f"{worker}-kept") == "m2"


def test_target_on_a_single_server_is_refused_in_one_line(tmp_path: Path) -> None:
    fake = FakeCluster(clustered=False)
    with pytest.raises(UsageError, match="target") as err:
        incus_provider(tmp_path, fake, target="m1").check()
    assert "\n" not in str(err.value) and "'m1'" in str(err.value) and "not a cluster" in str(err.value)
    incus_provider(tmp_path, fake).check()  # without target: fine
    incus_provider(tmp_path, FakeCluster(), target="m1").check()  # on a cluster: fine


def test_on_a_single_server_nothing_is_targeted(tmp_path: Path) -> None:
    fake = FakeCluster(clustered=False)
    provider = incus_provider(tmp_path, fake)
    provider.check()
    make_worker(provider, "gw0")
    assert not any("--target" in c for c in fake.calls)


# -- where each instance is, and members that do not answer ----------------------------------


def test_each_instance_s_member_is_its_engine(tmp_path: Path) -> None:
    fake = FakeCluster()
    provider = incus_provider(tmp_path, fake)
    first, second = make_worker(provider, "gw0"), make_worker(provider, "gw1")
    assert {i.name: i.engine for i in provider.list_vms()} == {first: "m1", second: "m2"}
    assert provider.engine_of(second) == "m2" and provider.inspect(second).engine == "m2"  # type: ignore[union-attr]
    assert provider.unreachable_engines() == {}  # an online cluster hides nothing
    assert provider.engine_of("orch-nosuch-gw9") == ""


def test_on_a_single_server_the_engine_is_empty(tmp_path: Path) -> None:
    """A single server lists ``"location": "none"``: no engine, as with any one backend."""
    fake = FakeCluster(clustered=False)
    provider = incus_provider(tmp_path, fake)
    name = make_worker(provider, "gw0")
    assert fake.instances[name]["location"] == "none"
    assert [i.engine for i in provider.list_vms()] == [""]
    assert provider.engine_of(name) == "" and provider.unreachable_engines() == {}


def test_instances_on_an_offline_member_are_left_out_and_the_member_named(tmp_path: Path) -> None:
    fake = FakeCluster()
    provider = incus_provider(tmp_path, fake)
    first, second = make_worker(provider, "gw0"), make_worker(provider, "gw1")
    fake.down("m2")
    assert [i.name for i in provider.list_vms()] == [first]
    [(member, why)] = provider.unreachable_engines().items()
    assert member == "m2"
    assert why.startswith("offline: No heartbeat for 21.") and len(why) < 60
    assert "2026" not in why and "UTC" not in why and "770543136" not in why  # no timestamp, no nanoseconds
    for look in (provider.engine_of, provider.inspect):
        with pytest.raises(EngineUnavailable, match="cluster member m2 does not answer") as err:
            look(second)
        assert second in str(err.value) and "\n" not in str(err.value)
    assert provider.engine_of(first) == "m1"
    fake.up("m2")
    assert {i.name for i in provider.list_vms()} == {first, second} and provider.unreachable_engines() == {}
    assert provider.engine_of(second) == "m2"


def test_an_instance_on_an_offline_member_cannot_be_inspected_before_any_listing(tmp_path: Path) -> None:
    """A fresh provider (a new orch command) that asks about one instance first."""
    fake = FakeCluster()
    name = make_worker(incus_provider(tmp_path, fake), "gw0")
    fake.down("m1")
    provider = incus_provider(tmp_path, fake)
    with pytest.raises(EngineUnavailable, match="m1"):
        provider.inspect(name)
    with pytest.raises(EngineUnavailable, match="m1"):
        provider.engine_of(name)
    assert "m1" in provider.unreachable_engines()


def test_exec_on_an_instance_of_an_offline_member_names_the_fix(tmp_path: Path) -> None:
    fake = FakeCluster()
    provider = incus_provider(tmp_path, fake)
    name = make_worker(provider, "gw0")
    fake.down("m1")
    with pytest.raises(EngineUnavailable, match="start the member again"):
        provider.exec(name, ["true"])


# -- the baseline on a cluster: an image ----------------------------------------------------------


def test_seal_on_a_cluster_publishes_the_golden_instance_as_an_image(tmp_path: Path) -> None:
    fake = FakeCluster()
    provider = incus_provider(tmp_path, fake, remote="orch-cluster")
    base, baseline = make_baseline(provider)
    [publish] = calls(fake, "publish")
    assert publish[2] == f"orch-cluster:{base}" and publish[publish.index("--alias") + 1] == base
    assert baseline.seal["image"] == fake.aliases[base] and fake.images[baseline.seal["image"]] == base
    assert provider.verify(baseline) is None


def test_sealing_again_replaces_the_image_under_the_same_name(tmp_path: Path) -> None:
    fake = FakeCluster()
    provider = incus_provider(tmp_path, fake)
    base, first = make_baseline(provider)
    provider.start(base)
    again = provider.seal(base, owner_of(provider, "gw9", kind=Kind.BASELINE, run="r2")[1])
    assert again.seal["image"] != first.seal["image"] and list(fake.images) == [again.seal["image"]]


def test_a_clone_from_the_image_is_init_then_start_not_copy(tmp_path: Path) -> None:
    fake = FakeCluster()
    provider = incus_provider(tmp_path, fake)
    _, baseline = make_baseline(provider)
    name, owner = owner_of(provider, "gw1")
    provider.clone(baseline, name, owner)
    init = calls(fake, "init")[-1]  # the golden instance was placed by an init too
    assert init[2:4] == [baseline.seal["image"], name]
    assert not calls(fake, "copy")
    assert fake.calls.index(init) < fake.calls.index(["incus", "start", name])
    info = provider.inspect(name)
    assert info is not None and info.running and info.labels["orch.worker"] == "gw1" and "orch.run" not in info.labels


def test_verify_reports_a_missing_image(tmp_path: Path) -> None:
    fake = FakeCluster()
    provider = incus_provider(tmp_path, fake)
    _, baseline = make_baseline(provider)
    fake.images.clear()
    fake.aliases.clear()
    why = provider.verify(baseline) or ""
    assert f"image {baseline.seal['image'][:12]} is gone" in why and "\n" not in why


def test_verify_of_a_golden_instance_on_an_offline_member_is_fine_while_its_image_exists(tmp_path: Path) -> None:
    fake = FakeCluster()
    provider = incus_provider(tmp_path, fake)
    base, baseline = make_baseline(provider)
    fake.down(fake.located(base))
    assert provider.verify(baseline) is None
    del fake.images[baseline.seal["image"]]
    assert "is gone" in (provider.verify(baseline) or "")


def test_drop_deletes_the_image_and_the_golden_instance(tmp_path: Path) -> None:
    fake = FakeCluster()
    provider = incus_provider(tmp_path, fake)
    base, baseline = make_baseline(provider)
    assert provider.drop(baseline)
    assert not fake.images and not fake.aliases and base not in fake.instances
    assert provider.drop(baseline)  # twice is fine


def test_on_a_single_server_the_baseline_is_no_image(tmp_path: Path) -> None:
    fake = FakeCluster(clustered=False)
    provider = incus_provider(tmp_path, fake)
    base, baseline = make_baseline(provider)
    assert "image" not in baseline.seal and not calls(fake, "publish") and not fake.images
    provider.clone(baseline, *owner_of(provider, "gw1"))
    [cp] = calls(fake, "copy")
    assert cp[2] == base and not calls(fake, "init")
    assert provider.drop(baseline) and not calls(fake, "image")


# -- Incus's texts -----------------------------------------------------------------------------------


def test_member_down_texts_are_engine_unavailable_saying_to_start_the_member() -> None:
    for text in (MISSING_EVENT, 'Error: Failed to connect to cluster member "m2": dial tcp 10.88.0.3:8443: connect: no route'):
        err = classify("exec", "orch-1a2b3c4d-gw0", 1, text)
        assert type(err) is EngineUnavailable and not err.transient
        assert "start the member again" in str(err) and "orch-1a2b3c4d-gw0" in str(err) and "\n" not in str(err)


def test_a_member_starting_is_transient() -> None:
    err = classify("exec", "orch-1a2b3c4d-gw0", 1, NOT_READY)
    assert type(err) is TransientProviderError and err.transient and "\n" not in str(err)


@pytest.mark.parametrize(
    ("stderr", "down"),
    [
        pytest.param(MISSING_EVENT + "\n", True, id="missing-event"),
        pytest.param(NOT_READY, True, id="not-ready"),
        pytest.param("some output\n" + MISSING_EVENT, True, id="last-line"),
        pytest.param('Error: Failed to connect to cluster member "m2"', True, id="failed-connect"),
        pytest.param("sh: 1: nosuch: not found", False, id="command-not-found"),
        pytest.param("Error: fake, printed by the command", False, id="commands-own-error"),
        pytest.param(MISSING_EVENT + "\nthe command went on", False, id="not-last"),
        pytest.param("Missing event connection with target cluster member", False, id="not-incus-s"),
        pytest.param("", False, id="empty"),
    ],
)
def test_member_down_reads_incus_exec_s_last_line(stderr: str, down: bool) -> None:
    assert member_down(stderr) is down


# -- orch status -----------------------------------------------------------------------------------


def test_status_rows_carry_each_vm_s_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the backend says (its list's engine), else where the state recorded it (an
    instance on a member that does not answer, shown as unreachable)."""
    orch = fake_orch(tmp_path)
    up(orch, 2)
    provider = orch.provider
    hidden = orch.vm_name("gw1")
    orch.store.update(Kind.WORKER, "gw1", engine="m2")
    listed = provider.list_vms

    def on_members(*, all_vms: bool = False) -> list:
        return [dataclasses.replace(i, engine="m1") for i in listed(all_vms=all_vms) if i.name != hidden]

    def engine_of(vm: str) -> str:
        if vm == hidden:
            raise EngineUnavailable(f"cluster member m2 does not answer (offline): {vm} is on it", vm=vm)
        return "m1"

    monkeypatch.setattr(provider, "list_vms", on_members)
    monkeypatch.setattr(provider, "unreachable_engines", lambda: {"m2": "offline: No heartbeat for 21.7s"})
    monkeypatch.setattr(provider, "engine_of", engine_of)
    seen = {r.worker: r for r in rows(orch, orch.store.read(), lambda ctx: None) if r.kind == Kind.WORKER}
    assert seen["gw0"].location == "m1" and seen["gw0"].state == "running"
    assert seen["gw1"].location == "m2" and seen["gw1"].state.startswith("unreachable (cluster member m2")


def test_a_member_that_died_a_moment_ago_is_not_answering_before_the_cluster_says_offline(tmp_path: Path) -> None:
    """For up to ``cluster.offline_threshold`` the cluster still calls a dead member online
    while it lists that member's instances in status Error: nothing there is judged, deleted
    or forgotten meanwhile (a down then would have dropped their records)."""
    fake = FakeCluster()
    provider = incus_provider(tmp_path, fake)
    first, second = make_worker(provider, "gw0"), make_worker(provider, "gw1")
    fake.instances[second]["status"] = "Error"  # m2 died; the cluster has not yet marked it offline
    assert [i.name for i in provider.list_vms()] == [first]
    assert provider.unreachable_engines() == {"m2": ERROR_STATUS}
    fresh = incus_provider(tmp_path, fake)  # another command, asking about it first
    with pytest.raises(EngineUnavailable, match="cluster member m2 does not answer"):
        fresh.inspect(second)
    assert "m2" in fresh.unreachable_engines()
