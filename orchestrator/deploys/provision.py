"""The default provision and personalize deploys.

``provision`` runs once per baseline (and on the first workers, made beside it): it
prepares orch's folders and records what the baseline holds (users, groups, packages)
so that the soft reset deploy can remove what tests add. ``personalize`` runs on every
VM made from the baseline and gives it its own identity: the worker id in
``/etc/orch-worker``. Kept small on purpose: the image carries the operating system.

A project names its own in ``[tool.orch] provision`` (and ``personalize``); it can call
these first. ``host.data.orch_worker_id`` is the worker id (``gw1``), ``oneoff`` or
``baseline``.

Each of orch's own steps is one shell command (one ``server.shell`` with one command):
every pyinfra operation costs at least one round trip into the VM (``files.directory``
a fact and then its commands), which on a backend whose exec costs a second (OrbStack's
``orbctl run``) is most of a bring-up. The scripts are made by the ``*_script`` functions
below, the single source of what orch writes: the deploys run them through pyinfra, and
the core runs :func:`personalize_script` + :func:`mark_script` as one ``sh -c`` through
the provider's exec when the project keeps the default personalize deploy (no pyinfra
session for a spare).

The scripts are plain POSIX ``sh`` (``&&`` chains: the first failure is the exit code);
every value is quoted with :func:`shlex.quote`.
"""

import shlex

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import server

ORCH_DIR = "/var/lib/orch"
BASELINE_DIR = f"{ORCH_DIR}/baseline"
SCRATCH_DIR = f"{ORCH_DIR}/scratch"
WORKER_FILE = "/etc/orch-worker"
FINGERPRINT_FILE = f"{ORCH_DIR}/fingerprint"
MADE_AS_FILE = f"{ORCH_DIR}/made-as"


def _folder(path: str, mode: str) -> str:
    return f"mkdir -p {shlex.quote(path)} && chmod {mode} {shlex.quote(path)}"


def _record(value: str, path: str) -> str:
    return f"printf '%s\\n' {shlex.quote(value)} > {shlex.quote(path)}"


def record_script() -> str:
    """The record of what the baseline holds (users, groups, packages) in its folder,
    for the soft reset."""
    return " && ".join(
        [
            _folder(BASELINE_DIR, "755"),
            f"cut -d: -f1 /etc/passwd > {BASELINE_DIR}/users",
            f"cut -d: -f1 /etc/group > {BASELINE_DIR}/groups",
            f"{{ dpkg-query -W -f '${{Package}}\\n' 2>/dev/null || true; }} > {BASELINE_DIR}/packages",
        ]
    )


def provision_script() -> str:
    """orch's folders (the scratch folder tests may use) and the baseline's record."""
    return f"{record_script()} && {_folder(SCRATCH_DIR, '1777')}"


def personalize_script(worker: str) -> str:
    """The worker id (``gw1``, ``oneoff``, ``baseline``) in ``/etc/orch-worker``."""
    return _record(worker, WORKER_FILE)


def mark_script(fingerprint: str, vm: str) -> str:
    """orch's folder, the baseline's fingerprint and the name the VM was made under."""
    return " && ".join([_folder(ORCH_DIR, "755"), _record(fingerprint, FINGERPRINT_FILE), _record(vm, MADE_AS_FILE)])


def personalize_and_mark_script(worker: str, fingerprint: str, vm: str) -> str:
    """What the default personalize deploy and ``mark`` write, as one command (the core's
    cheap personalize: one exec per VM, no pyinfra)."""
    return f"{personalize_script(worker)} && {mark_script(fingerprint, vm)}"


# -- the deploys -----------------------------------------------------------------------


@deploy("orch: provision")
def provision() -> None:
    server.shell(name="Create orch's folders and record the baseline's users, groups and packages", commands=[provision_script()])


@deploy("orch: personalize")
def personalize() -> None:
    server.shell(
        name="Record the worker id in the VM",
        commands=[personalize_script(host.data.get("orch_worker_id", "unknown"))],
    )


@deploy("orch: record the baseline")
def record_baseline() -> None:
    """Write the users, groups and packages of the baseline, for the soft reset."""
    server.shell(name="Record baseline users, groups and packages", commands=[record_script()])


@deploy("orch: mark")
def mark() -> None:
    """orch's own last step on every VM it makes (not configurable): which baseline the VM
    comes from, so ``orch repair`` can tell on backends without labels, and the name it was
    made under (a swap renames it: a standby whose name is not that one is trash)."""
    server.shell(
        name="Record the baseline's fingerprint and the VM's name",
        commands=[mark_script(host.data.get("orch_fingerprint", ""), host.data.get("orch_vm", ""))],
    )
