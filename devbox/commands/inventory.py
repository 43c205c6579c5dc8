"""What drones there are and what state they are in: read, never changed.

`find_drones` reads the Quadlet directory alone; `list_drones` adds one systemd query and
one Podman query, however many drones there are. `devbox list` imports this module and
little else (see cli/fastpath.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from devbox.names import names_of, tailnet_name
from devbox.units.installed import DroneRecord, find_drones

if TYPE_CHECKING:
    from devbox.commands.brokerstate import BrokerState
    from devbox.context import Context
    from devbox.host.podman import ContainerInfo
    from devbox.host.systemd import UnitState


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
    services: tuple[str, ...]  # --with
    tailnet_name: str | None = None  # the drone's name on the tailnet, when it joins one
    syncthing_id: str | None = None  # asked of a running drone by `status` only
    workspace: str | None = None  # the host directory of --path
    dotfiles: str | None = None  # the dotfiles URL
    dotfiles_outcome: str | None = None  # asked of a running drone by `status` only
    devcontainer: str | None = None  # the repository's devcontainer.json the drone is built from
    devcontainer_outcome: str | None = None  # its lifecycle hooks' last run, asked by `status` only
    devcontainer_changed: bool | None = None  # its configuration changed since the build (None: unknown)
    compose_outcome: str | None = None  # a compose-based one's other services: the init's last `up`, by `status`
    killed_for_memory: bool = False  # its last run ended with the kernel's OOM killer (systemd's Result)
    broker: BrokerState | None = None  # its credential socket and service, asked by `status` only
    keys: list[str] = field(default_factory=list)  # model API keys the host's key proxy sets for it
    key_proxy: BrokerState | None = None  # with keys: the key proxy's socket and service, asked by `status` only
    egress: str = "open"  # its egress policy (drone/egress.py)
    mosh_ports: tuple[int, int] | None = None  # --with mosh: its UDP range on 127.0.0.1
    web_ports: tuple[tuple[str, int], ...] = ()  # (web service, its port on 127.0.0.1): drone/web.py

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


def status_of(
    record: DroneRecord,
    unit: UnitState,
    container: ContainerInfo | None,
    volume_exists: bool | None,
    tailnet: str | None = None,
) -> DroneStatus:
    declared = record.declared
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
        ssh_port=declared.ssh_port,
        syncthing=declared.syncthing,
        services=declared.services,
        mosh_ports=declared.mosh_ports,
        web_ports=declared.web_ports,
        tailnet_name=tailnet_name(record.name, tailnet) if declared.tailscale else None,
        workspace=declared.path,
        dotfiles=declared.dotfiles_url,
        devcontainer=declared.devcontainer,
        killed_for_memory=unit.result == "oom-kill",
        keys=list(declared.keys),
        egress=declared.egress,
    )


def list_drones(ctx: Context) -> list[DroneStatus]:
    """All drones: one directory read, one systemd query, one Podman query, however many drones."""
    records = find_drones(ctx.paths)
    if not records:
        return []
    services = [names_of(name).service for name in records]
    states = ctx.systemd.states(services)
    containers = ctx.podman.drone_containers()
    on_tailnet = any(record.declared.tailscale for record in records.values())
    tailnet = ctx.config.tailscale.tailnet if on_tailnet else None
    return [
        status_of(record, states[names_of(name).service], containers.get(name), None, tailnet)
        for name, record in records.items()
    ]
