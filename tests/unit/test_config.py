"""Settings: [tool.orch] < ORCH_* environment < command-line flags, and their validation."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from orchestrator.core import settings as config
from orchestrator.primitives import naming
from orchestrator.primitives.errors import ConfigError, UsageError
from orchestrator.providers import registry
from orchestrator.settings import loader, model


def project(tmp_path: Path, orch_table: str = "", *, extra: str = "") -> Path:
    """A project folder whose pyproject.toml has ``[tool.orch]`` with these lines."""
    root = tmp_path / "proj"
    root.mkdir(exist_ok=True)
    (root / "pyproject.toml").write_text(f'[project]\nname = "demo"\n\n[tool.orch]\n{orch_table}\n{extra}')
    return root


@pytest.fixture(autouse=True)
def no_orbctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PATH without orbctl, so the default provider does not depend on this machine."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    return empty


# -- precedence ---------------------------------------------------------------------


def test_pyproject_then_env_then_overrides(tmp_path: Path) -> None:
    root = project(
        tmp_path,
        'workers = 3\nprefix = "proj"\nimage = "img-toml"\nparallel = 2\nretries = 1\nprovider = "docker"',
    )
    s = config.load(
        cwd=root,
        env={"ORCH_WORKERS": "5", "ORCH_IMAGE": "img-env", "ORCH_PARALLEL": "3"},
        overrides={"image": "img-flag", "parallel": 8},
    )
    assert s.workers == 5  # env beats [tool.orch]
    assert s.image == "img-flag"  # flag beats env
    assert s.parallel == 8  # flag beats env beats [tool.orch]
    assert s.prefix == "proj"  # only in [tool.orch]
    assert s.retries == 1
    assert s.provider == "docker"


def test_env_values_are_typed(tmp_path: Path) -> None:
    s = config.load(cwd=project(tmp_path), env={"ORCH_WORKERS": "7", "ORCH_RETRIES": "0", "ORCH_PREFIX": "ci"})
    assert (s.workers, s.retries, s.prefix) == (7, 0, "ci")


def test_none_overrides_and_empty_env_values_are_ignored(tmp_path: Path) -> None:
    root = project(tmp_path, 'workers = 3\nimage = "img-toml"')
    s = config.load(
        cwd=root,
        env={"ORCH_WORKERS": "", "ORCH_IMAGE": "img-env"},
        overrides={"workers": None, "image": None, "inventory_dir": None, "provider": None},
    )
    assert s.workers == 3
    assert s.image == "img-env"
    assert s.inventory_dir == root / "inventories"


def test_env_argument_replaces_the_process_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in model.SETTINGS:
        monkeypatch.delenv(f"ORCH_{name.upper()}", raising=False)
    monkeypatch.setenv("ORCH_WORKERS", "9")
    assert config.load(cwd=project(tmp_path), env={}).workers == 2
    assert config.load(cwd=project(tmp_path)).workers == 9  # env=None: the real environment


def test_defaults_without_any_settings(tmp_path: Path) -> None:
    root = project(tmp_path)
    s = config.load(cwd=root, env={})
    assert s.root == root
    assert s.inventory_dir == root / "inventories"
    assert (s.workers, s.prefix, s.parallel, s.retries, s.image) == (2, "orch", 8, 4, "")
    assert s.legacy_prefixes == []
    assert s.timeouts == model.Timeouts()
    assert s.checkout == naming.checkout_id(root / "inventories")


def test_timeouts_table_overrides_some_operations(tmp_path: Path) -> None:
    s = config.load(cwd=project(tmp_path, "timeouts = { create = 5, ready = 2.5 }"), env={})
    assert s.timeout("create") == 5.0
    assert s.timeout("ready") == 2.5
    assert s.timeout("delete") == model.Timeouts().delete
    assert s.timeout("no-such-operation") == model.Timeouts().default
    assert model.Timeouts().create == 180.0  # the defaults themselves are untouched


def test_legacy_prefixes_and_provider_tables(tmp_path: Path) -> None:
    root = project(tmp_path, 'legacy_prefixes = ["pyinfra-test-"]', extra='[tool.orch.docker]\nrun_args = ["--privileged"]\n')
    s = config.load(cwd=root, env={})
    assert s.legacy_prefixes == ["pyinfra-test-"]
    assert s.tables == {"docker": {"run_args": ["--privileged"]}}


# -- where the project and its inventories are --------------------------------------


def test_root_is_found_from_a_subfolder(tmp_path: Path) -> None:
    root = project(tmp_path, 'inventory_dir = "build/inv"')
    sub = root / "tests" / "deep"
    sub.mkdir(parents=True)
    s = config.load(cwd=sub, env={})
    assert s.root == root
    assert s.inventory_dir == root / "build" / "inv"  # relative to the project root, not the cwd


def test_relative_inventory_dir_from_env_and_flag_is_relative_to_where_the_user_is(tmp_path: Path) -> None:
    # a folder typed on the command line or in the environment is relative to the
    # working directory, as for any command; [tool.orch] inventory_dir is relative to the root
    root = project(tmp_path)
    sub = root / "sub"
    sub.mkdir()
    assert config.load(cwd=sub, env={"ORCH_INVENTORY_DIR": "env-inv"}).inventory_dir == sub / "env-inv"
    s = config.load(cwd=sub, env={"ORCH_INVENTORY_DIR": "env-inv"}, overrides={"inventory_dir": Path("flag-inv")})
    assert s.inventory_dir == sub / "flag-inv"


def test_absolute_and_home_inventory_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = project(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    assert config.load(cwd=root, env={}, overrides={"inventory_dir": elsewhere}).inventory_dir == elsewhere
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    s = config.load(cwd=root, env={"ORCH_INVENTORY_DIR": "~/orch-inv"})
    assert s.inventory_dir == tmp_path / "home" / "orch-inv"


def test_two_clones_have_different_checkouts(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = config.load(cwd=project(tmp_path / "a"), env={})
    b = config.load(cwd=project(tmp_path / "b"), env={})
    assert a.root != b.root
    assert a.checkout != b.checkout
    assert config.load(cwd=a.root, env={}).checkout == a.checkout


# -- invalid settings ---------------------------------------------------------------


@pytest.mark.parametrize("key", ["wrokers", "image_name", "inventory-dir", "orbstak"])
def test_unknown_key_is_refused_by_name(tmp_path: Path, key: str) -> None:
    root = project(tmp_path, f'"{key}" = 1')
    with pytest.raises(ConfigError) as exc:
        config.load(cwd=root, env={})
    message = str(exc.value)
    assert repr(key) in message
    assert str(root / "pyproject.toml") in message


@pytest.mark.parametrize(
    "line, names",
    [
        ('workers = "x"', "workers"),
        ("workers = true", "workers"),
        ("workers = 2.5", "workers"),
        ("parallel = 4.9", "parallel"),
        ("parallel = [1]", "parallel"),
        ('retries = "many"', "retries"),
        ("image = 3", "image"),
        ("prefix = false", "prefix"),
        ("timeouts = { create = -1 }", "timeouts.create"),
        ("timeouts = { create = 0 }", "timeouts.create"),
        ('timeouts = { create = "slow" }', "timeouts.create"),
        ("timeouts = { delete = true }", "timeouts.delete"),
        ("timeouts = 5", "timeouts"),
        ('legacy_prefixes = "x"', "legacy_prefixes"),
        ("legacy_prefixes = [1]", "legacy_prefixes"),
        ('legacy_prefixes = [""]', "legacy_prefixes"),
    ],
)
def test_bad_types_are_refused_by_name(tmp_path: Path, line: str, names: str) -> None:
    with pytest.raises(ConfigError) as exc:
        config.load(cwd=project(tmp_path, line), env={})
    assert names in str(exc.value)


def test_whole_float_counts_are_accepted(tmp_path: Path) -> None:
    assert config.load(cwd=project(tmp_path, "workers = 3.0"), env={}).workers == 3


@pytest.mark.parametrize("var, value", [("ORCH_WORKERS", "many"), ("ORCH_PARALLEL", "4x"), ("ORCH_RETRIES", "2.5")])
def test_bad_env_values_name_the_variable(tmp_path: Path, var: str, value: str) -> None:
    with pytest.raises(ConfigError, match=var):
        config.load(cwd=project(tmp_path), env={var: value})


@pytest.mark.parametrize("line", ["parallel = 0", "parallel = 65", "retries = -1", "retries = 21"])
def test_out_of_range_numbers_are_refused(tmp_path: Path, line: str) -> None:
    key = line.split()[0]
    with pytest.raises(ConfigError, match=key):
        config.load(cwd=project(tmp_path, line), env={})


def test_broken_pyproject_is_a_config_error(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "pyproject.toml").write_text("[tool.orch\nworkers = 3\n")
    with pytest.raises(ConfigError, match=r"pyproject\.toml"):
        config.load(cwd=root, env={})


def test_tool_orch_must_be_a_table(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "pyproject.toml").write_text('[tool]\norch = "yes"\n')
    with pytest.raises(ConfigError, match=r"\[tool.orch\]"):
        config.load(cwd=root, env={})


@pytest.mark.parametrize(
    "source",
    [
        {"toml": 'prefix = "Bad_Prefix"'},
        {"env": {"ORCH_PREFIX": "../x"}},
        {"overrides": {"prefix": "orch-ci"}},
        {"overrides": {"prefix": ""}},
        {"toml": 'prefix = "averyveryverylongprefix"'},
    ],
)
def test_invalid_prefix_is_refused(tmp_path: Path, source: dict) -> None:
    root = project(tmp_path, source.get("toml", ""))
    with pytest.raises(UsageError, match="invalid prefix"):
        config.load(cwd=root, env=source.get("env", {}), overrides=source.get("overrides"))


# -- default provider ---------------------------------------------------------------


def test_default_provider_is_docker_without_orbctl(tmp_path: Path) -> None:
    assert registry.default_provider() == "docker"
    assert config.load(cwd=project(tmp_path), env={}).provider == "docker"


def test_default_provider_is_orbstack_with_orbctl(tmp_path: Path, no_orbctl: Path) -> None:
    orbctl = no_orbctl / "orbctl"
    orbctl.write_text("#!/bin/sh\nexit 0\n")
    orbctl.chmod(orbctl.stat().st_mode | stat.S_IXUSR)
    assert registry.default_provider() == "orbstack"
    assert config.load(cwd=project(tmp_path), env={}).provider == "orbstack"
    # an explicit choice wins over the guess
    assert config.load(cwd=project(tmp_path, 'provider = "docker"'), env={}).provider == "docker"
    assert config.load(cwd=project(tmp_path), env={"ORCH_PROVIDER": "docker"}).provider == "docker"


# -- checked all the way down ---------------------------------------------------------


@pytest.mark.parametrize(
    "extra, needle",
    [
        ("[tool.orch.docker]\nrun_argz = []\n", "unknown setting 'run_argz'"),
        ("[tool.orch.orbstack]\narch = 'x86 64'\n", "arch"),
        ("[tool.orch.fake]\npth = 'x'\n", "unknown setting 'pth'"),
        ("[tool.orch.ssh]\nuser = 'Root User'\n", "[tool.orch.ssh] in"),
        ("[tool.orch.vmware]\nx = 1\n", "unknown setting 'vmware'"),
    ],
)
def test_a_typo_in_any_table_names_the_key(tmp_path: Path, extra: str, needle: str) -> None:
    root = project(tmp_path, extra=extra)
    with pytest.raises(ConfigError, match=re.escape(needle)):
        config.load(cwd=root, env={})


@pytest.mark.parametrize("line", ["timeouts = { create = nan }", "timeouts = { create = inf }", "timeouts = { craete = 300 }"])
def test_timeouts_are_finite_known_positive_numbers(tmp_path: Path, line: str) -> None:
    with pytest.raises(ConfigError, match="timeouts"):
        config.load(cwd=project(tmp_path, line), env={})


def test_every_setting_and_every_provider_table_has_its_variable(tmp_path: Path) -> None:
    env = {
        "ORCH_POOL": "3",
        "ORCH_STANDBY": "true",
        "ORCH_AUTO_UP": "1",
        "ORCH_CONNECTOR": "ssh",
        "ORCH_LEGACY_PREFIXES": "test-vm- old-ci-",
        "ORCH_DOCKER_ENGINES": '["unix:///a.sock", "ssh://ci@build-2"]',
        "ORCH_SSH_USER": "ci",
        "ORCH_TIMEOUTS": "create=300,ready=20",
        "ORCH_DOCKER_RUN_ARGS": "--cap-add NET_ADMIN",
        "ORCH_ORBSTACK_ARCH": "arm64",
    }
    s = config.load(cwd=project(tmp_path), env=env)
    assert (s.pool, s.standby, s.auto_up, s.connector) == (3, True, True, "ssh")
    assert s.legacy_prefixes == ["test-vm-", "old-ci-"] and s.tables["docker"]["engines"] == [
        "unix:///a.sock",
        "ssh://ci@build-2",
    ]
    assert s.tables["ssh"] == {"user": "ci"}
    assert (s.timeout("create"), s.timeout("ready")) == (300.0, 20.0)
    assert s.tables["docker"]["run_args"] == ["--cap-add", "NET_ADMIN"]
    assert s.tables["orbstack"]["arch"] == "arm64"
    with pytest.raises(ConfigError, match="ORCH_DOCKER_INIT"):
        config.load(cwd=project(tmp_path), env={"ORCH_DOCKER_INIT": "maybe"})
    assert set(model.SETTINGS) >= {"pool", "standby", "auto_up", "connector", "personalize"}


@pytest.mark.parametrize("prefixes", [["orch"], ["or"], ["orch-"], ["test"]])
def test_legacy_prefixes_that_could_match_what_is_not_legacy_are_refused(tmp_path: Path, prefixes: list[str]) -> None:
    with pytest.raises(ConfigError, match="legacy_prefixes"):
        config.load(cwd=project(tmp_path, f"legacy_prefixes = {prefixes!r}".replace("'", '"')), env={})


# -- booleans are true or false, the inventory folder is a folder ----------


@pytest.mark.parametrize(
    "source, needle",
    [
        ({"toml": 'standby = "yes"'}, "standby must be true or false"),
        ({"toml": "standby = 1"}, "standby must be true or false"),
        ({"toml": 'standby = "off"'}, "standby must be true or false"),
        ({"toml": "auto_up = 0"}, "auto_up must be true or false"),
        ({"toml": "[tool.orch.docker]\ninit = 'yes'"}, "init must be true or false"),
        ({"env": {"ORCH_STANDBY": "yes"}}, "ORCH_STANDBY: standby must be true or false"),
        ({"env": {"ORCH_AUTO_UP": "on"}}, "ORCH_AUTO_UP: auto_up must be true or false"),
        ({"env": {"ORCH_DOCKER_INIT": "no"}}, "ORCH_DOCKER_INIT: init must be true or false"),
        ({"file": "ORCH_INVENTORY_DIR"}, "is a file, not a folder"),
        ({"file": "toml"}, "is a file, not a folder"),
    ],
)
def test_bad_booleans_and_an_inventory_file_are_refused_in_one_line(tmp_path: Path, source: dict, needle: str) -> None:
    root = project(tmp_path, source.get("toml", ""))
    env = dict(source.get("env", {}))
    if "file" in source:
        (root / "inv").write_text("not a folder\n")
        if source["file"] == "toml":
            root = project(tmp_path, 'inventory_dir = "inv"')
        else:
            env["ORCH_INVENTORY_DIR"] = str(root / "inv")
    with pytest.raises(ConfigError) as exc:
        config.load(cwd=root, env=env)
    assert needle in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("text, value", [("true", True), ("1", True), ("TRUE", True), ("false", False), ("0", False)])
def test_boolean_variables_are_true_false_1_or_0(tmp_path: Path, text: str, value: bool) -> None:
    s = config.load(cwd=project(tmp_path), env={"ORCH_STANDBY": text, "ORCH_AUTO_UP": text, "ORCH_DOCKER_INIT": text})
    assert (s.standby, s.auto_up, s.tables["docker"]["init"]) == (value, value, value)


# -- the checkout's recorded provider decides -------------------------------


def record_vms(root: Path, provider: str, *, workers: int = 1) -> None:
    """A state file as ``orch --provider <provider> up`` leaves it."""
    from orchestrator.state.records import READY, StateData, WorkerRecord
    from orchestrator.state.store import StateStore

    settings = config.load(cwd=root, env={"ORCH_PROVIDER": provider})
    recs = {f"gw{i}": WorkerRecord(f"gw{i}", f"orch-{settings.checkout}-gw{i}", READY) for i in range(workers)}
    StateStore(settings.inventory_dir, settings.checkout).write(
        StateData(checkout=settings.checkout, provider=provider, workers=recs)
    )


@pytest.mark.parametrize("recorded", ["podman", "orbstack", "docker"])
def test_a_checkout_without_a_named_provider_uses_the_recorded_one(tmp_path: Path, recorded: str) -> None:
    root = project(tmp_path)  # no provider in [tool.orch]; no orbctl on PATH (default: docker)
    record_vms(root, recorded)
    s = config.load(cwd=root, env={})
    assert s.provider == recorded and s.provider_origin == ""


def test_a_checkout_that_records_no_vm_takes_the_default(tmp_path: Path) -> None:
    root = project(tmp_path)
    record_vms(root, "podman", workers=0)
    assert config.load(cwd=root, env={}).provider == "docker"


def test_a_named_provider_is_kept_with_where_it_was_named(tmp_path: Path) -> None:
    root = project(tmp_path)
    record_vms(root, "podman")
    assert config.load(cwd=root, env={"ORCH_PROVIDER": "docker"}).provider_origin == "ORCH_PROVIDER"
    assert config.load(cwd=root, env={}, overrides={"provider": "docker"}).provider_origin == "--provider"
    assert "[tool.orch]" in config.load(cwd=project(tmp_path, 'provider = "docker"'), env={}).provider_origin


@pytest.mark.parametrize(
    "source, fix",
    [
        ({"env": {"ORCH_PROVIDER": "docker"}}, "unset ORCH_PROVIDER"),
        ({"overrides": {"provider": "docker"}}, "drop --provider"),
        ({"toml": 'provider = "docker"'}, "[tool.orch] provider"),
    ],
)
def test_another_provider_than_the_checkouts_is_refused_in_one_line(tmp_path: Path, source: dict, fix: str) -> None:
    from orchestrator.core.context import Context

    root = project(tmp_path, source.get("toml", ""))
    record_vms(root, "podman")
    settings = config.load(cwd=root, env=source.get("env", {}), overrides=source.get("overrides"))
    with pytest.raises(ConfigError) as exc:
        Context(settings)
    message = str(exc.value)
    assert "this checkout's VMs are on podman, not docker" in message and fix in message and "\n" not in message
    assert "--provider podman" in message


# -- tables declared where they belong: Docker's engines, the SSH connector's user ------------


@pytest.fixture
def notes(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """The deprecation notes given from now on (each is given once per process)."""
    monkeypatch.setattr(loader, "_NOTED", set())
    caplog.set_level("WARNING", logger=loader.__name__)
    return caplog


def _deprecations(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]


def test_docker_engines_are_docker_settings(tmp_path: Path, notes: pytest.LogCaptureFixture) -> None:
    root = project(tmp_path, extra='[tool.orch.docker]\nengines = ["unix:///a.sock", "ssh://ci@b"]\nengine_cap = 3\n')
    s = config.load(cwd=root, env={})
    assert s.tables["docker"] == {"engines": ["unix:///a.sock", "ssh://ci@b"], "engine_cap": 3}
    assert "engines" not in model.Settings.model_fields and "ssh" not in model.Settings.model_fields
    assert _deprecations(notes) == []
    with pytest.raises(ConfigError, match=r"\[tool.orch.docker\].*is not a Docker host"):
        config.load(cwd=project(tmp_path, extra='[tool.orch.docker]\nengines = ["/a.sock"]\n'), env={})


def test_the_old_engine_keys_still_work_with_one_note(tmp_path: Path, notes: pytest.LogCaptureFixture) -> None:
    root = project(tmp_path, 'engines = ["unix:///a.sock", "ssh://ci@b"]\nengine_cap = 2')
    for _ in range(2):
        s = config.load(cwd=root, env={})
        assert s.tables["docker"] == {"engines": ["unix:///a.sock", "ssh://ci@b"], "engine_cap": 2}
    assert _deprecations(notes) == [
        "[tool.orch] engines is deprecated: write [tool.orch.docker] engines instead",
        "[tool.orch] engine_cap is deprecated: write [tool.orch.docker] engine_cap instead",
    ]
    with pytest.raises(ConfigError, match=r"\[tool.orch\] in .*engine_cap"):
        config.load(cwd=project(tmp_path, "engine_cap = -1"), env={})


def test_the_old_engine_variables_still_work_with_one_note(tmp_path: Path, notes: pytest.LogCaptureFixture) -> None:
    env = {"ORCH_ENGINES": "unix:///a.sock ssh://ci@b", "ORCH_ENGINE_CAP": "4"}
    for _ in range(2):
        s = config.load(cwd=project(tmp_path), env=env)
        assert s.tables["docker"] == {"engines": ["unix:///a.sock", "ssh://ci@b"], "engine_cap": "4"}
    assert _deprecations(notes) == [
        "ORCH_ENGINES is deprecated: write ORCH_DOCKER_ENGINES instead",
        "ORCH_ENGINE_CAP is deprecated: write ORCH_DOCKER_ENGINE_CAP instead",
    ]
    # the new variable wins over the old one, and a bad value names the variable it came from
    s = config.load(cwd=project(tmp_path), env={**env, "ORCH_DOCKER_ENGINES": "tcp://c:2375"})
    assert s.tables["docker"]["engines"] == ["tcp://c:2375"]
    with pytest.raises(ConfigError, match=r"ORCH_ENGINES: engines: .*not a Docker host"):
        config.load(cwd=project(tmp_path), env={"ORCH_ENGINES": "/a.sock"})


def test_several_engines_make_the_engines_provider(tmp_path: Path) -> None:
    from orchestrator.providers.docker import DockerProvider
    from orchestrator.providers.engines import Engines

    root = project(tmp_path, 'provider = "docker"', extra='[tool.orch.docker]\nengines = ["unix:///a.sock", "tcp://b:2375"]\n')
    provider = registry.get_provider(config.load(cwd=root, env={}))
    assert isinstance(provider, Engines) and list(provider.members) == ["unix:///a.sock", "tcp://b:2375"]
    assert type(registry.get_provider(config.load(cwd=project(tmp_path), env={}))) is DockerProvider


def test_the_ssh_table_is_the_ssh_connectors(tmp_path: Path) -> None:
    from orchestrator.core.connectors import SSHSettings

    s = config.load(cwd=project(tmp_path, extra='[tool.orch.ssh]\nuser = "ci"\n'), env={})
    assert SSHSettings(**s.tables["ssh"]).user == "ci"
    assert config.load(cwd=project(tmp_path), env={"ORCH_SSH_USER": "bob"}).tables["ssh"] == {"user": "bob"}


# -- the one registry: the orch.providers entry points -----------------------------------------


def test_a_provider_registered_by_entry_point_only_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    (site / "orch_mine-1.0.dist-info").mkdir(parents=True)
    (site / "orch_mine-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: orch-mine\nVersion: 1.0\n")
    (site / "orch_mine-1.0.dist-info" / "entry_points.txt").write_text("[orch.providers]\nmine = orch_mine:MineProvider\n")
    (site / "orch_mine.py").write_text(
        "from orchestrator.providers.fake import FakeProvider, FakeSettings\n"
        "class MineSettings(FakeSettings):\n    colour: str = 'blue'\n"
        "class MineProvider(FakeProvider):\n    name = 'mine'\n    settings_model = MineSettings\n"
    )
    monkeypatch.syspath_prepend(str(site))
    assert "mine" in registry.available() and "docker" in registry.available()
    assert registry.provider_class("mine").__name__ == "MineProvider"
    root = project(tmp_path, 'provider = "mine"', extra='[tool.orch.mine]\ncolour = "red"\n')
    s = config.load(cwd=root, env={})
    assert (s.provider, s.tables["mine"]) == ("mine", {"colour": "red"})
    assert registry.get_provider(s).opts.colour == "red"  # type: ignore[attr-defined]
    assert not hasattr(registry, "BUILTIN")


def test_without_the_entry_points_one_line_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    # an install without them: neither the group's scan nor orch's own metadata has any
    monkeypatch.setattr(registry, "entry_points", lambda group: [])
    monkeypatch.setattr(registry, "_own", dict)
    with pytest.raises(UsageError, match=r"pip install -e \.") as exc:
        registry.provider_class("docker")
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(
    "orch_table, env",
    [
        ('provider = "podman"\nengines = ["unix:///a.sock", "ssh://ci@b"]', {}),
        ('provider = "fake"', {"ORCH_ENGINES": "unix:///a.sock ssh://ci@b"}),
        ("", {"ORCH_PROVIDER": "orbstack", "ORCH_ENGINE_CAP": "2"}),
    ],
)
def test_the_old_engine_keys_with_another_provider_are_refused(tmp_path: Path, orch_table: str, env: dict[str, str]) -> None:
    """`[tool.orch] engines` was orch's own setting, refused with any provider but docker;
    read into Docker's table now, it must not be silently ignored for podman or orbstack."""
    with pytest.raises(ConfigError, match=r"needs the docker provider, not (podman|fake|orbstack)"):
        config.load(cwd=project(tmp_path, orch_table), env=env)


def test_the_docker_table_is_ignored_by_another_provider(tmp_path: Path) -> None:
    """A project that runs on Docker in CI and on podman here keeps Docker's table for Docker."""
    root = project(tmp_path, 'provider = "podman"', extra='[tool.orch.docker]\nengines = ["unix:///a.sock"]\n')
    assert config.load(cwd=root, env={}).provider == "podman"


def test_the_old_ssh_variable_still_sets_the_user_with_one_note(tmp_path: Path, notes: pytest.LogCaptureFixture) -> None:
    """`ORCH_SSH=user=carol` set the SSH connector's user when the table was orch's own
    setting; the user is part of the baseline's fingerprint, so it must still be read."""
    for _ in range(2):
        s = config.load(cwd=project(tmp_path), env={"ORCH_SSH": "user=carol"})
        assert s.tables["ssh"] == {"user": "carol"}
    assert _deprecations(notes) == ["ORCH_SSH is deprecated: write ORCH_SSH_USER instead"]
    s = config.load(cwd=project(tmp_path), env={"ORCH_SSH": "user=carol", "ORCH_SSH_USER": "dave"})
    assert s.tables["ssh"] == {"user": "dave"}
    with pytest.raises(ConfigError, match=r"ORCH_SSH"):
        config.load(cwd=project(tmp_path), env={"ORCH_SSH": "nonsense"})
