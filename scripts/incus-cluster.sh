#!/usr/bin/env bash
# A two-member Incus cluster on this one machine, for orch's cluster tests and benchmarks
# (the way LXD's own test suite runs clusters: each daemon in its own network namespace).
#
#   scripts/incus-cluster.sh start              # bring up members m1 and m2 (idempotent), add the remote orch-cluster
#   scripts/incus-cluster.sh status             # exit 0 when both members answer and the cluster calls them online
#   eval "$(scripts/incus-cluster.sh env)"      # ORCH_CLUSTER_* variables
#   scripts/incus-cluster.sh stop-member m2     # kill m2's incusd (SIGKILL, like a crashed host): its instances
#                                               #   become unreachable, the cluster marks it offline within ~12 s
#   scripts/incus-cluster.sh start-member m2    # start it again and wait until the cluster calls it online
#   scripts/incus-cluster.sh stop               # remove both members, their data, namespaces, bridge and remote,
#                                               #   then prove the machine's own Incus still answers
#
# Reaching it: `incus ... orch-cluster:NAME` (the remote is m1's unix socket, added to the
# default client config), or INCUS_DIR=/var/lib/orch-cluster/m1 incus ... (m2 likewise).
# orch: [tool.orch.incus] remote = "orch-cluster" (and target = "m1" to pin to one member).
#
# What it is:
#   - bridge orchcl0 (10.215.0.1/24) on the host; network namespace orch-cmN per member,
#     joined to it by a veth (member N at 10.215.0.1N, cluster traffic on :8443). Docker's
#     FORWARD policy is DROP, so one rule accepts traffic between the bridge's ports.
#   - each member's incusd runs under `ip netns exec` with INCUS_DIR=/var/lib/orch-cluster/mN.
#     `ip netns exec` mounts a fresh /sys for the namespace, which hides the host's cgroup
#     mounts (systemd in a container then fails "Failed to allocate manager object"): the
#     host's /sys/fs/cgroup is bound at /run/orch-cluster/cgroup first and bound back over
#     the new /sys/fs/cgroup before incusd starts.
#   - m1 bootstraps the cluster (`incus cluster enable`), m2 joins with a token (preseed).
#     With two members m1 holds the database (database-leader) and m2 is a standby: m2
#     can go down and the cluster goes on, which is what the fault tests do.
#   - storage pool `orch` (btrfs on a sparse loop file in each member's data dir, local to
#     each member: copying a baseline to another member is the cluster's `incus copy`),
#     network orchclbr (a bridge inside each member's namespace, 10.216.0.1/24, no NAT),
#     the default profile's root disk and eth0, cluster.offline_threshold 11 s (Incus's
#     minimum), and the image orch-machine/bookworm exported from the machine's Incus.
#
# Environment: ORCH_CLUSTER_POOL_SIZE (4GiB per member), ORCH_CLUSTER_TIMEOUT (120 s waits).
# Everything is serialized by a lock; messages go to stderr.
set -euo pipefail

ROOT_DIR=/var/lib/orch-cluster
RUN_DIR=/run/orch-cluster
LOCK=/run/lock/orch-cluster.lock
BRIDGE=orchcl0
REMOTE=orch-cluster
MEMBERS=(m1 m2)
IMAGE=orch-machine/bookworm
POOL_SIZE="${ORCH_CLUSTER_POOL_SIZE:-4GiB}"
TIMEOUT="${ORCH_CLUSTER_TIMEOUT:-120}"
INCUSD=/usr/libexec/incus/incusd

log() { echo "incus-cluster: $*" >&2; }
die() { echo "incus-cluster: ERROR: $*" >&2; exit 1; }

index() { case "$1" in m1) echo 1 ;; m2) echo 2 ;; *) die "no member $1 (members: ${MEMBERS[*]})" ;; esac; }
ns() { echo "orch-cm$(index "$1")"; }
addr() { echo "10.215.0.1$(index "$1")"; }
on() { local m="$1"; shift; INCUS_DIR="$ROOT_DIR/$m" incus "$@"; }

# The pid of member $1's incusd ("" when none runs): the incusd process in its namespace.
daemon_pid() {
  local n pid
  n="$(ns "$1")"
  ip netns list 2>/dev/null | grep -qw "$n" || return 0
  for pid in $(ip netns pids "$n" 2>/dev/null); do
    if [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$INCUSD" ] \
      && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "--group root"; then
      echo "$pid"
      return 0
    fi
  done
}

answers() { INCUS_DIR="$ROOT_DIR/$1" timeout 5 incus admin waitready --timeout 3 >/dev/null 2>&1; }

member_status() {  # ONLINE / OFFLINE / ... as m1 sees member $1 ("" when m1 does not answer)
  on m1 cluster list --format csv 2>/dev/null | awk -F, -v m="$1" '$1 == m { print $(NF-1) }'
}

network() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
    ip addr add 10.215.0.1/24 dev "$BRIDGE"
  fi
  ip link set "$BRIDGE" up
  iptables -C FORWARD -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT 2>/dev/null \
    || iptables -I FORWARD -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT
  local m n i
  for m in "${MEMBERS[@]}"; do
    n="$(ns "$m")" i="$(index "$m")"
    ip netns list | grep -qw "$n" || ip netns add "$n"
    # no DNS in the namespace (nothing routes out of it): a lookup fails at once rather than
    # after 10 s (incusd looks up images.linuxcontainers.org as it starts)
    mkdir -p "/etc/netns/$n"
    echo "nameserver 127.0.0.1" >"/etc/netns/$n/resolv.conf"
    if ! ip link show "vcm$i" >/dev/null 2>&1; then
      ip link add "vcm$i" type veth peer name eth0 netns "$n"
      ip netns exec "$n" ip addr add "$(addr "$m")/24" dev eth0
    fi
    ip link set "vcm$i" master "$BRIDGE" up
    ip netns exec "$n" ip link set lo up
    ip netns exec "$n" ip link set eth0 up
    ip netns exec "$n" ip route replace default via 10.215.0.1
  done
  mkdir -p "$RUN_DIR/cgroup"
  mountpoint -q "$RUN_DIR/cgroup" || mount --rbind /sys/fs/cgroup "$RUN_DIR/cgroup"
}

start_daemon() {
  local m="$1" old
  answers "$m" && return 0
  old="$(daemon_pid "$m")"
  if [ -n "$old" ]; then  # running but not answering (starting, or stuck): give it its time, then replace it
    for _ in $(seq 1 20); do answers "$m" && return 0; sleep 0.5; done
    kill -9 "$old" 2>/dev/null || true
    for _ in $(seq 1 50); do [ -d "/proc/$old" ] || break; sleep 0.1; done
  fi
  mkdir -p "$ROOT_DIR/$m"
  log "starting $m's incusd (log: $ROOT_DIR/$m.log)"
  # setsid + nohup: the daemon outlives this script and the shell that ran it
  setsid nohup ip netns exec "$(ns "$m")" env INCUS_DIR="$ROOT_DIR/$m" sh -c \
    "mount --rbind $RUN_DIR/cgroup /sys/fs/cgroup && exec $INCUSD --group root" \
    >>"$ROOT_DIR/$m.log" 2>&1 </dev/null 9>&- &  # 9: this script's lock, not the daemon's
  INCUS_DIR="$ROOT_DIR/$m" timeout "$TIMEOUT" incus admin waitready >/dev/null 2>&1 \
    || { tail -20 "$ROOT_DIR/$m.log" >&2; die "$m's incusd did not start"; }
}

bootstrap() {  # m1: the cluster's first member
  if on m1 cluster list --format csv >/dev/null 2>&1; then return 0; fi
  log "bootstrapping the cluster on m1"
  on m1 config set core.https_address "$(addr m1):8443"
  on m1 storage show orch >/dev/null 2>&1 || on m1 storage create orch btrfs size="$POOL_SIZE" >/dev/null
  on m1 network show orchclbr >/dev/null 2>&1 \
    || on m1 network create orchclbr ipv4.address=10.216.0.1/24 ipv4.nat=false ipv6.address=none >/dev/null
  on m1 profile device get default root pool >/dev/null 2>&1 || on m1 profile device add default root disk path=/ pool=orch >/dev/null
  on m1 profile device get default eth0 network >/dev/null 2>&1 \
    || on m1 profile device add default eth0 nic network=orchclbr name=eth0 >/dev/null
  on m1 cluster enable m1 >/dev/null
  on m1 config set cluster.offline_threshold 11
}

join() {  # m2 joins with a one-time token
  on m1 cluster list --format csv | grep -q '^m2,' && return 0
  log "m2 joins the cluster"
  on m1 cluster revoke-token m2 >/dev/null 2>&1 || true
  local token
  token="$(on m1 cluster add m2 --quiet)"
  on m2 admin init --preseed <<EOF
cluster:
  enabled: true
  server_name: m2
  server_address: $(addr m2):8443
  cluster_token: $token
  member_config:
  - entity: storage-pool
    name: orch
    key: size
    value: $POOL_SIZE
EOF
}

image() {
  on m1 image info "$IMAGE" >/dev/null 2>&1 && return 0
  incus image info "$IMAGE" >/dev/null 2>&1 || die "the machine's Incus has no image $IMAGE: run scripts/setup.sh first"
  log "importing $IMAGE from the machine's Incus"
  local work
  work="$(mktemp -d /tmp/orch-cluster-image.XXXXXX)"
  incus image export "$IMAGE" "$work/image" >/dev/null
  on m1 image import "$work"/image* --alias "$IMAGE" >/dev/null
  rm -rf "$work"
}

remote() {
  local want="unix://$ROOT_DIR/m1/unix.socket"
  if incus remote list --format csv 2>/dev/null | grep -q "^$REMOTE,$want,"; then return 0; fi
  incus remote remove "$REMOTE" >/dev/null 2>&1 || true
  incus remote add "$REMOTE" "$want" >/dev/null
}

wait_online() {
  local m="$1"
  for _ in $(seq 1 $((TIMEOUT * 2))); do
    [ "$(member_status "$m")" = ONLINE ] && return 0
    sleep 0.5
  done
  die "$m is not online in the cluster after ${TIMEOUT}s: $(on m1 cluster list --format csv 2>&1 | tr '\n' ' ')"
}

start() {
  command -v incus >/dev/null && [ -x "$INCUSD" ] || die "incus is not installed: run scripts/setup.sh first"
  network
  start_daemon m1
  bootstrap
  start_daemon m2
  join
  wait_online m1
  wait_online m2
  wait_serving m2
  image
  remote
  log "ready: members ${MEMBERS[*]}, remote $REMOTE"
}

status() {
  answers m1 && answers m2 && [ "$(member_status m1)" = ONLINE ] && [ "$(member_status m2)" = ONLINE ] \
    && incus remote list --format csv 2>/dev/null | grep -q "^$REMOTE,"
}

stop_member() {
  local m="$1" pid
  [ "$m" = m1 ] && die "m1 holds the cluster's database: stop m2 (the standby) instead"
  pid="$(daemon_pid "$m")"
  [ -n "$pid" ] || { log "$m's incusd is not running"; return 0; }
  log "killing $m's incusd ($pid)"
  kill -9 "$pid"
  for _ in $(seq 1 50); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
}

# Online is not yet serving: a member (re)started answers requests forwarded to it with
# "Server isn't ready yet" for a while (5 s to over a minute here); wait until it serves one.
wait_serving() {
  local m="$1"
  for _ in $(seq 1 $((TIMEOUT * 2))); do
    on m1 query "/1.0/instances?target=$m" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  die "$m does not serve requests after ${TIMEOUT}s: $(on m1 query "/1.0/instances?target=$m" 2>&1 | tail -1)"
}

start_member() {
  start_daemon "$1"
  wait_online "$1"
  wait_serving "$1"
}

stop() {
  local m pid
  for m in m2 m1; do
    if answers "$m"; then
      on "$m" admin shutdown --timeout 20 >/dev/null 2>&1 || true  # stops its instances
    fi
    pid="$(daemon_pid "$m")"
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
  done
  # whatever outlived its daemon (an instance of a killed member, dnsmasq): every process in the namespaces
  for m in "${MEMBERS[@]}"; do
    if ip netns list | grep -qw "$(ns "$m")"; then
      ip netns pids "$(ns "$m")" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    fi
  done
  pkill -9 -f "\[lxc monitor\] $ROOT_DIR/" 2>/dev/null || true
  sleep 1
  # Mounts made by a member's daemon live in its own mount namespace (gone with its processes);
  # anything still mounted under the data dir here is unmounted before the data is removed.
  grep " $ROOT_DIR/" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$ROOT_DIR"
  for m in "${MEMBERS[@]}"; do
    ip link del "vcm$(index "$m")" 2>/dev/null || true
    ip netns del "$(ns "$m")" 2>/dev/null || true
    rm -rf "/etc/netns/$(ns "$m")"
  done
  ip link del "$BRIDGE" 2>/dev/null || true
  iptables -D FORWARD -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT 2>/dev/null || true
  mountpoint -q "$RUN_DIR/cgroup" && umount -R "$RUN_DIR/cgroup"
  rm -rf "$RUN_DIR"
  incus remote remove "$REMOTE" >/dev/null 2>&1 || true
  if incus info >/dev/null 2>&1; then
    log "stopped; the machine's own Incus still answers"
  else
    log "stopped (the machine's own Incus does not answer: it was not running, or see its log)"
  fi
}

env_vars() {
  cat <<EOF
ORCH_CLUSTER_REMOTE=$REMOTE
ORCH_CLUSTER_MEMBERS="${MEMBERS[*]}"
ORCH_CLUSTER_DIR=$ROOT_DIR
export ORCH_CLUSTER_REMOTE ORCH_CLUSTER_MEMBERS ORCH_CLUSTER_DIR
EOF
}

cmd="${1:-}"
case "$cmd" in
  start | stop | stop-member | start-member)
    exec 9>"$LOCK"
    flock -w 600 9 || die "another incus-cluster.sh holds $LOCK"
    case "$cmd" in
      start) start ;;
      stop) stop ;;
      stop-member) stop_member "${2:?stop-member needs a member (m2)}" ;;
      start-member) start_member "${2:?start-member needs a member (m2)}" ;;
    esac
    ;;
  status) status ;;
  env) env_vars ;;
  *) echo "usage: $0 start|status|env|stop-member m2|start-member m2|stop" >&2; exit 2 ;;
esac
