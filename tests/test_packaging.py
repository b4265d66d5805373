"""The package as users get it (issue 15): ``python -m build`` makes a wheel and an sdist
that ``twine check`` accepts, both carry the one version (``otel_agentbus.__version__``),
and the wheel installed into a clean virtual environment runs the demo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from telemetry_helpers import REPO_ROOT

import otel_agentbus

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

BUILD_TIMEOUT = 600


def _run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None,
         timeout: float = BUILD_TIMEOUT) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout)
    assert done.returncode == 0, f"{args}:\n{done.stdout}\n{done.stderr}"
    return done


def _clean_env() -> dict[str, str]:
    """No PYTHONPATH or venv leaking in: only what the wheel installed is importable."""
    return {k: v for k, v in os.environ.items()
            if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"} and not k.startswith("OTEL_")}


def test_version_has_one_source() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"]
    assert "version" in project["project"]["dynamic"]
    source = project["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert source == "otel_agentbus.__version__"


def test_wheel_and_sdist_build_and_the_wheel_runs_the_demo(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    _run(sys.executable, "-m", "build", "--outdir", dist, REPO_ROOT, cwd=tmp_path)
    version = otel_agentbus.__version__
    wheel = dist / f"otel_agentbus-{version}-py3-none-any.whl"
    sdist = dist / f"otel_agentbus-{version}.tar.gz"
    assert wheel.is_file() and sdist.is_file(), sorted(p.name for p in dist.iterdir())
    _run(sys.executable, "-m", "twine", "check", "--strict", wheel, sdist, cwd=tmp_path)

    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        metadata = zf.read(f"otel_agentbus-{version}.dist-info/METADATA").decode()
    assert {"otel_agentbus/py.typed", "otel_agentbus/__main__.py"} <= names
    static = REPO_ROOT / "otel_agentbus" / "receiver" / "web" / "static"
    pages = {p.relative_to(REPO_ROOT).as_posix() for p in static.rglob("*") if p.is_file()}
    assert pages and pages <= names, sorted(pages - names)  # the web view's pages ship too
    assert f"\nVersion: {version}\n" in metadata

    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    _run(python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", wheel,
         cwd=tmp_path, env=_clean_env())
    where = tmp_path / "elsewhere"  # not the checkout, so nothing imports from it
    where.mkdir()
    located = _run(python, "-c", "import otel_agentbus; print(otel_agentbus.__file__)",
                   cwd=where, env=_clean_env())
    assert Path(located.stdout.strip()).is_relative_to(venv)

    shown = _run(venv / "bin" / "otel-agentbus", "--version", cwd=where, env=_clean_env())
    assert shown.stdout.strip() == f"otel-agentbus {version}"
    demo = _run(venv / "bin" / "otel-agentbus", "demo", "--runs", "3", "--json",
                "--db", where / "demo.db", cwd=where, env=_clean_env(), timeout=120)
    report = json.loads(demo.stdout)
    assert len(report["runs"]) == 3
    assert {run["status"] for run in report["runs"]} >= {"completed", "failed"}
    listed = _run(python, "-m", "otel_agentbus", "runs", "--db", where / "demo.db",
                  cwd=where, env=_clean_env(), timeout=60)
    assert all(run["run_id"] in listed.stdout for run in report["runs"])
