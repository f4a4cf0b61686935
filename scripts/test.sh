#!/usr/bin/env bash
# Run orch's whole test suite on a fresh Debian machine (as root): sets up the Docker
# engine, the base image and the virtualenv (scripts/setup.sh), then runs pytest.
# In CI (CI=true) a test that needs Docker fails, never skips, when the engine is missing.
# Extra arguments go to pytest, e.g. scripts/test.sh tests/unit -k naming
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh"
cd "$ROOT"
if [ $# -eq 0 ]; then set -- tests; fi
exec .venv/bin/pytest -n 4 -p no:randomly "$@"
