"""The provider conformance suite: pytest tests that any provider runs against itself.

orch's core relies on a few promises from every provider (create/list/inspect, ownership
that its labels or names make decidable, idempotent delete, a baseline round trip,
readiness, errors classified as transient or permanent). A third-party provider proves
them the way orch's built-in ones do::

    # tests/test_conformance.py of your provider package
    import pytest
    from orchestrator.testing.conformance import ProviderContract, contract_settings

    class TestMyProvider(ProviderContract):
        @pytest.fixture
        def provider(self, tmp_path):
            return MyProvider(contract_settings(tmp_path, "mine", image="my-image:1"))

Every VM and baseline a test makes is named with a prefix of its own and deleted at the
end of the test, pass or fail.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.core import settings as config
from orchestrator.core.ownership import owned
from orchestrator.primitives import naming
from orchestrator.primitives.errors import PermanentProviderError, ProviderError, VMExists, VMNotFound
from orchestrator.primitives.kinds import Kind
from orchestrator.primitives.labels import Owner
from orchestrator.providers.base import Baseline, Provider
from orchestrator.settings.model import Settings
from orchestrator.state.checkouts import CheckoutRef

WRITE = "printf %s {text} > {path}"


def contract_settings(folder: Path, provider: str, **orch_settings: Any) -> Settings:
    """Settings for a throwaway project in ``folder``, with a prefix no one else uses."""
    folder.mkdir(parents=True, exist_ok=True)
    table = "".join(f"{k} = {_toml(v)}\n" for k, v in orch_settings.items() if not isinstance(v, dict))
    (folder / "pyproject.toml").write_text(
        f'[tool.orch]\nprovider = "{provider}"\nprefix = "c{secrets.token_hex(4)}"\nretries = 1\n{table}'
    )
    (folder / "inventories").mkdir(exist_ok=True)
    return config.load(cwd=folder, env={})


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value).replace("'", '"')


class ProviderContract:
    """Subclass it and give a ``provider`` fixture; every test below must pass."""

    @pytest.fixture
    def provider(self) -> Provider:  # pragma: no cover - the subclass gives it
        raise NotImplementedError("give a `provider` fixture")

    @pytest.fixture
    def image(self, provider: Provider) -> str:
        if provider.settings.image:
            return provider.settings.image
        return provider.machine_image if provider.settings.machine else provider.default_image

    @pytest.fixture
    def vm(self, provider: Provider) -> Iterator[Callable[[str], tuple[str, Owner]]]:
        """``vm("gw0")`` → (a name of this test's own, its owner); all deleted afterwards."""
        made: list[str] = []
        settings = provider.settings
        where = CheckoutRef.here(settings.inventory_dir)

        def make(worker: str = "gw0") -> tuple[str, Owner]:
            name = naming.worker_vm_name(settings.prefix, settings.checkout, worker)
            made.append(name)
            return name, Owner(
                Kind.WORKER, settings.checkout, where.inventory, where.host, where.fs, worker, fingerprint="0123456789ab"
            )

        yield make
        for name in made:
            try:
                provider.delete(name)
            except ProviderError:
                pass

    @staticmethod
    def write(provider: Provider, vm: str, path: str, text: str) -> None:
        result = provider.exec(vm, ["sh", "-c", WRITE.format(text=text, path=path)])
        assert result.ok, result.stderr

    # -- the backend -----------------------------------------------------------------------

    def test_check_passes_and_the_image_is_usable(self, provider: Provider, image: str) -> None:
        provider.check()
        assert provider.image_id(image)

    def test_an_unknown_image_is_a_permanent_error_naming_the_fix(self, provider: Provider, vm: Any) -> None:
        """At once, or (backends that cannot tell before) when a VM is made from it."""
        name, owner = vm("gw0")
        with pytest.raises(PermanentProviderError, match="--image"):
            provider.image_id("nosuchdistro:never")
            provider.create(name, "nosuchdistro:never", owner)

    # -- VMs -------------------------------------------------------------------------------

    def test_create_inspect_list_and_ownership(self, provider: Provider, image: str, vm: Any) -> None:
        name, owner = vm("gw0")
        provider.create(name, image, owner)
        info = provider.inspect(name)
        assert info is not None and info.name == name and info.running
        assert name in {i.name for i in provider.list_vms()}
        assert name in {i.name for i in provider.list_vms(all_vms=True)}
        prefix = provider.settings.prefix
        assert owned(info, prefix, provider.has_labels, owner.checkout, "gw0")
        assert not owned(info, prefix, provider.has_labels, owner.checkout, "gw1")
        assert not owned(info, prefix, provider.has_labels, "0badc0de")

    def test_create_of_an_existing_name_raises_vm_exists(self, provider: Provider, image: str, vm: Any) -> None:
        name, owner = vm("gw0")
        provider.create(name, image, owner)
        with pytest.raises(VMExists):
            provider.create(name, image, owner)

    def test_inspect_of_a_missing_vm_is_none_and_start_is_not_found(self, provider: Provider, vm: Any) -> None:
        name, _ = vm("gw5")
        assert provider.inspect(name) is None
        with pytest.raises(VMNotFound):
            provider.start(name)

    def test_delete_is_idempotent_and_refuses_an_empty_name(self, provider: Provider, image: str, vm: Any) -> None:
        name, owner = vm("gw0")
        provider.create(name, image, owner)
        provider.delete(name)
        assert provider.inspect(name) is None
        provider.delete(name)  # missing is success
        for verb in (provider.delete, provider.stop):
            with pytest.raises(PermanentProviderError, match="empty name"):
                verb("")

    def test_stop_start_and_readiness(self, provider: Provider, image: str, vm: Any) -> None:
        name, owner = vm("gw0")
        provider.create(name, image, owner)
        assert provider.wait_ready(name) >= 0
        provider.stop(name)
        info = provider.inspect(name)
        assert info is not None and info.state == "stopped"
        provider.start(name)
        provider.wait_ready(name)
        assert provider.inspect(name).running  # type: ignore[union-attr]

    def test_exec_passes_exit_codes_and_output(self, provider: Provider, image: str, vm: Any) -> None:
        name, owner = vm("gw0")
        provider.create(name, image, owner)
        provider.wait_ready(name)
        assert provider.exec(name, ["true"]).rc == 0
        assert provider.exec(name, ["false"]).rc != 0
        self.write(provider, name, "/root/contract", "hello")
        assert provider.exec(name, ["cat", "/root/contract"]).stdout == "hello"

    def test_rename_where_the_backend_can(self, provider: Provider, image: str, vm: Any) -> None:
        if not provider.can_rename:
            pytest.skip(f"{provider.name} cannot rename")
        name, owner = vm("gw0")
        new, _ = vm("gw1")
        provider.create(name, image, owner)
        provider.rename(name, new)
        assert provider.inspect(name) is None and provider.inspect(new) is not None

    # -- the baseline ----------------------------------------------------------------------

    def test_baseline_round_trip(self, provider: Provider, image: str, vm: Any) -> None:
        base, owner = vm("gw0")
        copy, copy_owner = vm("gw1")
        provider.create(base, image, owner)
        provider.wait_ready(base)
        self.write(provider, base, "/root/provisioned", "yes")
        baseline = provider.seal(base, owner)
        try:
            assert provider.verify(baseline) is None
            provider.clone(baseline, copy, copy_owner)
            provider.wait_ready(copy)
            assert provider.exec(copy, ["cat", "/root/provisioned"]).stdout == "yes"
            self.write(provider, copy, "/root/dirty", "x")
            provider.restore(baseline, copy, copy_owner)
            provider.wait_ready(copy)
            assert provider.exec(copy, ["cat", "/root/dirty"]).rc != 0  # back at the baseline
            provider.delete(copy)
        finally:
            provider.delete(copy)
            assert provider.drop(baseline)
        assert provider.verify(baseline) is not None  # gone, and it says so
        assert provider.drop(baseline)  # dropping twice is fine

    def test_clone_of_a_missing_baseline_is_a_permanent_error(self, provider: Provider, vm: Any) -> None:
        name, owner = vm("gw0")
        with pytest.raises(PermanentProviderError):
            provider.clone(Baseline("orch-no-such-baseline-0000"), name, owner)
