"""The broker's rendered unit scored by `systemd-analyze security --offline` on this host (it scores
the unit as a system unit; the user-manager figure comes from the e2e machine). Printed, and bounded."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "minimal" / "units"
MOST_EXPOSED = 3.0  # systemd calls up to 3.9 "OK"; the sandbox must stay well inside it


def exposure(unit_dir: Path, unit: str) -> float:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed here")
    env = {"SYSTEMD_UNIT_PATH": f"{unit_dir}:", "XDG_RUNTIME_DIR": str(unit_dir), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [tool, "security", "--offline=true", "--no-pager", unit], env=env, capture_output=True, text=True, timeout=60
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout)
    if found is None:
        pytest.skip(f"systemd-analyze security --offline gave no figure here: {result.stderr.strip()[:200]}")
    return float(found[1])


def test_the_brokers_unit_is_sandboxed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for unit in GOLDEN.glob("drone-demo-creds.*"):
        shutil.copy(unit, tmp_path / unit.name)
    figure = exposure(tmp_path, "drone-demo-creds.service")
    with capsys.disabled():
        print(f"\nsystemd-analyze security --offline (as a system unit): drone-demo-creds.service exposure {figure}")
    assert figure <= MOST_EXPOSED


def test_the_key_proxys_unit_is_sandboxed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for unit in (GOLDEN.parent.parent / "api-keys" / "units").glob("drone-agent-keys.*"):
        shutil.copy(unit, tmp_path / unit.name)
    figure = exposure(tmp_path, "drone-agent-keys.service")
    with capsys.disabled():
        print(f"\nsystemd-analyze security --offline (as a system unit): drone-agent-keys.service exposure {figure}")
    assert figure <= MOST_EXPOSED
