"""testinfra on orch's VMs: the ``orch_host`` fixture's ``Host``, reached the way the
worker's own connector reaches it (``docker exec`` for ``@docker``, ``orbctl run`` for
``@orbstack``, SSH with the worker's key for ``@ssh``). Needs pytest-testinfra
(``pip install 'orch[testinfra]'``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.primitives.errors import UsageError

if TYPE_CHECKING:
    from orchestrator.pytest_plugin.worker import Worker


def testinfra_host(worker: Worker) -> Any:
    """A testinfra ``Host`` on ``worker``'s VM, as root."""
    try:
        import testinfra
        from testinfra.backend import base
        from testinfra.host import Host
    except ImportError as err:
        raise UsageError("orch_host needs pytest-testinfra: pip install 'orch[testinfra]'") from err
    connector, _, target = worker.host.partition("/")
    data = worker.host_data
    if connector == "@docker":
        return testinfra.get_host(f"docker://{target}")
    if connector == "@podman":
        return testinfra.get_host(f"podman://{target}")
    if connector == "@orbstack":

        class OrbctlBackend(base.BaseBackend):
            """``orbctl run -m NAME -u root`` (testinfra has no OrbStack backend)."""

            NAME = "orbctl"

            def run(self, command: str, *args: str, **kwargs: Any) -> base.CommandResult:
                cmd = self.get_command(command, *args)
                out = self.run_local("orbctl run -m %s -u root /bin/sh -c %s", data.get("vm_name", target), cmd)
                out.command = self.encode(cmd)
                return out

        return Host(OrbctlBackend(target))
    if data.get("ssh_hostname") or (connector not in ("@local",) and not connector.startswith("@")):
        host = data.get("ssh_hostname", worker.host)
        spec = f"paramiko://{data.get('ssh_user', 'root')}@{host}:{data.get('ssh_port', 22)}"
        return testinfra.get_host(spec, ssh_identity_file=data.get("ssh_key"), sudo=data.get("ssh_user", "root") != "root")
    raise UsageError(f"orch_host: testinfra cannot reach {worker.host} (connectors: @docker, @podman, @orbstack, @ssh)")
