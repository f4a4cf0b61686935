#!/usr/bin/env bash
# Set up everything orch's demo and tests need on a fresh Debian machine (as root):
#   - Debian's docker.io (engine) and debootstrap
#   - a running dockerd (started here when none answers)
#   - the local base image (Docker Hub may be unreachable): debootstrap + docker import
#   - the virtualenv .venv with orch installed (editable, with its test extras)
# Idempotent: each step is skipped when already done. Sourced or run; prints to stderr.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IMAGE="${ORCH_BASE_IMAGE:-orch-base:bookworm}"
VENV="${ORCH_VENV:-$ROOT/.venv}"
log() { echo "setup: $*" >&2; }

need_apt=()
command -v dockerd >/dev/null 2>&1 || need_apt+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need_apt+=(debootstrap)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing ${need_apt[*]} from Debian"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need_apt[@]}"; } \
    >/tmp/orch-apt.log 2>&1 || { tail -20 /tmp/orch-apt.log >&2; exit 1; }
fi

if ! docker info >/dev/null 2>&1; then
  log "starting dockerd (log: /var/log/orch-dockerd.log)"
  nohup dockerd >/var/log/orch-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { log "dockerd did not start; see /var/log/orch-dockerd.log"; tail -20 /var/log/orch-dockerd.log >&2; exit 1; }
fi

if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
  log "building base image $IMAGE with debootstrap (about a minute)"
  dir="$(mktemp -d /tmp/orch-rootfs.XXXXXX)"
  debootstrap --variant=minbase bookworm "$dir" http://deb.debian.org/debian >/tmp/orch-debootstrap.log 2>&1 \
    || { tail -20 /tmp/orch-debootstrap.log >&2; exit 1; }
  tar -C "$dir" -c . | docker import -c 'CMD ["sleep", "infinity"]' - "$IMAGE" >/dev/null
  rm -rf "$dir"
fi

if [ ! -x "$VENV/bin/orch" ] || [ "$ROOT/pyproject.toml" -nt "$VENV/.orch-installed" ]; then
  log "creating virtualenv $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip >&2
  "$VENV/bin/pip" install -q -e "$ROOT[test]" >&2
  touch "$VENV/.orch-installed"
fi
log "ready: engine $(docker version -f '{{.Server.Version}}'), image $IMAGE, venv $VENV"
