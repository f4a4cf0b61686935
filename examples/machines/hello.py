"""A small service, deployed as a deploy author would: a systemd unit written with
``files.put``, then enabled and started with ``systemd.service``."""

from io import StringIO

from pyinfra.api import deploy
from pyinfra.operations import files, systemd

UNIT = "orch-hello.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT}"
UNIT_TEXT = """\
[Unit]
Description=orch's example service: says hello in /run/orch-hello, then waits

[Service]
ExecStartPre=/bin/sh -c 'echo hello > /run/orch-hello'
ExecStart=/bin/sleep infinity

[Install]
WantedBy=multi-user.target
"""


@deploy("hello service")
def hello_service() -> None:
    files.put(name="Write the hello unit", src=StringIO(UNIT_TEXT), dest=UNIT_PATH, mode="644")
    systemd.service(
        name="Enable and start the hello service",
        service=UNIT,
        running=True,
        enabled=True,
        daemon_reload=True,
    )
