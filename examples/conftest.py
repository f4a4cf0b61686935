"""examples/machines and examples/isolation are projects of their own (each has its
pyproject.toml: machine = true; isolation = "on-dirty"): `pytest examples/` runs only the
plain example suite here, and each of them runs from its folder
(`cd examples/machines && pytest -n 2 --orch-up`)."""

collect_ignore = ["machines", "isolation"]
