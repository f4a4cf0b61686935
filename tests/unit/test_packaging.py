"""The built wheel ships the deploys inside the package (``orchestrator.deploys``) and no
top-level ``deploys`` module, and orch finds them when installed from it."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_has_no_top_level_deploys_and_finds_its_own(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [wheel] = tmp_path.glob("pyinfra_orch-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert not any(n.startswith("deploys/") for n in names), "the wheel installs a top-level deploys module"
    assert "orchestrator/deploys/provision.py" in names
    assert any(n.endswith("entry_points.txt") for n in names)
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    # Import from the unpacked wheel (first on sys.path), as an installed wheel would be.
    code = (
        "import orchestrator, orchestrator.pyinfra.loading as r; "
        "f = r.load_callable('orchestrator.deploys.provision:provision'); "
        "print(orchestrator.__file__); print(f.deploy_name)"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, check=True).stdout
    assert out.splitlines()[0].startswith(str(site))
    assert out.splitlines()[1] == "orch: provision"
    # And no `deploys` module leaks from the wheel into a user's project.
    probe = subprocess.run([sys.executable, "-c", "import deploys"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert probe.returncode != 0
