"""The soft reset deploy (``orch reset --soft``): clear what tests leave behind while
keeping the VM. Used for backends without snapshots and by users who want to keep the VM.

It clears, relative to what provisioning recorded in /var/lib/orch/baseline:
- processes: every process except the init, the container's main process and the reset itself is killed
  (on a machine, where systemd is PID 1, only those beside the reset: a service runs in a
  cgroup of its own, what ``docker exec`` started runs in the container's);
- users and groups added since provisioning are deleted (with their home folders);
- Debian packages installed since provisioning are purged;
- /tmp, /var/tmp and /var/lib/orch/scratch are emptied.
Files written elsewhere, and changes to files that existed at provisioning, stay: use a
hard reset (``orch reset``, the default) to get exactly the baseline back.
"""

from pyinfra.api import deploy
from pyinfra.operations import server

BASELINE_DIR = "/var/lib/orch/baseline"

# POSIX sh only: minimal images have no procps (no pkill) and no bash.
KILL_STRAYS = r"""
ppid() { awk '/^PPid:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
keep=" 1 "
# the container's main process: the first child of an init such as docker-init/tini
main=""
for d in /proc/[0-9]*; do
  pid=${d#/proc/}
  [ "$(ppid "$pid")" = 1 ] || continue
  if [ -z "$main" ] || [ "$pid" -lt "$main" ]; then main=$pid; fi
done
case "$(cat /proc/1/comm 2>/dev/null)" in docker-init|tini|init|dumb-init|catatonit) keep="$keep$main ";; esac
# a machine: systemd's services (journald, dbus, what the baseline enabled) live in cgroups
# of their own; strays are what was started beside this reset, in the container's own
cg() { sed -n 's/^[0-9]*:name=systemd://p; s/^0:://p' "/proc/$1/cgroup" 2>/dev/null | head -n 1; }
beside=""
[ "$(cat /proc/1/comm 2>/dev/null)" != systemd ] || beside=$(cg $$)
# this shell and the shells pyinfra wrapped it in
p=$$
while [ "${p:-0}" -gt 0 ]; do keep="$keep$p "; p=$(ppid "$p"); done
for d in /proc/[0-9]*; do
  pid=${d#/proc/}
  case "$keep" in *" $pid "*) continue;; esac
  [ -z "$beside" ] || [ "$(cg "$pid")" = "$beside" ] || continue
  kill -9 "$pid" 2>/dev/null || true
done
true
"""

REMOVE_USERS = rf"""
for u in $(cut -d: -f1 /etc/passwd); do
  grep -qx "$u" {BASELINE_DIR}/users || userdel -r -f "$u" 2>/dev/null || userdel -f "$u" || true
done
for g in $(cut -d: -f1 /etc/group); do
  grep -qx "$g" {BASELINE_DIR}/groups || groupdel "$g" 2>/dev/null || true
done
"""

PURGE_PACKAGES = rf"""
if command -v dpkg-query >/dev/null && [ -s {BASELINE_DIR}/packages ]; then
  extra=$(dpkg-query -W -f '${{Package}}\n' | grep -vxF -f {BASELINE_DIR}/packages || true)
  [ -z "$extra" ] || DEBIAN_FRONTEND=noninteractive dpkg --purge --force-depends $extra >/dev/null
fi
true
"""

CLEAR_SCRATCH = "find /tmp /var/tmp /var/lib/orch/scratch -mindepth 1 -delete 2>/dev/null || true"


@deploy("orch: soft reset")
def reset() -> None:
    server.shell(name="Kill processes tests left running", commands=[KILL_STRAYS])
    server.shell(name="Remove users and groups added since provisioning", commands=[REMOVE_USERS])
    server.shell(name="Purge packages installed since provisioning", commands=[PURGE_PACKAGES])
    server.shell(name="Empty the scratch folders", commands=[CLEAR_SCRATCH])
