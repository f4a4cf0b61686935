#!/usr/bin/env bash
# Set up everything orch's demo and tests need on a fresh Debian machine (as root):
#   - Debian's docker.io (engine), debootstrap and openssh-client
#   - Debian's podman (daemonless; the podman provider), catatonit for `--init`, its
#     default ulimits lowered in /etc/containers/containers.conf, and the base image
#     copied from Docker into podman's storage as localhost/orch-base:bookworm
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
command -v podman >/dev/null 2>&1 || need_apt+=(podman)
command -v catatonit >/dev/null 2>&1 || need_apt+=(catatonit)
command -v ssh >/dev/null 2>&1 || need_apt+=(openssh-client)  # orch exec over SSH, the second engine over ssh://
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

# podman: rootful, daemonless. Debian's defaults raise the containers' open-files limit
# above what this machine lets root set ("error setting rlimit type 7: operation not
# permitted"), so containers.conf lowers them; other settings in the file are kept.
CONTAINERS_CONF=/etc/containers/containers.conf
python3 - "$CONTAINERS_CONF" <<'EOF'
import sys
from pathlib import Path

path, key = Path(sys.argv[1]), "default_ulimits"
want = f'{key} = ["nofile=1024:1024", "nproc=1000:1000"]'
old = path.read_text() if path.exists() else ""
lines, out, section, skipping, done = old.splitlines(), [], "", False, False
for line in lines:
    bare = line.strip()
    if skipping:  # the rest of a multi-line array being replaced
        skipping = "]" not in bare.split("#")[0]
        continue
    if bare.startswith("[") and not bare.startswith("[["):
        if section == "containers" and not done:
            out.append(want)
            done = True
        section = bare.strip("[] ")
    elif section == "containers" and bare.split("=")[0].strip() == key:
        if not done:
            out.append(want)
            done = True
        value = bare.split("=", 1)[1].split("#")[0] if "=" in bare else ""
        skipping = "[" in value and "]" not in value
        continue
    out.append(line)
if not done:
    if section != "containers":
        out += ["", "[containers]"] if out else ["[containers]"]
    out.append(want)
new = "\n".join(out).lstrip("\n") + "\n"
if new != old:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new)
    print(f"setup: {path}: [containers] {want}", file=sys.stderr)
EOF

# The base image for podman, copied from Docker (no registry needed): podman names it
# localhost/orch-base:bookworm, and the short name orch-base:bookworm finds it too.
# Copied again when Docker's image differs (same image id in both when in sync).
PODMAN_IMAGE="localhost/${IMAGE#localhost/}"
docker_id="$(docker image inspect --format '{{.Id}}' "$IMAGE")"
podman_id="$(podman image inspect --format '{{.Id}}' "$PODMAN_IMAGE" 2>/dev/null || true)"
if [ "${docker_id#sha256:}" != "$podman_id" ]; then
  log "copying base image $IMAGE from Docker to podman as $PODMAN_IMAGE"
  docker save "$IMAGE" | podman load --quiet >/dev/null
  podman tag "${docker_id#sha256:}" "$PODMAN_IMAGE"
fi
podman run --rm --pull never "$PODMAN_IMAGE" true \
  || { log "podman cannot run containers (see the error above; $CONTAINERS_CONF)"; exit 1; }

if [ ! -x "$VENV/bin/orch" ] || [ "$ROOT/pyproject.toml" -nt "$VENV/.orch-installed" ]; then
  log "creating virtualenv $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip >&2
  "$VENV/bin/pip" install -q -e "$ROOT[test]" >&2
  touch "$VENV/.orch-installed"
fi
log "ready: engine $(docker version -f '{{.Server.Version}}'), image $IMAGE, podman $(podman version --format '{{.Client.Version}}') (image $PODMAN_IMAGE), venv $VENV"
