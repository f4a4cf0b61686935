"""orch's pyinfra deploys (installed as ``orchestrator.deploys``).

Each module holds ``@deploy`` functions that a project can call, extend, or replace by
naming its own in ``[tool.orch]`` (``provision = "mypkg.deploys:provision"``).
"""
