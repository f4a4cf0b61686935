#!/usr/bin/env bash
# Run orch's whole test suite on a fresh Debian machine (as root): sets up the Docker
# engine, the base image and the virtualenv (scripts/setup.sh), runs the checks (ruff
# lint and format, mypy strict on orchestrator/, lint-imports for the layering contracts
# in pyproject.toml; .pre-commit-config.yaml runs the same), then pytest.
# In CI (CI=true) a test that needs Docker fails, never skips, when the engine is missing.
# Extra arguments go to pytest, e.g. scripts/test.sh tests/unit -k naming
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh"
cd "$ROOT"
if [ $# -eq 0 ]; then
  set -- tests
  echo "checks: ruff (lint, format), mypy and lint-imports" >&2
  .venv/bin/ruff check orchestrator tests
  .venv/bin/ruff format --check orchestrator tests
  .venv/bin/mypy
  .venv/bin/lint-imports --no-logo --no-cache
fi
# Tests that need the second engine (scripts/engine2.sh) start it; if this run started it,
# remove it at the end (engine2.sh stop also proves the first engine still creates containers).
# The same for the two-member Incus cluster (scripts/incus-cluster.sh, started by the
# incus_cluster fixture): removed at the end of a run that started it.
engine2_before=no
docker container inspect orch-engine2 >/dev/null 2>&1 && engine2_before=yes
cluster_before=no
[ -d /var/lib/orch-cluster ] && cluster_before=yes
stop_engine2() {
  local rc=$?
  if [ "$engine2_before" = no ] && docker container inspect orch-engine2 >/dev/null 2>&1; then
    # exclusively, like tests/engines.py's exclusive_use(): never under another run's tests
    flock -w 900 /run/lock/orch-engine2.users.lock "$ROOT/scripts/engine2.sh" stop || rc=1
  fi
  if [ "$cluster_before" = no ] && [ -d /var/lib/orch-cluster ]; then
    "$ROOT/scripts/incus-cluster.sh" stop || rc=1
  fi
  exit "$rc"
}
trap stop_engine2 EXIT
# worksteal: an idle worker takes tests queued on a busy one, so a few long real-backend
# tests queued together on one worker do not leave the others idle at the end.
# The tests start thousands of Python processes (orch, pytest, the orbctl test double), so:
# the venv's bin first on PATH, as when it is activated (`python3` for tests/fakes/orbctl is
# then the venv's, not a wrapper such as pyenv's shim, ~0.1 s per call); and bytecode is
# written and reused (PYTHONDONTWRITEBYTECODE unset), not compiled again in every process.
PATH="$ROOT/.venv/bin:$PATH" env -u PYTHONDONTWRITEBYTECODE .venv/bin/pytest -n 4 --dist worksteal -p no:randomly "$@"
