"""orch: a test orchestrator for pyinfra.

One persistent VM per pytest-xdist worker, brought up and provisioned by pyinfra deploys,
described by generated pyinfra inventories, reset to a baseline on demand and swept when
orphaned.
"""

__version__ = "0.1.0"
