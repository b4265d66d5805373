"""The set-up scripts (issue 15): ``.ci/demo`` installs only when pyproject.toml changed,
and ``.ci/prometheus`` / ``.ci/chromium`` install their Debian package without a prompt
(apt-get update first), unless they cannot or are told not to. pip and apt-get are
stand-ins that log their arguments: the real ones would take minutes, need root and change
the machine."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from telemetry_helpers import REPO_ROOT

pytestmark = pytest.mark.timeout(60)

BASH = shutil.which("bash") or "/bin/bash"


def _logging_command(path: Path, log: Path, name: str, then: str = "") -> None:
    path.write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\n{then}')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


# ---- .ci/demo: pip only when the project changed ------------------------------------------


@pytest.fixture
def fake_venv(tmp_path: Path) -> tuple[Path, Path]:
    venv, log = tmp_path / "venv", tmp_path / "calls.log"
    (venv / "bin").mkdir(parents=True)
    _logging_command(venv / "bin" / "python", log, "python")
    _logging_command(venv / "bin" / "otel-agentbus", log, "otel-agentbus")
    return venv, log


def _ci_demo(venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AGENTBUS_VENV": str(venv)}
    return subprocess.run([BASH, str(REPO_ROOT / ".ci" / "demo"), *args], capture_output=True,
                          text=True, env=env, timeout=30)


def _calls(log: Path) -> list[str]:
    calls = log.read_text().splitlines() if log.exists() else []
    log.unlink(missing_ok=True)
    return calls


def test_ci_demo_installs_once_then_only_when_pyproject_changes(
    fake_venv: tuple[Path, Path],
) -> None:
    venv, log = fake_venv
    first = _ci_demo(venv, "--help")
    assert first.returncode == 0, first.stderr
    calls = _calls(log)
    assert [c for c in calls if "pip install" in c and f"-e {REPO_ROOT}" in c]
    assert calls[-1] == "otel-agentbus demo --help"

    again = _ci_demo(venv, "--help")
    assert again.returncode == 0, again.stderr
    assert _calls(log) == ["otel-agentbus demo --help"]

    # A pyproject.toml newer than the stamp (edited, or a checkout of another version).
    (stamp,) = venv.glob(".agentbus-installed-*")
    older = (REPO_ROOT / "pyproject.toml").stat().st_mtime - 60
    os.utime(stamp, (older, older))
    changed = _ci_demo(venv, "--help")
    assert changed.returncode == 0, changed.stderr
    assert [c for c in _calls(log) if "pip install" in c]


# ---- .ci/prometheus and .ci/chromium: no prompt, no surprise ------------------------------


@pytest.fixture
def fake_path(tmp_path: Path) -> tuple[Path, Path]:
    """A PATH with logging sudo/apt-get/service, the few real tools the scripts need, and
    neither promtool nor chromium."""
    bin_dir, log = tmp_path / "bin", tmp_path / "apt.log"
    bin_dir.mkdir()
    for tool in ("id", "env", "tr", "true", "dirname", "mktemp", "cat", "rm"):
        real = shutil.which(tool)
        assert real is not None
        (bin_dir / tool).symlink_to(real)
    _logging_command(bin_dir / "apt-get", log, "apt-get",
                     then=f'echo "DEBIAN_FRONTEND=$DEBIAN_FRONTEND" >> "{log}"\n')
    _logging_command(bin_dir / "service", log, "service")
    _logging_command(bin_dir / "sudo", log, "sudo",
                     then='[ "$1" = "-n" ] || exit 1\nshift\nexec "$@"\n')
    return bin_dir, log


def _as_user(bin_dir: Path, sudo_works: bool) -> None:
    """Pretend not to be root (uid 1000), with or without passwordless sudo."""
    (bin_dir / "id").unlink()
    (bin_dir / "id").write_text("#!/bin/sh\necho 1000\n")
    (bin_dir / "id").chmod(0o755)
    if not sudo_works:
        (bin_dir / "sudo").write_text("#!/bin/sh\nexit 1\n")


def _ci_script(name: str, bin_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BASH, str(REPO_ROOT / ".ci" / name)], capture_output=True,
                          text=True, env={"PATH": str(bin_dir), **env}, timeout=30)


@pytest.mark.parametrize(("script", "package"), [("prometheus", "prometheus"),
                                                 ("chromium", "chromium")])
def test_missing_package_installed_without_a_prompt(
    fake_path: tuple[Path, Path], script: str, package: str
) -> None:
    bin_dir, log = fake_path
    _as_user(bin_dir, sudo_works=True)
    done = _ci_script(script, bin_dir)
    assert done.returncode == 0, done.stderr
    calls = log.read_text().splitlines()
    apt = [c for c in calls if c.startswith("apt-get")]
    assert apt[0] == "apt-get update -qq"  # the package lists first, on a fresh machine
    install = next(c for c in calls if c.startswith("apt-get install"))
    assert "-y" in install.split() and install.endswith(package)
    assert "DEBIAN_FRONTEND=noninteractive" in calls
    assert all(c.startswith("sudo -n ") for c in calls if c.startswith("sudo"))


def test_no_install_without_passwordless_sudo(fake_path: tuple[Path, Path]) -> None:
    bin_dir, log = fake_path
    _as_user(bin_dir, sudo_works=False)
    done = _ci_script("chromium", bin_dir)
    assert done.returncode == 0, done.stderr
    assert not [c for c in (log.read_text().splitlines() if log.exists() else [])
                if c.startswith("apt-get")]
    assert "skipped" in done.stderr and "passwordless sudo" in done.stderr


def test_opting_out_leaves_the_machine_alone(fake_path: tuple[Path, Path]) -> None:
    bin_dir, log = fake_path
    done = _ci_script("prometheus", bin_dir, AGENTBUS_INSTALL_SYSTEM_PACKAGES="0")
    assert done.returncode == 0, done.stderr
    assert not log.exists()  # neither sudo nor apt-get ran
    assert "skipped" in done.stderr and "apt-get install prometheus" in done.stderr


@pytest.mark.parametrize(("script", "command"), [("prometheus", "promtool"),
                                                 ("chromium", "chromium")])
def test_left_alone_when_the_command_is_there(
    fake_path: tuple[Path, Path], script: str, command: str
) -> None:
    bin_dir, log = fake_path
    _logging_command(bin_dir / command, log, command)
    done = _ci_script(script, bin_dir, CI="true")
    assert done.returncode == 0, done.stderr
    assert not log.exists()


def test_ci_test_installs_debian_packages_only_through_the_scripts() -> None:
    text = (REPO_ROOT / ".ci" / "test").read_text()
    assert "apt-get" not in text
    assert ".ci/prometheus" in text and ".ci/chromium" in text
