"""``@orchdocker/NAME``: pyinfra's ``@docker`` connector for a container on another Docker
engine (host data ``docker_host``: ``ssh://user@host``, ``tcp://…``, ``unix://…``).

orch spreads workers over several engines; the ones on the engine the docker command
uses by default are plain ``@docker`` hosts. pyinfra's ``@dockerssh`` is not used for the
others: it commits and removes the container when it disconnects, which would destroy a
persistent worker. This connector is ``@docker`` with ``docker --host ENGINE``, and it
never commits or removes a container (it only works on running ones).
"""

from __future__ import annotations

import shlex
from typing import Any

from pyinfra.api.exceptions import ConnectError
from pyinfra.connectors.docker import DockerConnector


class OrchDockerConnector(DockerConnector):
    """``@docker`` on the Docker engine named by the host's ``docker_host`` data."""

    def __init__(self, state: Any, host: Any) -> None:
        super().__init__(state, host)
        engine = host.data.get("docker_host")
        if engine:
            self.docker_cmd = f"docker --host {shlex.quote(str(engine))}"

    def connect(self) -> None:
        super().connect()
        if not self.no_stop:  # pyinfra started it (or made it from an image): orch never wants that
            raise ConnectError(
                f"{self.data['docker_identifier']} is not a running container on {self.host.data.get('docker_host')}"
            )

    def disconnect(self) -> None:
        self.no_stop = True  # never commit or remove an orch VM
        super().disconnect()
