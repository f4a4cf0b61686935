"""What a suite's plain helper functions call, anywhere inside a running test (its body,
a helper it calls, a helper's helper, a fixture, a thread the test started):
``orchestrator.fresh_vm()`` and ``orchestrator.current_worker()``. The ``fresh_vm`` and
``orch_worker`` fixtures are thin wrappers of the same code, so a suite may mix both.

"The current test" is the one the switchboard says runs now in this process
(:func:`orchestrator.pytest_plugin.run.current_test`, from the start of its setup to the
end of its teardown; each xdist worker is a process with its own). Outside one (at
import, at collection, in a process without orch's plugin) both raise
:class:`~orchestrator.pytest_plugin.run.OutsideTest`, one line saying where they belong.
"""

from __future__ import annotations

import os
import time

import pytest

from orchestrator.primitives.errors import OrchError
from orchestrator.pytest_plugin import isolation
from orchestrator.pytest_plugin.handout import fail, get_worker
from orchestrator.pytest_plugin.report import waited
from orchestrator.pytest_plugin.run import RUN_KEY, OrchRun, current_test, fixture_scope, orch_run
from orchestrator.pytest_plugin.worker import Worker, current_worker_id

#: The one-offs a test made (the function, the fixture's factory), deleted in its teardown.
ONEOFFS_KEY = pytest.StashKey[list[Worker]]()


def current_worker() -> Worker:
    """This process's worker, the very object the ``orch_worker`` fixture gives (made on
    first use, closed once at the end of the session). The test that reaches it this way
    is checked by the isolation policy from this call on, as if it named ``orch_worker``."""
    item = current_test("orchestrator.current_worker()")
    try:
        worker = get_worker(item.config)
    except OrchError as err:
        fail(err)
        raise  # not reached: fail() raises
    isolation.reached(item)
    return worker


def fresh_vm(item: pytest.Item | None = None) -> Worker:
    """A one-off VM for the test running now (``item``: the ``fresh_vm`` fixture's test),
    taken from the pool when there is one, else cloned from the baseline. It is recorded in
    the state before it is made and deleted after the test, pass or fail, in the background
    (the session waits for the deletions at its end); if the run dies, ``orch sweep`` finds
    it. One made while a fixture wider than a function's is set up (a session fixture's)
    lives until the end of the session instead: no test's teardown deletes it under the
    fixture's feet."""
    from orchestrator.verbs.oneoffs import create_oneoff  # noqa: PLC0415  (on first use: not at plugin load)

    item = item or current_test("orchestrator.fresh_vm()")
    run = orch_run(item.config)
    start, kind = time.monotonic(), "failed"
    try:
        pooled = _pooled(run)
        host = create_oneoff(run.ctx, run.run_id)
        kind = "pool" if host.vm in pooled or f"-{os.getpid()}-" not in host.vm else "made"
    except OrchError as err:
        fail(err)
        raise  # not reached: fail() raises
    finally:
        waited("fresh_vm", kind, time.monotonic() - start, current_worker_id(run.workerinput), item=item)
    worker = Worker(host, ready=(lambda: _ready(run, host.vm)) if run.ctx.provider.machine else None)
    if fixture_scope() == "function":
        item.stash.setdefault(ONEOFFS_KEY, []).append(worker)
    else:
        run.session_oneoffs.append(worker)
    return worker


def _pooled(run: OrchRun) -> set[str]:
    """The pool's VMs now, to tell a claim from a VM made while the test waits (one this
    process makes carries its pid in its name; one the maintainer made, another pid)."""
    return {o.vm for o in run.ctx.store.read().oneoffs.values() if o.pool}


def _ready(run: OrchRun, vm: str) -> None:
    """A one-off machine after a reboot: booted again."""
    run.ctx.wait_ready(vm)


def after_test(item: pytest.Item) -> None:
    """Called by the switchboard in each test's teardown, whatever the steps before it did
    (see ``plugin.py`` for the order): the test's one-offs are deleted."""
    made = item.stash.get(ONEOFFS_KEY, [])
    if not made:
        return
    run = item.config.stash[RUN_KEY]
    for worker in made:
        worker.close()
        run.delete_later(worker.vm)
    made.clear()
