#!/usr/bin/env bash
# Set up everything orch's demo and tests need on a fresh Debian machine (as root):
#   - Debian's docker.io (engine), debootstrap and openssh-client
#   - Debian's podman (daemonless; the podman provider), catatonit for `--init`, its
#     default ulimits lowered in /etc/containers/containers.conf, and the base image
#     copied from Docker into podman's storage as localhost/orch-base:bookworm
#   - a running dockerd (started here when none answers)
#   - the local base image (Docker Hub may be unreachable): debootstrap + docker import
#   - the machine image orch-machine:bookworm (systemd as PID 1, for `machine = true`),
#     from its own debootstrap rootfs, in Docker and podman; lxcfs (a container's own
#     /proc/uptime, so that pyinfra's server.reboot sees a container reboot), started here
#   - Incus 6.0 (incus-base from bookworm-backports; that one package and what only
#     backports has), a running incusd (started here), its bridge, a btrfs pool on a loop
#     file and the machine image as orch-machine/bookworm (see the Incus block below)
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
command -v lxcfs >/dev/null 2>&1 || need_apt+=(lxcfs)  # machines: their own /proc/uptime
command -v mkfs.btrfs >/dev/null 2>&1 || need_apt+=(btrfs-progs)  # Incus's storage pool
command -v dnsmasq >/dev/null 2>&1 || need_apt+=(dnsmasq-base)  # Incus's bridge (DHCP)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing ${need_apt[*]} from Debian"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need_apt[@]}"; } \
    >/tmp/orch-apt.log 2>&1 || { tail -20 /tmp/orch-apt.log >&2; exit 1; }
fi

# Incus 6.0 LTS is in bookworm-backports: the source is added, and only incus-base is
# taken from it (with -t, so that its dependencies found only there come too); nothing
# else on the machine is upgraded from backports (its default priority, 100, is kept).
if ! command -v incus >/dev/null 2>&1 || [ ! -x /usr/libexec/incus/incusd ]; then
  log "installing incus-base from bookworm-backports"
  export DEBIAN_FRONTEND=noninteractive
  if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "deb http://deb.debian.org/debian bookworm-backports main" >/etc/apt/sources.list.d/orch-backports.list
  fi
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends -t bookworm-backports incus-base; } \
    >/tmp/orch-apt-incus.log 2>&1 || { tail -20 /tmp/orch-apt-incus.log >&2; exit 1; }
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

# The machine image: systemd as PID 1 (dbus for systemctl and logind, procps and sudo for
# pyinfra's facts and _sudo). No python3: pyinfra needs none. Its machine-id is empty, so
# that every container made from it gets its own at boot.
MACHINE_IMAGE="${ORCH_MACHINE_IMAGE:-orch-machine:bookworm}"
if ! docker image inspect "$MACHINE_IMAGE" >/dev/null 2>&1; then
  log "building machine image $MACHINE_IMAGE with debootstrap (systemd, about a minute)"
  dir="$(mktemp -d /tmp/orch-rootfs.XXXXXX)"
  debootstrap --variant=minbase --include=systemd-sysv,dbus,procps,sudo bookworm "$dir" http://deb.debian.org/debian \
    >/tmp/orch-debootstrap-machine.log 2>&1 || { tail -20 /tmp/orch-debootstrap-machine.log >&2; exit 1; }
  : >"$dir/etc/machine-id"
  rm -f "$dir/var/lib/dbus/machine-id"
  : >"$dir/etc/hostname"
  tar -C "$dir" -c . | docker import -c 'CMD ["/sbin/init"]' - "$MACHINE_IMAGE" >/dev/null
  rm -rf "$dir"
fi

# lxcfs: a container that mounts its /proc/uptime sees its own uptime (pyinfra's
# server.reboot compares uptimes to see that a machine rebooted). No systemd here to
# start it: started like dockerd, when its folder is not mounted. A mount whose lxcfs
# died (the machine's processes were stopped, its mounts kept) answers "Transport
# endpoint is not connected" and no engine can bind it: unmounted, then started again.
if grep -qs " /var/lib/lxcfs fuse.lxcfs " /proc/mounts && ! [ -e /var/lib/lxcfs/proc/uptime ]; then
  log "lxcfs's mount is stale (its lxcfs is gone): unmounting /var/lib/lxcfs"
  umount -l /var/lib/lxcfs
fi
if ! grep -qs " /var/lib/lxcfs fuse.lxcfs " /proc/mounts; then
  log "starting lxcfs (log: /var/log/orch-lxcfs.log)"
  mkdir -p /var/lib/lxcfs
  nohup lxcfs /var/lib/lxcfs >/var/log/orch-lxcfs.log 2>&1 &
  for _ in $(seq 1 50); do
    [ -e /var/lib/lxcfs/proc/uptime ] && break
    sleep 0.1
  done
  [ -e /var/lib/lxcfs/proc/uptime ] || { log "lxcfs did not start; see /var/log/orch-lxcfs.log"; tail -20 /var/log/orch-lxcfs.log >&2; exit 1; }
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
# copy_to_podman IMAGE WHAT: Docker's IMAGE into podman as localhost/IMAGE, unless in sync.
copy_to_podman() {
  local image="$1" what="$2" docker_id podman_id
  docker_id="$(docker image inspect --format '{{.Id}}' "$image")"
  podman_id="$(podman image inspect --format '{{.Id}}' "localhost/${image#localhost/}" 2>/dev/null || true)"
  if [ "${docker_id#sha256:}" != "$podman_id" ]; then
    log "copying $what $image from Docker to podman as localhost/${image#localhost/}"
    docker save "$image" | podman load --quiet >/dev/null
    podman tag "${docker_id#sha256:}" "localhost/${image#localhost/}"
  fi
}
PODMAN_IMAGE="localhost/${IMAGE#localhost/}"
copy_to_podman "$IMAGE" "base image"
podman run --rm --pull never "$PODMAN_IMAGE" true \
  || { log "podman cannot run containers (see the error above; $CONTAINERS_CONF)"; exit 1; }
copy_to_podman "$MACHINE_IMAGE" "machine image"

# Incus: no systemd on PID 1 here, so incusd is started like dockerd. `incus admin init
# --minimal` fails on this machine (it finds no unused IPv4 subnet), so the bridge gets an
# explicit private subnet and the default profile its root disk and nic by hand.
INCUS_BRIDGE="${ORCH_INCUS_BRIDGE:-orchbr0}"
INCUS_SUBNET="${ORCH_INCUS_SUBNET:-10.77.0.1/24}"
INCUS_POOL="${ORCH_INCUS_POOL:-orch}"
INCUS_POOL_SIZE="${ORCH_INCUS_POOL_SIZE:-20GiB}"  # a sparse loop file: only what is used takes disk
INCUS_IMAGE="${ORCH_INCUS_IMAGE:-orch-machine/bookworm}"
if ! timeout 5 incus admin waitready >/dev/null 2>&1; then
  log "starting incusd (log: /var/log/orch-incusd.log)"
  nohup /usr/libexec/incus/incusd --group root >/var/log/orch-incusd.log 2>&1 &
  timeout 60 incus admin waitready >/dev/null 2>&1 \
    || { log "incusd did not start; see /var/log/orch-incusd.log"; tail -20 /var/log/orch-incusd.log >&2; exit 1; }
fi
incus network show "$INCUS_BRIDGE" >/dev/null 2>&1 \
  || incus network create "$INCUS_BRIDGE" ipv4.address="$INCUS_SUBNET" ipv4.nat=true ipv6.address=none >/dev/null
incus storage show "$INCUS_POOL" >/dev/null 2>&1 || incus storage create "$INCUS_POOL" btrfs size="$INCUS_POOL_SIZE" >/dev/null
incus profile device get default root pool >/dev/null 2>&1 || incus profile device add default root disk path=/ pool="$INCUS_POOL" >/dev/null
incus profile device get default eth0 network >/dev/null 2>&1 \
  || incus profile device add default eth0 nic network="$INCUS_BRIDGE" name=eth0 >/dev/null
# The machine image for Incus: Docker's machine image, exported, with what a system
# container needs besides (see scripts/incus-image.sh), imported when it differs.
"$ROOT/scripts/incus-image.sh" "$MACHINE_IMAGE" "$INCUS_IMAGE"

if [ ! -x "$VENV/bin/orch" ] || [ "$ROOT/pyproject.toml" -nt "$VENV/.orch-installed" ]; then
  log "creating virtualenv $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip >&2
  # orch was installed as the distribution `orch` before it became `pyinfra-orch` (the name
  # `orch` on PyPI is someone else's): an old editable install of it would register the
  # pytest plugin a second time, so it goes first (only ours: its summary says so)
  if "$VENV/bin/pip" show orch 2>/dev/null | grep -q '^Summary: Test orchestrator for pyinfra'; then
    "$VENV/bin/pip" uninstall -q -y orch >&2
  fi
  "$VENV/bin/pip" install -q -e "$ROOT[test]" >&2
  touch "$VENV/.orch-installed"
fi
log "ready: engine $(docker version -f '{{.Server.Version}}'), images $IMAGE and $MACHINE_IMAGE, podman $(podman version --format '{{.Client.Version}}'), incus $(incus version | sed -n 's/^Server version: //p') (image $INCUS_IMAGE), venv $VENV"
