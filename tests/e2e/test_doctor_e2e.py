"""``orch doctor`` as a user runs it, on the real Docker engine: a brought-up project is
all ok (exit 0); an engine that does not answer (a bogus DOCKER_HOST, or a dead socket
among ``[tool.orch.docker] engines``) and an image that does not exist are failing lines
that name their fixes (exit 1)."""

from __future__ import annotations

from pathlib import Path

from backends import run_orch


def _lines(out: str, status: str, check: str) -> list[str]:
    return [line for line in out.splitlines() if line.split()[:2] == [status, check]]


def test_doctor_on_a_healthy_then_a_broken_docker_setup(project: Path, tmp_path: Path) -> None:
    env = {"ORCH_HOME": str(tmp_path / "home")}  # a registry of this test's own
    pyproject = project / "pyproject.toml"
    healthy = pyproject.read_text()
    assert run_orch(project, "up", "--workers", "1", env=env).returncode == 0
    try:
        ok = run_orch(project, "doctor", env=env)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "FAIL" not in ok.stdout and "Traceback" not in ok.stderr
        assert _lines(ok.stdout, "ok", "engine") and "docker " in _lines(ok.stdout, "ok", "engine")[0]
        assert "orch-base:bookworm: sha256:" in _lines(ok.stdout, "ok", "image")[0]
        assert _lines(ok.stdout, "ok", "workers")[0].endswith("1 ready: gw0")
        assert "current and sealed" in _lines(ok.stdout, "ok", "baseline")[0]
        state = project / "inventories" / ".orch" / "state.json"
        before = state.read_bytes()

        down = run_orch(project, "doctor", env={**env, "DOCKER_HOST": "unix:///nonexistent/docker.sock"})
        assert down.returncode == 1
        [engine] = _lines(down.stdout, "FAIL", "engine")
        assert "unix:///nonexistent/docker.sock" in engine and "the Docker engine is not reachable" in engine
        assert "start it" in engine

        dead = tmp_path / "dead.sock"
        pyproject.write_text(
            healthy.replace('image = "orch-base:bookworm"', 'image = "orch-nope:bookworm"')
            + f'[tool.orch.docker]\nengines = ["unix:///var/run/docker.sock", "unix://{dead}"]\n'
        )
        broken = run_orch(project, "doctor", env=env)
        assert broken.returncode == 1, broken.stdout
        assert _lines(broken.stdout, "ok", "engine") and str(dead) in _lines(broken.stdout, "FAIL", "engine")[0]
        [image] = _lines(broken.stdout, "FAIL", "image")
        assert "'orch-nope:bookworm' is not on docker here and cannot be pulled" in image
        assert "scripts/setup.sh" in image and "[tool.orch] image" in image
        assert len(broken.stdout.splitlines()) < 25  # a few lines a human reads in seconds
        assert state.read_bytes() == before  # doctor changed nothing
    finally:
        pyproject.write_text(healthy)
        run_orch(project, "down", env=env)
