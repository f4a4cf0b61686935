#!/usr/bin/env bash
# A SECOND Docker engine for orch's tests: Docker-in-Docker in a privileged container of
# the first (the machine's) engine, with an sshd on the host's loopback address.
#
#   scripts/engine2.sh start            # build orch-dind:bookworm once, run orch-engine2, wait until it answers
#   scripts/engine2.sh status           # exit 0 when running and answering (socket and ssh)
#   eval "$(scripts/engine2.sh env)"    # ORCH_ENGINE2_* variables (add --docker-host unix|ssh for DOCKER_HOST too)
#   scripts/engine2.sh restart-engine   # restart the second engine only, like a host reboot: its containers end up stopped
#   scripts/engine2.sh stop             # remove container, volume and /run/orch-engine2, then prove the first engine still works
#
# Reaching it (after start; `env` prints exactly these values):
#   unix socket  DOCKER_HOST=unix:///run/orch-engine2/docker.sock docker ps
#   ssh          ssh -F /run/orch-engine2/ssh_config -p 2222 root@127.0.0.1 docker ps
#                (or -i /run/orch-engine2/id_ed25519 -o UserKnownHostsFile=/run/orch-engine2/known_hosts)
#   docker/ssh   PATH=/run/orch-engine2/bin:$PATH DOCKER_HOST=ssh://root@127.0.0.1:2222 docker ps
#                (the docker CLI runs plain `ssh` from PATH and takes no ssh options; the `ssh` in
#                /run/orch-engine2/bin adds -F /run/orch-engine2/ssh_config: key, known_hosts, BatchMode)
#   pyinfra      @dockerssh/127.0.0.1:orch-base:bookworm with host data ssh_port=2222, ssh_user="root",
#                ssh_key="/run/orch-engine2/id_ed25519", ssh_known_hosts_file="/run/orch-engine2/known_hosts",
#                ssh_strict_host_key_checking="yes" (pyinfra's default, accept-new, would write known_hosts)
#   tests        tests/engines.py (fixture second_engine in tests/conftest.py); scripts/test.sh
#                stops the engine at the end of a run that started it
#
# What it is: container `orch-engine2` (image orch-dind:bookworm = orch-base:bookworm + Debian's
# docker.io and openssh-server), privileged (--privileged; where the first engine cannot grant
# that, as here, the same powers one by one: see "privileges" below), labelled orch.test-infra=engine2 and never with an
# orch.managed-by label, so orch's sweep/down never take it for one of orch's VMs. Its dockerd
# keeps its data on the volume orch-engine2-data (overlay2), its bridge (10.213.0.1/24) and
# iptables rules live in the container's own network namespace, not on the host's docker0. The
# host key and the client key pair are generated here into /run/orch-engine2 (known_hosts is
# written from the generated host key: no trust on first use). The base image orch-base:bookworm
# is copied in (docker save | docker load) so `docker run --pull never orch-base:bookworm` works.
#
# Environment: ORCH_ENGINE2_SSH_PORT (2222), ORCH_ENGINE2_TIMEOUT (seconds to wait, 120),
# ORCH_ENGINE2_STORAGE_DRIVER (overlay2; vfs if overlay2 cannot work), ORCH_BASE_IMAGE.
# Everything is idempotent and serialized by a lock; messages go to stderr.
set -euo pipefail

NAME=orch-engine2
IMAGE=orch-dind:bookworm
VOLUME=orch-engine2-data
RUN_DIR=/run/orch-engine2
SOCK="$RUN_DIR/docker.sock"
LOCK=/run/lock/orch-engine2.lock
BASE="${ORCH_BASE_IMAGE:-orch-base:bookworm}"
PORT="${ORCH_ENGINE2_SSH_PORT:-2222}"
TIMEOUT="${ORCH_ENGINE2_TIMEOUT:-120}"
STORAGE="${ORCH_ENGINE2_STORAGE_DRIVER:-overlay2}"
LABEL=orch.test-infra=engine2

log() { echo "engine2: $*" >&2; }
die() { echo "engine2: ERROR: $*" >&2; exit 1; }

# The first engine is whatever `docker` reaches without our DOCKER_HOST (a caller may have
# eval'd `env --docker-host ...`): never let "engine 1" commands land on the second engine.
case "${DOCKER_HOST:-}" in
  *"$RUN_DIR"* | ssh://*@127.0.0.1:"$PORT"*) unset DOCKER_HOST ;;
esac
d1() { docker "$@"; }
d2() { DOCKER_HOST="unix://$SOCK" docker "$@"; }

# ---------------------------------------------------------------------------- the recipe
# Everything that goes into the image; its hash labels the image and the container, so a
# change here rebuilds the image and recreates the container on the next `start`.
dockerfile() {
  cat <<'EOF'
ARG BASE
FROM ${BASE}
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends \
      docker.io openssh-server iptables ca-certificates procps iproute2 kmod xz-utils \
 && rm -rf /var/lib/apt/lists/* /etc/ssh/ssh_host_*
COPY engine2-entrypoint /usr/local/bin/engine2-entrypoint
COPY sshd.conf /etc/ssh/sshd_config.d/engine2.conf
VOLUME /var/lib/docker
EXPOSE 22
ENTRYPOINT ["/usr/local/bin/engine2-entrypoint"]
CMD []
EOF
}
entrypoint() {
  cat <<'EOF'
#!/bin/sh
# PID 1 is docker-init (docker run --init), which forwards SIGTERM to dockerd (exec'd below):
# dockerd then stops its containers, as on a host shutdown.
set -eu
# Without --privileged (see engine2.sh: the near-privileged fallback) /sys and the cgroup
# mounts come read-only: make them writable, as --privileged would have them.
if grep -q ' /sys ro' /proc/self/mountinfo; then mount -o remount,rw /sys; fi
for d in /sys/fs/cgroup /sys/fs/cgroup/*; do
  if grep -q " $d ro" /proc/self/mountinfo; then mount -o remount,bind,rw "$d"; fi
done
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  # cgroup v2: leave the namespace's root cgroup so dockerd may enable controllers for children
  mkdir -p /sys/fs/cgroup/init
  xargs -rn1 </sys/fs/cgroup/cgroup.procs >/sys/fs/cgroup/init/cgroup.procs 2>/dev/null || :
  sed -e 's/ / +/g' -e 's/^/+/' </sys/fs/cgroup/cgroup.controllers >/sys/fs/cgroup/cgroup.subtree_control || :
fi
mkdir -p /run/sshd
rm -f /run/sshd.pid /run/docker.pid /run/docker/containerd/containerd.pid
/usr/sbin/sshd -E /var/log/sshd.log
exec dockerd \
  --host=unix:///var/run/docker.sock \
  --host=unix:///run/orch-engine2/docker.sock \
  --group=root \
  --storage-driver="${ENGINE2_STORAGE_DRIVER:-overlay2}" \
  --bip=10.213.0.1/24 \
  --default-address-pool=base=10.214.0.0/16,size=24
EOF
}
sshd_conf() {
  cat <<'EOF'
HostKey /run/orch-engine2/sshd/ssh_host_ed25519_key
AuthorizedKeysFile /run/orch-engine2/sshd/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
EOF
}
RECIPE="$( { dockerfile; entrypoint; sshd_conf; echo "$BASE"; } | sha256sum | cut -c1-16)"

image_recipe() { d1 image inspect -f '{{index .Config.Labels "orch.test-infra.recipe"}}' "$IMAGE" 2>/dev/null || true; }

build_image() {
  [ "$(image_recipe)" = "$RECIPE" ] && return 0
  d1 image inspect "$BASE" >/dev/null 2>&1 || die "base image $BASE missing on the first engine (scripts/setup.sh builds it)"
  log "building $IMAGE from $BASE (recipe $RECIPE; apt-get inside, about 30s)"
  local ctx buildlog=/var/log/orch-engine2-build.log
  ctx="$(mktemp -d /tmp/orch-engine2-build.XXXXXX)"
  dockerfile >"$ctx/Dockerfile"
  entrypoint >"$ctx/engine2-entrypoint"
  chmod 755 "$ctx/engine2-entrypoint"
  sshd_conf >"$ctx/sshd.conf"
  if DOCKER_BUILDKIT=0 d1 build --pull=false --build-arg "BASE=$BASE" --label "$LABEL" \
       --label "orch.test-infra.recipe=$RECIPE" -t "$IMAGE" "$ctx" >"$buildlog" 2>&1; then
    rm -rf "$ctx"
    return 0
  fi
  if grep -q '^Step 1/' "$buildlog"; then
    rm -rf "$ctx"
    tail -20 "$buildlog" >&2
    die "docker build of $IMAGE failed (log: $buildlog)"
  fi
  # `docker build` itself is not usable here (no legacy builder, no buildx): docker run + commit.
  log "docker build unusable ($(tail -1 "$buildlog")); building with docker run + docker commit"
  local tmp="orch-engine2-build-$$"
  d1 rm -f "$tmp" >/dev/null 2>&1 || true
  d1 create --name "$tmp" --label "$LABEL" "$BASE" sh -c \
    'set -e; export DEBIAN_FRONTEND=noninteractive; apt-get update -qq;
     apt-get install -y -qq --no-install-recommends docker.io openssh-server iptables ca-certificates procps iproute2 kmod xz-utils;
     rm -rf /var/lib/apt/lists/* /etc/ssh/ssh_host_*' >/dev/null
  d1 cp "$ctx/engine2-entrypoint" "$tmp:/usr/local/bin/engine2-entrypoint"
  d1 cp "$ctx/sshd.conf" "$tmp:/etc/ssh/sshd_config.d/engine2.conf"
  rm -rf "$ctx"
  if ! d1 start -a "$tmp" >>"$buildlog" 2>&1; then
    d1 rm -f "$tmp" >/dev/null 2>&1 || true
    tail -20 "$buildlog" >&2
    die "building $IMAGE with docker run failed (log: $buildlog)"
  fi
  d1 commit \
    --change 'ENTRYPOINT ["/usr/local/bin/engine2-entrypoint"]' --change 'CMD []' \
    --change 'VOLUME /var/lib/docker' --change 'EXPOSE 22' \
    --change "LABEL $LABEL orch.test-infra.recipe=$RECIPE" "$tmp" "$IMAGE" >/dev/null
  d1 rm -f "$tmp" >/dev/null
}

# ---------------------------------------------------------------------------- privileges
# --privileged asks runc for every capability; where the first engine's own bounding set lacks
# one (here: CAP_SYS_RESOURCE, so runc fails with "unable to apply caps: operation not
# permitted") the container gets the same powers one by one instead ("near"): all capabilities
# the engine has, no seccomp/AppArmor profile, unmasked /proc, every device allowed; the
# entrypoint then remounts /sys and the cgroup hierarchies read-write.
privilege_mode() {
  if d1 run --rm --pull never --privileged --entrypoint true "$IMAGE" >/dev/null 2>&1; then echo full; else echo near; fi
}
PRIV_FLAGS=()
set_privilege_flags() {
  if [ "$1" = full ]; then
    PRIV_FLAGS=(--privileged)
    return
  fi
  # drop the capabilities missing from the engine's bounding set (dockerd's, else ours)
  local bnd cap names=(CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP
    LINUX_IMMUTABLE NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE
    SYS_RAWIO SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME
    SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG
    WAKE_ALARM BLOCK_SUSPEND AUDIT_READ)
  bnd="$(grep CapBnd "/proc/$(pidof -s dockerd 2>/dev/null)/status" 2>/dev/null || grep CapBnd /proc/self/status)"
  bnd="$((16#${bnd##*[[:space:]]}))"
  PRIV_FLAGS=(--cap-add ALL)
  for cap in "${!names[@]}"; do
    (( (bnd >> cap) & 1 )) || PRIV_FLAGS+=(--cap-drop "${names[$cap]}")
  done
  PRIV_FLAGS+=(--security-opt seccomp=unconfined --security-opt apparmor=unconfined
    --security-opt systempaths=unconfined --device-cgroup-rule 'a *:* rwm')
}

# ---------------------------------------------------------------------------- keys and files
make_files() {
  mkdir -p "$RUN_DIR/sshd" "$RUN_DIR/bin"
  chmod 755 "$RUN_DIR" "$RUN_DIR/sshd" "$RUN_DIR/bin"
  if [ ! -s "$RUN_DIR/sshd/ssh_host_ed25519_key" ]; then
    rm -f "$RUN_DIR/sshd/ssh_host_ed25519_key"*
    ssh-keygen -q -t ed25519 -N '' -C "orch-engine2 host key" -f "$RUN_DIR/sshd/ssh_host_ed25519_key"
  fi
  if [ ! -s "$RUN_DIR/id_ed25519" ]; then
    rm -f "$RUN_DIR/id_ed25519"*
    ssh-keygen -q -t ed25519 -N '' -C "orch-engine2 client key" -f "$RUN_DIR/id_ed25519"
  fi
  chmod 600 "$RUN_DIR/id_ed25519" "$RUN_DIR/sshd/ssh_host_ed25519_key"
  install -m 644 "$RUN_DIR/id_ed25519.pub" "$RUN_DIR/sshd/authorized_keys"
  # known_hosts from the generated host key: ssh checks it strictly, nothing to accept.
  echo "[127.0.0.1]:$PORT $(cut -d' ' -f1-2 "$RUN_DIR/sshd/ssh_host_ed25519_key.pub")" >"$RUN_DIR/known_hosts"
  cat >"$RUN_DIR/ssh_config" <<EOF
# The second engine's sshd (scripts/engine2.sh). Use: ssh -F $RUN_DIR/ssh_config -p $PORT root@127.0.0.1
Host 127.0.0.1 localhost orch-engine2
  HostName 127.0.0.1
  Port $PORT
  User root
  IdentityFile $RUN_DIR/id_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile $RUN_DIR/known_hosts
  StrictHostKeyChecking yes
  BatchMode yes
  LogLevel ERROR
EOF
  local real_ssh
  real_ssh="$(command -v ssh)" || die "no ssh client (apt-get install openssh-client)"
  [ "$real_ssh" != "$RUN_DIR/bin/ssh" ] || real_ssh=/usr/bin/ssh
  printf '#!/bin/sh\n# ssh for DOCKER_HOST=ssh://root@127.0.0.1:%s (the docker CLI runs plain ssh from PATH)\nexec %s -F %s "$@"\n' \
    "$PORT" "$real_ssh" "$RUN_DIR/ssh_config" >"$RUN_DIR/bin/ssh"
  chmod 755 "$RUN_DIR/bin/ssh"
}

ssh2() { ssh -F "$RUN_DIR/ssh_config" -o ConnectTimeout=5 -p "$PORT" root@127.0.0.1 "$@" </dev/null; }

# ---------------------------------------------------------------------------- state
container_field() { d1 container inspect -f "$1" "$NAME" 2>/dev/null || true; }
running() { [ "$(container_field '{{.State.Running}}')" = true ]; }
engine_answers() { [ -S "$SOCK" ] && timeout 10 env DOCKER_HOST="unix://$SOCK" docker version -f '{{.Server.Version}}' >/dev/null 2>&1; }
ssh_answers() { [ -s "$RUN_DIR/ssh_config" ] && timeout 15 ssh -F "$RUN_DIR/ssh_config" -o ConnectTimeout=5 -p "$PORT" root@127.0.0.1 true </dev/null >/dev/null 2>&1; }
published_port() { d1 port "$NAME" 22/tcp 2>/dev/null | sed -n 's/^127\.0\.0\.1:\([0-9]*\)$/\1/p' | head -1; }

wait_ready() {
  local deadline=$((SECONDS + TIMEOUT))
  until engine_answers; do
    if ! running; then
      d1 logs --tail 40 "$NAME" >&2 2>&1 || true
      if d1 logs --tail 5 "$NAME" 2>&1 | grep -q graphdriver; then
        log "hint: storage driver $STORAGE does not work here; try ORCH_ENGINE2_STORAGE_DRIVER=vfs"
      fi
      die "container $NAME stopped while its dockerd was starting (tail of its dockerd log above; docker logs $NAME)"
    fi
    if [ $SECONDS -ge $deadline ]; then
      d1 logs --tail 40 "$NAME" >&2 2>&1 || true
      die "second engine did not answer on $SOCK within ${TIMEOUT}s (tail of its dockerd log above; docker logs $NAME)"
    fi
    sleep 0.5
  done
  until ssh_answers; do
    if [ $SECONDS -ge $deadline ]; then
      d1 exec "$NAME" tail -20 /var/log/sshd.log >&2 2>&1 || true
      ssh2 -v true >&2 2>&1 || true
      die "sshd of $NAME did not accept the generated key on 127.0.0.1:$PORT within ${TIMEOUT}s"
    fi
    sleep 0.5
  done
}

load_base() {
  local id1 id2
  id1="$(d1 image inspect -f '{{.Id}}' "$BASE")" || die "base image $BASE missing on the first engine (scripts/setup.sh builds it)"
  id2="$(d2 image inspect -f '{{.Id}}' "$BASE" 2>/dev/null || true)"
  [ "$id1" = "$id2" ] && return 0
  log "loading $BASE into the second engine (docker save | docker load)"
  d1 save "$BASE" | d2 load >/dev/null
  [ "$(d2 image inspect -f '{{.Id}}' "$BASE" 2>/dev/null)" = "$id1" ] || die "loading $BASE into the second engine failed"
}

remove_all() {
  if d1 container inspect "$NAME" >/dev/null 2>&1; then
    log "removing container $NAME"
    d1 rm -f -v "$NAME" >/dev/null
  fi
  if d1 volume inspect "$VOLUME" >/dev/null 2>&1; then
    log "removing volume $VOLUME"
    d1 volume rm -f "$VOLUME" >/dev/null
  fi
  rm -rf "$RUN_DIR"
}

lock() {
  exec 9>"$LOCK"
  flock -w 900 9 || die "could not take $LOCK within 900s (another engine2.sh still running?)"
}

# ---------------------------------------------------------------------------- commands
cmd_start() {
  lock
  local t0=$SECONDS
  d1 version -f '{{.Server.Version}}' >/dev/null 2>&1 || die "the first Docker engine does not answer (scripts/setup.sh starts it)"
  build_image
  if d1 container inspect "$NAME" >/dev/null 2>&1; then
    local why=""
    [ "$(container_field '{{index .Config.Labels "orch.test-infra.recipe"}}')" = "$RECIPE" ] || why="its recipe changed"
    [ "$(container_field '{{index .Config.Labels "orch.test-infra.port"}}')" = "$PORT" ] || why="${why:+$why, }ssh port is not $PORT"
    [ "$(container_field '{{index .Config.Labels "orch.test-infra.storage-driver"}}')" = "$STORAGE" ] || why="${why:+$why, }storage driver is not $STORAGE"
    [ -s "$RUN_DIR/id_ed25519" ] && [ -s "$RUN_DIR/sshd/ssh_host_ed25519_key" ] || why="${why:+$why, }its keys in $RUN_DIR are gone"
    if [ -n "$why" ]; then
      log "recreating $NAME: $why"
      remove_all
    fi
  fi
  if ! d1 container inspect "$NAME" >/dev/null 2>&1; then
    make_files
    d1 volume create --label "$LABEL" "$VOLUME" >/dev/null
    local mode
    mode="$(privilege_mode)"
    log "starting $NAME (privileges: $mode; dockerd with $STORAGE on volume $VOLUME; sshd on 127.0.0.1:$PORT)"
    set_privilege_flags "$mode"
    d1 run -d --name "$NAME" --hostname "$NAME" "${PRIV_FLAGS[@]}" --init --cgroupns=private \
      --label "$LABEL" --label "orch.test-infra.recipe=$RECIPE" --label "orch.test-infra.port=$PORT" \
      --label "orch.test-infra.storage-driver=$STORAGE" --label "orch.test-infra.privileges=$mode" \
      --stop-timeout 40 --tmpfs /run:mode=755 \
      -v "$RUN_DIR:$RUN_DIR" -v "$VOLUME:/var/lib/docker" \
      -p "127.0.0.1:$PORT:22" -e "ENGINE2_STORAGE_DRIVER=$STORAGE" \
      "$IMAGE" >/dev/null || { remove_all; die "could not start $NAME (port 127.0.0.1:$PORT taken? set ORCH_ENGINE2_SSH_PORT)"; }
  else
    make_files  # idempotent; keeps the keys
    if ! running; then
      log "starting the existing, stopped $NAME"
      d1 start "$NAME" >/dev/null
    fi
  fi
  wait_ready
  load_base
  # images left by earlier recipes (untagged, labelled ours) are no longer used by anything
  d1 images -q --filter dangling=true --filter "label=$LABEL" | xargs -r docker rmi >/dev/null 2>&1 || true
  log "ready in $((SECONDS - t0))s: DOCKER_HOST=unix://$SOCK, ssh root@127.0.0.1:$PORT (key $RUN_DIR/id_ed25519, known_hosts $RUN_DIR/known_hosts)"
}

cmd_stop() {
  lock
  remove_all
  # Prove the first engine was not harmed: it must still create and run containers.
  local probe="orch-engine2-probe-$$"
  if ! out="$(d1 run --rm --pull never --name "$probe" --label "$LABEL" "$BASE" true 2>&1)"; then
    d1 rm -f "$probe" >/dev/null 2>&1 || true
    die "AFTER STOPPING THE SECOND ENGINE THE FIRST ENGINE NO LONGER CREATES CONTAINERS: $out"
  fi
  log "stopped; the first engine still creates containers"
}

cmd_status() {
  if ! running; then
    log "$NAME is not running"
    return 1
  fi
  engine_answers || { log "$NAME is running but its dockerd does not answer on $SOCK"; return 1; }
  ssh_answers || { log "$NAME is running but its sshd does not answer on 127.0.0.1:$PORT with the generated key"; return 1; }
  log "running: engine $(d2 version -f '{{.Server.Version}}') on unix://$SOCK, ssh root@127.0.0.1:$(published_port), $(d2 ps -q | wc -l) running container(s)"
}

cmd_env() {
  local docker_host=""
  case "${1:-}" in
    "") ;;
    --docker-host) docker_host="${2:?--docker-host unix|ssh}" ;;
    --docker-host=*) docker_host="${1#*=}" ;;
    *) die "usage: engine2.sh env [--docker-host unix|ssh]" ;;
  esac
  running || die "$NAME is not running (scripts/engine2.sh start)"
  local port
  port="$(published_port)"
  [ -n "$port" ] || die "$NAME publishes no ssh port on 127.0.0.1"
  cat <<EOF
export ORCH_ENGINE2_DOCKER_HOST=unix://$SOCK
export ORCH_ENGINE2_SSH_HOST=127.0.0.1
export ORCH_ENGINE2_SSH_PORT=$port
export ORCH_ENGINE2_SSH_USER=root
export ORCH_ENGINE2_SSH_KEY=$RUN_DIR/id_ed25519
export ORCH_ENGINE2_KNOWN_HOSTS=$RUN_DIR/known_hosts
export ORCH_ENGINE2_SSH_CONFIG=$RUN_DIR/ssh_config
export ORCH_ENGINE2_SSH_BIN=$RUN_DIR/bin
export ORCH_ENGINE2_SSH_URL=ssh://root@127.0.0.1:$port
export ORCH_ENGINE2_CONTAINER=$NAME
EOF
  case "$docker_host" in
    "") ;;
    unix) echo "export DOCKER_HOST=unix://$SOCK" ;;
    ssh) echo "export DOCKER_HOST=ssh://root@127.0.0.1:$port"
         echo "export PATH=$RUN_DIR/bin:\$PATH" ;;
    *) die "--docker-host takes unix or ssh" ;;
  esac
}

cmd_restart_engine() {
  lock
  running || die "$NAME is not running (scripts/engine2.sh start)"
  # The whole DinD container restarts, like a host reboot: dockerd gets SIGTERM and stops its
  # containers; after the restart they are stopped (Exited) unless their restart policy
  # (always, unless-stopped) starts them again. The first engine is not touched.
  log "restarting the second engine (docker restart $NAME)"
  d1 restart -t 40 "$NAME" >/dev/null
  wait_ready
  log "second engine restarted"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) shift; cmd_env "$@" ;;
  restart-engine) cmd_restart_engine ;;
  *) echo "usage: $0 start|stop|status|env [--docker-host unix|ssh]|restart-engine" >&2; exit 2 ;;
esac
