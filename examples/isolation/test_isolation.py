"""The isolation example: a few tests dirty their worker, the others check that theirs is
clean, whatever ran before them on it. Under isolation = "on-dirty" (this folder's
pyproject.toml) they all pass, in any order, and the summary names the three polluters.
"""

import pytest

#: What the polluting tests leave behind; a clean worker has none of it.
LEFTOVERS = (
    "ls /etc/orch-example-* 2>/dev/null; "
    "grep '^orch-example:' /etc/passwd; "
    "cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' ' | grep -o 'sleep 100[0]'"
)


def test_leaves_a_file_in_etc(orch_worker):
    orch_worker.run("echo polluted > /etc/orch-example-file")


def test_adds_a_user(orch_worker):
    orch_worker.run("useradd --no-create-home orch-example")


def test_leaves_a_process_running(orch_worker):
    orch_worker.run("setsid sleep 1000 </dev/null >/dev/null 2>&1 &")


@pytest.mark.parametrize("n", range(9))
def test_sees_a_clean_worker(orch_worker, n):
    left = orch_worker.run(LEFTOVERS, check=False).stdout.split()
    assert left == [], f"an earlier test left {left} on {orch_worker.worker_id}"
