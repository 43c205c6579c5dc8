"""templates/image/devbox-code-server and devbox-install-code-server, run for real with bash here.

The wrapper runs with a stand-in `code-server` on PATH that records its argv, its environment and
the config file it was given; HOME is a temporary directory. The install script is only run as far
as it refuses bad arguments (the rest needs apt, npm and root: tests/e2e/test_code_server.py).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WRAPPER = ROOT / "templates" / "image" / "devbox-code-server"
INSTALL = ROOT / "templates" / "image" / "devbox-install-code-server"
BASH = shutil.which("bash")

pytestmark = pytest.mark.skipif(BASH is None, reason="bash is not installed")

STANDIN = """#!/bin/bash
printf '%s\\0' "$@" >"$RECORDS/argv"
env -0 >"$RECORDS/env"
while [ $# -gt 0 ]; do [ "$1" = --config ] && cp "$2" "$RECORDS/config"; shift; done
"""


@pytest.fixture
def drone(tmp_path: Path) -> dict[str, Path]:
    home, bin_, records, workspace = (tmp_path / d for d in ("home", "bin", "records", "work"))
    for d in (home, bin_, records, workspace):
        d.mkdir()
    (bin_ / "code-server").write_text(STANDIN)
    (bin_ / "code-server").chmod(0o755)
    return {"home": home, "bin": bin_, "records": records, "workspace": workspace}


def run(drone: dict[str, Path], *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {
        "HOME": str(drone["home"]),
        "PATH": f"{drone['bin']}:/usr/bin:/bin",
        "RECORDS": str(drone["records"]),
    }
    return subprocess.run(
        [BASH or "bash", str(WRAPPER), *args],
        env=base | (env or {}),
        cwd=drone["workspace"],
        capture_output=True,
        text=True,
        timeout=30,
    )


def state(drone: dict[str, Path]) -> Path:
    return drone["home"] / ".local/state/devbox-drone/code-server"


def password_file(drone: dict[str, Path], text: str = "Zx9secretPasswordMadeOnce") -> Path:
    """What the drone's init makes on first start (0600, in the home volume)."""
    path = drone["home"] / ".local/state/devbox-drone/web/code-server.password"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_the_password_reaches_code_server_only_in_a_0600_file(drone) -> None:
    secret_file = password_file(drone)
    secret = secret_file.read_text()
    r = run(drone, "7702", str(secret_file))
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(state(drone).stat().st_mode) == 0o700
    config = state(drone) / "config.yaml"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert f"password: '{secret}'" in (drone["records"] / "config").read_text()
    argv = (drone["records"] / "argv").read_text().split("\0")[:-1]
    assert argv == [
        "--bind-addr",
        "127.0.0.1:7702",  # the drone's loopback only, on the port the init gives
        "--auth",
        "password",
        "--config",
        str(config),
        "--user-data-dir",
        f"{drone['home']}/.local/share/code-server",
        "--extensions-dir",
        f"{drone['home']}/.local/share/code-server/extensions",
        "--disable-telemetry",
        "--disable-update-check",
        "--disable-getting-started-override",
        str(drone["workspace"]),  # the working directory: the drone's workspace
    ]
    assert secret not in (drone["records"] / "env").read_text()
    assert secret not in r.stdout + r.stderr
    settings = drone["home"] / ".local/share/code-server/User/settings.json"
    assert '"update.mode": "none"' in settings.read_text()


def test_a_changed_password_is_used_quoted_and_the_users_settings_stay(drone) -> None:
    secret_file = password_file(drone)
    assert run(drone, "8080", str(secret_file)).returncode == 0
    secret_file.write_text("it's a pass: word")  # the user's own, as YAML would break it
    settings = drone["home"] / ".local/share/code-server/User/settings.json"
    settings.write_text("{}")  # the user's settings are not written over
    assert run(drone, "8080", str(secret_file)).returncode == 0
    assert "password: 'it''s a pass: word'\n" in (drone["records"] / "config").read_text()
    assert settings.read_text() == "{}"
    secret_file.write_text("two\nlines")
    r = run(drone, "8080", str(secret_file))
    assert r.returncode == 1 and "must hold one line" in r.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "usage: devbox-code-server PORT PASSWORD_FILE [FOLDER]"),
        (["80a", "/x"], "PORT must be a port number, not '80a'"),
        (["8080", "/nonexistent/password"], "no password in /nonexistent/password"),
    ],
)
def test_bad_arguments_are_refused_in_one_line(drone, args: list[str], message: str) -> None:
    r = run(drone, *args)
    assert (r.returncode, r.stderr) == (1, f"devbox-code-server: {message}\n")
    assert not (drone["records"] / "argv").exists()


def test_the_workspace_folder(drone, tmp_path: Path) -> None:
    other = tmp_path / "project"
    other.mkdir()
    secret_file = str(password_file(drone))
    run(drone, "8080", secret_file, env={"DEVBOX_WORKSPACE": str(other)})
    assert (drone["records"] / "argv").read_text().split("\0")[-2] == str(other)
    run(drone, "8080", secret_file, str(tmp_path / "gone"))
    assert (drone["records"] / "argv").read_text().split("\0")[-2] == str(drone["home"])


def test_check_says_whether_code_server_is_in_the_image(drone) -> None:
    assert run(drone, "--check").returncode == 0
    (drone["bin"] / "code-server").unlink()
    r = run(drone, "--check", env={"PATH": f"{drone['bin']}:/nonexistent"})
    assert r.returncode == 1
    assert r.stderr == (
        "devbox-code-server: this image has no code-server (built with CODE_SERVER=skip, "
        "or it could not be installed)\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["maybe"], "CODE_SERVER must be auto, required or skip, not 'maybe'"),
        (["auto", "latest"], "CODE_SERVER_VERSION must be a version like 4.100.3, not 'latest'"),
        (["required", "4.100.3; rm -rf /"], "CODE_SERVER_VERSION must be a version like 4.100.3"),
    ],
)
def test_the_install_script_refuses_bad_arguments_before_doing_anything(args, message) -> None:
    r = subprocess.run([BASH or "bash", str(INSTALL), *args], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and message in r.stderr
    assert os.access(INSTALL, os.X_OK)
