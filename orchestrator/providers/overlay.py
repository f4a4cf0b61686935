"""The pollution check read from the host, for containers of a local engine on overlay
storage (Docker's ``overlay2``, podman's ``overlay``): no command runs inside the container.

``docker diff`` would say which files changed, but it takes 0.7-2 s on a busy host, and a
command inside (``docker exec``) costs about 0.08 s before it has done anything. What the
container changed is already on the host's disk, so :class:`OverlayChecker` reads it there
(a few milliseconds; the engine is asked once, when the checker is made, and again only
after the container restarted):

- files: the container's **upper directory** holds only what it wrote since it was made
  (its image's layers are below, read-only). One walk of it per check, each entry with its
  type, mode, owner and (not for directories, whose times change with their entries) size,
  mtime and ctime, is compared with the previous walk. What a path was before and is now
  is what the container sees: the upper entry when there is one (a *whiteout*, a character
  device 0/0, is a deletion), else the image's (the lower layers, top first; a directory
  whose ``trusted.overlay.opaque`` xattr is set hides what the layers below have under it).
  A new upper entry over an image's file is a change (a copy-up), over nothing a creation.
  What the upper directory cannot show is read through the container's root as the host
  sees it (``/proc/<pid>/root``): its tmpfs mounts (podman's machines have /tmp on one),
  walked whole, and the files mounted into it (``/etc/hosts``, ``/etc/resolv.conf``);
- users and groups: the names in ``/etc/passwd`` and ``/etc/group``, read through that root;
- Debian packages: ``/var/lib/dpkg/status`` (and dpkg's ``updates`` journal) parsed as
  ``dpkg-query -W`` would show them, again only when the file changed;
- processes: the container's cgroup (``cgroup.procs`` under the hierarchy its init is in:
  cgroup v1's ``pids`` or ``name=systemd``, or v2's unified one), each with its start time
  (``/proc/<pid>/stat``); a process is reported by its pid inside the container (``NSpid``)
  and its command line.

It reports what the in-VM check (``orchestrator.core.isolation``) reports, item for item:
the same :class:`~orchestrator.primitives.changes.Ignore`, not what pyinfra leaves in its
temporary folder (``/tmp/pyinfra-*``), not zombies, and on machines (systemd as PID 1) not
the processes of the units that the image's timers start nor a login's ``user@UID.service``
manager. It never sees its own work, since it runs nothing in the container.

The container must stay the one it was made for: each check first reads its init's start
time; a restart (a reboot inside, a stop and a start) or a new container under the same
name is a check that cannot tell (``CheckFailed``), after which the checker is armed on
what runs now. Where any of this is out of reach (a remote engine, another storage driver,
overlay's ``redirect_dir`` or ``metacopy`` on, a folder the host cannot read)
:func:`make` says why once and returns None, and the in-VM check is used instead.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from orchestrator.primitives.changes import Changes, CheckFailed, Ignore

log = logging.getLogger(__name__)

#: The storage drivers whose containers have an upper directory (Docker's, podman's).
DRIVERS = ("overlay2", "overlay")
#: What pyinfra leaves in its temporary folder, and pyinfra-orbstack's uploads (as
#: ``orchestrator.core.isolation``: every path that starts so).
PYINFRA_TEMP = ("/tmp/pyinfra-", "/tmp/pyinfra_orbstack_")
#: An SSH server's names: one whose parent is not the container's init serves a connection.
SSHD = ("sshd", "sshd-session")
#: The xattr of an opaque directory (rootful overlay; ``user.`` where mounted ``userxattr``).
OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")
#: Where a systemd image keeps its timers (as the in-VM check reads them).
TIMER_DIRS = ("/etc/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system")
DPKG_STATUS = "/var/lib/dpkg/status"
DPKG_UPDATES = "/var/lib/dpkg/updates"
#: The overlay module's defaults, read where a mount does not say (redirects and metacopy
#: put what a path is elsewhere than its upper entry: this checker cannot read them).
OVERLAY_PARAMETERS = "/sys/module/overlay/parameters"
CGROUP_ROOT = "/sys/fs/cgroup"

#: Why a checker was not made, said once each.
_SAID: set[str] = set()


class Unusable(Exception):
    """This container's changes cannot be read from the host (the message says why)."""


class Entry(NamedTuple):
    """One path as the container sees it: type, permission bits, owner, and for anything
    but a directory size, mtime and ctime (nanoseconds); whiteout and opaque only in the
    upper directory."""

    fmt: int
    perm: int
    uid: int
    gid: int
    size: int = 0
    mtime: int = 0
    ctime: int = 0
    whiteout: bool = False
    opaque: bool = False

    @property
    def meta(self) -> tuple[int, ...]:
        return self[:7]

    @property
    def hides(self) -> bool:
        """Whether the image's entries under this path are hidden by it."""
        return self.whiteout or self.opaque or self.fmt != stat.S_IFDIR


WHITEOUT = Entry(stat.S_IFCHR, 0, 0, 0, whiteout=True)


@dataclass(frozen=True)
class Container:
    """What the engine said about a running container, and where the host sees its parts."""

    id: str
    name: str
    #: Its init's pid on the host, and that process's start time (a restart changes both).
    pid: int
    start: str
    upper: str
    #: The image's layers, top first.
    lowers: tuple[str, ...]
    #: Its cgroup folders (each walked whole for ``cgroup.procs``).
    cgroups: tuple[str, ...]
    proc: str = "/proc"
    #: Its root and its mount table as the host sees them (``/proc/<pid>/root``, ``/mounts``).
    root: str = ""
    mounts: str = ""

    @property
    def systemd(self) -> bool:
        return _read(f"{self.proc}/{self.pid}/comm").strip() == "systemd"

    @classmethod
    def from_inspect(cls, raw: dict[str, Any], *, proc: str = "/proc", cgroup_root: str = CGROUP_ROOT) -> Container:
        """From ``docker inspect``/``podman inspect`` of one container; raises
        :class:`Unusable` when its changes cannot be read from this host."""
        name = str(raw.get("Name", "")).lstrip("/")
        driver = raw.get("GraphDriver") or {}
        if driver.get("Name") not in DRIVERS:
            raise Unusable(f"its storage driver is {driver.get('Name') or 'unknown'}, not overlay")
        data = driver.get("Data") or {}
        upper = str(data.get("UpperDir") or "")
        lowers = tuple(p for p in str(data.get("LowerDir") or "").split(":") if p)
        if not upper:
            raise Unusable("the engine names no upper directory")
        state = raw.get("State") or {}
        pid = int(state.get("Pid") or 0)
        if not state.get("Running") or pid <= 0:
            raise Unusable("the container is not running")
        start = _start_time(proc, pid)
        if not start:
            raise Unusable(f"its init ({proc}/{pid}) is not readable")
        cgroups = _cgroups(_read(f"{proc}/{pid}/cgroup"), cgroup_root)
        if not cgroups:
            raise Unusable(f"its cgroup is not readable under {cgroup_root}")
        container = cls(
            id=str(raw.get("Id", "")),
            name=name,
            pid=pid,
            start=start,
            upper=upper,
            lowers=lowers,
            cgroups=cgroups,
            proc=proc,
            root=f"{proc}/{pid}/root",
            mounts=f"{proc}/{pid}/mounts",
        )
        container.readable()
        return container

    def readable(self) -> None:
        """Raise :class:`Unusable` unless the host can read what the check reads."""
        for where in (self.upper, *self.lowers, self.root + "/etc"):
            try:
                os.scandir(where).close()
            except OSError as err:
                raise Unusable(f"{where} is not readable here ({err.strerror or err})") from err
        kind, options = _root_mount(self.mounts)
        if kind != "overlay":  # fuse-overlayfs (rootless podman) writes its whiteouts otherwise
            raise Unusable(f"its root is mounted as {kind or 'unknown'}, not by the kernel's overlay")
        for feature in ("redirect_dir", "metacopy"):
            default = "on" if _read(f"{OVERLAY_PARAMETERS}/{feature}").strip() == "Y" else "off"
            if options.get(feature, default) == "on":
                raise Unusable(f"overlay's {feature} is on (what a path is may be elsewhere than its upper entry)")


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return f.read()
    except OSError:
        return ""


def _strict(path: str) -> str:
    """A file of the container that the check needs: missing is empty, unreadable fails it."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return f.read()
    except FileNotFoundError:
        return ""
    except OSError as err:
        raise CheckFailed(f"cannot read {path} from the host: {err}") from err


def _start_time(proc: str, pid: int) -> str:
    """A process's start time (``/proc/<pid>/stat``'s 22nd field), "" when it is gone."""
    line = _read(f"{proc}/{pid}/stat")
    fields = line[line.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else ""


def _cgroups(text: str, root: str) -> tuple[str, ...]:
    """The container's cgroup folders from its init's ``/proc/<pid>/cgroup``: on cgroup v2
    the unified one; on v1 the ``pids`` hierarchy (every process of the container, in one
    folder: systemd inside cannot split it), else ``name=systemd``, else the hybrid's
    unified one. A systemd init sits in ``init.scope``: its container is the parent."""
    by_controller: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(","):
                by_controller.setdefault(controller, parts[2])
    wanted: list[tuple[str, str | None]]
    if os.path.exists(f"{root}/cgroup.procs") and "" in by_controller:
        wanted = [(root, by_controller[""])]
    else:
        wanted = [
            (f"{root}/pids", by_controller.get("pids")),
            (f"{root}/systemd", by_controller.get("name=systemd")),
            (f"{root}/unified", by_controller.get("")),
        ]
    for mount, path in wanted:
        if path is None or path == "/":
            continue
        folder = mount + path.removesuffix("/init.scope")
        if os.path.isfile(f"{folder}/cgroup.procs"):
            return (folder,)
    return ()


def _root_mount(mounts: str) -> tuple[str, dict[str, str]]:
    """The type and the options of the container's root mount (``overlay``,
    ``lowerdir=…,redirect_dir=on,…``); the last mount on / is the one seen."""
    found: tuple[str, dict[str, str]] = ("", {})
    for line in _read(mounts).splitlines():
        parts = line.split()
        if len(parts) > 3 and parts[1] == "/":
            found = (parts[2], dict(o.partition("=")[::2] for o in parts[3].split(",")))
    return found


def _unescape_mount(path: str) -> str:
    r"""A mount point as ``/proc/<pid>/mounts`` writes it (``\040`` for a space)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), path)


def _child(path: str, name: str) -> str:
    return ("" if path == "/" else path) + "/" + name


def _ancestors(path: str) -> Iterable[str]:
    while path != "/":
        path = path.rsplit("/", 1)[0] or "/"
        yield path


def _under(path: str, folders: frozenset[str]) -> bool:
    """Whether ``path`` is strictly below one of ``folders``."""
    return any(a in folders for a in _ancestors(path))


def _shown(path: str) -> str:
    """A path as the report shows it (bytes that are not UTF-8 as ``\\xNN``, as the in-VM
    check does)."""
    return os.fsencode(path).decode("utf-8", errors="backslashreplace")


def _entry(st: os.stat_result, host_path: str, *, upper: bool) -> Entry:
    fmt = stat.S_IFMT(st.st_mode)
    if upper and fmt == stat.S_IFCHR and st.st_rdev == 0:
        return WHITEOUT
    perm = stat.S_IMODE(st.st_mode)
    if fmt == stat.S_IFDIR:
        return Entry(fmt, perm, st.st_uid, st.st_gid, opaque=upper and _opaque(host_path))
    return Entry(fmt, perm, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _opaque(host_path: str) -> bool:
    for name in OPAQUE_XATTRS:
        try:
            if os.getxattr(host_path, name, follow_symlinks=False) == b"y":
                return True
        except OSError:
            continue
    return False


@dataclass
class _State:
    """One look at the container: its upper directory, what its mounts show, the folders
    mounted over (whose own content is not the upper directory's), users, groups, packages
    (None without dpkg) and processes (host pid and start time)."""

    upper: dict[str, Entry]
    mounted: dict[str, Entry]
    covered: frozenset[str]
    users: frozenset[str]
    groups: frozenset[str]
    dpkg_key: tuple[Any, ...]
    packages: frozenset[str] | None
    procs: frozenset[tuple[int, str]]
    #: Every process of the container (zombies too), by host pid: its parent and its name.
    tree: dict[int, tuple[int, str]] = field(default_factory=dict)
    timers: frozenset[str] | None = field(default=None)


class OverlayChecker:
    """A :class:`~orchestrator.primitives.changes.Checker` of one container, read from the
    host (how: the module's docstring). ``renew`` asks the engine again for the container
    under the same name (None when it is gone): called only after a restart."""

    def __init__(self, container: Container, ignore: Ignore, *, renew: Callable[[], Container | None] | None = None) -> None:
        self.container = container
        self.ignore = ignore
        self._renew = renew
        self._state: _State | None = None
        self._lower: dict[str, Entry | None] = {}
        self._layers: dict[str, Entry | None] = {}

    # -- the protocol -------------------------------------------------------------------

    def arm(self) -> None:
        self._alive()
        self._state = self._look(None)

    def check(self) -> Changes:
        if self._state is None:
            self.arm()
            raise CheckFailed("cannot tell what changed: not armed (no earlier state of the container)")
        self._alive()
        old = self._state
        new = self._look(old)
        self._state = new
        return self._diff(old, new)

    # -- the container ------------------------------------------------------------------

    def _alive(self) -> None:
        """The container is still the one of the last look; else (restarted, replaced,
        gone) the checker is armed on what runs now and the check cannot tell."""
        c = self.container
        if _start_time(c.proc, c.pid) == c.start:
            return
        self._state = None
        try:
            now = self._renew() if self._renew is not None else None
        except Unusable as err:
            raise CheckFailed(f"cannot tell what changed: {c.name} is no longer readable from the host: {err}") from err
        except Exception as err:  # the engine's error of any kind: it did not answer
            raise CheckFailed(f"cannot tell what changed: the engine did not say what became of {c.name}: {err}") from err
        if now is None:
            raise CheckFailed(f"cannot tell what changed: the container {c.name} is gone or stopped")
        self.container, self._lower, self._layers = now, {}, {}
        self._state = self._look(None)
        what = "was replaced by another one under its name" if now.id != c.id else "restarted since the last check"
        raise CheckFailed(f"cannot tell what changed: the container {c.name} {what}")

    def _look(self, old: _State | None) -> _State:
        c = self.container
        try:
            upper: dict[str, Entry] = {}
            root = os.lstat(c.upper)
            upper["/"] = _entry(root, c.upper, upper=False)
            self._walk(c.upper, "/", upper, upper=True, dev=None)
        except OSError as err:
            raise CheckFailed(f"cannot read the container's upper directory {c.upper}: {err}") from err
        try:
            mounted, covered = self._mounts()
        except OSError as err:
            raise CheckFailed(f"cannot read the container's mounts through {c.root}: {err}") from err
        users, groups = (frozenset(self._names(f"{c.root}/etc/{f}")) for f in ("passwd", "group"))
        key = self._dpkg_key()
        if old is not None and old.dpkg_key == key:
            packages = old.packages
        else:
            packages = self._packages(key[-1]) if key[0] is not None else None
        procs, tree = self._procs()
        return _State(upper, mounted, covered, users, groups, key, packages, procs, tree)

    def _skip(self, path: str) -> bool:
        return path.startswith(PYINFRA_TEMP) or self.ignore.covers(path)

    def _walk(self, host: str, path: str, out: dict[str, Entry], *, upper: bool, dev: int | None) -> None:
        """Every entry under ``host`` (the container's ``path``), the ignored paths pruned;
        with ``dev``, not into another file system (a mount point is listed, not entered)."""
        stack = [(host, path)]
        while stack:
            here, inside = stack.pop()
            try:
                it = os.scandir(here)
            except (FileNotFoundError, NotADirectoryError):
                continue  # gone meanwhile (a walk of a live container)
            with it:
                for de in it:
                    p = _child(inside, de.name)
                    if self._skip(p):
                        continue
                    try:
                        st = de.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    entry = _entry(st, de.path, upper=upper)
                    out[p] = entry
                    if entry.fmt == stat.S_IFDIR and not entry.whiteout and (dev is None or st.st_dev == dev):
                        stack.append((de.path, p))

    def _mounts(self) -> tuple[dict[str, Entry], frozenset[str]]:
        """What the container's mounts show: each mount point (a file mounted over one of the
        image's, a folder), and the whole of each tmpfs; and the folders mounted over."""
        c = self.container
        mounted: dict[str, Entry] = {}
        covered: set[str] = set()
        for line in _read(c.mounts).splitlines():
            parts = line.split()
            if len(parts) < 3:
                continue
            point, kind = _unescape_mount(parts[1]), parts[2]
            if point == "/" or not point.startswith("/") or self._skip(point):
                continue
            host = c.root + point
            try:
                st = os.lstat(host)
            except OSError:
                continue
            entry = _entry(st, host, upper=False)
            # a file the engine mounts in (/etc/hosts): its ctime is the engine's (as the in-VM check)
            mounted[point] = entry if kind == "tmpfs" else entry._replace(ctime=0)
            if stat.S_ISDIR(st.st_mode):
                covered.add(point)
                if kind == "tmpfs":
                    self._walk(host, point, mounted, upper=False, dev=st.st_dev)
        return mounted, frozenset(covered)

    def _names(self, path: str) -> set[str]:
        return {n for line in _strict(path).splitlines() if (n := line.split(":", 1)[0])}

    # -- files --------------------------------------------------------------------------

    def _image(self, path: str) -> Entry | None:
        """What the image's layers have at ``path``: the top layer's that has it, unless a
        layer above had a whiteout there, or a file or an opaque folder above it."""
        if path in self._lower:
            return self._lower[path]
        found: Entry | None = None
        parts = path.strip("/").split("/")
        for layer in self.container.lowers:
            here, opaque, ends = layer, False, False
            for i, part in enumerate(parts):
                here += "/" + part
                entry = self._layer_entry(here)
                if entry is None:
                    ends = opaque  # not in this layer; an opaque folder above hides the rest
                    break
                if entry.whiteout or i == len(parts) - 1 or entry.fmt != stat.S_IFDIR:
                    ends = True
                    if not entry.whiteout and i == len(parts) - 1:
                        found = entry._replace(opaque=False)
                    break
                opaque = opaque or entry.opaque
            if ends:
                break
        self._lower[path] = found
        return found

    def _layer_entry(self, host: str) -> Entry | None:
        """A path in one of the image's layers (kept: the layers never change)."""
        if host not in self._layers:
            try:
                self._layers[host] = _entry(os.lstat(host), host, upper=True)
            except OSError:
                self._layers[host] = None
        return self._layers[host]

    def _image_under(self, path: str) -> set[str]:
        """The paths the image's layers have under ``path`` (ignored ones pruned)."""
        out: dict[str, Entry] = {}
        for layer in self.container.lowers:
            self._walk(layer + path, path, out, upper=False, dev=None)
        return set(out)

    def _view(self, state: _State, path: str) -> Entry | None:
        """What the container saw at ``path`` at that look (None: nothing)."""
        if path in state.mounted:
            return state.mounted[path]
        if _under(path, state.covered):
            return None
        entry = state.upper.get(path)
        if entry is not None:
            return None if entry.whiteout else entry
        if any((a := state.upper.get(up)) is not None and a.hides for up in _ancestors(path)):
            return None
        return self._image(path)

    def _files(self, old: _State, new: _State) -> tuple[list[str], list[str], list[str]]:
        moved = {p for p in old.upper.keys() | new.upper.keys() if old.upper.get(p) != new.upper.get(p)}
        paths = set(moved)
        for p in moved:
            was, now = old.upper.get(p), new.upper.get(p)
            if (was is not None and was.hides) == (now is not None and now.hides):
                continue
            # what is under p changed sides: the upper entries under it, and the image's
            below = _child(p, "")
            paths.update(q for q in (*old.upper, *new.upper) if q.startswith(below))
            image = self._image(p)
            if image is not None and image.fmt == stat.S_IFDIR:
                paths |= self._image_under(p)
        covered = old.covered | new.covered
        paths = {p for p in paths if not _under(p, covered)}
        paths.update(p for p in old.mounted.keys() | new.mounted.keys() if old.mounted.get(p) != new.mounted.get(p))
        created, changed, deleted = [], [], []
        for p in paths:
            if self._skip(p):
                continue
            before, after = self._view(old, p), self._view(new, p)
            if before is None and after is not None:
                created.append(_shown(p))
            elif before is not None and after is None:
                deleted.append(_shown(p))
            elif before is not None and after is not None and before.meta != after.meta:
                changed.append(_shown(p))
        return sorted(created), sorted(changed), sorted(deleted)

    # -- packages -----------------------------------------------------------------------

    def _dpkg_key(self) -> tuple[Any, ...]:
        root = self.container.root
        try:
            st = os.stat(root + DPKG_STATUS)
        except OSError:
            return (None,)
        try:
            updates = tuple(sorted(n for n in os.listdir(root + DPKG_UPDATES) if n.isdigit()))
        except OSError:
            updates = ()
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, updates)

    def _packages(self, updates: tuple[str, ...]) -> frozenset[str]:
        """The packages as dpkg-query shows them: the status file, then its journal."""
        root = self.container.root
        records = {(r.get("package", ""), r.get("architecture", "")): r for r in _stanzas(_strict(root + DPKG_STATUS))}
        for name in updates:
            for r in _stanzas(_read(f"{root}{DPKG_UPDATES}/{name}")):
                records[(r.get("package", ""), r.get("architecture", ""))] = r
        return frozenset(_installed(records.values()))

    # -- processes ----------------------------------------------------------------------

    def _procs(self) -> tuple[frozenset[tuple[int, str]], dict[int, tuple[int, str]]]:
        """The container's processes by host pid and start time (zombies left out), and the
        parent and name of each (zombies too: a parent of the living)."""
        c = self.container
        procs: set[tuple[int, str]] = set()
        tree: dict[int, tuple[int, str]] = {}
        for folder in c.cgroups:
            for here, _dirs, files in os.walk(folder):
                if "cgroup.procs" not in files:
                    continue
                for word in _read(f"{here}/cgroup.procs").split():
                    line = _read(f"{c.proc}/{word}/stat")
                    fields = line[line.rfind(")") + 2 :].split()
                    if len(fields) <= 19 or not word.isdigit():
                        continue  # gone meanwhile
                    tree[int(word)] = (int(fields[1]), line[line.find("(") + 1 : line.rfind(")")])
                    if fields[0] not in ("Z", "X"):
                        procs.add((int(word), fields[19]))
        return frozenset(procs), tree

    def _connection(self, tree: dict[int, tuple[int, str]], pid: int) -> bool:
        """Whether the process is an SSH connection's (pyinfra's ``@ssh`` keeps one, and an
        ``sftp-server``, between tests): under an ``sshd`` whose parent is not the
        container's init (a listener's is; what a test leaves running over SSH, its shell's
        exit hands to init). As the in-VM check decides."""
        q, depth = pid, 0
        while q in tree and depth < 1000:
            parent, name = tree[q]
            if name in SSHD and parent != self.container.pid:
                return True
            q, depth = parent, depth + 1
        return False

    def _process(self, state: _State, pid: int) -> tuple[int, str] | None:
        """A new process as the report shows it (its pid inside, its command), or None when it
        is gone, an SSH connection's, or the baseline's own (a timer's unit, a user's systemd
        manager)."""
        c = self.container
        status = _read(f"{c.proc}/{pid}/status")
        inner = next((line.split()[-1] for line in status.splitlines() if line.startswith("NSpid:")), str(pid))
        if self._connection(state.tree, pid):
            return None
        if state.timers is not None and _own(_read(f"{c.proc}/{pid}/cgroup"), state.timers):
            return None
        try:
            with open(f"{c.proc}/{pid}/cmdline", "rb") as f:
                raw = f.read()
        except OSError:
            return None
        words = [w for w in raw.split(b"\0")]
        while words and not words[-1]:
            words.pop()
        command = b" ".join(words).decode("utf-8", errors="backslashreplace")
        if not command:
            command = f"[{_read(f'{c.proc}/{pid}/comm').strip()}]"
        return int(inner) if inner.isdigit() else pid, f"{inner} {command}"

    def _timers(self) -> frozenset[str]:
        """The units the image's timers start (``x.timer`` starts ``x.service`` or its
        ``Unit=``)."""
        units: set[str] = set()
        for folder in TIMER_DIRS:
            try:
                names = os.listdir(self.container.root + folder)
            except OSError:
                continue
            for name in names:
                if not name.endswith(".timer"):
                    continue
                units.add(name.removesuffix(".timer") + ".service")
                for line in _read(f"{self.container.root}{folder}/{name}").splitlines():
                    if line.startswith("Unit="):
                        units.add(line[5:].strip())
        return frozenset(units)

    # -- the difference ---------------------------------------------------------------------

    def _diff(self, old: _State, new: _State) -> Changes:
        created, changed, deleted = self._files(old, new)
        installed: tuple[str, ...] = ()
        removed: tuple[str, ...] = ()
        if old.packages is not None and new.packages is not None:
            installed, removed = tuple(sorted(new.packages - old.packages)), tuple(sorted(old.packages - new.packages))
        fresh = new.procs - old.procs
        shown: list[tuple[int, str]] = []
        if fresh:
            if self.container.systemd:
                new.timers = self._timers()
            for pid, _start in fresh:
                if (process := self._process(new, pid)) is not None:
                    shown.append(process)
        return Changes(
            created=tuple(created),
            changed=tuple(changed),
            deleted=tuple(deleted),
            users_added=tuple(sorted(new.users - old.users)),
            users_removed=tuple(sorted(old.users - new.users)),
            groups_added=tuple(sorted(new.groups - old.groups)),
            groups_removed=tuple(sorted(old.groups - new.groups)),
            packages_installed=installed,
            packages_removed=removed,
            processes=tuple(text for _pid, text in sorted(shown)),
        )


def _own(cgroup: str, units: frozenset[str]) -> bool:
    """Whether a process (its ``/proc/<pid>/cgroup``) is the baseline's own on a machine: in
    a unit a timer starts, or a user's systemd manager (as the in-VM check decides)."""
    path = ""
    for line in cgroup.splitlines():
        if ":name=systemd:" in line:
            path = line.split(":", 2)[2]
            break
        if line.startswith("0::"):
            path = line[3:]
    if re.search(r"/user@[0-9]+\.service/init\.scope$", path):
        return True
    return any(f"/{u}/" in path + "/" for u in units)


def _stanzas(text: str) -> Iterable[dict[str, str]]:
    """dpkg's status file: records apart by blank lines, ``Field: value`` (folded lines
    start with a space), field names lowercased."""
    record: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if record:
                yield record
            record = {}
        elif line[0] in " \t":
            continue
        else:
            key, _, value = line.partition(":")
            record[key.lower()] = value.strip()
    if record:
        yield record


def _installed(records: Iterable[dict[str, str]]) -> Iterable[str]:
    """The packages as ``dpkg-query -W -f '${binary:Package} ${Version}'`` names them, those
    whose status is not "installed" with it in brackets (as the in-VM check); not-installed
    and config-files left out. ``binary:Package`` has the architecture for ``Multi-Arch:
    same`` packages and foreign ones (dpkg's own architecture is the native one)."""
    records = list(records)
    native = next((r.get("architecture", "") for r in records if r.get("package") == "dpkg"), "")
    for r in records:
        status = r.get("status", "").split()
        state = status[2] if len(status) == 3 else ""
        name, arch = r.get("package", ""), r.get("architecture", "")
        if not name or state in ("", "not-installed", "config-files"):
            continue
        if r.get("multi-arch") == "same" or (native and arch not in ("", "all", native)):
            name = f"{name}:{arch}"
        rec = f"{name} {r.get('version', '')}"
        yield rec if state == "installed" else f"{rec} ({state})"


def make(
    what: str,
    inspect: Callable[[], dict[str, Any] | None],
    ignore: Ignore,
    *,
    proc: str = "/proc",
    cgroup_root: str = CGROUP_ROOT,
) -> OverlayChecker | None:
    """The checker of the container ``inspect`` describes (its engine's ``inspect`` JSON of
    it, None when there is none), or None (said once per reason) when it cannot be read
    from this host."""
    try:
        raw = inspect()
        if raw is None:
            raise Unusable("the container does not exist")
        container = Container.from_inspect(raw, proc=proc, cgroup_root=cgroup_root)
    except Unusable as err:
        fall_back(what, str(err))
        return None
    except Exception as err:  # the engine's error of any kind: the in-VM check says more
        fall_back(what, f"the engine did not describe the container ({err})")
        return None

    def renew() -> Container | None:
        raw = inspect()
        if raw is None or not (raw.get("State") or {}).get("Running"):
            return None
        return Container.from_inspect(raw, proc=proc, cgroup_root=cgroup_root)

    checker = OverlayChecker(container, ignore, renew=renew)
    try:
        checker.arm()  # a first look: a folder the host cannot read shows here, not in every check
    except CheckFailed as err:
        fall_back(what, str(err))
        return None
    log.debug("%s: the pollution check of %s reads its upper directory %s", what, container.name, container.upper)
    return checker


def fall_back(what: str, why: str) -> None:
    """Say once (per provider and reason) why the in-VM check is used instead."""
    said = f"{what}: the pollution check runs a command inside the container, as its changes cannot be read from the host: {why}"
    if said not in _SAID:
        _SAID.add(said)
        log.info("%s", said)
