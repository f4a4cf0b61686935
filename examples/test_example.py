"""An example suite for orch: every test works inside its own xdist worker's VM.

Run it with `pytest -n 4 --orch-up examples/` (or after `orch up --workers 4`). Each test leaves a
proof file inside the VM (/var/lib/orch/proofs/<test>) holding the worker id it ran
under, so anyone can check afterwards that tests ran on their own worker's VM.
"""

import pytest
from pyinfra.facts.files import Directory
from pyinfra.facts.server import Hostname
from pyinfra.operations import files, server


@pytest.fixture
def proof(request, orch_worker):
    """Write which worker ran this test into the VM, after the test body."""
    yield
    name = request.node.name.replace("[", "_").replace("]", "")
    orch_worker.run("mkdir -p /var/lib/orch/proofs")
    orch_worker.run(f"echo {orch_worker.worker_id} > /var/lib/orch/proofs/{name}")


def test_worker_vm_is_a_name(worker_vm, proof):
    assert isinstance(worker_vm, str) and worker_vm.endswith("-gw" + worker_vm.rsplit("-gw", 1)[1])


def test_vm_hostname_is_its_name(orch_worker, proof):
    # Docker containers made by orch carry their name as hostname.
    assert orch_worker.fact(Hostname) == orch_worker.vm


def test_provisioned_marker(orch_worker, proof):
    assert orch_worker.run("cat /etc/orch-worker").stdout.strip() == orch_worker.host_data["orch_worker_id"]


def test_pyinfra_operation(orch_worker, proof):
    orch_worker.operation(files.directory, path="/tmp/orch-example", mode="700")
    assert orch_worker.fact(Directory, path="/tmp/orch-example")["mode"] == 700
    assert orch_worker.run("stat -c %a /tmp/orch-example").stdout.strip() == "700"


@pytest.mark.parametrize("n", range(8))
def test_shell_commands(orch_worker, n, proof):
    orch_worker.operation(server.shell, commands=[f"echo {n} > /tmp/n-{n}"])
    assert orch_worker.run(f"cat /tmp/n-{n}").stdout.strip() == str(n)
