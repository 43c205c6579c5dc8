"""What drones there are and what state they are in: read, never changed.

`find_drones` reads the Quadlet directory alone; `list_drones` adds one systemd query and
one Podman query, however many drones there are. `devbox list` imports this module and
little else (see fastpath.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from devbox.errors import DevboxError, ExitCode
from devbox.names import names_of
from devbox.paths import Paths
from devbox.units import unitfile
from devbox.values import is_name

if TYPE_CHECKING:
    from devbox.context import Context
    from devbox.host.podman import ContainerInfo
    from devbox.host.systemd import UnitState


@dataclass(frozen=True)
class DroneRecord:
    """A drone as its unit file declares it."""

    name: str
    path: Path
    labels: dict[str, str]
    image: str
    autostart: bool
    damaged: str | None = None  # why its unit cannot be read as Quadlet reads it: no labels are trusted

    @property
    def repos(self) -> list[str]:
        return [r for r in self.labels.get("repos", "").split(",") if r]


def find_drones(paths: Paths) -> dict[str, DroneRecord]:
    """Every drone devbox wrote, from the Quadlet directory alone (one directory read)."""
    drones: dict[str, DroneRecord] = {}
    if not paths.quadlet_dir.is_dir():
        return drones
    for path in sorted(paths.quadlet_dir.glob("drone-*.container")):
        record = _read_record(paths, path)
        if record is not None:
            drones[record.name] = record
    return drones


def _read_record(paths: Paths, path: Path) -> DroneRecord | None:
    """The drone PATH declares; None for a file devbox did not write. One drone's damaged
    unit is reported as that drone, damaged, never as an error for every drone."""
    name = path.name.removeprefix("drone-").removesuffix(".container")
    if not is_name(name):
        return None
    autostart = (paths.quadlet_dir / names_of(name).autostart_dropin).is_file()
    try:
        with path.open("rb") as file:
            data = file.read()
    except OSError:
        return None
    if not data.startswith(unitfile.MARKER.encode()):
        return None
    try:
        text = data.decode("utf-8")
        labels, image = unitfile.labels(text), unitfile.image(text) or ""
    except (UnicodeDecodeError, unitfile.UnitFileError) as exc:
        reason = "not UTF-8" if isinstance(exc, UnicodeDecodeError) else str(exc)
        return DroneRecord(name, path, {}, "", autostart, damaged=reason)
    if labels.get("drone") != name:
        return DroneRecord(name, path, {}, "", autostart, damaged="its io.devbox.drone label is not its name")
    return DroneRecord(name, path, labels, image, autostart)


def damaged_error(record: DroneRecord) -> DevboxError:
    return DevboxError(
        f"drone {record.name} is damaged: {record.path}: {record.damaged}; devbox destroy {record.name} removes it",
        ExitCode.DAMAGED,
    )


def require_drone(paths: Paths, name: str, *, damaged_ok: bool = False) -> DroneRecord:
    """Drone NAME, readable (a damaged one only with DAMAGED_OK: destroy removes it by name)."""
    record = find_drones(paths).get(name)
    if record is None:
        raise DevboxError(f"no such drone: {name}", ExitCode.NOT_FOUND)
    if record.damaged is not None and not damaged_ok:
        raise damaged_error(record)
    return record


@dataclass(frozen=True)
class DroneStatus:
    name: str
    state: str  # running, starting, stopping, stopped, failed, missing-unit, damaged (see DroneRecord)
    unit: str
    unit_state: str
    unit_sub_state: str
    container_state: str | None
    image: str
    repos: list[str]
    created: str | None
    started: datetime | None
    restarts: int | None
    ports: list[str]
    volume: str
    volume_exists: bool | None
    autostart: bool
    ssh_port: int | None
    syncthing: bool
    tailnet_name: str | None = None  # the drone's name on the tailnet, when it joins one
    syncthing_id: str | None = None  # asked of a running drone by `status` only
    workspace: str | None = None  # the host directory of --path
    dotfiles: str | None = None  # the dotfiles URL
    dotfiles_outcome: str | None = None  # asked of a running drone by `status` only
    killed_for_memory: bool = False  # its last run ended with the kernel's OOM killer (systemd's Result)

    def uptime_seconds(self, now: datetime) -> int | None:
        return int((now - self.started).total_seconds()) if self.started and self.state == "running" else None


def _summary(unit: UnitState, container: ContainerInfo | None) -> str:
    if not unit.exists:
        return "missing-unit"
    if unit.active_state == "active":
        return "running" if container is not None and container.state == "running" else "starting"
    return {"activating": "starting", "deactivating": "stopping", "failed": "failed", "reloading": "running"}.get(
        unit.active_state, "stopped"
    )


def tailnet_name(name: str, tailnet: str | None) -> str:
    """MagicDNS answers the bare node name on the tailnet; the full name works everywhere."""
    return f"{name}.{tailnet}" if tailnet else name


def status_of(
    record: DroneRecord,
    unit: UnitState,
    container: ContainerInfo | None,
    volume_exists: bool | None,
    tailnet: str | None = None,
) -> DroneStatus:
    port = record.labels.get("ssh-port")
    return DroneStatus(
        name=record.name,
        state="damaged" if record.damaged else _summary(unit, container),
        unit=unit.name,
        unit_state=unit.active_state,
        unit_sub_state=unit.sub_state,
        container_state=container.state if container else None,
        image=container.image if container and container.image else record.image,
        repos=record.repos,
        created=record.labels.get("created"),
        started=(container.started_at if container else None) or unit.active_since,
        restarts=unit.n_restarts,
        ports=list(container.ports) if container else [],
        volume=names_of(record.name).volume,
        volume_exists=volume_exists,
        autostart=record.autostart,
        ssh_port=int(port) if port and port.isdigit() else None,
        syncthing=record.labels.get("syncthing") == "true",
        tailnet_name=tailnet_name(record.name, tailnet) if record.labels.get("tailscale") == "true" else None,
        workspace=record.labels.get("path"),
        dotfiles=record.labels.get("dotfiles"),
        killed_for_memory=unit.result == "oom-kill",
    )


def list_drones(ctx: Context) -> list[DroneStatus]:
    """All drones: one directory read, one systemd query, one Podman query, however many drones."""
    records = find_drones(ctx.paths)
    if not records:
        return []
    services = [names_of(name).service for name in records]
    states = ctx.systemd.states(services)
    containers = ctx.podman.drone_containers()
    on_tailnet = any(record.labels.get("tailscale") == "true" for record in records.values())
    tailnet = ctx.config.tailscale.tailnet if on_tailnet else None
    return [
        status_of(record, states[names_of(name).service], containers.get(name), None, tailnet)
        for name, record in records.items()
    ]
