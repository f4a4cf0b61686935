"""The baseline as a cache entry on disk (``orch baseline export/import``, ``--baseline-cache``).

A cache folder holds one entry per fingerprint: the provider's archive of the baseline,
``orch-baseline-<fingerprint>.tar``, and beside it a small manifest,
``orch-baseline-<fingerprint>.json`` (the fingerprint and its parts, the provider, the
seal, orch's version, the archive's size and SHA-256). The fingerprint is the key: a CI
cache keyed on ``orch baseline key`` restores exactly the entry a checkout can use, as
``actions/cache`` keeps an entry per key and never changes it.

Writing is atomic: the archive is written under a temporary name and renamed, then the
manifest the same way, and an import trusts an archive only through a manifest whose
size and SHA-256 it matches. A killed export leaves a temporary file (removed by the
next export) or an archive without a manifest (a miss), never an entry that loads half a
baseline. Writing an entry removes the folder's entries of other fingerprints: a cache
folder holds the current one only (an old entry could never be used again by this key).

This module knows files only; recording an imported baseline in the state is
:mod:`orchestrator.core.baseline`'s.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from orchestrator.primitives.clock import now_iso
from orchestrator.primitives.errors import OrchError, UsageError

log = logging.getLogger(__name__)

PREFIX = "orch-baseline-"
#: A temporary file of an export, with the pid of the process writing it.
_TMP = re.compile(rf"\.{re.escape(PREFIX)}[0-9a-f]+\.([0-9]+)-[0-9a-f]+(?:\.json)?\.tmp")
#: The manifest's format; an entry of another format is refused (made by another orch).
FORMAT = 1


class CacheMiss(OrchError):
    """The cache folder has no entry for this fingerprint (not an error for ``up``)."""


class CacheEntryError(OrchError):
    """An entry that is there but cannot be used (partial, corrupt, another provider's)."""


@dataclass
class Entry:
    """One cache entry's manifest."""

    fingerprint: str
    provider: str
    parts: dict[str, str] = field(default_factory=dict)
    orch: str = ""
    ref: str = ""  # the baseline's reference where it was exported (an image id)
    seal: dict[str, str] = field(default_factory=dict)
    checkout: str = ""  # the checkout that exported it
    created: str = ""
    size: int = 0
    sha256: str = ""
    format: int = FORMAT

    @property
    def archive(self) -> str:
        return f"{PREFIX}{self.fingerprint}.tar"


def archive_path(directory: Path, fingerprint: str) -> Path:
    return directory / f"{PREFIX}{fingerprint}.tar"


def manifest_path(directory: Path, fingerprint: str) -> Path:
    return directory / f"{PREFIX}{fingerprint}.json"


def writable(directory: Path) -> Path:
    """``directory``, made if missing; a folder orch cannot write to is one line naming it."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(
            f"cannot make the baseline cache folder {directory} ({err.strerror}): name a folder you can write to"
        ) from None
    if not directory.is_dir() or not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError(f"the baseline cache folder {directory} is not writable: name a folder you can write to") from None
    return directory


def find(directory: Path, fingerprint: str, provider: str) -> tuple[Entry, Path]:
    """The entry for ``fingerprint`` and its archive, checked whole (size, SHA-256).
    Raises ``CacheMiss`` when there is none, ``CacheEntryError`` when it cannot be used."""
    manifest = manifest_path(directory, fingerprint)
    archive = archive_path(directory, fingerprint)
    if not manifest.is_file():
        raise CacheMiss(f"no baseline for key {fingerprint} in {directory}")
    entry = _read(manifest)
    if entry.fingerprint != fingerprint:
        raise CacheEntryError(f"refusing {manifest}: it is the entry of key {entry.fingerprint}, not {fingerprint}")
    if entry.provider != provider:
        raise CacheEntryError(f"refusing {manifest}: a baseline of the {entry.provider} provider, not {provider}")
    try:
        size = archive.stat().st_size
    except OSError as err:
        raise CacheEntryError(f"refusing {archive}: {err.strerror or err} (a partial entry: export it again)") from None
    if size != entry.size:
        raise CacheEntryError(f"refusing {archive}: {size} bytes, its manifest says {entry.size} (partial or corrupt)")
    if _sha256(archive) != entry.sha256:
        raise CacheEntryError(f"refusing {archive}: its SHA-256 is not its manifest's (corrupt)")
    return entry, archive


def _read(manifest: Path) -> Entry:
    try:
        raw = json.loads(manifest.read_text(encoding="utf-8"))
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise ValueError(f"format {raw.get('format') if isinstance(raw, dict) else '?'}, this orch reads {FORMAT}")
        entry = Entry(**raw)
        if not isinstance(entry.size, int) or not isinstance(entry.sha256, str) or not isinstance(entry.parts, dict):
            raise ValueError("fields of the wrong type")
        return entry
    except (OSError, ValueError, TypeError) as err:
        raise CacheEntryError(f"refusing {manifest}: not a manifest orch can read ({err})") from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def write(directory: Path, entry: Entry, save: Callable[[Path], None]) -> Entry:
    """Write the entry: ``save(path)`` writes the archive to a temporary name; it is
    renamed into place, then its manifest; then the folder's other entries are removed."""
    writable(directory)
    archive, manifest = archive_path(directory, entry.fingerprint), manifest_path(directory, entry.fingerprint)
    tmp = directory / f".{PREFIX}{entry.fingerprint}.{os.getpid()}-{secrets.token_hex(3)}.tmp"
    try:
        save(tmp)
        entry.size, entry.sha256, entry.created = tmp.stat().st_size, _sha256(tmp), now_iso()
        manifest.unlink(missing_ok=True)  # an old manifest never vouches for the new archive
        os.replace(tmp, archive)
        tmp_manifest = tmp.with_suffix(".json.tmp")
        tmp_manifest.write_text(json.dumps(asdict(entry), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp_manifest, manifest)
    except OSError as err:
        raise UsageError(
            f"cannot write the baseline to {directory} ({err.strerror or err}): name a folder you can write to"
        ) from None
    finally:
        for left in (tmp, tmp.with_suffix(".json.tmp")):
            with contextlib.suppress(OSError):
                left.unlink(missing_ok=True)
    prune(directory, entry.fingerprint)
    return entry


def prune(directory: Path, keep: str) -> list[Path]:
    """Remove the folder's entries of other fingerprints, and temporary files that no
    live export is writing (its pid is in the name); the removed paths."""
    removed = []
    for path in directory.iterdir():
        name = path.name
        if name.startswith(PREFIX) and name.endswith((".tar", ".json")):
            stale = name.removeprefix(PREFIX).rsplit(".", 1)[0] != keep
        elif m := _TMP.fullmatch(name):
            stale = not _alive(int(m.group(1)))
        else:
            continue
        if stale:
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
    for path in removed:
        log.info("baseline cache: removed %s (not the current key)", path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # someone else's process: alive
        return True
    return True
