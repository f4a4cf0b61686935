"""The machines example: each test gets its worker, a machine with systemd as PID 1.

Run it with `pytest -n 2 --orch-up` in this folder (its pyproject.toml says
machine = true). The service is enabled, survives a reboot and is gone after a reset.
"""

import pytest
from hello import UNIT, UNIT_PATH, hello_service
from pyinfra.operations import server


def systemctl(orch_worker, *args: str) -> str:
    return orch_worker.run(f"systemctl {' '.join(args)}", check=False).stdout.strip()


def test_the_worker_is_a_machine(orch_worker):
    assert orch_worker.run("cat /proc/1/comm").stdout.strip() == "systemd"
    assert systemctl(orch_worker, "is-system-running") in ("running", "degraded")


@pytest.mark.orch_reset  # the test installs a service: its worker goes back to the baseline after it
def test_service_is_enabled_and_active(orch_worker):
    orch_worker.deploy(hello_service)
    assert systemctl(orch_worker, "is-enabled", UNIT) == "enabled"
    assert systemctl(orch_worker, "is-active", UNIT) == "active"
    assert orch_worker.run("cat /run/orch-hello").stdout.strip() == "hello"


@pytest.mark.orch_reset
def test_service_comes_back_after_a_reboot(orch_worker):
    orch_worker.deploy(hello_service)
    orch_worker.run("touch /run/orch-before-reboot")  # /run is a tmpfs: a new boot starts without it
    # pyinfra's own reboot: it waits until the machine's uptime shows that it rebooted
    # delay: past the reboot itself (1-2 s): a reconnect while the engine restarts the
    # container would fail pyinfra's uptime fact (its default delay is 10 s)
    orch_worker.operation(server.reboot, delay=4, interval=1, reboot_timeout=120)
    assert orch_worker.run("test -e /run/orch-before-reboot", check=False).rc != 0
    assert orch_worker.run("cat /proc/1/comm").stdout.strip() == "systemd"
    assert systemctl(orch_worker, "is-active", UNIT) == "active"
    assert orch_worker.run("cat /run/orch-hello").stdout.strip() == "hello"  # /run is new: written again at boot


def test_a_reset_removes_the_service(orch_worker):
    orch_worker.deploy(hello_service)
    assert systemctl(orch_worker, "is-active", UNIT) == "active"
    orch_worker.reset()
    assert orch_worker.run(f"test -e {UNIT_PATH}", check=False).rc != 0
    assert systemctl(orch_worker, "is-active", UNIT) != "active"
    assert orch_worker.run("cat /etc/orch-worker").stdout.strip() == orch_worker.worker_id
