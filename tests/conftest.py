"""Shared fixtures. Tests that need Docker use the ``docker_engine`` fixture: where no
engine answers it skips on a developer's machine and FAILS in CI (CI=true), so CI can
never pass by skipping. ``podman_engine`` and ``second_engine`` do the same (one
factory, :func:`engine_fixture`, makes all three)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

BASE_IMAGE = os.environ.get("ORCH_BASE_IMAGE", "orch-base:bookworm")
ROOT = Path(__file__).resolve().parent.parent

T = TypeVar("T")


class Unavailable(Exception):
    """An engine fixture's probe cannot give its engine; the message says why."""


def engine_fixture(name: str, probe: Callable[[], T], *, what: str, hint: str, needs: tuple[str, ...] = ()) -> Any:
    """A session fixture ``name`` giving ``probe()``, after the fixtures in ``needs``. Where
    the probe raises :class:`Unavailable` the test skips on a developer's machine (the
    message ends with ``hint``) and FAILS in CI (CI=true): CI never passes by skipping."""

    def fixture(request: pytest.FixtureRequest) -> T:
        for other in needs:
            request.getfixturevalue(other)
        try:
            return probe()
        except Unavailable as err:
            if os.environ.get("CI"):
                pytest.fail(f"CI=true and {err}: {what} tests must not be skipped", pytrace=False)
            pytest.skip(f"{err} (not CI: skipped; {hint})")

    fixture.__name__ = name
    fixture.__doc__ = f"{probe.__doc__} Skipped where unavailable, FAILS in CI."
    return pytest.fixture(scope="session", name=name)(fixture)


def _docker_image() -> str:
    """The base image name, once the engine answers and the image exists."""
    try:
        proc = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise Unavailable(f"docker not usable: {err}") from err
    if proc.returncode != 0:
        raise Unavailable(f"Docker engine not reachable: {proc.stderr.strip()}")
    proc = subprocess.run(["docker", "image", "inspect", BASE_IMAGE], capture_output=True, text=True)
    if proc.returncode != 0:
        raise Unavailable(f"base image {BASE_IMAGE} missing (scripts/setup.sh builds it)")
    return BASE_IMAGE


docker_engine = engine_fixture("docker_engine", _docker_image, what="Docker", hint="run scripts/test.sh to set it up")


#: The base image as podman names it (scripts/setup.sh copies it from Docker: no registry).
PODMAN_IMAGE = f"localhost/{BASE_IMAGE.removeprefix('localhost/')}"


def _podman_image() -> str:
    """The base image's podman name, once podman runs a container from it."""
    try:
        proc = subprocess.run(["podman", "info", "--format", "{{.Version.Version}}"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise Unavailable(f"podman not usable: {err}") from err
    if proc.returncode != 0:
        raise Unavailable(f"podman not usable: {proc.stderr.strip()}")
    proc = subprocess.run(["podman", "image", "exists", PODMAN_IMAGE], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise Unavailable(f"base image {PODMAN_IMAGE} missing in podman (scripts/setup.sh copies it from Docker)")
    try:
        proc = subprocess.run(
            ["podman", "run", "--rm", "--pull", "never", "--init", PODMAN_IMAGE, "true"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired as err:
        raise Unavailable("podman cannot run a container (no answer in 60s)") from err
    if proc.returncode != 0:
        raise Unavailable(f"podman cannot run a container ({proc.stderr.strip()}; scripts/setup.sh configures it)")
    return PODMAN_IMAGE


podman_engine = engine_fixture("podman_engine", _podman_image, what="podman", hint="run scripts/setup.sh to set it up")


#: The machine image as Incus names it (scripts/incus-image.sh imports it from Docker's).
INCUS_IMAGE = os.environ.get("ORCH_INCUS_IMAGE", "orch-machine/bookworm")


def _incus_image() -> str:
    """The machine image's Incus alias, once incusd answers and holds it."""
    try:
        proc = subprocess.run(["incus", "query", "/1.0"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise Unavailable(f"incus not usable: {err}") from err
    if proc.returncode != 0:
        raise Unavailable(f"incusd not reachable: {proc.stderr.strip()}")
    proc = subprocess.run(["incus", "image", "alias", "list", "--format", "json"], capture_output=True, text=True, timeout=30)
    if INCUS_IMAGE not in {a.get("name") for a in json.loads(proc.stdout or "[]")}:
        raise Unavailable(f"image {INCUS_IMAGE} missing in Incus (scripts/setup.sh imports it)")
    return INCUS_IMAGE


incus_engine = engine_fixture("incus_engine", _incus_image, what="Incus", hint="run scripts/setup.sh to set it up")

#: The incus remote scripts/incus-cluster.sh adds for its two-member cluster.
CLUSTER_REMOTE = "orch-cluster"


def _incus_cluster() -> str:
    """The remote of a two-member Incus cluster on this machine (scripts/incus-cluster.sh
    start: idempotent, serialized by its lock; scripts/test.sh removes it at the end of a
    run that started it)."""
    script = ROOT / "scripts" / "incus-cluster.sh"
    try:
        proc = subprocess.run([str(script), "start"], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise Unavailable(f"scripts/incus-cluster.sh start did not finish: {err}") from err
    if proc.returncode != 0:
        raise Unavailable(f"scripts/incus-cluster.sh start failed: {proc.stderr.strip()[-600:]}")
    return CLUSTER_REMOTE


incus_cluster = engine_fixture(
    "incus_cluster", _incus_cluster, what="Incus cluster", hint="scripts/incus-cluster.sh start", needs=("incus_engine",)
)


FAKES = ROOT / "tests" / "fakes"

sys.path.insert(0, str(Path(__file__).parent))
from backends import BACKENDS, remove_prefix, write_pyproject  # noqa: E402
from engines import SecondEngine, SecondEngineUnavailable, ensure_second_engine  # noqa: E402


def _second_engine() -> SecondEngine:
    """The second Docker engine (scripts/engine2.sh; tests/engines.py), started on first use
    and shared by all xdist workers; scripts/test.sh stops it at the end of the run that
    started it."""
    try:
        return ensure_second_engine()
    except SecondEngineUnavailable as err:
        raise Unavailable(f"the second engine could not be started: {err}") from err


second_engine = engine_fixture(
    "second_engine", _second_engine, what="second-engine", hint="scripts/engine2.sh starts it", needs=("docker_engine",)
)


@pytest.fixture
def provider_name() -> str:
    """The provider a project uses: docker, unless the test runs on both
    (``@both_providers``) or names it (``@pytest.mark.parametrize("provider_name", [...])``).
    What the core does the same on every provider is proven once (and on the
    FakeProvider in tests/unit); OrbStack runs where its own path differs."""
    return "docker"


@pytest.fixture
def backend(provider_name: str):
    return BACKENDS[provider_name]


@pytest.fixture
def foreign(backend):
    """Names of VMs a test makes that are not orch's (so the project fixture's prefix
    cleanup may not catch them): the test appends each name, and they are removed after."""
    names: list[str] = []
    yield names
    for name in names:
        backend.remove(name)


@pytest.fixture
def prefix() -> str:
    import secrets

    return f"t{secrets.token_hex(4)}"


@pytest.fixture
def project(tmp_path: Path, docker_engine: str, provider_name: str, prefix: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh project folder (its own checkout id) on one provider, with a prefix of its
    own so that a sweep in one test never judges another test's (or the developer's)
    VMs; everything named with that prefix is deleted afterwards. For orbstack the real
    pyinfra-orbstack package runs against tests/fakes/orbctl, put first on PATH."""
    if provider_name == "orbstack":
        monkeypatch.setenv("PATH", f"{FAKES}{os.pathsep}{os.environ.get('PATH', '')}")
    write_pyproject(tmp_path, provider_name, prefix, docker_engine)
    yield tmp_path
    remove_prefix(prefix)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test under integration/ and e2e/ runs against the real Docker engine (and
    fails in CI without one)."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        if "integration" in parts or "e2e" in parts:
            item.add_marker(pytest.mark.usefixtures("docker_engine"))


# -- nothing left behind ----------------------------------------------------------------------


def _docker_ids(*args: str) -> set[str]:
    try:
        proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return set()
    return set(proc.stdout.split()) if proc.returncode == 0 else set()


def _incus_names() -> set[str]:
    try:
        proc = subprocess.run(["incus", "list", "--format", "csv", "--columns", "n"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return set()
    return set(proc.stdout.split()) if proc.returncode == 0 else set()


def _snapshot() -> dict[str, set[str]]:
    return {
        "containers": _docker_ids("ps", "-aq", "--no-trunc"),
        "images": _docker_ids("images", "-q", "--no-trunc"),
        "instances": _incus_names(),
        "infra": _docker_ids("ps", "-aq", "--no-trunc", "--filter", "label=orch.test-infra")
        | _docker_ids("images", "-q", "--no-trunc", "orch-dind"),
    }


_BEFORE = pytest.StashKey[dict]()


def pytest_sessionstart(session: pytest.Session) -> None:
    if not hasattr(session.config, "workerinput"):
        session.config.stash[_BEFORE] = _snapshot()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The suite must clean up after itself: any container, image or Incus instance made
    during the run and still there at its end (a foreign look-alike a test made, a baseline image, an
    image pyinfra committed) fails the run, in CI as locally. Only the controller looks,
    once every worker is done."""
    config = session.config
    if hasattr(config, "workerinput") or _BEFORE not in config.stash or os.environ.get("ORCH_TEST_NO_LEAK_CHECK"):
        return
    before, after = config.stash[_BEFORE], _snapshot()
    infra = after["infra"] | before["infra"]
    left = {kind: after[kind] - before[kind] - infra for kind in ("containers", "images", "instances")}
    if not any(left.values()):
        return
    names = [f"incus instance {name}" for name in sorted(left.pop("instances"))]
    for kind, ids in left.items():
        if ids:
            fmt = "{{.Name}}" if kind == "containers" else "{{.RepoTags}} {{.Id}}"
            out = subprocess.run(["docker", "inspect", "--format", fmt, *sorted(ids)], capture_output=True, text=True).stdout
            names += [f"{kind[:-1]} {line.strip().lstrip('/')}" for line in out.splitlines() if line.strip()]
    if not names:
        return
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    message = "the suite left behind what it made (clean it up in the test that made it):\n  " + "\n  ".join(names)
    if reporter is not None:
        reporter.write_line(message, red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
