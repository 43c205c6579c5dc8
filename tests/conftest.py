from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The Quadlet generators every rendered unit goes through (tests/tools/get-quadlet.sh SUITE
# fetches each): Debian 13's, the Podman devbox's end-to-end machine runs, and Debian sid's,
# which reads keys 5.4 does not (Memory=).
GENERATOR_SUITES = {"trixie": "Podman 5.4", "sid": "Podman 5.8"}


@dataclass(frozen=True)
class Generator:
    suite: str
    path: Path
    version: tuple[int, int]


def _version(path: Path) -> tuple[int, int] | None:
    from devbox.host.quadlet import parse_version

    if not os.access(path, os.X_OK):
        return None
    result = subprocess.run([path, "-version"], capture_output=True, text=True, check=False)
    return parse_version(result.stdout) if result.returncode == 0 else None


@pytest.fixture(scope="session", params=sorted(GENERATOR_SUITES))
def generator(request: pytest.FixtureRequest) -> Generator:
    """A real Quadlet generator (Podman 5.4 and 5.8), each test run through both."""
    suite = request.param
    path = ROOT / ".cache" / "quadlet" / suite / "quadlet"
    version = _version(path)
    if version is None or version < (5, 0):
        pytest.skip(
            f"no {GENERATOR_SUITES[suite]} Quadlet generator from Debian {suite} at {path}:"
            f" run tests/tools/get-quadlet.sh {suite}"
        )
    return Generator(suite, path, version)
