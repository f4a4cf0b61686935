#!/usr/bin/env bash
# The main job end to end on a fresh Debian machine (as root): set up, bring up four
# workers, run the example suite on them with pytest -n 4, show that a second `orch up`
# reuses them, reset one worker, sweep orphans, show the status, and clean up.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh"
cd "$ROOT"
export PATH="$ROOT/.venv/bin:$PATH"
step() { printf '\n==> %s\n' "$*" >&2; }

step "orch up --workers 4"
orch up --workers 4
step "pytest -n 4 examples/"
pytest -n 4 examples/ -q
step "orch up --workers 4 (again: every worker is reused, nothing recreated)"
orch up --workers 4
step "orch reset gw1 (back to its baseline; the other workers are not touched)"
orch reset gw1
step "orch sweep (deletes orphans only; this checkout's workers are kept)"
orch sweep
step "orch status"
orch status
step "orch down"
orch down
step "demo done"
