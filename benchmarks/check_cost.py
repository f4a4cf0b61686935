#!/usr/bin/env python3
"""The pollution check's own cost, measured side by side by bench.py's ``isolation``
section: on one container of each kind (Docker and podman, a plain container and a
machine), the two checkers armed together and then checked in alternation, ROUNDS times:

  overlay  the provider's checker, read from the host (orchestrator/providers/overlay.py);
  generic  the command inside the VM (orchestrator/core/isolation.py: ``ExecChecker``
           through ``provider.exec``), as on a backend with no cheap way;
  exec     ``provider.exec(vm, ["true"])``: what any command inside costs before it does
           anything (the floor under the generic check).

Each check finds the container clean (nothing changed between two checks: what a test
that changed nothing costs); the last round also times one check after a polluting
command (a file in /etc, a user, a process left running), which neither clean nor
polluted changes much. Prints one JSON object of seconds lists.

    python benchmarks/check_cost.py PREFIX FOLDER ROUNDS

Every container is named ``PREFIX…`` and deleted at the end.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from orchestrator.core import settings as config
from orchestrator.core.isolation import ExecChecker
from orchestrator.primitives import naming
from orchestrator.primitives.changes import Ignore
from orchestrator.primitives.kinds import Kind
from orchestrator.primitives.labels import Owner
from orchestrator.providers.registry import get_provider
from orchestrator.state.checkouts import CheckoutRef

#: (key, provider, image, machine)
VARIANTS = (
    ("docker", "docker", "orch-base:bookworm", False),
    ("docker_machine", "docker", "orch-machine:bookworm", True),
    ("podman", "podman", "localhost/orch-base:bookworm", False),
    ("podman_machine", "podman", "localhost/orch-machine:bookworm", True),
)
POLLUTE = "touch /etc/bench-x && useradd benchx && (setsid nohup sleep 1002 >/dev/null 2>&1 </dev/null &)"
#: A machine's boot goes on a little after systemd says it is running (journal, logind).
SETTLE_S = 3.0


def timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def variant(folder: Path, prefix: str, provider_name: str, image: str, machine: bool, rounds: int) -> dict[str, Any]:
    folder.mkdir(parents=True)
    (folder / "inventories").mkdir()
    (folder / "pyproject.toml").write_text(
        f'[tool.orch]\nprovider = "{provider_name}"\nprefix = "{prefix}"\nimage = "{image}"\n'
        f"machine = {'true' if machine else 'false'}\n"
    )
    settings = config.load(cwd=folder, env={})
    provider = get_provider(settings)
    where = CheckoutRef.here(settings.inventory_dir)
    owner = Owner(Kind.WORKER, settings.checkout, where.inventory, where.host, where.fs, "gw0", fingerprint="0123456789ab")
    vm = naming.worker_vm_name(settings.prefix, settings.checkout, "gw0")
    out: dict[str, Any] = {"overlay": [], "generic": [], "exec": []}
    try:
        provider.create(vm, image, owner)
        provider.wait_ready(vm)
        if machine:
            time.sleep(SETTLE_S)
        ignore = Ignore.of(machine=machine)
        mine = provider.pollution_checker(vm, ignore)
        if mine is None:
            raise RuntimeError(f"{provider_name}: no checker read from the host (fell back to the in-VM one)")
        generic = ExecChecker(lambda cmd: provider.exec(vm, ["sh", "-c", cmd]), ignore)
        mine.arm()
        generic.arm()
        seen = []
        for _ in range(rounds):
            for key, check in (("overlay", mine.check), ("generic", generic.check)):
                start = time.perf_counter()
                seen.append(check())
                out[key].append(time.perf_counter() - start)
            out["exec"].append(timed(lambda: provider.exec(vm, ["true"])))
        out["clean_checks_that_found_changes"] = sum(1 for c in seen if c)
        result = provider.exec(vm, ["sh", "-c", POLLUTE])
        if not result.ok:
            raise RuntimeError(f"{vm}: {POLLUTE}: {result.stderr.strip()}")
        found = {}
        for key, check in (("overlay", mine.check), ("generic", generic.check)):
            start = time.perf_counter()
            found[key] = check()
            out[f"{key}_polluted"] = time.perf_counter() - start
        out["polluted_agree"] = found["overlay"] == found["generic"]
        out["polluted_changes"] = found["overlay"].as_dict()
        out["upper_entries"] = len(getattr(mine, "_state").upper)  # noqa: B009  what one walk reads
    finally:
        provider.delete(vm)
    return out


def main() -> None:
    prefix, folder, rounds = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    results: dict[str, Any] = {}
    for key, provider_name, image, machine in VARIANTS:
        try:
            results[key] = variant(
                folder / key, f"{prefix}{key[:1]}{'m' if machine else 'p'}", provider_name, image, machine, rounds
            )
        except Exception as err:  # one variant's failure is reported, the others go on
            results[key] = {"error": f"{type(err).__name__}: {str(err)[-2000:]}"}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
