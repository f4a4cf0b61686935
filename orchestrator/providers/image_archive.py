"""An image archive (``docker save``, ``podman save``) read and re-labelled as a file.

An imported baseline must carry its new checkout's labels. Re-labelling it on the engine
(a container from the loaded image, committed) would make it a child of the loaded
image: on an engine where another checkout already has that image, that checkout could
not delete its own baseline while ours lives. Re-labelling the archive instead gives an
image of its own (a new config, hence a new id) that shares the layers but has no
parent, so each checkout's baseline is deleted on its own.

The archive's ``manifest.json`` names the config and the layers (both the legacy layout
of Docker 20 and podman, and the OCI layout of newer Docker, which has it too); an OCI
``index.json`` and the manifest blob it points to are rewritten to the new config as
well. Layers are copied as they are.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

from orchestrator.primitives.errors import PermanentProviderError

_HEX = frozenset("0123456789abcdef")


def _fail(path: Path, why: str) -> PermanentProviderError:
    return PermanentProviderError(f"{path} is not an image archive orch can load ({why})", operation="import")


def _manifest(path: Path, archive: tarfile.TarFile) -> list[dict[str, Any]]:
    try:
        member = archive.extractfile("manifest.json")
        manifest = json.loads(member.read() if member is not None else b"null")
    except (KeyError, ValueError) as err:
        raise _fail(path, f"manifest.json: {err}") from err
    if not isinstance(manifest, list) or len(manifest) != 1 or not isinstance(manifest[0], dict):
        raise _fail(path, "it does not hold exactly one image")
    return manifest


def _digest_of(path: Path, name: str) -> str:
    digest = name.removeprefix("blobs/sha256/").removesuffix(".json")
    if len(digest) != 64 or not set(digest) <= _HEX:
        raise _fail(path, f"its config is named {name!r}")
    return digest


def image_id(path: Path) -> str:
    """The id of the one image in the archive (its config's digest)."""
    try:
        with tarfile.open(path) as archive:
            manifest = _manifest(path, archive)
    except (OSError, tarfile.TarError) as err:
        raise _fail(path, str(err)) from err
    return f"sha256:{_digest_of(path, str(manifest[0].get('Config', '')))}"


def relabel(source: Path, target: Path, labels: dict[str, str], tag: str) -> str:
    """Write ``source`` to ``target`` with the image's labels set to ``labels`` (every
    other label kept) and ``tag`` as its only name (the load tags it: no moment when the
    loaded image has no name); the new image's id."""
    try:
        with tarfile.open(source) as archive, tarfile.open(target, "w") as out:
            manifest = _manifest(source, archive)
            old_name = str(manifest[0].get("Config", ""))
            _digest_of(source, old_name)
            config = json.loads(_read(archive, old_name))
            for key in ("config", "container_config"):
                if isinstance(config.get(key), dict):
                    config[key]["Labels"] = {**(config[key].get("Labels") or {}), **labels}
            blob = json.dumps(config, separators=(",", ":"), sort_keys=True).encode()
            digest = hashlib.sha256(blob).hexdigest()
            new_name = f"blobs/sha256/{digest}" if old_name.startswith("blobs/") else f"{digest}.json"
            manifest[0]["Config"], manifest[0]["RepoTags"] = new_name, [tag]
            rewritten = {new_name: blob, "manifest.json": json.dumps(manifest).encode()}
            if "index.json" in archive.getnames():
                rewritten.update(_oci(source, archive, old_name, digest, len(blob)))
            for member in archive:
                if member.name in (old_name, "repositories") or member.name in rewritten:
                    continue
                out.addfile(member, archive.extractfile(member) if member.isfile() else None)
            for name, data in rewritten.items():
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(data), 0o644
                out.addfile(info, io.BytesIO(data))
    except (OSError, tarfile.TarError, ValueError, KeyError) as err:
        raise _fail(source, str(err)) from err
    return f"sha256:{digest}"


def _read(archive: tarfile.TarFile, name: str) -> bytes:
    member = archive.extractfile(name)
    if member is None:
        raise KeyError(name)
    return member.read()


def _oci(source: Path, archive: tarfile.TarFile, old_config: str, digest: str, size: int) -> dict[str, bytes]:
    """The OCI index and manifest blob, pointing at the new config."""
    index = json.loads(_read(archive, "index.json"))
    old = f"sha256:{_digest_of(source, old_config)}"
    out: dict[str, bytes] = {}
    for desc in index.get("manifests", []):
        name = "blobs/" + str(desc.get("digest", "")).replace(":", "/", 1)
        manifest = json.loads(_read(archive, name))
        if manifest.get("config", {}).get("digest") != old:
            continue
        manifest["config"].update(digest=f"sha256:{digest}", size=size)
        blob = json.dumps(manifest, separators=(",", ":")).encode()
        new = hashlib.sha256(blob).hexdigest()
        out[f"blobs/sha256/{new}"] = blob
        desc.update(digest=f"sha256:{new}", size=len(blob))
        desc.pop("annotations", None)  # the old tag's name
    out["index.json"] = json.dumps(index).encode()
    return out
