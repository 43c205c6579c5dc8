"""templates/drone/gh, run for real (by its #!/bin/sh and by bash) with stand-in gh and curl.

The wrapper must find the real gh and never itself, however PATH spells its own directory:
once it exec'd itself forever, asking the broker for a token each time.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WRAPPER = ROOT / "templates" / "drone" / "gh"


def _script(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)


@pytest.fixture
def drone(tmp_path: Path) -> Path:
    """tools/gh (the wrapper), real/gh and stubs/curl (stand-ins that record their calls)."""
    _script(tmp_path / "tools" / "gh", WRAPPER.read_text())  # installed 0755, as render_drone_tools says
    _script(tmp_path / "real" / "gh", f'#!/bin/sh\necho "real gh $GH_TOKEN $*"\necho x >> {tmp_path}/gh.calls\n')
    _script(tmp_path / "stubs" / "curl", f"#!/bin/sh\necho x >> {tmp_path}/curl.calls\nprintf tok\n")
    (tmp_path / "linked").symlink_to(tmp_path / "tools")
    (tmp_path / "alias").mkdir()
    (tmp_path / "alias" / "gh").symlink_to(tmp_path / "tools" / "gh")
    return tmp_path


def _run(drone: Path, path: list[str], argv: list[str]) -> subprocess.CompletedProcess[str]:
    env = {"PATH": ":".join([*path, str(drone / "stubs"), "/usr/bin:/bin"]), "HOME": str(drone)}
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=20, check=False)


def _calls(drone: Path, name: str) -> int:
    path = drone / f"{name}.calls"
    return len(path.read_text().splitlines()) if path.exists() else 0


SPELLINGS = {
    "dir/": lambda d: [f"{d}/tools/"],
    "dir//": lambda d: [f"{d}/tools//"],
    "dir/.": lambda d: [f"{d}/tools/."],
    "symlinked-dir": lambda d: [f"{d}/linked"],
    "symlink-to-script": lambda d: [f"{d}/alias"],
    "every-spelling": lambda d: [f"{d}/tools", f"{d}/tools/", f"{d}/linked/", f"{d}/alias", f"{d}/linked//"],
}


@pytest.mark.parametrize("shell", ["shebang", "bash"])
@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
def test_the_wrapper_finds_the_real_gh_never_itself(drone: Path, spelling: str, shell: str) -> None:
    path = [*SPELLINGS[spelling](drone), str(drone / "real")]
    first = Path(path[0]) / "gh"
    argv = ["gh", "pr", "list"] if shell == "shebang" else ["bash", str(first), "pr", "list"]
    result = _run(drone, path, argv)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "real gh tok pr list\n"
    assert (_calls(drone, "curl"), _calls(drone, "gh")) == (1, 1)


@pytest.mark.parametrize("shell", ["shebang", "bash"])
def test_no_real_gh_is_one_line_and_no_broker_request(drone: Path, shell: str) -> None:
    path = [f"{drone}/tools/", f"{drone}/linked", f"{drone}/alias"]
    argv = ["gh", "auth", "status"] if shell == "shebang" else ["bash", f"{drone}/alias/gh", "auth", "status"]
    result = _run(drone, path, argv)
    assert result.returncode == 127
    assert result.stderr.count("\n") == 1 and "gh is not installed" in result.stderr
    assert _calls(drone, "curl") == 0


def test_a_real_gh_named_by_a_relative_path_entry(drone: Path) -> None:
    """An empty PATH entry is the current directory, as the shell reads it."""
    env = {"PATH": f"{drone}/tools::{drone}/stubs:/usr/bin:/bin"}
    result = subprocess.run(
        ["gh", "x"], env=env, cwd=drone / "real", capture_output=True, text=True, timeout=20, check=False
    )
    assert (result.returncode, result.stdout) == (0, "real gh tok x\n")
