"""A credential broker driven into systemd's start limit, as `status` and `doctor` report it, and
the reset they print, run for real (systemd 257 in the machine)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.helpers import PLAIN_CONFIG, Devbox, wait_for, write_config

SOCKET, SERVICE = "drone-limit-creds.socket", "drone-limit-creds.service"
POKE = (
    "python3 -c 'import socket, sys; s = socket.socket(socket.AF_UNIX); s.settimeout(3); s.connect(sys.argv[1]); "
    "s.recv(1)' $XDG_RUNTIME_DIR/devbox/drones/limit/creds.sock"
)


@pytest.fixture(params=["systemctl", "pystemd"])  # the socket's Result comes through either backend
def box(machine, request: pytest.FixtureRequest) -> Iterator[Devbox]:
    devbox = Devbox(machine, request.param)
    write_config(machine)
    devbox.run("create", "limit")
    try:
        yield devbox
    finally:
        write_config(machine)
        devbox.run("destroy", "limit", "--yes", check=False)


def test_a_broker_in_its_start_limit_is_reported_and_the_printed_reset_works(box: Devbox, machine) -> None:
    wait_for(lambda: box.is_active(SOCKET) == "active", 30, "the credential socket")
    # A broker that fails at once (a config it cannot read): one queued connection re-triggers it until
    # systemd stops starting it.
    write_config(machine, "this is [not toml\n")
    box.sh(POKE, check=False)
    wait_for(lambda: box.unit_property(SOCKET, "Result") == "service-start-limit-hit", 30, "the start limit")
    write_config(machine, PLAIN_CONFIG)

    broker = box.json("status", "limit")["broker"]
    assert broker["state"] == "start-limit-hit", broker
    assert broker["socket"]["state"] == "failed" and broker["socket"]["result"] == "service-start-limit-hit"
    assert broker["service"]["state"] == "failed"
    assert broker["reset"] == [
        f"systemctl --user reset-failed {SOCKET} {SERVICE}",
        f"systemctl --user start {SOCKET}",
    ]
    text = box.run("status", "limit").stdout
    assert "start limit hit" in text and broker["reset"][0] in text
    doctor = box.run("doctor", check=False)
    assert doctor.returncode != 0 and "FAIL  credential brokers: drone limit's broker: start limit hit" in doctor.stdout
    # The reset, run as printed: the socket listens again and the next request starts the broker.
    for command in broker["reset"]:
        box.sh(command)
    assert box.json("status", "limit")["broker"]["state"] == "listening"
    box.sh(POKE, check=False)
    wait_for(lambda: box.is_active(SERVICE) == "active", 30, "the broker started by a request")
    assert box.json("status", "limit")["broker"]["state"] == "running"
    assert "credential brokers: 1 drone(s): none failed" in box.run("doctor", check=False).stdout
