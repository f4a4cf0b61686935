"""The default provision and personalize deploys.

``provision`` runs once per baseline (and on the first workers, made beside it): it
prepares orch's folders and records what the baseline holds (users, groups, packages)
so that the soft reset deploy can remove what tests add. ``personalize`` runs on every
VM made from the baseline and gives it its own identity: the worker id in
``/etc/orch-worker``. Kept small on purpose: the image carries the operating system.

A project names its own in ``[tool.orch] provision`` (and ``personalize``); it can call
these first. ``host.data.orch_worker_id`` is the worker id (``gw1``), ``oneoff`` or
``baseline``.
"""

import shlex

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files, server

BASELINE_DIR = "/var/lib/orch/baseline"


@deploy("orch: provision")
def provision() -> None:
    files.directory(name="Create orch's folders", path=BASELINE_DIR, mode="755")
    files.directory(name="Create the scratch folder tests may use", path="/var/lib/orch/scratch", mode="1777")
    record_baseline()


@deploy("orch: personalize")
def personalize() -> None:
    worker = host.data.get("orch_worker_id", "unknown")
    server.shell(
        name="Record the worker id in the VM",
        commands=[f"printf '%s\\n' {shlex.quote(worker)} > /etc/orch-worker"],
    )


@deploy("orch: record the baseline")
def record_baseline() -> None:
    """Write the users, groups and packages of the baseline, for the soft reset."""
    server.shell(
        name="Record baseline users, groups and packages",
        commands=[
            f"cut -d: -f1 /etc/passwd > {BASELINE_DIR}/users",
            f"cut -d: -f1 /etc/group > {BASELINE_DIR}/groups",
            f"(dpkg-query -W -f '${{Package}}\\n' 2>/dev/null || true) > {BASELINE_DIR}/packages",
        ],
    )


@deploy("orch: mark")
def mark() -> None:
    """orch's own last step on every VM it makes (not configurable): which baseline the VM
    comes from, so ``orch repair`` can tell on backends without labels, and the name it was
    made under (a swap renames it: a standby whose name is not that one is trash)."""
    fingerprint = host.data.get("orch_fingerprint", "")
    files.directory(name="Create orch's folder", path="/var/lib/orch", mode="755")
    server.shell(
        name="Record the baseline's fingerprint and the VM's name",
        commands=[
            f"printf '%s\\n' {shlex.quote(fingerprint)} > /var/lib/orch/fingerprint",
            f"printf '%s\\n' {shlex.quote(host.data.get('orch_vm', ''))} > /var/lib/orch/made-as",
        ],
    )
