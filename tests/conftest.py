from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _quadlet_candidates() -> list[Path]:
    env = os.environ.get("DEVBOX_QUADLET")
    return [Path(p) for p in (env, ROOT / ".cache/quadlet/quadlet", "/usr/libexec/podman/quadlet") if p]


@pytest.fixture(scope="session")
def quadlet_binary() -> Path:
    """Podman 5's real Quadlet generator (tests/tools/get-quadlet.sh fetches it from Debian 13)."""
    for candidate in _quadlet_candidates():
        if not os.access(candidate, os.X_OK):
            continue
        result = subprocess.run([candidate, "-version"], capture_output=True, text=True, check=False)
        if result.returncode == 0 and result.stdout.strip().split(".")[0].isdigit():
            if int(result.stdout.strip().split(".")[0]) >= 5:
                return candidate
    pytest.skip("no Podman 5 Quadlet generator here: run tests/tools/get-quadlet.sh (or set DEVBOX_QUADLET)")
