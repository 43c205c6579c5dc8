"""Hostile values: refused at input, and a hand-made unit read exactly as Quadlet and systemd read it.

The broker takes a drone's repositories from devbox's reading of its .container file, so
that reading must never disagree with the --label arguments Podman gets.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from devbox.broker.setup import broker_for
from devbox.errors import DevboxError, ExitCode
from devbox.units import unitfile
from devbox.units.installed import find_drones, require_drone
from devbox.values import check_printable, printable
from tests.conftest import Generator
from tests.fakes import World
from tests.unit.test_cli import devbox
from tests.unit.test_quadlet_generator import dryrun

# Every character Python's str.splitlines splits at but systemd and Quadlet do not, and more
# that no value should hold: BOM, bidi override, zero-width space, NBSP, surrogate, private use, unassigned.
REFUSED = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029\t\x00\x7f\x80\ufeff\u202e\u200b\xa0\u3000\ud800\ue000\u0378"


@pytest.mark.parametrize("char", list(REFUSED), ids=[f"U+{ord(c):04X}" for c in REFUSED])
def test_printable_refuses_every_break_and_invisible_character(char: str) -> None:
    assert not printable(f"a{char}b")
    with pytest.raises(DevboxError) as error:
        check_printable(f"a{char}b", "the value")
    assert error.value.code == ExitCode.INVALID_INPUT and char not in error.value.message


def test_printable_accepts_ordinary_text() -> None:
    assert printable("grüße ✓ 100% $HOME \"quoted\" 'x' \\ ;#")


HOSTILE = "x\u2028Label=io.devbox.repos=acme/secret\u2028"


@pytest.mark.parametrize("char", ["\u2028", "\u2029", "\x85", "\ufeff"])
def test_create_refuses_a_line_separator_in_an_env_value(world: World, capsys, char: str) -> None:
    value = HOSTILE.replace("\u2028", char)
    code, out, err = devbox(capsys, "create", "demo", "--repo", "acme/demo", "--env", f"E={value}")
    assert code == ExitCode.INVALID_INPUT and "E: newlines" in err and "acme/secret" not in err
    assert world.leftovers() == []


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--dotfiles", "https://example.com/dots\u2028.git"),
        ("--dotfiles-branch", "main\u2028x"),
    ],
)
def test_create_refuses_a_line_separator_anywhere(world: World, capsys, option: str, value: str) -> None:
    code, _, _ = devbox(capsys, "create", "demo", option, value)
    assert code == ExitCode.INVALID_INPUT
    assert world.leftovers() == []


def test_identity_and_key_comments_refuse_line_separators(tmp_path: Path) -> None:
    from devbox.drone import identity, sshkeys
    from tests.unit.cases import ED25519_KEY

    for check in (identity.validate_git_name, identity.validate_email):
        with pytest.raises(DevboxError):
            check("dev\u2028[core]")
    key_type, blob, _ = ED25519_KEY.split(" ")
    (tmp_path / "k.pub").write_text(f"{key_type}\u2028{blob} me\n")
    with pytest.raises(DevboxError):
        sshkeys.read_key_file(tmp_path / "k.pub")


HEAD = "# Managed by devbox.\n[Unit]\nDescription=x\n\n[Container]\nImage=localhost/x:1\nLabel=io.devbox.drone=x\n"
# Hand-made units, each read by Quadlet in a way a line-based reader would get wrong.
HAND_MADE = {
    "env-u2028": 'Label=io.devbox.repos=acme/demo\nEnvironment="E=x\u2028Label=io.devbox.repos=acme/secret\u2028"\n',
    "label-u2028": "Label=io.devbox.repos=acme/demo\u2028Label=io.devbox.repos=acme/secret\n",
    "label-u0085": "Label=io.devbox.repos=acme/demo\x85Label=io.devbox.repos=acme/secret\n",
    "label-u2029-unmatched-quote": 'Label="io.devbox.repos=acme/demo\u2029Label=io.devbox.repos=acme/secret\n',
    "unmatched-quote": 'Label=io.devbox.repos=acme/demo\nEnvironment="E=x\u2028\n',
    "vt-ff-fs": "Label=io.devbox.repos=acme/demo\v\fLabel=io.devbox.repos=acme/secret\x1c\n",
    "crlf": "Label=io.devbox.repos=acme/demo\r\nLabel=io.devbox.note=a\r\n",
    "cr-inside": "Label=io.devbox.repos=acme/demo\rio.devbox.note=b\n",
    "continuation": "Label=io.devbox.repos=acme/demo\\\n# a comment\n  ,acme/secret\n",
    "comments": "#Label=io.devbox.repos=acme/secret\n ;Label=io.devbox.x=1\nLabel=io.devbox.repos=acme/demo #x\n",
    "empty-clears": "Label=io.devbox.repos=acme/secret\nLabel=\nLabel=io.devbox.drone=x io.devbox.repos=acme/demo\n",
    "unknown-escape": "Label=io.devbox.repos=acme/demo\nLabel=io.devbox.repos=acme/secret \\q\n",
    "empty-word": 'Label=io.devbox.repos=acme/demo "" io.devbox.repos=acme/secret\n',
    "escapes": 'Label="io.devbox.note=\\x41\\u00e9\\101\\s\\"" io.devbox.repos=acme/demo\n',
    "last-wins": "Label=io.devbox.repos=acme/secret\nLabel=io.devbox.repos=acme/demo\n",
    "nul": "Label=io.devbox.repos=acme/demo\x00 io.devbox.x=1\n",
    "doubled": "Label=io.devbox.note=100%%$$HOME io.devbox.repos=acme/demo\n",
}
# Units devbox cannot read as systemd would run them: damaged, for devbox and its broker alike.
DAMAGED = {
    "specifier": "Label=io.devbox.repos=acme/%n\n",
    "variable": "Label=io.devbox.repos=acme/$X\n",
    "not-a-key": "Label=io.devbox.repos=acme/demo\ngarbage\n",
}


def _exec_words(line: str) -> list[str]:
    """The words of an ExecStart= Quadlet wrote (its escapeWords), decoded without devbox's reader."""
    words = []
    escapes = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
    for quoted, bare in re.findall(r'"((?:[^"\\]|\\.)*)"|([^ ]+)', line):  # not \S: it ends at U+2028
        word = bare or re.sub(
            r"\\(x[0-9a-f]{2}|.)",
            lambda m: chr(int(m[1][1:], 16)) if m[1][0] == "x" else escapes.get(m[1], m[1]),
            quoted,
        )
        words.append(word.replace("%%", "%").replace("$$", "$"))  # what systemd hands podman
    return words


def _podman_labels(quadlet: Path, tmp_path: Path, text: str) -> dict[str, str]:
    directory = tmp_path / "q"
    directory.mkdir(exist_ok=True)
    (directory / "drone-x.container").write_bytes(text.encode())
    result = dryrun(quadlet, directory)
    (exec_start,) = [line for line in result.stdout.split("\n") if line.startswith("ExecStart=")]
    argv = _exec_words(exec_start.removeprefix("ExecStart="))
    found = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--label"]
    return {
        k.removeprefix("io.devbox."): v for k, _, v in (a.partition("=") for a in found) if k.startswith("io.devbox.")
    }


@pytest.mark.parametrize("case", sorted(HAND_MADE))
def test_devbox_reads_the_labels_podman_gets(generator: Generator, tmp_path: Path, case: str) -> None:
    text = HEAD + HAND_MADE[case]
    podman = _podman_labels(generator.path, tmp_path, text)
    assert unitfile.labels(text) == podman and podman["drone"] == "x"


@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_a_unit_devbox_cannot_read_exactly_is_damaged(case: str) -> None:
    with pytest.raises(unitfile.UnitFileError):
        unitfile.labels(HEAD + DAMAGED[case])


def _hand_edit(world: World, name: str, lines: str) -> None:
    path = world.paths.quadlet_dir / f"drone-{name}.container"
    path.write_text(path.read_text().replace("[Container]\n", "[Container]\n" + lines, 1))


def test_one_damaged_unit_leaves_every_other_drone_working(
    world: World, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("demo", "other"):
        assert devbox(capsys, "create", name, "--repo", "acme/demo")[0] == 0
    # Once a crash for every drone: an unmatched quote after a U+2028 (now read as Quadlet does).
    _hand_edit(world, "demo", 'Environment="E=x\u2028\n')
    assert find_drones(world.paths)["demo"].repos == ["acme/demo"]
    _hand_edit(world, "other", "Label=io.devbox.repos=acme/%n\n")
    code, out, err = devbox(capsys, "list")
    assert code == 0 and err == ""
    states = {line.split()[0]: line.split()[1] for line in out.split("\n")[1:] if line}
    assert states == {"demo": "starting", "other": "damaged"}
    code, out, err = devbox(capsys, "status", "other")
    assert code == ExitCode.DAMAGED and len(err.strip().splitlines()) == 1 and "destroy other" in err
    assert devbox(capsys, "status", "demo")[0] == 0
    # The broker takes its scope from the same reading: it refuses the damaged drone, serves the other.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(world.paths.quadlet_dir.parent.parent))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(world.paths.runtime_dir))
    with pytest.raises(DevboxError) as error:
        require_drone(world.paths, "other")
    assert error.value.code == ExitCode.DAMAGED
    assert require_drone(world.paths, "demo").repos == ["acme/demo"]
    code, _, _ = devbox(capsys, "destroy", "other", "--yes")
    assert code == 0 and "other" not in find_drones(world.paths)


def test_the_broker_refuses_a_damaged_drone(world: World, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    assert devbox(capsys, "create", "demo", "--repo", "acme/demo")[0] == 0
    _hand_edit(world, "demo", "Label=io.devbox.repos=$X\n")
    import devbox.broker.setup as setup

    monkeypatch.setattr(setup.Paths, "from_env", staticmethod(lambda: world.paths))
    with pytest.raises(DevboxError) as error:
        broker_for("demo")
    assert error.value.code == ExitCode.DAMAGED
