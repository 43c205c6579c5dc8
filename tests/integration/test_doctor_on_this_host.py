"""`devbox doctor` for real on a host without systemd as PID 1 (the Debian 12 development and
CI machines): it must name each missing piece with what to do, and exit ENVIRONMENT."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from devbox.errors import ExitCode


def test_doctor_names_each_missing_piece() -> None:
    if os.path.isdir("/run/systemd/system"):
        pytest.skip("this host boots with systemd: the bare-host check is for machines without it")
    result = subprocess.run(
        [sys.executable, "-m", "devbox", "doctor", "--json"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == ExitCode.ENVIRONMENT, result.stderr
    checks = {c["check"]: c for c in json.loads(result.stdout)}
    assert checks["user manager"]["status"] == "fail"
    assert "PID 1 must be systemd" in checks["user manager"]["fix"]
    podman = checks["podman"]
    assert podman["status"] in ("fail", "warn", "ok")
    if podman["status"] == "fail":
        # cannot run: a plain user whose PATH has directories it cannot read (`su USER` keeps root's)
        detail = podman["detail"]
        assert (
            detail == "podman is not installed" or detail.endswith("has no Quadlet") or detail.startswith("cannot run")
        )
        assert podman["fix"].startswith("install Podman 5")
    for check in checks.values():
        if check["status"] != "ok":
            assert check["fix"], f"{check['check']} fails without saying what to do"
    plain = subprocess.run(
        [sys.executable, "-m", "devbox", "doctor"], capture_output=True, text=True, timeout=60, check=False
    )
    assert "FAIL  user manager: systemd --user is not reachable" in plain.stdout
    assert "      fix: log in through a systemd session" in plain.stdout
