"""Turning results into what people and scripts read: JSON-ready dicts and plain tables.

Field names in `status_dict` are a stable interface (documented in the README).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from devbox.commands.inventory import DroneStatus
from devbox.names import DRONE_SSH_PORT

if TYPE_CHECKING:
    from devbox.commands.brokerstate import BrokerState
    from devbox.host.systemd import UnitState


def _iso(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def status_dict(status: DroneStatus, now: datetime) -> dict[str, Any]:
    return {
        "name": status.name,
        "state": status.state,
        "unit": status.unit,
        "unit_state": status.unit_state,
        "unit_sub_state": status.unit_sub_state,
        "container_state": status.container_state,
        "image": status.image,
        "repos": status.repos,
        "created": status.created,
        "started": _iso(status.started) if status.state == "running" else None,
        "uptime_seconds": status.uptime_seconds(now),
        "restarts": status.restarts,
        "ports": status.ports,
        "volume": status.volume,
        "volume_exists": status.volume_exists,
        "autostart": status.autostart,
        "ssh": address(status),
        "local_ssh": f"127.0.0.1:{status.ssh_port}" if status.ssh_port else None,
        "ssh_command": ssh_command(status),
        "tailscale": status.tailnet_name is not None,
        "tailnet_name": status.tailnet_name,
        "syncthing": status.syncthing,
        "syncthing_device_id": status.syncthing_id,
        "workspace": status.workspace,
        "dotfiles": status.dotfiles,
        "dotfiles_outcome": status.dotfiles_outcome,
        "killed_for_memory": status.killed_for_memory,
        "broker": None if status.broker is None else broker_dict(status.broker),
    }


def broker_dict(broker: BrokerState) -> dict[str, Any]:
    """The credential broker's units as systemd reports them, and how to reset them when stuck."""
    return {
        "state": broker.state,
        "socket": _unit_dict(broker.socket),
        "service": _unit_dict(broker.service),
        "reset": broker.reset_commands(),
    }


def _unit_dict(unit: UnitState) -> dict[str, Any]:
    return {"unit": unit.name, "state": unit.active_state, "sub_state": unit.sub_state, "result": unit.result}


def address(status: DroneStatus) -> str | None:
    """HOST:PORT of the drone's sshd for your machines: its tailnet name, else the published local port."""
    if status.tailnet_name:
        return f"{status.tailnet_name}:{DRONE_SSH_PORT}"
    return f"127.0.0.1:{status.ssh_port}" if status.ssh_port else None


def ssh_command(status: DroneStatus) -> str | None:
    return f"devbox ssh {status.name}" if address(status) else None


def duration(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in [headers, *rows]
    ]
    return "\n".join(lines)


_STATE_COLOURS = {"running": "32", "starting": "33", "stopping": "33", "stopped": "2", "failed": "31;1"}


def paint(text: str, state: str, colour: bool) -> str:
    code = _STATE_COLOURS.get(state, "35")
    return f"\x1b[{code}m{text}\x1b[0m" if colour else text


def list_table(statuses: Sequence[DroneStatus], now: datetime, colour: bool = False) -> str:
    rows = [
        [
            s.name,
            s.state,
            duration(s.uptime_seconds(now)),
            s.image,
            ",".join(s.repos) or "-",
            address(s) or "-",
        ]
        for s in statuses
    ]
    text = table(["NAME", "STATE", "UPTIME", "IMAGE", "REPOS", "SSH"], rows)
    if not colour:
        return text
    lines = text.split("\n")
    for index, status in enumerate(statuses, start=1):  # colour after padding, so columns stay aligned
        start = lines[index].index(status.state, len(status.name))
        end = start + len(status.state)
        lines[index] = lines[index][:start] + paint(status.state, status.state, True) + lines[index][end:]
    return "\n".join(lines)


def status_text(status: DroneStatus, now: datetime, flavor: str = "plain") -> str:
    data = status_dict(status, now)
    lines = [
        ("drone", status.name),
        ("state", f"{status.state} (unit {status.unit}: {status.unit_state}/{status.unit_sub_state})"),
        ("container", status.container_state or "none"),
        ("image", status.image),
        ("repos", ", ".join(status.repos) or "-"),
        ("created", status.created or "-"),
        ("uptime", duration(data["uptime_seconds"])),
        ("restarts", "-" if status.restarts is None else str(status.restarts)),
        ("ports", ", ".join(status.ports) or "-"),
        (
            "volume",
            f"{status.volume}"
            + ("" if status.volume_exists is None else (" (exists)" if status.volume_exists else " (not created yet)")),
        ),
        ("autostart", "yes" if status.autostart else "no (stopped with devbox stop)"),
        ("ssh", f"{address(status)} ({ssh_command(status)})" if address(status) else "-"),
        *([("local ssh", f"127.0.0.1:{status.ssh_port}")] if status.tailnet_name and status.ssh_port else []),
        ("tailnet", status.tailnet_name or "no (SSH on the local port only)"),
    ]
    if status.killed_for_memory:
        memory = "killed for memory: give it more with --memory, or use less"
        lines.append(("last exit", f"Nuclear launch detected. ({memory})" if flavor == "zerg" else memory))
    if status.workspace:
        lines.append(("workspace", status.workspace))
    if status.dotfiles:
        lines.append(("dotfiles", f"{status.dotfiles}: {status.dotfiles_outcome or 'not run yet'}"))
    if status.syncthing:
        lines.append(("syncthing", status.syncthing_id or "device ID not available (is the drone running?)"))
    if status.broker is not None:
        lines.extend(broker_lines(status.broker))
    width = max(len(k) for k, _ in lines)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in lines)


def broker_lines(broker: BrokerState) -> list[tuple[str, str]]:
    lines = [("broker", broker.describe())]
    if broker.reset_commands():
        lines.append(("fix broker", f"find the cause with {broker.journal_command()}, then"))
        lines.extend(("", command) for command in broker.reset_commands())
    return lines


def colour_wanted() -> bool:
    """Colour on a terminal, never when piped or when NO_COLOR is set (https://no-color.org)."""
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def list_output(statuses: Sequence[DroneStatus], now: datetime, as_json: bool, colour: bool) -> str:
    """What `devbox list` prints, whichever way it was started (cli.py or fastpath.py)."""
    if as_json:
        return json.dumps([status_dict(s, now) for s in statuses], indent=2, sort_keys=False)
    if statuses:
        return list_table(statuses, now, colour=colour)
    return "no drones yet: devbox create NAME --repo ORG/REPO"
