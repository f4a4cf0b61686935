"""The pollution check that works on every provider: one command inside the VM.

:class:`ExecChecker` runs one POSIX sh script per check (the machine image has no Python;
it needs coreutils, findutils, sed and awk, all Essential on Debian). The script keeps the
VM's state in :data:`STATE_DIR` (under ``/run``, which is never reported, and which a
reboot empties) and answers with what changed since it last ran, then keeps the new state
in its place, so the state after one test is the state before the next:

- files: one ``find`` walk of the root file system and of the tmpfs mounts (podman's
  machines have ``/tmp`` on one; a host's folder mounted inside is never walked), the
  ignored paths pruned, each entry with its type, mode, owner and (not for directories,
  whose times change with their entries) size, mtime and ctime;
- users and groups: the names in ``/etc/passwd`` and ``/etc/group``;
- Debian packages: ``dpkg-query -W``, run again only when ``/var/lib/dpkg/status`` changed;
- processes: pid and start time of each, from ``/proc``.

One ``awk`` compares the old state with the new one in hash tables (no sorting), so a
check costs a walk of the file system and a handful of processes. It never reports:

- its own processes: the shell it runs in, what started that shell (an exec's wrapper,
  ``sudo``, ``sshd``) and everything that shell starts; kernel threads and zombies;
- the processes of an SSH connection (pyinfra's ``@ssh`` connects during a test, and
  keeps an ``sftp-server`` for its uploads): an ``sshd`` whose parent is not PID 1 and what
  runs under it (a listener a test starts is reported; so is what a test leaves running
  over SSH, which its shell's exit hands to PID 1);
- on machines (systemd as PID 1): processes of units that a timer starts (the timers of
  the baseline come and go on their own schedule: ``apt-daily``, ``dpkg-db-backup``,
  ``systemd-tmpfiles-clean``...) and the per-user systemd manager a login starts
  (``user@UID.service``); journald's and systemd's own files are in ``Ignore.of(...,
  machine=True)``;
- what pyinfra leaves in its temporary folder (``/tmp/pyinfra-<sha1>``, e.g.
  ``server.script``'s copy of its script): pyinfra's, not the test's;
- the ctime of the files the engine binds in (``/etc/hosts``, ``/etc/hostname``,
  ``/etc/resolv.conf``: ``docker cp``, which pyinfra's ``@docker`` uploads with, touches
  them); their size, mode, owner and mtime are still compared.

orch itself writes inside a worker only when it makes it (personalize, ``mark``), and the
pytest plugin arms a new checker whenever the worker's VM is replaced, so orch's own
writes are never between two checks.

The output is one record per line, ``KIND<TAB>value``, with every byte outside printable
ASCII (a newline in a path, a tab, UTF-8) written as ``\\ooo`` and a backslash as ``\\\\``,
so a path with spaces, tabs or newlines comes back whole (and pyinfra, which decodes
output as UTF-8 line by line, never sees a byte it cannot decode). The last record says
the script ran to its end; without it the check failed.
"""

from __future__ import annotations

import logging
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field

from orchestrator.primitives.changes import Changes, CheckFailed, Ignore
from orchestrator.primitives.results import ExecResult

log = logging.getLogger(__name__)

#: Where the check keeps its "before" state, inside the VM (always pruned, whatever the
#: ignore list says).
STATE_DIR = "/run/orch-isolation"
#: What pyinfra leaves in its temporary folder (``host.get_temp_filename``), and
#: pyinfra-orbstack's upload before its ``sudo mv`` (left where the move fails).
PYINFRA_TEMP = ("/tmp/pyinfra-*", "/tmp/pyinfra_orbstack_*")

_AWK = r"""
function esc(s,    o, i, c) {
  if (s !~ /[^ -~]/ && index(s, "\\") == 0) return s
  o = ""
  for (i = 1; i <= length(s); i++) {
    c = substr(s, i, 1)
    if (c == "\\") o = o "\\\\"
    else if (c ~ /[ -~]/) o = o c
    else o = o sprintf("\\%03o", ord[c])
  }
  return o
}
function out(kind, value) { if (armed) printf "%s\t%s\n", kind, esc(value) }
function meta(rec,    m) {
  tab = index(rec, "\t"); path = substr(rec, tab + 1); m = substr(rec, 1, tab - 1)
  if (path in bind) sub(/ [^ ]*$/, "", m)  # a file the engine binds in: its ctime is the engine's
  return m
}
BEGIN {
  for (i = 1; i < 256; i++) ord[sprintf("%c", i)] = i
  n = split(binds, B, " "); for (i = 1; i <= n; i++) bind[B[i]] = 1
  getline p1 < "/proc/1/stat"; sub(/^.*\) /, "", p1); split(p1, F, " ")
  nboot = bootid " " F[20]
  armed = 0
  if (state != "" && (getline oboot < (C "/boot")) > 0) armed = 1
  if (!armed) printf "W\tnot armed: no earlier state in %s\n", D
  else if (oboot != nboot) { printf "W\tthe VM restarted since the last check (a reboot, or a stop and a start)\n"; armed = 0 }
  print nboot > (N "/boot")
}
src == "of" { m = meta($0); ofile[path] = m; if (path == "/var/lib/dpkg/status") odpkg = m; next }
src == "nf" {
  m = meta($0)
  if (path in seen) next  # a tmpfs mount point: listed by the walk of / and by its own
  seen[path] = 1
  if (path == "/var/lib/dpkg/status") ndpkg = m
  if (!(path in ofile)) out("A", path)
  else { if (ofile[path] != m) out("M", path); delete ofile[path] }
  next
}
src == "ou" { ouser[$0] = 1; next }
src == "nu" {
  n = $0; sub(/:.*/, "", n); if (n == "" || (n in nuser)) next
  nuser[n] = 1; print n > (N "/users")
  if (n in ouser) delete ouser[n]; else out("U+", n)
  next
}
src == "og" { ogroup[$0] = 1; next }
src == "ng" {
  n = $0; sub(/:.*/, "", n); if (n == "" || (n in ngroup)) next
  ngroup[n] = 1; print n > (N "/groups")
  if (n in ogroup) delete ogroup[n]; else out("G+", n)
  next
}
src == "op" { opkg[$0] = 1; havepkg = 1; next }
src == "oproc" { oproc[$0] = 1; next }
END {
  RS = "\n"
  for (path in ofile) out("D", path)
  for (n in ouser) out("U-", n)
  for (n in ogroup) out("G-", n)
  processes()
  packages()
  printf "Z\tend\n"
}
function packages(    cmd, line, st, rec, k) {
  printf "" > (N "/packages")
  if (!dpkg) return
  if (armed && havepkg && odpkg == ndpkg) { for (k in opkg) print k > (N "/packages"); return }
  cmd = "dpkg-query -W -f '${db:Status-Status} ${binary:Package} ${Version}\\n' 2>/dev/null"
  while ((cmd | getline line) > 0) {
    st = line; sub(/ .*/, "", st); rec = line; sub(/^[^ ]* /, "", rec)
    if (st == "not-installed" || st == "config-files" || rec == "") continue
    if (st != "installed") rec = rec " (" st ")"
    print rec > (N "/packages")
    if (rec in opkg) delete opkg[rec]; else if (havepkg) out("P+", rec)
  }
  close(cmd)
  if (havepkg) for (k in opkg) out("P-", k)
}
function processes(    n, P, k, f, line, pid, q, d, u, key, cmd, a, c) {
  printf "" > (N "/procs")
  n = split(pids, P, " ")
  for (k = 1; k <= n; k++) {
    f = P[k] "/stat"
    if ((getline line < f) > 0) {
      pid = substr(P[k], 7); c = line; sub(/^[^(]*\(/, "", c); sub(/\) [^)]*$/, "", c); comm[pid] = c
      sub(/^.*\) /, "", line); split(line, F, " ")
      st[pid] = F[1]; ppid[pid] = F[2]; start[pid] = F[20]
    }
    close(f)
  }
  for (q = me; (q in ppid) && !(q in skip); q = ppid[q]) skip[q] = 1
  n = split(timers, P, " ")
  for (k = 1; k <= n; k++) {
    u = P[k]; sub(/^.*\//, "", u); sub(/\.timer$/, ".service", u); unit[u] = 1
    while ((getline line < P[k]) > 0) if (line ~ /^Unit=/) unit[substr(line, 6)] = 1
    close(P[k])
  }
  for (pid in ppid) {
    if (pid in skip || st[pid] == "Z" || pid == 2 || ppid[pid] == 2) continue
    # this check's own, and an SSH connection's (pyinfra's @ssh, its sftp-server): what
    # runs under an sshd that is not the listener (a listener has PID 1 for parent)
    q = pid; d = 0
    while (q != me && !sshconn(q) && (q in ppid) && d < 1000) { q = ppid[q]; d++ }
    if (q == me || sshconn(q)) continue
    if (systemd && own(pid)) continue
    key = pid " " start[pid]
    print key > (N "/procs")
    if (key in oproc) continue
    cmd = ""; f = "/proc/" pid "/cmdline"; RS = "\0"
    while ((getline a < f) > 0) cmd = cmd (cmd == "" ? "" : " ") a
    close(f); RS = "\n"
    if (cmd == "") { f = "/proc/" pid "/comm"; getline cmd < f; close(f); cmd = "[" cmd "]" }
    out("R", pid " " cmd)
  }
}
function sshconn(q) { return (comm[q] == "sshd" || comm[q] == "sshd-session") && ppid[q] != 1 }
function own(pid,    f, line, cg, u) {
  # a process of a timer's unit, or a user's systemd manager: the baseline's own comings and goings
  f = "/proc/" pid "/cgroup"; cg = ""
  while ((getline line < f) > 0) {
    if (line ~ /^[0-9]+:name=systemd:/) { sub(/^[0-9]+:name=systemd:/, "", line); cg = line; break }
    if (line ~ /^0::/) { sub(/^0::/, "", line); cg = line }
  }
  close(f)
  if (cg ~ /\/user@[0-9]+\.service\/init\.scope$/) return 1
  for (u in unit) if (index(cg "/", "/" u "/")) return 1
  return 0
}
"""

_SCRIPT = r"""
export LC_ALL=C
D=@STATE@ C=@STATE@/cur N=@STATE@/new
umask 077
for t in find awk mkdir rm mv; do
  command -v $t >/dev/null 2>&1 || { printf 'X\tthe VM has no %s\n' "$t"; exit 0; }
done
rm -rf "$N" && mkdir -p "$N" || { printf 'X\tcannot write %s\n' "$D"; exit 0; }
read -r bootid < /proc/sys/kernel/random/boot_id || bootid=unknown
state=; [ -f "$C/boot" ] && state=1
read -r init < /proc/1/comm || init=
systemd=; timers=
if [ "$init" = systemd ]; then
  systemd=1
  for f in /etc/systemd/system/*.timer /lib/systemd/system/*.timer /usr/lib/systemd/system/*.timer; do
    [ -f "$f" ] && timers="$timers $f"
  done
fi
dpkg=; command -v dpkg-query >/dev/null 2>&1 && dpkg=1
starts=/
binds=
while read -r dev mnt typ rest; do
  case "$mnt" in /|*\\*|*\**|*\?*|*\[*) continue;; @CASES@) continue;; esac
  if [ "$typ" = tmpfs ]; then starts="$starts $mnt"; else binds="$binds $mnt"; fi
done < /proc/self/mounts
find $starts -xdev \( @PRUNE@ \) -prune -o \
  \( -type d -printf 'd %m %U:%G\t%p\0' \) -o -printf '%y %m %U:%G %s %T@ %C@\t%p\0' >"$N/files" 2>/dev/null
[ -s "$N/files" ] || { printf 'X\tfind listed no file\n'; exit 0; }
set -- /proc/[0-9]*
pids="$*"
set -- RS='\0'
[ -z "$state" ] || set -- "$@" src=of "$C/files"
set -- "$@" src=nf "$N/files" RS='\n'
[ -z "$state" ] || set -- "$@" src=ou "$C/users" src=og "$C/groups" src=op "$C/packages" src=oproc "$C/procs"
[ -r /etc/passwd ] && set -- "$@" src=nu /etc/passwd
[ -r /etc/group ] && set -- "$@" src=ng /etc/group
awk -v me=$$ -v D="$D" -v C="$C" -v N="$N" -v state="$state" -v bootid="$bootid" -v pids="$pids" \
  -v timers="$timers" -v binds="$binds" -v systemd="$systemd" -v dpkg="$dpkg" '@AWK@' "$@" || { printf 'X\tawk failed\n'; exit 0; }
rm -rf "$C" && mv "$N" "$C" || printf 'X\tcannot keep the state in %s\n' "$C"
"""

#: The kinds of record the script prints, and the field of :class:`Changes` each fills.
_FIELDS = {
    "A": "created",
    "M": "changed",
    "D": "deleted",
    "U+": "users_added",
    "U-": "users_removed",
    "G+": "groups_added",
    "G-": "groups_removed",
    "P+": "packages_installed",
    "P-": "packages_removed",
    "R": "processes",
}


def script(ignore: Ignore) -> str:
    """The check's command: takes the VM's state, prints what changed since it last ran."""
    pruned = (*ignore.paths, STATE_DIR)
    prune = " -o ".join(f"-path {shlex.quote(_glob_literal(p))}" for p in pruned)
    prune += "".join(f" -o -path {shlex.quote(pattern)}" for pattern in PYINFRA_TEMP)
    cases = "|".join(f"{shlex.quote(p)}|{shlex.quote(p.rstrip('/'))}/*" for p in pruned)
    awk = _AWK.replace("'", "'\\''")  # inside the script's single quotes
    return (
        _SCRIPT.replace("@STATE@", shlex.quote(STATE_DIR))
        .replace("@PRUNE@", prune)
        .replace("@CASES@", cases)
        .replace("@AWK@", awk)
        .strip()
    )


def _glob_literal(path: str) -> str:
    """``path`` as a ``find -path`` pattern that matches only itself."""
    return re.sub(r"([\\*?\[])", r"\\\1", path)


def unescape(value: str) -> str:
    r"""A value as the script wrote it (``\\``, ``\ooo``), back to its text (bytes that
    are not UTF-8 as ``\xNN``)."""
    raw = bytearray()
    i = 0
    while i < len(value):
        c = value[i]
        if c == "\\" and value[i + 1 : i + 2] == "\\":
            raw += b"\\"
            i += 2
        elif c == "\\" and re.fullmatch(r"[0-7]{3}", value[i + 1 : i + 4]):
            raw.append(int(value[i + 1 : i + 4], 8))
            i += 4
        else:
            raw += c.encode()
            i += 1
    return raw.decode("utf-8", errors="backslashreplace")


@dataclass
class Parsed:
    """What one run of the script said: the changes, why they are not known (the state was
    lost, or it was not armed yet), whether it ran to its end, and an error it named."""

    changes: Changes = field(default_factory=Changes)
    unknown: str = ""
    complete: bool = False
    error: str = ""


def parse(stdout: str, ignore: Ignore) -> Parsed:
    """The script's records (one per line, ``KIND<TAB>value``); lines of any other form,
    and paths the ignore list covers, are left out."""
    found: dict[str, list[str]] = {name: [] for name in _FIELDS.values()}
    parsed = Parsed()
    for line in stdout.splitlines():
        kind, sep, value = line.partition("\t")
        if not sep:
            continue
        value = unescape(value)
        if kind in _FIELDS:
            if kind in ("A", "M", "D") and (ignore.covers(value) or not value.startswith("/")):
                continue
            found[_FIELDS[kind]].append(value)
        elif kind == "W":
            parsed.unknown = value
        elif kind == "X":
            parsed.error = value
        elif kind == "Z":
            parsed.complete = True
    procs = sorted(found.pop("processes"), key=_pid)
    parsed.changes = Changes(processes=tuple(procs), **{k: tuple(sorted(v)) for k, v in found.items()})
    return parsed


def _pid(process: str) -> int:
    pid = process.partition(" ")[0]
    return int(pid) if pid.isdigit() else 0


class ExecChecker:
    """A :class:`~orchestrator.primitives.changes.Checker` that runs the check inside the
    VM: ``run`` runs a shell command there as root (a user who cannot read all of the VM
    sees only part of it) and returns its result without raising on a non-zero exit; the
    pytest plugin gives ``provider.exec(vm, ["sh", "-c", command])``."""

    def __init__(self, run: Callable[[str], ExecResult], ignore: Ignore) -> None:
        self._run = run
        self.ignore = ignore
        self._script = script(ignore)

    def arm(self) -> None:
        self._once()

    def check(self) -> Changes:
        parsed = self._once()
        if parsed.unknown:
            raise CheckFailed(f"cannot tell what changed: {parsed.unknown}")
        return parsed.changes

    def _once(self) -> Parsed:
        try:
            result = self._run(self._script)
        except Exception as err:  # a connector's error of any kind: the VM did not answer
            raise CheckFailed(f"the check did not run in the VM: {err}") from err
        parsed = parse(result.stdout, self.ignore)
        if parsed.error:
            raise CheckFailed(f"the check failed in the VM: {parsed.error}")
        if not parsed.complete or not result.ok:
            lines = result.stderr.strip().splitlines()
            cut = "" if parsed.complete else ", before its end"
            raise CheckFailed(
                f"the check failed in the VM (exit code {result.rc}{cut}): {lines[-1] if lines else 'no error output'}"
            )
        return parsed
