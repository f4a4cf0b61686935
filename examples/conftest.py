"""examples/machines is a project of its own (its pyproject.toml says machine = true, so
its workers are machines): `pytest examples/` runs only the plain example suite here, and
the machines example runs from its folder (`cd examples/machines && pytest -n 2 --orch-up`)."""

collect_ignore = ["machines"]
