"""The default provision deploy: bring a fresh worker VM to its baseline.

Kept small on purpose: the image carries the operating system; provisioning marks the
VM as an orch worker, prepares orch's folders, and records what the baseline holds
(users, groups, packages) so that the soft reset deploy can remove what tests add.
A project names its own deploy in ``[tool.orch] provision``; it can call this one first.
"""

import shlex

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files, server

BASELINE_DIR = "/var/lib/orch/baseline"


@deploy("orch: provision worker")
def provision() -> None:
    worker = host.data.get("orch_worker_id", "unknown")
    files.directory(name="Create orch's folders", path=BASELINE_DIR, mode="755")
    files.directory(name="Create the scratch folder tests may use", path="/var/lib/orch/scratch", mode="1777")
    server.shell(
        name="Record the worker id in the VM",
        commands=[f"printf '%s\\n' {shlex.quote(worker)} > /etc/orch-worker"],
    )
    record_baseline()


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
