"""What state a drone's credential broker is in, as systemd reports its socket and service units.

The broker is socket-activated: drone-NAME-creds.socket listens, and a connection starts
drone-NAME-creds.service. When the service fails too often in a row, systemd stops starting it
(the service's Result is start-limit-hit) and takes the socket down with it (the socket's Result
is service-start-limit-hit): the drone's git and gh get no tokens until someone resets both
units and starts the socket again. `status` and `doctor` say so, with the commands.

A drone with model API keys has a second such pair, its key proxy (drone-NAME-keys.socket and
.service): the same states, told with the same words.
"""

from __future__ import annotations

from dataclasses import dataclass

from devbox.host.systemd import UnitState
from devbox.names import names_of

# systemd's Result values that mean "no more starts until reset-failed".
START_LIMIT_RESULTS = ("start-limit-hit", "service-start-limit-hit", "trigger-limit-hit")


@dataclass(frozen=True)
class BrokerState:
    socket: UnitState
    service: UnitState
    role: str = "broker"  # what the pair is, in `status` and `doctor`: broker or key proxy

    @property
    def state(self) -> str:
        """missing, stopped, listening, running, failed or start-limit-hit."""
        socket, service = self.socket, self.service
        if not socket.exists:
            return "missing"
        failed = [unit for unit in (socket, service) if unit.active_state == "failed"]
        if any(unit.result in START_LIMIT_RESULTS for unit in failed):
            return "start-limit-hit"
        if socket.active_state == "failed":
            return "failed"
        if service.active_state in ("active", "activating", "reloading", "deactivating"):
            return "running"
        if socket.active_state == "active":
            return "listening"
        return "stopped"

    @property
    def healthy(self) -> bool:
        """Nothing to fix: stopped counts (the drone is stopped; it starts the socket again)."""
        return self.state in ("listening", "running", "stopped")

    @property
    def last_failure(self) -> str | None:
        """The service's last Result when its last run failed (the socket still listens)."""
        result = self.service.result
        return result if self.service.active_state == "failed" and result not in (None, "success") else None

    def reset_commands(self) -> list[str]:
        """What brings the broker back once the cause is fixed (see its journal)."""
        if self.healthy:
            return []
        return [
            f"systemctl --user reset-failed {self.socket.name} {self.service.name}",
            f"systemctl --user start {self.socket.name}",
        ]

    def describe(self) -> str:
        """One line for `status` and `doctor`."""
        text = {
            "missing": f"{self.socket.name} is not loaded",
            "stopped": "stopped (it starts with the drone)",
            "listening": f"listening (the {self.role} starts on the first request)",
            "running": "running",
            "failed": f"{self.socket.name} failed ({self.socket.result or 'no result'})",
            "start-limit-hit": f"start limit hit: the {self.role} failed too often and systemd no longer starts it",
        }[self.state]
        if self.state in ("listening", "running", "start-limit-hit") and self.last_failure:
            text += f"; its last run failed ({self.last_failure})"
        return text

    def journal_command(self) -> str:
        return f"journalctl --user -u {self.service.name}"


def broker_units(name: str) -> tuple[str, str]:
    names = names_of(name)
    return names.creds_socket, names.creds_service


def key_proxy_units(name: str) -> tuple[str, str]:
    names = names_of(name)
    return names.keys_socket, names.keys_service


def broker_state(states: dict[str, UnitState], name: str) -> BrokerState:
    return _pair_state(states, broker_units(name), "broker")


def key_proxy_state(states: dict[str, UnitState], name: str) -> BrokerState:
    return _pair_state(states, key_proxy_units(name), "key proxy")


def _pair_state(states: dict[str, UnitState], units: tuple[str, str], role: str) -> BrokerState:
    socket, service = units
    return BrokerState(
        states.get(socket) or UnitState.missing(socket), states.get(service) or UnitState.missing(service), role
    )
