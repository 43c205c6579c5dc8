"""The credential broker's state in `status` and `doctor`, from systemd's own words.

The `systemctl show` outputs below were recorded in the e2e machine (systemd 257) with devbox's
properties, for a drone whose broker was driven into its start limit by a broken config: one
connection is enough, since with Accept=no the connection stays queued and re-triggers the
failing service until systemd gives up. Seen there: the service keeps its last run's Result
(exit-code) and only the socket says service-start-limit-hit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devbox.commands import doctor
from devbox.commands.brokerstate import broker_state
from devbox.host.systemd import parse_show
from tests.fakes import World
from tests.unit.test_cli import devbox
from tests.unit.test_doctor import READY, FakeHost

UNITS = ["drone-probe-creds.socket", "drone-probe-creds.service"]
SHOW = "systemctl --user show --timestamp=unix --property=Id,LoadState,ActiveState,SubState,NRestarts,ActiveEnterTimestamp,Result -- drone-probe-creds.socket drone-probe-creds.service"  # noqa: E501

START_LIMIT_HIT = """Result=service-start-limit-hit
Id=drone-probe-creds.socket
LoadState=loaded
ActiveState=failed
SubState=failed
ActiveEnterTimestamp=@1796062554

Result=exit-code
NRestarts=0
Id=drone-probe-creds.service
LoadState=loaded
ActiveState=failed
SubState=failed
ActiveEnterTimestamp=@1796062557
"""

LISTENING = """Result=success
Id=drone-probe-creds.socket
LoadState=loaded
ActiveState=active
SubState=listening
ActiveEnterTimestamp=@1796062554

Result=success
NRestarts=0
Id=drone-probe-creds.service
LoadState=loaded
ActiveState=inactive
SubState=dead
ActiveEnterTimestamp=
"""

RUNNING = """Result=success
Id=drone-probe-creds.socket
LoadState=loaded
ActiveState=active
SubState=running
ActiveEnterTimestamp=@1796062565

Result=success
NRestarts=0
Id=drone-probe-creds.service
LoadState=loaded
ActiveState=active
SubState=running
ActiveEnterTimestamp=@1796062565
"""

RESET = [
    "systemctl --user reset-failed drone-probe-creds.socket drone-probe-creds.service",
    "systemctl --user start drone-probe-creds.socket",
]


@pytest.mark.parametrize(
    ("recorded", "state", "reset"),
    [(START_LIMIT_HIT, "start-limit-hit", RESET), (LISTENING, "listening", []), (RUNNING, "running", [])],
)
def test_recorded_systemctl_show(recorded: str, state: str, reset: list[str]) -> None:
    broker = broker_state(parse_show(recorded, UNITS), "probe")
    assert broker.state == state
    assert broker.reset_commands() == reset


def test_a_socket_that_failed_for_another_reason_is_failed_and_gets_the_same_reset() -> None:
    recorded = START_LIMIT_HIT.replace("service-start-limit-hit", "resources")
    broker = broker_state(parse_show(recorded, UNITS), "probe")
    assert broker.state == "failed" and broker.reset_commands() == RESET
    assert "drone-probe-creds.socket failed (resources)" in broker.describe()


def test_a_failed_last_run_with_the_socket_listening_is_said_but_needs_no_reset() -> None:
    recorded = LISTENING.replace("Result=success\nNRestarts", "Result=exit-code\nNRestarts").replace(
        "ActiveState=inactive\nSubState=dead", "ActiveState=failed\nSubState=failed"
    )
    broker = broker_state(parse_show(recorded, UNITS), "probe")
    assert broker.state == "listening" and broker.healthy
    assert "its last run failed (exit-code)" in broker.describe()


def test_status_shows_a_start_limit_hit_and_how_to_reset_it(world: World, capsys) -> None:
    assert devbox(capsys, "create", "probe")[0] == 0
    socket, service = UNITS
    world.systemd.failed |= {socket, service}
    world.systemd.results |= {socket: "service-start-limit-hit", service: "exit-code"}
    data = json.loads(devbox(capsys, "status", "probe", "--json")[1])
    assert data["broker"] == {
        "state": "start-limit-hit",
        "socket": {"unit": socket, "state": "failed", "sub_state": "failed", "result": "service-start-limit-hit"},
        "service": {"unit": service, "state": "failed", "sub_state": "failed", "result": "exit-code"},
        "reset": RESET,
    }
    text = devbox(capsys, "status", "probe")[1]
    assert "start limit hit" in text and "journalctl --user -u drone-probe-creds.service" in text
    for command in RESET:
        assert command in text
    # After the reset: the socket listens again, and status says so with nothing to fix.
    world.systemd.reset_failed(socket)
    world.systemd.reset_failed(service)
    world.systemd.start(socket)
    data = json.loads(devbox(capsys, "status", "probe", "--json")[1])
    assert data["broker"]["state"] == "listening" and data["broker"]["reset"] == []
    assert "fix broker" not in devbox(capsys, "status", "probe")[1]


def host_with(recorded: str | None) -> FakeHost:
    commands = dict(READY.commands)
    if recorded is not None:
        commands[SHOW] = (0, recorded)
    host = FakeHost(commands, READY.files, Path("/usr/libexec/podman/quadlet"))
    host.drone_names = lambda: ["probe"]  # type: ignore[method-assign]
    return host


def test_doctor_fails_on_a_start_limit_hit_and_gives_the_reset() -> None:
    check = {c.name: c for c in doctor.run_checks(host_with(START_LIMIT_HIT))}["credential brokers"]
    assert check.status == "fail"
    assert "drone probe's broker: start limit hit" in check.detail
    assert check.fix == "find the cause with journalctl --user -u drone-probe-creds.service, then " + " && ".join(RESET)


def test_doctor_is_content_with_listening_brokers_and_says_when_it_cannot_ask() -> None:
    check = {c.name: c for c in doctor.run_checks(host_with(LISTENING))}["credential brokers"]
    assert (check.status, check.detail) == ("ok", "1 drone(s): none failed")
    check = {c.name: c for c in doctor.run_checks(host_with(None))}["credential brokers"]
    assert check.status == "warn" and "systemctl show failed" in check.detail


def test_doctor_tells_a_key_proxy_systemd_gave_up_on_beside_a_listening_broker() -> None:
    keys = START_LIMIT_HIT.replace("creds", "keys")
    host = host_with(None)
    host.commands[SHOW.replace("creds.service", "creds.service drone-probe-keys.socket drone-probe-keys.service")] = (
        0,
        LISTENING + "\n" + keys,
    )
    host.drones_with_keys = lambda: ["probe"]  # type: ignore[method-assign]
    check = {c.name: c for c in doctor.run_checks(host)}["credential brokers"]
    assert check.status == "fail"
    assert check.detail == (
        "drone probe's key proxy: start limit hit: the key proxy failed too often and systemd no longer starts it; "
        "its last run failed (exit-code)"
    )
    assert check.fix.startswith("find the cause with journalctl --user -u drone-probe-keys.service, then ")


def test_status_and_start_know_the_key_proxy_of_a_drone_with_keys(world: World, capsys, monkeypatch) -> None:
    from tests.unit.test_apikeys import KEY, write_config

    monkeypatch.setenv("ANTHROPIC_KEY", KEY)
    write_config(world, '[keys.anthropic]\nsecret = "env:ANTHROPIC_KEY"\n')
    assert devbox(capsys, "create", "probe", "--key", "anthropic", "--no-devcontainer")[0] == 0
    socket, service = "drone-probe-keys.socket", "drone-probe-keys.service"
    world.systemd.failed |= {socket, service}
    world.systemd.results |= {socket: "service-start-limit-hit", service: "exit-code"}
    status = json.loads(devbox(capsys, "status", "probe", "--json")[1])
    assert status["key_proxy"]["state"] == "start-limit-hit"
    assert status["key_proxy"]["reset"][0] == f"systemctl --user reset-failed {socket} {service}"
    assert status["broker"]["state"] != "start-limit-hit"
    text = devbox(capsys, "status", "probe")[1]
    assert "key proxy" in text and "fix key proxy" in text
    world.systemd.calls.clear()
    assert devbox(capsys, "start", "probe")[0] == 0
    assert [unit for call, unit in world.systemd.calls if call == "reset-failed"] == [socket, service]


@pytest.mark.parametrize("command", ["start", "restart"])
def test_start_and_restart_reset_a_broker_systemd_gave_up_on(world: World, capsys, command: str) -> None:
    assert devbox(capsys, "create", "probe")[0] == 0
    socket, service = UNITS
    world.systemd.failed |= {socket, service}
    world.systemd.results |= {socket: "service-start-limit-hit", service: "exit-code"}
    world.systemd.calls.clear()
    assert devbox(capsys, command, "probe")[0] == 0
    resets = [unit for call, unit in world.systemd.calls if call == "reset-failed"]
    assert resets == [socket, service]
    assert world.systemd.calls.index(("reset-failed", service)) < world.systemd.calls.index(
        (command, "drone-probe.service")
    )


def test_a_healthy_broker_is_left_alone(world: World, capsys) -> None:
    assert devbox(capsys, "create", "probe")[0] == 0
    world.systemd.calls.clear()
    assert devbox(capsys, "restart", "probe")[0] == 0
    assert not any(call == "reset-failed" for call, _ in world.systemd.calls)
