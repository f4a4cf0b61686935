#!/usr/bin/env bash
# The main job end to end on a fresh Debian machine (as root): set up, run the example
# suite with pytest -n 4 --orch-up (pytest brings up four workers first), show that
# `orch up --workers 4` reuses them and a warm run makes no VM, reset one worker, sweep
# orphans, show the status, and clean up; then the machines example (examples/machines:
# workers with systemd as PID 1: a service enabled, a reboot, a reset) on Docker, and the
# isolation example (examples/isolation: tests that dirty their worker, found and reset).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh"
cd "$ROOT"
export PATH="$ROOT/.venv/bin:$PATH"
step() { printf '\n==> %s\n' "$*" >&2; }

step "pytest -n 4 --orch-up examples/ (pytest brings up gw0..gw3 first, then runs the suite on them)"
pytest -n 4 --orch-up examples/ -q
step "orch up --workers 4 (again: every worker is reused, nothing recreated)"
orch up --workers 4
step "pytest -n 4 examples/ (a warm run: no VM made)"
pytest -n 4 examples/ -q
step "orch reset gw1 (back to its baseline; the other workers are not touched)"
orch reset gw1
step "orch sweep (deletes orphans only; this checkout's workers are kept)"
orch sweep
step "orch status"
orch status
step "orch down"
orch down
step "machines: cd examples/machines && pytest -n 2 --orch-up (systemd workers: a service, a reboot, a reset)"
(cd examples/machines && pytest -n 2 --orch-up -q && orch down)
step "isolation: cd examples/isolation && pytest -n 2 --orch-up (on-dirty: three tests dirty their worker, each is reset before its next test, the summary names them)"
(cd examples/isolation && pytest -n 2 --orch-up -q && orch down)
step "demo done"
