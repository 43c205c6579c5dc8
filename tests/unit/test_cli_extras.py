"""Aliases, the zerg flavour, colours, completion and exec: the same code paths, said differently."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from devbox.cli import app as cli
from devbox.cli import output
from devbox.errors import DevboxError, ExitCode
from tests.fakes import FIXED_NOW, World
from tests.unit.test_cli import _running, devbox


def test_aliases_run_the_same_use_cases(world: World, capsys) -> None:
    assert (
        devbox(capsys, "spawn", "demo")[1].splitlines()[-1]
        == "drone demo is running: systemctl --user status drone-demo"
    )
    assert devbox(capsys, "burrow", "demo") == (0, "drone demo is stopped\n", "")
    assert devbox(capsys, "unburrow", "demo") == (0, "drone demo is running\n", "")
    assert devbox(capsys, "slay", "demo", "--yes")[1] == "drone demo is destroyed (6 files removed, no volume)\n"
    assert devbox(capsys, "slay", "demo", "--yes") == (ExitCode.NOT_FOUND, "", "devbox: no such drone: demo\n")
    assert "spawn" not in devbox(capsys, "--help")[1]


def test_zerg_flavour(world: World, capsys) -> None:
    world.paths.config_file.parent.mkdir(parents=True)
    world.paths.config_file.write_text('flavor = "zerg"\nmax_drones = 1\n')
    devbox(capsys, "spawn", "demo")
    assert devbox(capsys, "spawn", "demo") == (
        ExitCode.EXISTS,
        "",
        "devbox: Evolution chamber occupied. (drone demo exists already)\n",
    )
    assert devbox(capsys, "spawn", "other")[2] == (
        "devbox: Spawn more overlords. (the drone limit is reached (1, max_drones in the config))\n"
    )
    assert devbox(capsys, "start", "ghost")[2] == "devbox: no such drone: ghost\n"  # unflavoured errors stay plain


def test_minerals_for_a_repository_the_app_cannot_reach() -> None:
    exc = DevboxError("the GitHub App is not installed for acme", ExitCode.CREDENTIALS)
    assert output.flavour_message("zerg", exc) == "We require more minerals. (the GitHub App is not installed for acme)"
    assert output.flavour_message("plain", exc) == "the GitHub App is not installed for acme"


def test_states_are_coloured_only_on_request(world: World, capsys) -> None:
    devbox(capsys, "create", "alpha")
    world.podman.containers = {"alpha": _running("alpha")}
    from devbox.commands.inventory import list_drones

    statuses = list_drones(world.context())
    plain = output.list_table(statuses, FIXED_NOW)
    coloured = output.list_table(statuses, FIXED_NOW, colour=True)
    assert "\x1b[" not in plain
    assert "\x1b[32mrunning\x1b[0m" in coloured
    assert coloured.replace("\x1b[32m", "").replace("\x1b[0m", "") == plain
    assert "\x1b[" not in devbox(capsys, "list")[1]  # capsys is not a terminal: plain


def test_no_color_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert cli._colour() is True
    monkeypatch.setenv("NO_COLOR", "1")
    assert cli._colour() is False


@pytest.mark.parametrize(
    ("shell", "marker"),
    [
        ("bash", "complete -o default -F _devbox_completion devbox"),
        ("zsh", "#compdef devbox"),
        ("fish", "complete --command devbox"),
    ],
)
def test_completion_scripts_generate(capsys, shell: str, marker: str) -> None:
    code, out, _ = devbox(capsys, "completion", shell)
    assert code == 0 and marker in out and "_DEVBOX_COMPLETE" in out


def test_completion_offers_drone_names(world: World, capsys) -> None:
    for name in ("alpha", "alpine", "beta"):
        devbox(capsys, "create", name)
    env = {
        **os.environ,
        "HOME": str(world.paths.quadlet_dir.parent.parent.parent),
        "XDG_CONFIG_HOME": str(world.paths.quadlet_dir.parent.parent),
        "_DEVBOX_COMPLETE": "complete_bash",
        "COMP_WORDS": "devbox start al",
        "COMP_CWORD": "2",
    }
    result = subprocess.run(
        [sys.executable, "-m", "devbox"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.stdout.split() == ["alpha", "alpine"]


def test_exec_runs_podman_exec_in_the_drone(world: World, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    devbox(capsys, "create", "demo")
    calls: list[list[str]] = []
    monkeypatch.setattr(os, "execvp", lambda file, argv: calls.append(argv))
    assert devbox(capsys, "exec", "demo", "--", "git", "--version")[0] == 0
    assert calls[0][:3] == ["podman", "exec", "--interactive"]
    assert calls[0][-3:] == ["drone-demo", "git", "--version"]
    assert devbox(capsys, "exec", "ghost", "--", "true") == (ExitCode.NOT_FOUND, "", "devbox: no such drone: ghost\n")


def test_create_and_destroy_json(world: World, capsys) -> None:
    import json

    code, out, _ = devbox(capsys, "create", "demo", "--json")
    data = json.loads(out)
    assert code == 0 and data["name"] == "demo" and data["started"] is True and data["dry_run"] is False
    assert [f["change"] for f in data["files"]] == ["new"] * 6  # with the fence's hook file
    assert data["files"][0]["path"].endswith("/containers/systemd/drone-demo.container")
    world.podman.volumes.add("drone-demo-home")
    data = json.loads(devbox(capsys, "destroy", "demo", "--yes", "--json")[1])
    assert data == {
        "name": "demo",
        "removed_files": data["removed_files"],
        "volume_removed": True,
        "volume_kept": False,
        "volumes_removed": [],
        "containers_store_removed": False,
        "tokens_revoked": 0,
    }
    assert len(data["removed_files"]) == 6
    assert not (world.paths.drones_dir / "demo").exists()


def test_spinner_shows_the_current_step_on_a_terminal_and_nothing_when_piped() -> None:
    import io
    import time

    from devbox.cli.spinner import Spinner

    shown = io.StringIO()
    with Spinner(shown, interval=0.01, enabled=True) as progress:
        progress("pulling localhost/devbox-drone:latest")
        deadline = time.monotonic() + 5
        while "pulling" not in shown.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        progress("starting drone-demo.service")
        while "starting drone-demo" not in shown.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
    text = shown.getvalue()
    assert "pulling localhost/devbox-drone:latest (0s)" in text and "starting drone-demo.service (" in text
    assert text.endswith("\r\x1b[2K")  # the line is cleared before the result is printed
    piped = io.StringIO()
    with Spinner(piped, enabled=False) as progress:
        progress("pulling")
    assert piped.getvalue() == ""


def test_start_stop_restart_json(world: World, capsys) -> None:
    import json

    devbox(capsys, "create", "demo")
    for verb, state in (("stop", "stopped"), ("start", "running"), ("restart", "running")):
        code, out, err = devbox(capsys, verb, "demo", "--json")
        assert (code, err) == (0, "") and json.loads(out) == {"name": "demo", "state": state}


def test_a_drone_killed_for_memory_says_so_and_the_swarm_says_it_its_way(world: World, capsys) -> None:
    import json

    devbox(capsys, "create", "demo", "--memory", "512m")
    world.systemd.results["drone-demo.service"] = "oom-kill"
    assert json.loads(devbox(capsys, "status", "demo", "--json")[1])["killed_for_memory"] is True
    plain = devbox(capsys, "status", "demo")[1]
    assert "last exit  killed for memory: give it more with --memory, or use less\n" in plain
    world.paths.config_file.parent.mkdir(parents=True, exist_ok=True)
    world.paths.config_file.write_text('flavor = "zerg"\n')
    zerg = devbox(capsys, "status", "demo")[1]
    assert "last exit  Nuclear launch detected. (killed for memory" in zerg
    world.systemd.results["drone-demo.service"] = "success"
    assert "last exit" not in devbox(capsys, "status", "demo")[1]


def test_drone_options_fill_every_create_request_field() -> None:
    """create and render share DRONE_OPTIONS; each names a CreateRequest field, and only
    --new-ssh-key (create alone) is outside the list. A misnamed field fails here, not silently."""
    from dataclasses import fields

    from devbox.commands.lifecycle import CreateRequest

    named = [option.field for option in cli.DRONE_OPTIONS]
    assert len(named) == len(set(named))
    assert set(named) | {"new_ssh_key"} == {f.name for f in fields(CreateRequest)}


def test_an_unknown_request_field_is_an_error_not_silence() -> None:
    import pytest as _pytest

    from devbox.commands.lifecycle import CreateRequest

    with _pytest.raises(TypeError):
        CreateRequest(name="demo", repo=["acme/demo"])  # type: ignore[call-arg]
