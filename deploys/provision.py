"""The default provision deploy: bring a fresh worker VM to its baseline.

Kept small on purpose: the image carries the operating system; provisioning marks the
VM as an orch worker and prepares the folders that tests and the reset deploy use.
A project names its own deploy in ``[tool.orch] provision`` to install what its tests need.
"""

import shlex

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files, server


@deploy("orch: provision worker")
def provision() -> None:
    worker = host.data.get("orch_worker_id", "unknown")
    files.directory(name="Create orch's scratch folder", path="/var/lib/orch", mode="755")
    server.shell(
        name="Record the worker id in the VM",
        commands=[f"printf '%s\\n' {shlex.quote(worker)} > /etc/orch-worker"],
    )
