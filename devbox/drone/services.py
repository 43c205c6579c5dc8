"""The optional services a drone runs beside its sshd, chosen with `--with NAME` or `[drone] with`.

Declared once, here: the drone's init starts each one it finds in DEVBOX_WITH (templates/image/
devbox-drone-init, the contract of templates/image/CONTRACT.md), so a devcontainer-built drone
gets them too. A name not in SERVICES is refused. `syncthing` is the older `--with-syncthing`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from devbox.errors import invalid
from devbox.values import printable

SYNCTHING = "syncthing"  # kept as its own field and label (DroneSpec.syncthing), for older drones
MOSH = "mosh"  # mosh-server, started over SSH by the client (no daemon); UDP ports in drone/mosh.py
CONTAINERS = "containers"  # rootless Podman in the drone (DroneSpec.containers; README "Containers in a drone")


@dataclass(frozen=True)
class Service:
    name: str
    summary: str  # one line for --help and the README


SERVICES: dict[str, Service] = {
    service.name: service
    for service in (
        Service(SYNCTHING, "file sync with your other machines (as --with-syncthing)"),
        Service(MOSH, "mosh, the shell for flaky links: devbox mosh NAME (UDP ports published like SSH)"),
        Service(CONTAINERS, "rootless Podman in the drone, with a Docker-compatible socket (docker, docker compose)"),
    )
}


def validate_services(names: Iterable[str]) -> tuple[str, ...]:
    """Known service names, each once, in a stable order; one line naming the known ones otherwise."""
    chosen = set()
    for name in names:
        if name not in SERVICES:
            known = ", ".join(sorted(SERVICES))
            shown = repr(name) if printable(name) else "(a name with invisible characters)"
            raise invalid(f"unknown service {shown} for --with: known are {known}")
        chosen.add(name)
    return tuple(sorted(chosen))
