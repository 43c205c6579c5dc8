"""`devbox list` stays fast because it imports little: neither the command-line parser (typer,
click), nor Jinja, nor podman-py, nor pystemd. This holds the line: a new import on the fast
path shows up here, not as a slower `list` found later in bench/.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("typer", "click", "jinja2", "podman", "pystemd", "cryptography", "jwt", "onepassword")

PROBE = """
import json, sys
sys.argv = ["devbox", *sys.argv[1:]]
from devbox.__main__ import main
try:
    main()
except SystemExit:
    pass
heavy = sorted({name.split(".")[0] for name in sys.modules} & set(json.loads(HEAVY)))
print("IMPORTED " + json.dumps(heavy), file=sys.stderr)
"""


def _imported(tmp_path: Path, *argv: str) -> list[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_RUNTIME_DIR": str(tmp_path / "run"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "DEVBOX_CONFIG": str(tmp_path / "config" / "devbox" / "config.toml"),
        "HEAVY": json.dumps(HEAVY),
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    probe = PROBE.replace("json.loads(HEAVY)", "json.loads(__import__('os').environ['HEAVY'])")
    done = subprocess.run([sys.executable, "-c", probe, *argv], env=env, capture_output=True, text=True, timeout=60)
    line = [x for x in done.stderr.splitlines() if x.startswith("IMPORTED ")]
    assert line, done.stderr
    return json.loads(line[-1].removeprefix("IMPORTED "))


@pytest.mark.parametrize("argv", [("list",), ("list", "--json")])
def test_list_imports_nothing_heavy(tmp_path: Path, argv: tuple[str, ...]) -> None:
    assert _imported(tmp_path, *argv) == []


def test_list_with_a_drone_imports_nothing_heavy(tmp_path: Path) -> None:
    """With a drone, list asks systemd and Podman (both unreachable here: it fails), still importing nothing heavy."""
    quadlet = tmp_path / "config" / "containers" / "systemd"
    quadlet.mkdir(parents=True)
    golden = Path(__file__).resolve().parents[1] / "golden" / "minimal"
    for unit in golden.rglob("*.container"):
        (quadlet / unit.name).write_text(unit.read_text())
    assert list(quadlet.glob("drone-*.container")), "the golden minimal case has a .container unit"
    assert _imported(tmp_path, "list", "--json") == []


def test_the_probe_sees_an_import(tmp_path: Path) -> None:
    """The test can fail: the parsed path (any other command) does import typer."""
    assert "typer" in _imported(tmp_path, "--version")
