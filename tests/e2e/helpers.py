"""Small helpers for end-to-end tests: conditions with timeouts, JSON from the guest."""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable
from typing import Any

TEST_IMAGE = "localhost/devbox-test:latest"
PLAIN_CONFIG = f'[drone]\nimage = "{TEST_IMAGE}"\n'


def write_config(machine: Any, text: str = PLAIN_CONFIG) -> None:
    """dev's ~/.config/devbox/config.toml in the guest (by default: drones from the test image)."""
    machine.user("mkdir -p ~/.config/devbox && cat > ~/.config/devbox/config.toml", input=text)


def secret_places(box: Devbox, drone: str) -> dict[str, str]:
    """Everywhere a secret must never show up, for one drone: the text of each place by name."""
    return {
        "systemctl show": box.sh(f"systemctl --user show 'drone-{drone}*'").stdout,
        "podman inspect": box.sh(f"podman inspect drone-{drone}").stdout,
        "unit and devbox files": box.sh(
            "find ~/.config/containers/systemd ~/.config/systemd/user ~/.local/share/devbox -type f -exec cat {} +"
        ).stdout,
        "ps with environments": box.machine.root("ps auxwwe").stdout,
        "the drone's environment": box.sh(f"podman exec drone-{drone} sh -c 'cat /proc/1/environ; env'").stdout,
        "user journal": box.sh("journalctl --user --no-pager").stdout,
        "system journal": box.machine.root("journalctl --no-pager").stdout,
    }


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    """Poll `condition` until it holds; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def q(*words: str) -> str:
    return " ".join(shlex.quote(w) for w in words)


# curl's headers for a websocket upgrade: a web service answers 101, or refuses it (401, 403).
WEBSOCKET_UPGRADE = (
    "-H 'Connection: Upgrade' -H 'Upgrade: websocket' -H 'Sec-WebSocket-Version: 13' "
    "-H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=='"
)


class Devbox:
    """devbox inside the machine as user dev, with one systemd backend."""

    def __init__(self, machine: Any, backend: str) -> None:
        self.machine = machine
        self.backend = backend

    def run(self, *args: str, check: bool = True, timeout: float = 300, input: str | None = None):
        return self.machine.user(
            f"DEVBOX_SYSTEMD={self.backend} devbox {q(*args)}", check=check, timeout=timeout, input=input
        )

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--json").stdout)

    def sh(self, command: str, check: bool = True, timeout: float = 120):
        return self.machine.user(command, check=check, timeout=timeout)

    def in_drone(self, drone: str, command: str, check: bool = True, timeout: float = 60):
        """COMMAND run by bash in drone DRONE as its user (`podman exec`), no terminal, no input."""
        return self.sh(f"podman exec drone-{drone} bash -c {shlex.quote(command)} </dev/null", check, timeout)

    def unit_property(self, unit: str, prop: str) -> str:
        return self.sh(f"systemctl --user show -p {prop} --value {q(unit)}").stdout.strip()

    def is_active(self, unit: str) -> str:
        return self.sh(f"systemctl --user is-active {q(unit)}", check=False).stdout.strip()

    def podman_json(self, *args: str) -> Any:
        return json.loads(self.sh(q("podman", *args, "--format", "json")).stdout or "null")

    def container_exists(self, name: str) -> bool:
        return self.sh(q("podman", "container", "exists", name), check=False).returncode == 0

    def volume_exists(self, name: str) -> bool:
        return self.sh(q("podman", "volume", "exists", name), check=False).returncode == 0
