"""VMs that tests make themselves, black-box with pytester on the file-backed FakeProvider:
the issue's story (two xdist workers naming VMs by the second collide, and one test's
teardown deletes the other's VM) and how ``orch_vm_name`` ends it; a test that expects a
create to fail but leaves a machine behind; a test that leaves a VM under a name of its
own, named at the end of the run with the test, and ``--orch-reap-leaks`` deleting
exactly it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from orchestrator.primitives import naming

pytest_plugins = ["pytester"]

#: What a connector's own suite has: its CLI, which makes and deletes VMs behind orch's
#: back (here on the fake backend, through the FakeProvider with no orch labels).
CONNECTOR = """
import json
import os
import time
from pathlib import Path

from orchestrator.core import settings as config
from orchestrator.primitives.errors import VMExists
from orchestrator.providers.fake import FakeProvider

HERE = Path(__file__).parent
SYNC = Path(os.environ["SYNC_DIR"]) if os.environ.get("SYNC_DIR") else HERE / "sync"


class NoLabels:
    def labels(self):
        return {}


def backend():
    return FakeProvider(config.load(cwd=HERE, env={}))


def create(name, *, exist_ok=False):
    try:
        backend().create(name, "fake:bookworm", NoLabels())
    except VMExists:
        if not exist_ok:
            raise


def create_that_fails(name):
    '''A create that makes the machine, then fails (a provisioning step after it).'''
    create(name)
    raise RuntimeError(f"create {name}: cloud-init failed")


def delete(name):
    backend().delete(name)


def exists(name):
    return backend().inspect(name) is not None


def same_second():
    '''Both workers name their VM in the same second: the first to get here picks it.'''
    SYNC.mkdir(exist_ok=True)
    target = SYNC / "second"
    try:
        fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        os.write(fd, str(int(time.time()) + 2).encode())
        os.close(fd)
    except FileExistsError:
        pass
    while not target.read_text():
        time.sleep(0.01)
    at = int(target.read_text())
    while time.time() < at + 0.1:
        time.sleep(0.01)


def signal(what):
    (SYNC / what).write_text("1")


def wait_for(what, timeout=10):
    end = time.time() + timeout
    while not (SYNC / what).exists() and time.time() < end:
        time.sleep(0.02)
"""

#: The issue's story: a lifecycle test run twice at once (two xdist workers). ``first``
#: finishes, and its teardown deletes "its" VM; ``second`` then looks at its own.
STORY = """
import time

import pytest

from connector import create, delete, exists, same_second, signal, wait_for


@pytest.fixture
def vm(request, {fixture}):
    same_second()
    name = {name}
    create(name, exist_ok=True)  # the connector's create: idempotent
    yield name
    delete(name)


@pytest.mark.parametrize("who", ["first", "second"])
def test_lifecycle(who, vm):
    signal(f"made-{{who}}")
    wait_for("made-first" if who == "second" else "made-second")
    if who == "second":
        wait_for("first-done")
        assert exists(vm), f"my VM {{vm}} is gone: another test's teardown deleted it"


def test_zz_done():
    pass


@pytest.fixture(autouse=True)
def _done(request):
    yield
    if request.node.name == "test_lifecycle[first]":
        signal("first-done")
"""

PYPROJECT = '[tool.orch]\nprovider = "fake"\nimage = "fake:bookworm"\nprefix = "p"\n[tool.orch.fake]\npath = "{path}"\n'


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    for var in [v for v in os.environ if v.startswith(("ORCH_", "PYTEST_XDIST"))]:
        monkeypatch.delenv(var, raising=False)
    pytester.makepyprojecttoml(PYPROJECT.format(path=pytester.path / "fake.json"))
    pytester.makepyfile(connector=CONNECTOR)
    return pytester


def vms(project: pytest.Pytester) -> set[str]:
    path = project.path / "fake.json"
    return set(json.loads(path.read_text())["vms"]) if path.exists() else set()


def add_vm(project: pytest.Pytester, name: str) -> None:
    """A VM made before the run (by the developer, or a run of another checkout)."""
    from orchestrator.core import settings as config
    from orchestrator.providers.fake import FakeProvider

    class NoLabels:
        def labels(self) -> dict[str, str]:
            return {}

    FakeProvider(config.load(cwd=project.path, env={})).create(name, "fake:bookworm", NoLabels())


def state(project: pytest.Pytester) -> dict:
    return json.loads((project.path / "inventories" / ".orch" / "state.json").read_text())


def run_report(project: pytest.Pytester) -> dict:
    [path] = (project.path / "inventories" / ".orch" / "reports").glob("*.json")
    return json.loads(path.read_text())


# -- the story --------------------------------------------------------------------------------


def test_two_workers_naming_vms_by_the_second_collide_and_one_teardown_deletes_the_others(project: pytest.Pytester) -> None:
    """What the seed's suite did (``test-vm-{int(time.time())}``), under ``pytest -n 2``."""
    project.makepyfile(test_story=STORY.format(fixture="tmp_path", name='f"test-vm-{int(time.time())}"'))
    result = project.runpytest_subprocess("-n", "2", "-p", "no:randomly")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*my VM test-vm-* is gone: another test's teardown deleted it*"])


def test_names_orch_hands_out_never_collide(project: pytest.Pytester) -> None:
    project.makepyfile(test_story=STORY.format(fixture="orch_vm_name", name='orch_vm_name("test-vm")'))
    result = project.runpytest_subprocess("-n", "2", "-p", "no:randomly")
    result.assert_outcomes(passed=3)
    assert vms(project) == set() and state(project)["testvms"] == {}


# -- names: deleted after their test ----------------------------------------------------------

FAILING_CREATE = """
import pytest

from orchestrator import vm_name
from connector import create_that_fails, exists

LEFT = []


def test_create_fails_on_bad_cloud_init():
    name = vm_name("test-vm")
    LEFT.append(name)
    with pytest.raises(RuntimeError, match="cloud-init failed"):
        create_that_fails(name)
    assert exists(name)  # what the test does not clean up


def test_next_on_the_same_worker():
    assert not exists(LEFT[0]), "the machine the last test left is still there"
"""


def test_a_machine_a_create_that_fails_leaves_behind_is_deleted_after_its_test(project: pytest.Pytester) -> None:
    project.makepyfile(test_failing=FAILING_CREATE)
    result = project.runpytest_subprocess("-p", "no:xdist", "-p", "no:randomly")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "*orch: VMs tests made under names orch handed out (orchestrator.vm_name)*",
            "test_failing.py::test_create_fails_on_bad_cloud_init (gw0): left test-vm-*: deleted after the test",
        ]
    )
    assert vms(project) == set() and state(project)["testvms"] == {}
    [entry] = run_report(project)["testvms"]
    assert entry["test"] == "test_failing.py::test_create_fails_on_bad_cloud_init" and entry["result"] == "deleted"
    assert naming.parse_named_vm_name(entry["vm"]) is not None


SESSION_SCOPED = """
import pytest

from orchestrator import vm_name
from connector import create, exists


@pytest.fixture(scope="session")
def shared_vm():
    name = vm_name("shared", scope="session")
    create(name)
    return name


def test_one(shared_vm):
    assert exists(shared_vm)


def test_two(shared_vm):
    assert exists(shared_vm)  # not deleted after test_one
"""


def test_a_session_scoped_name_lasts_until_the_end_of_the_session(project: pytest.Pytester) -> None:
    project.makepyfile(test_session=SESSION_SCOPED)
    result = project.runpytest_subprocess("-n", "2", "-p", "no:randomly")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*left shared-*: deleted at the end of the session"])
    assert vms(project) == set() and state(project)["testvms"] == {}


CRASH = """
import os

from orchestrator import vm_name
from connector import create


def test_crashes_its_worker():
    create(vm_name("test-vm"))
    os._exit(3)
"""


def test_a_crashed_workers_vm_is_deleted_when_the_session_ends(project: pytest.Pytester) -> None:
    project.makepyfile(test_crash=CRASH)
    result = project.runpytest_subprocess("-n", "1", "-p", "no:randomly")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*test_crashes_its_worker (gw0): left test-vm-*: deleted at the end of the session"])
    assert vms(project) == set() and state(project)["testvms"] == {}


def test_a_bad_base_name_fails_the_test_in_one_line(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_bad="def test_bad(orch_vm_name):\n    orch_vm_name('Test_VM')\n",
        test_outside="from orchestrator import vm_name\n\nNAME = None\n\ndef test_later():\n    pass\n",
    )
    result = project.runpytest_subprocess("-p", "no:xdist", "-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*invalid VM name base 'Test_VM': use 1-28 lowercase letters, digits or single hyphens*"])
    assert "Traceback" not in result.stdout.str()


def test_vm_name_outside_a_test_says_where_it_belongs() -> None:
    from orchestrator import vm_name
    from orchestrator.primitives.errors import UsageError
    from orchestrator.pytest_plugin import run

    saved = list(run._NOW)
    run._NOW.clear()
    try:
        with pytest.raises(UsageError, match="call it in a test or a fixture"):
            vm_name("test-vm")
    finally:
        run._NOW[:] = saved


# -- leaks --------------------------------------------------------------------------------------

LEAKY = """
import secrets
import time
from pathlib import Path

from connector import create, delete, exists
from orchestrator.primitives import naming


def test_leaks_a_vm():
    name = f"test-vm-{int(time.time())}-{secrets.token_hex(2)}"  # a name of its own
    create(name)
    Path("leaked.txt").write_text(name)


def test_cleans_up_after_itself():
    name = f"test-vm-{int(time.time())}-{secrets.token_hex(2)}"
    create(name)
    delete(name)


def test_meanwhile_another_checkouts_run_makes_one():
    create(naming.named_vm_name("test-vm", "0badc0de"))  # what orch handed a test of another checkout
"""

#: A VM made by the run, but by no test: in a hook between the list and the first test.
NOT_A_TEST = """
import time
from connector import create

def pytest_collection_finish(session):  # in each xdist worker
    create("made-while-no-test-ran", exist_ok=True)
    time.sleep(1.2)  # the fake's times are to the second: the first test starts a second later
"""


def _leak_run(project: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, str]:
    project.makepyfile(test_leaky=LEAKY)
    project.makeconftest(NOT_A_TEST)
    add_vm(project, "test-vm-1698765432")  # made before the run, with a similar name
    (project.path / "inventories" / ".orch").mkdir(parents=True, exist_ok=True)  # orch ran here before: a lease, a JSON report
    result = project.runpytest_subprocess("-p", "no:randomly", *args)
    result.assert_outcomes(passed=3)
    return result, (project.path / "leaked.txt").read_text()


def test_a_vm_a_test_leaves_is_named_with_the_test_at_the_end_of_the_run(project: pytest.Pytester) -> None:
    result, leaked = _leak_run(project, "-p", "no:xdist")
    result.stdout.fnmatch_lines(
        [
            "*orch: VMs the run's tests made and left behind (not orch's)*",
            f"test_leaky.py::test_leaks_a_vm: left {leaked} (made 20*Z): still there",
            "*`pytest --orch-reap-leaks` deletes the ones a test left (only those)*",
        ]
    )
    leaks = {e["vm"]: e for e in run_report(project)["leaks"]}
    assert set(leaks) == {leaked, "made-while-no-test-ran"}
    assert leaks[leaked]["tests"] == ["test_leaky.py::test_leaks_a_vm"] and leaks[leaked]["result"] == "still there"
    assert leaks["made-while-no-test-ran"]["tests"] == [] and "never reaped" in leaks["made-while-no-test-ran"]["result"]
    assert leaked in vms(project)


def test_reap_leaks_deletes_exactly_the_leaked_vms(project: pytest.Pytester) -> None:
    """Under ``-n 2`` the test on the other worker ran at the same moment: both are named
    (at most one test per worker), and the leak is reaped all the same."""
    result, leaked = _leak_run(project, "-n", "2", "--orch-reap-leaks")
    result.stdout.fnmatch_lines(
        [f"*test_leaky.py::test_leaks_a_vm*(gw*): left {leaked} (made 20*Z): deleted (--orch-reap-leaks)"]
    )
    [entry] = [e for e in run_report(project)["leaks"] if e["vm"] == leaked]
    assert "test_leaky.py::test_leaks_a_vm" in entry["tests"] and len(entry["tests"]) <= 2
    left = vms(project)
    assert leaked not in left
    other = {n for n in left if naming.parse_named_vm_name(n) == ("test-vm", "0badc0de")}
    assert left == {"test-vm-1698765432", "made-while-no-test-ran", *other} and len(other) == 1


def test_a_run_without_orch_in_its_project_lists_nothing(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """No ``[tool.orch]``, no lease: the plugin stays out of a project that does not use it."""
    for var in [v for v in os.environ if v.startswith("ORCH_")]:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ORCH_PROVIDER", "fake")
    pytester.makepyfile(test_plain="def test_plain():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:xdist")
    result.assert_outcomes(passed=1)
    assert not (Path(pytester.path) / "inventories").exists()
