"""`devbox list` skips the command-line parser; what it prints and how it fails must not differ."""

from __future__ import annotations

import pytest

from devbox import context
from devbox.cli import fastpath
from devbox.errors import DevboxError, ExitCode
from tests.fakes import World
from tests.unit.test_cli import _running, devbox


def fast(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = 0
    try:
        assert fastpath.run(list(args)) is True
    except SystemExit as exited:
        code = int(exited.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def fast_world(world: World, monkeypatch: pytest.MonkeyPatch) -> World:
    monkeypatch.setattr(context, "real_context", lambda: world.context())
    return world


@pytest.mark.parametrize("argv", [[], ["list", "-h"], ["list", "--json", "--json"], ["status", "x"], ["--json"]])
def test_other_command_lines_go_to_the_parser(argv: list[str]) -> None:
    assert fastpath.run(argv) is False


def test_fast_list_prints_what_the_parsed_list_prints(fast_world: World, capsys) -> None:
    assert fast(capsys, "list") == devbox(capsys, "list")
    devbox(capsys, "create", "alpha", "--repo", "acme/alpha")
    devbox(capsys, "create", "beta")
    fast_world.podman.containers = {"alpha": _running("alpha")}
    for args in (("list",), ("list", "--json")):
        parsed = devbox(capsys, *args)
        assert parsed[0] == 0 and "alpha" in parsed[1] and "beta" in parsed[1]
        assert fast(capsys, *args) == parsed


def test_fast_list_fails_the_same_way(fast_world: World, capsys, monkeypatch) -> None:
    devbox(capsys, "create", "alpha")

    def unreachable() -> dict:
        raise DevboxError(
            "cannot reach the Podman API at unix:///x: run `systemctl --user enable --now podman.socket`",
            ExitCode.PODMAN,
        )

    monkeypatch.setattr(fast_world.podman, "drone_containers", unreachable)
    parsed = devbox(capsys, "list")
    assert fast(capsys, "list") == parsed
    assert parsed[0] == ExitCode.PODMAN and parsed[2].startswith("devbox: cannot reach the Podman API")
