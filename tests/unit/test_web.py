"""Web services (`--with web-terminal`): the declared table, the ports a drone claims, its unit,
`devbox open NAME terminal`, restore, and the password kept out of every unit, label and argv."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from devbox.drone import web
from devbox.drone.services import SERVICES, WEB_SERVICES, web_service_for
from devbox.errors import DevboxError, ExitCode
from devbox.host.probe import PodmanProbe, parse_password
from tests.fakes import World
from tests.unit.test_cli import devbox

PASSWORD = "Zq8xW2mK4tR9vB7nL3pH6sJd"  # what a drone's init makes: 24 letters and digits


def unit(world: World, name: str) -> str:
    return (world.paths.quadlet_dir / f"drone-{name}.container").read_text()


# --- the table ---


def test_every_web_service_has_its_own_port_and_word() -> None:
    ports = [s.web.port for s in WEB_SERVICES.values() if s.web]
    words = [s.web.word for s in WEB_SERVICES.values() if s.web]
    assert len(set(ports)) == len(ports) and len(set(words)) == len(words)
    assert set(WEB_SERVICES) <= set(SERVICES)
    terminal = web_service_for("terminal")
    assert terminal is not None and terminal.name == "web-terminal" and terminal.web and terminal.web.port == 7681
    assert web_service_for("mosh") is None and web_service_for("web-terminal") is None


def test_the_label_reads_back_and_a_damaged_one_reads_as_no_port() -> None:
    assert web.parse_ports(web.format_ports((("web-terminal", 7701),)) or "") == (("web-terminal", 7701),)
    assert web.parse_ports("web-terminal:x,nothing:7702,web-terminal:99999,:") == ()
    assert web.format_ports(()) is None


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("web-terminal", "expected SERVICE:PORT"),
        ("mosh:7701", "'mosh' is not a web service"),
        ("web-terminal:0", "invalid port '0'"),
        ("web-terminal:7701,web-terminal:7702", "twice"),
    ],
)
def test_bad_web_ports_are_refused(value: str, says: str) -> None:
    with pytest.raises(DevboxError) as refused:
        web.validate_ports(value, ["web-terminal", "mosh"])
    assert refused.value.code == ExitCode.INVALID_INPUT and says in refused.value.message


# --- create: the ports, the unit ---


def test_drones_claim_web_ports_of_their_own_from_7701(world: World, capsys, monkeypatch) -> None:
    from devbox.commands import lifecycle

    busy = {7702}  # something on this host listens there
    monkeypatch.setattr(lifecycle, "port_free", lambda port: port not in busy)
    assert devbox(capsys, "create", "a", "--with", "web-terminal")[0] == 0
    assert devbox(capsys, "create", "b", "--with", "web-terminal", "--with", "mosh")[0] == 0
    assert devbox(capsys, "create", "plain")[0] == 0
    assert devbox(capsys, "create", "mine", "--with", "web-terminal", "--web-ports", "web-terminal:7777")[0] == 0
    a, b, plain, mine = (unit(world, n) for n in ("a", "b", "plain", "mine"))
    assert "PublishPort=127.0.0.1:7701:7681\n" in a and "Label=io.devbox.web-ports=web-terminal:7701\n" in a
    assert "Environment=DEVBOX_WEB=web-terminal:7681\n" in a and "Environment=DEVBOX_WITH=web-terminal\n" in a
    assert "Network=pasta:--host-lo-to-ns-lo\n" in a
    assert "PublishPort=127.0.0.1:7703:7681\n" in b  # 7702 is busy
    assert "PublishPort=127.0.0.1:7777:7681\n" in mine
    assert "Network=" not in plain and "web-ports" not in plain and "DEVBOX_WEB" not in plain  # pasta's defaults

    status = json.loads(devbox(capsys, "status", "a", "--json")[1])
    assert status["with"] == ["web-terminal"] and status["web_ports"] == {"web-terminal": 7701}
    text = devbox(capsys, "status", "a")[1]
    assert "web-terminal  http://127.0.0.1:7701/ (devbox open a terminal --password)\n" in text
    listed = {d["name"]: d for d in json.loads(devbox(capsys, "list", "--json")[1])}
    assert listed["b"]["web_ports"] == {"web-terminal": 7703} and listed["plain"]["web_ports"] == {}


def test_a_given_web_port_another_drone_holds_is_refused(world: World, capsys) -> None:
    assert devbox(capsys, "create", "a", "--with", "web-terminal")[0] == 0
    code, _, err = devbox(capsys, "create", "b", "--with", "web-terminal", "--web-ports", "web-terminal:7701")
    # taken at the check under the claims lock: the user's port is never silently changed
    assert code == ExitCode.EXISTS and "--web-ports web-terminal:7701 is drone a's" in err
    assert not (world.paths.quadlet_dir / "drone-b.container").exists()


def test_web_ports_without_the_service_are_refused(world: World, capsys) -> None:
    code, _, err = devbox(capsys, "create", "a", "--web-ports", "web-terminal:7701")
    assert code == ExitCode.INVALID_INPUT and "--web-ports needs a web service" in err
    code, _, err = devbox(capsys, "create", "a", "--with", "web-terminal", "--web-ports", "web-terminal:70000")
    assert code == ExitCode.INVALID_INPUT and err.count("\n") == 1
    code, _, err = devbox(capsys, "create", "a", "--with", "web-terminall")
    assert code == ExitCode.INVALID_INPUT and "unknown service 'web-terminall'" in err
    assert world.files() == []


def test_every_port_is_taken(world: World, capsys, monkeypatch) -> None:
    from devbox.commands import lifecycle

    monkeypatch.setattr(lifecycle, "port_free", lambda port: port < web.FIRST_PORT)
    code, _, err = devbox(capsys, "create", "a", "--with", "web-terminal")
    assert code == ExitCode.LIMIT and "no free port for web-terminal in 7701-7999" in err
    assert not (world.paths.quadlet_dir / "drone-a.container").exists()


# --- devbox open NAME terminal ---


def test_open_prints_the_url_and_the_password_only_when_asked(world: World, capsys) -> None:
    import getpass

    assert devbox(capsys, "create", "a", "--with", "web-terminal")[0] == 0
    world.probe.passwords[("drone-a", "web-terminal")] = PASSWORD
    code, out, _ = devbox(capsys, "open", "a", "terminal")
    assert code == 0 and "http://127.0.0.1:7701/" in out.splitlines()[0]
    assert PASSWORD not in out and "devbox open a terminal --password" in out
    assert not [c for c in world.probe.calls if c.startswith("web_password")]  # not even asked for

    code, out, _ = devbox(capsys, "open", "a", "terminal", "--password")
    assert code == 0 and f"password  {PASSWORD}\n" in out + "\n"
    data = json.loads(devbox(capsys, "open", "a", "terminal", "--json")[1])
    assert data == {
        "drone": "a",
        "service": "web-terminal",
        "url": "http://127.0.0.1:7701/",
        "tailnet_url": None,
        "user": getpass.getuser(),
    }
    data = json.loads(devbox(capsys, "open", "a", "terminal", "--json", "--password")[1])
    assert data["password"] == PASSWORD
    assert all(PASSWORD not in text for text in world.probe.calls)


def test_code_server_and_the_web_terminal_side_by_side(world: World, capsys) -> None:
    code, _, err = devbox(capsys, "create", "a", "--with", "web-terminal", "--with", "code-server")
    assert code == 0, err
    unit = (world.paths.quadlet_dir / "drone-a.container").read_text()
    assert "Environment=DEVBOX_WEB=code-server:8080,web-terminal:7681\n" in unit
    assert "PublishPort=127.0.0.1:7701:8080\n" in unit and "PublishPort=127.0.0.1:7702:7681\n" in unit
    world.probe.passwords[("drone-a", "code-server")] = PASSWORD
    data = json.loads(devbox(capsys, "open", "a", "code", "--json", "--password")[1])
    assert (data["service"], data["url"], data["password"]) == ("code-server", "http://127.0.0.1:7701/", PASSWORD)
    assert json.loads(devbox(capsys, "open", "a", "terminal", "--json")[1])["url"] == "http://127.0.0.1:7702/"
    status = json.loads(devbox(capsys, "status", "a", "--json")[1])
    assert status["with"] == ["code-server", "web-terminal"]


def test_open_on_a_tailnet_gives_the_tailnet_url_too(world: World, capsys) -> None:
    world.paths.config_file.parent.mkdir(parents=True, exist_ok=True)
    world.paths.config_file.write_text('[tailscale]\nauth_key = "env:TS_KEY"\ntailnet = "tail1234.ts.net"\n')
    os.environ["TS_KEY"] = "tskey-auth-test"
    try:
        assert devbox(capsys, "create", "a", "--with", "web-terminal")[0] == 0
    finally:
        del os.environ["TS_KEY"]
    data = json.loads(devbox(capsys, "open", "a", "terminal", "--json")[1])
    assert data["tailnet_url"] == "http://a.tail1234.ts.net:7681/" and data["url"] == "http://127.0.0.1:7701/"
    assert devbox(capsys, "open", "a", "3000")[1] == "http://a.tail1234.ts.net:3000/\n"  # a port: as before


def test_open_refuses_what_the_drone_has_not(world: World, capsys) -> None:
    assert devbox(capsys, "create", "plain")[0] == 0
    code, _, err = devbox(capsys, "open", "plain", "terminal")
    assert code == ExitCode.CONFLICT and "was not made --with web-terminal" in err
    code, _, err = devbox(capsys, "open", "plain", "desktop")
    assert code == ExitCode.INVALID_INPUT and "a PORT or one of: code, terminal" in err
    assert devbox(capsys, "create", "a", "--with", "web-terminal")[0] == 0
    code, _, err = devbox(capsys, "open", "a", "terminal", "--password")  # the drone cannot tell: not running
    assert code == ExitCode.PODMAN and "cannot read the web-terminal password from drone a" in err


# --- restore ---


def test_restore_keeps_the_ports_and_a_copy_beside_the_original_gets_its_own(world: World, capsys, tmp_path) -> None:
    from tests.unit.test_backup import make_drone, unit_text

    make_drone(world, capsys, "app", "--with", "web-terminal", "--web-ports", "web-terminal:7750")
    assert devbox(capsys, "backup", "app", "-o", str(tmp_path / "app.tar"))[0] == 0
    code, _, err = devbox(capsys, "restore", str(tmp_path / "app.tar"), "--name", "copy")
    assert code == 0, err
    copy = unit_text(world, "copy")
    assert "Label=io.devbox.web-ports=web-terminal:7701\n" in copy and "Label=io.devbox.with=web-terminal\n" in copy
    assert devbox(capsys, "destroy", "app", "--yes")[0] == 0
    assert devbox(capsys, "restore", str(tmp_path / "app.tar"))[0] == 0
    restored = unit_text(world, "app")
    assert "PublishPort=127.0.0.1:7750:7681\n" in restored and "Network=pasta:--host-lo-to-ns-lo\n" in restored


# --- the password: read through the drone, never in argv, units, labels ---


def test_the_probe_reads_the_password_from_the_exec_s_output_alone(tmp_path: Path) -> None:
    """A stand-in podman records its argv and answers like the drone's init."""
    calls = tmp_path / "argv"
    fake = tmp_path / "podman"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" >> {calls}\necho {PASSWORD}\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    assert PodmanProbe(str(fake)).web_password("drone-a", "web-terminal") == PASSWORD
    argv = calls.read_text().splitlines()
    assert argv == ["exec", "drone-a", "devbox-drone-init", "web-password", "web-terminal"]
    assert parse_password("two\nlines\n") is None and parse_password("\n") is None
    assert parse_password("caf\u00e9") is None and parse_password(f"{PASSWORD}\n") == PASSWORD


def test_the_password_is_in_no_file_devbox_writes(world: World, capsys) -> None:
    world.probe.passwords[("drone-a", "web-terminal")] = PASSWORD
    assert devbox(capsys, "create", "a", "--with", "web-terminal")[0] == 0
    assert devbox(capsys, "open", "a", "terminal", "--password")[0] == 0
    written = [Path(p) for p in world.leftovers()]
    root = world.paths.quadlet_dir.parent.parent
    texts = [(p if p.is_absolute() else root / p).read_text(errors="replace") for p in written]
    assert texts and all(PASSWORD not in text for text in texts)
    assert all(PASSWORD not in call for call in world.systemd.calls + world.podman.calls)
