"""Podman's Quadlet generator, asked directly: why a .container produced no service."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

GENERATOR_CANDIDATES = (
    "/usr/libexec/podman/quadlet",
    "/usr/lib/podman/quadlet",
    "/usr/local/libexec/podman/quadlet",
)


def generator_path() -> Path | None:
    override = os.environ.get("DEVBOX_QUADLET")
    for candidate in ([override] if override else []) + list(GENERATOR_CANDIDATES):
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    found = shutil.which("quadlet")
    return Path(found) if found else None


def parse_version(text: str) -> tuple[int, int] | None:
    """(major, minor) of `quadlet -version`'s answer, e.g. "5.4.2"."""
    match = re.match(r"\s*(\d+)\.(\d+)", text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def generator_version() -> tuple[int, int] | None:
    """The Quadlet generator's version (Podman's): which keys it reads. None when it cannot be asked."""
    generator = generator_path()
    if generator is None:
        return None
    try:
        result = subprocess.run([str(generator), "-version"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_version(result.stdout) if result.returncode == 0 else None


def dryrun(unit_dir: Path | None = None) -> subprocess.CompletedProcess[str] | None:
    """`quadlet -dryrun -user`, over `unit_dir` alone when given, else the user's usual directories."""
    generator = generator_path()
    if generator is None:
        return None
    env = dict(os.environ)
    if unit_dir is not None:
        env["QUADLET_UNIT_DIRS"] = str(unit_dir)
    try:
        return subprocess.run(
            [str(generator), "-dryrun", "-user"], capture_output=True, text=True, env=env, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):  # it only explains a failure: one it cannot give is no answer
        return None


def problems(unit_dir: Path, filename: str) -> list[str]:
    """The generator's complaints about one file (empty when it has none or cannot be asked)."""
    result = dryrun(unit_dir)
    if result is None:
        return []
    lines = [line for line in result.stderr.splitlines() if filename in line and "Loading source" not in line]
    return [line for line in lines if "Warning" not in line] + [line for line in lines if "Warning" in line]
