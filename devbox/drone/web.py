"""The host ports of a drone's web services (drone/services.py: those with `web`), and their URLs.

Each web service of a local drone is published on this server's 127.0.0.1, from FIRST_PORT up, one
port per service, to the port it listens on in the drone (its 127.0.0.1: the unit gives the drone
pasta's --host-lo-to-ns-lo, or a published port would not reach a server bound there). The ports
are the label io.devbox.web-ports (`web-terminal:7701,code-server:7702`), so `restore` keeps them.
Pure functions: nothing here runs a command.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from devbox.drone.services import WEB_SERVICES
from devbox.errors import invalid

FIRST_PORT = 7701
LAST_PORT = 7999
# pasta, for a drone with web services: a connection to a published port from the server's
# loopback arrives on the drone's loopback, where the services listen.
NETWORK = "pasta:--host-lo-to-ns-lo"

WebPorts = tuple[tuple[str, int], ...]  # (service, host port), sorted by service


def format_ports(ports: WebPorts) -> str | None:
    return ",".join(f"{name}:{port}" for name, port in ports) or None


def parse_ports(text: str) -> WebPorts:
    """`web-terminal:7701,...` -> pairs; an item that is not a known web service and a port is left
    out (a damaged label reads as no port for it)."""
    found = {}
    for item in text.split(","):
        name, _, port = item.partition(":")
        if name in WEB_SERVICES and port.isdigit() and 1 <= int(port) <= 65535:
            found[name] = int(port)
    return tuple(sorted(found.items()))


def validate_ports(value: str | Iterable[tuple[str, int]], services: Iterable[str]) -> WebPorts:
    """Ports given for the web services among SERVICES (from --web-ports or a label): each a known
    web service the drone runs, each port once."""
    chosen = set(services)
    pairs: list[tuple[str, int | str]] = []
    if isinstance(value, str):
        for item in value.split(","):
            service, sep, text = item.strip().partition(":")
            if not sep:
                raise invalid(
                    f"invalid --web-ports item {item!r}: expected SERVICE:PORT, for example web-terminal:7701"
                )
            pairs.append((service, text))
    else:
        pairs = list(value)
    found: dict[str, int] = {}
    for name, port in pairs:
        if name not in WEB_SERVICES:
            raise invalid(f"--web-ports: {name!r} is not a web service (known: {', '.join(sorted(WEB_SERVICES))})")
        if name not in chosen:
            raise invalid(f"--web-ports names {name}, which the drone does not run: add --with {name}")
        text = str(port)
        if not text.isdigit() or not 1 <= int(text) <= 65535:
            raise invalid(f"invalid port {text!r} for {name} in --web-ports")
        if name in found or int(text) in found.values():
            raise invalid(f"--web-ports gives {name} or port {text} twice")
        found[name] = int(text)
    return tuple(sorted(found.items()))


def url(host: str, port: int) -> str:
    return f"http://{host}:{port}/"


def drone_ports(services: Iterable[str]) -> tuple[tuple[str, int], ...]:
    """(service, its port in the drone) for the web services among SERVICES: DEVBOX_WEB for the init."""
    return tuple(
        (name, service.web.port) for name in sorted(services) if (service := WEB_SERVICES.get(name)) and service.web
    )


def host_port(ports: WebPorts, service: str) -> int | None:
    return dict(ports).get(service)


def claimed(ports_by_drone: Mapping[str, WebPorts]) -> dict[int, str]:
    """Host port -> the drone that claims it."""
    return {port: drone for drone, ports in ports_by_drone.items() for _, port in ports}
