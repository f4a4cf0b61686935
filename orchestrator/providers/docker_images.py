"""Image handling of the Docker-style providers: baseline images kept apart from VMs (for
sweep), images committed by connectors (dangling), and copying an image between engines."""

from __future__ import annotations

import json
import subprocess
from typing import TYPE_CHECKING, Any

from orchestrator.primitives import labels as L
from orchestrator.primitives.errors import PermanentProviderError, ProviderError, VMNotFound
from orchestrator.providers.base import Provider, StoredBaseline

if TYPE_CHECKING:
    from orchestrator.settings.model import Settings


class DockerImages(Provider):
    """The base of ``DockerProvider``: needs its ``_docker``, ``_client``, ``_image_inspect``.
    Also what :class:`~orchestrator.providers.engines.Engines` routes to (one engine each)."""

    settings: Settings
    #: The engine this provider reaches ("" for the docker command's default one).
    engine: str

    def _docker(self, operation: str, args: list[str], *, vm: str = "", timeout: float | None = None) -> str:
        raise NotImplementedError

    def _client(self) -> list[str]:
        raise NotImplementedError

    def _image_inspect(self, image: str) -> str:
        raise NotImplementedError

    @staticmethod
    def image_gone(err: ProviderError) -> bool:
        raise NotImplementedError

    @staticmethod
    def tag_name(tag: str) -> str:
        raise NotImplementedError

    def has_image(self, ref: str) -> bool:
        try:
            self._image_inspect(ref)
        except (VMNotFound, PermanentProviderError) as err:
            if self.image_gone(err):
                return False
            raise
        return True

    def send_image(self, ref: str, tag: str, to: DockerImages) -> None:
        """Copy an image to another engine (``docker save | docker load``: the id stays)."""
        save = subprocess.Popen([*self._client(), "image", "save", ref], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            load = subprocess.run(
                [*to._client(), "image", "load", "--quiet"],
                stdin=save.stdout,
                capture_output=True,
                timeout=self.settings.timeout("image"),
            )
        finally:
            if save.stdout is not None:
                save.stdout.close()
            save.wait(timeout=self.settings.timeout("image"))
        if save.returncode != 0 or load.returncode != 0:
            why = (save.stderr.read() if save.stderr else b"").decode() + load.stderr.decode()
            raise PermanentProviderError(f"cannot copy image {ref[:19]}: {' '.join(why.split())[:300]}", operation="image")
        if tag:
            to._docker("image", ["image", "tag", ref, tag])

    def stored_baselines(self) -> list[StoredBaseline]:
        ids = sorted(
            set(self._docker("list", ["image", "ls", "--quiet", "--no-trunc", "--filter", f"label={L.BASELINE_OF}"]).split())
        )
        found = []
        for raw in self._image_records(ids):
            labels = (raw.get("Config") or {}).get("Labels") or {}
            for tag in (self.tag_name(t) for t in raw.get("RepoTags") or []):
                repo = tag.rsplit(":", 1)[0]
                parts = repo.rsplit("-", 2)
                if len(parts) != 3 or parts[2] != "baseline" or parts[0] != self.settings.prefix:
                    continue
                if labels.get(L.BASELINE_OF) != parts[1]:
                    continue
                created = str(raw.get("Created", ""))[:19] + "Z"
                found.append(StoredBaseline(ref=raw.get("Id", ""), name=tag, checkout=parts[1], created=created, labels=labels))
        return found

    def _image_records(self, ids: list[str]) -> list[dict[str, Any]]:
        """``docker image inspect`` of these ids; one deleted meanwhile is left out."""
        if not ids:
            return []
        try:
            records: list[dict[str, Any]] = json.loads(self._docker("list", ["image", "inspect", *ids]) or "[]")
            return records
        except (VMNotFound, PermanentProviderError) as err:
            if not self.image_gone(err):
                raise
        records = []
        for one in ids:
            try:
                records += json.loads(self._docker("list", ["image", "inspect", one]) or "[]")
            except (VMNotFound, PermanentProviderError) as err:
                if not self.image_gone(err):
                    raise
        return records

    def dangling(self) -> list[str]:
        """Untagged images committed from orch's containers (pyinfra's ``@docker`` commits a
        container it started itself); they carry orch's labels."""
        out = self._docker(
            "list",
            [
                "image",
                "ls",
                "--quiet",
                "--no-trunc",
                "--filter",
                "dangling=true",
                "--filter",
                f"label={L.MANAGED_BY}={L.MANAGED_BY_VALUE}",
            ],
        )
        return out.split()

    def drop_dangling(self, ref: str) -> None:
        try:
            self._docker("delete", ["image", "rm", ref])
        except (VMNotFound, PermanentProviderError) as err:
            if not self.image_gone(err):
                raise
