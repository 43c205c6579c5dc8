"""A tool devbox cannot start is a check result or a DevboxError line, never a traceback.

`su USER` keeps root's PATH, whose directories that user cannot read: then `subprocess` raises
PermissionError for a missing tool, not FileNotFoundError. A file on PATH without the execute
bit gives the same error to root too, so these tests make one for each tool devbox runs.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from devbox.cli import app
from devbox.commands import doctor, image
from devbox.errors import DevboxError, ExitCode
from devbox.host import quadlet, systemd

TOOLS = ("podman", "systemctl", "busctl", "ssh")


@pytest.fixture
def unrunnable_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PATH is one directory where every tool is a file that cannot be executed."""
    for tool in TOOLS:
        (tmp_path / tool).write_text("#!/bin/sh\nexit 0\n")
        (tmp_path / tool).chmod(0o644)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PermissionError):  # what these tests are about: not FileNotFoundError
        subprocess.run(["podman", "--version"], check=False)
    return tmp_path


def test_doctor_reports_a_podman_it_cannot_run(unrunnable_path: Path) -> None:
    checks = {c.name: c for c in doctor.run_checks(doctor.Host())}
    assert checks["podman"].status == "fail"
    assert checks["podman"].detail == "cannot run podman: Permission denied"
    assert "every directory on PATH readable" in checks["podman"].fix
    assert checks["user manager"].status == "fail"
    assert "cannot run systemctl: Permission denied" in checks["user manager"].detail


def test_systemctl_and_busctl_that_cannot_run_are_devbox_errors(unrunnable_path: Path) -> None:
    with pytest.raises(DevboxError, match="^cannot run systemctl: Permission denied$") as raised:
        systemd.SystemctlSystemd().daemon_reload()
    assert raised.value.code == ExitCode.ENVIRONMENT
    with pytest.raises(DevboxError, match="^cannot run busctl: Permission denied$"):
        systemd.list_units(["drone-x.service"])


def test_exec_of_a_tool_that_cannot_run_is_a_devbox_error(unrunnable_path: Path) -> None:
    with pytest.raises(DevboxError, match="^cannot run ssh: Permission denied$") as raised:
        app._exec(["ssh", "x"], "the OpenSSH client")
    assert raised.value.code == ExitCode.ENVIRONMENT


def test_image_build_with_a_podman_that_cannot_run_is_a_devbox_error(unrunnable_path: Path) -> None:
    with pytest.raises(DevboxError, match="^cannot run podman: Permission denied$") as raised:
        image.load(str(unrunnable_path / "podman"), lambda line: None)  # any file that exists
    assert raised.value.code == ExitCode.IMAGE


def test_a_generator_that_cannot_run_gives_no_explanation_rather_than_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "quadlet"
    broken.write_bytes(b"\x7fELF not really")  # executable bit, no format the kernel runs
    broken.chmod(0o755)
    monkeypatch.setenv("DEVBOX_QUADLET", str(broken))
    assert quadlet.dryrun(tmp_path) is None
    assert quadlet.problems(tmp_path, "drone-x.container") == []
