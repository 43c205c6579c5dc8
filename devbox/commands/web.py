"""The web services of a drone (drone/services.py, drone/web.py): the host ports a local drone
claims for them on 127.0.0.1, like its SSH port, and `devbox open NAME WORD`.

The password is made by the drone's init on first start and kept 0600 in the home volume; devbox
reads it through the drone (`devbox-drone-init web-password SERVICE`), only when asked for it, and
hands it to the CLI alone: it is never in a unit, a label, an argv or a log line.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from devbox.context import Context
from devbox.drone import web
from devbox.drone.services import WEB_SERVICES, web_service_for
from devbox.errors import DevboxError, ExitCode, invalid
from devbox.names import names_of, tailnet_name
from devbox.paths import Paths
from devbox.units.installed import find_drones, require_drone


def _claimed(paths: Paths, but: str | None = None) -> dict[int, str]:
    """Every TCP port on 127.0.0.1 a drone (but BUT) claims: SSH, forwarded ports, web services."""
    owners: dict[int, str] = {}
    for name, record in find_drones(paths).items():
        if name == but:
            continue
        declared = record.declared
        ports = [declared.ssh_port, *(host for host, _ in declared.ports), *(p for _, p in declared.web_ports)]
        owners |= {port: name for port in ports if port is not None}
    return owners


def free_web_ports(
    paths: Paths,
    services: Iterable[str],
    given: web.WebPorts,
    is_free: Callable[[int], bool],
    but: str | None = None,
) -> web.WebPorts:
    """GIVEN, and for each other web service among SERVICES the lowest port from web.FIRST_PORT that
    no drone (but BUT) claims and IS_FREE (lifecycle.port_free: nothing listens on it)."""
    chosen = dict(given)
    taken = set(_claimed(paths, but)) | set(chosen.values())
    for name, _ in web.drone_ports(services):
        if name in chosen:
            continue
        port = next((p for p in range(web.FIRST_PORT, web.LAST_PORT + 1) if p not in taken and is_free(p)), None)
        if port is None:
            raise DevboxError(
                f"no free port for {name} in {web.FIRST_PORT}-{web.LAST_PORT}: give --web-ports {name}:PORT",
                ExitCode.LIMIT,
            )
        chosen[name] = port
        taken.add(port)
    return tuple(sorted(chosen.items()))


def taken_by_others(paths: Paths, ports: web.WebPorts, name: str) -> dict[int, str]:
    """Which of PORTS another drone than NAME claims (port -> that drone)."""
    owners = _claimed(paths, but=name)
    return {port: owners[port] for _, port in ports if port in owners}


@dataclass(frozen=True)
class WebAccess:
    drone: str
    service: str
    url: str | None  # on this server's 127.0.0.1 (None: no port published)
    tailnet_url: str | None  # from your other machines, when the drone is on a tailnet
    user: str  # HTTP basic auth's user name (the login form asks for the password alone)
    password: str | None = None  # only when asked for


def web_access(ctx: Context, name: str, word: str, with_password: bool = False) -> WebAccess:
    """`devbox open NAME WORD` for a web service (terminal, code): its URLs and, asked, its password."""
    service = web_service_for(word)
    if service is None or service.web is None:
        words = ", ".join(sorted(s.web.word for s in WEB_SERVICES.values() if s.web))
        raise invalid(f"devbox open NAME takes a PORT or one of: {words}")
    record = require_drone(ctx.paths, name)
    declared = record.declared
    if service.name not in declared.services:
        raise DevboxError(
            f"drone {name} was not made --with {service.name}: recreate it with that option", ExitCode.CONFLICT
        )
    port = web.host_port(declared.web_ports, service.name)
    tailnet = tailnet_name(name, ctx.config.tailscale.tailnet) if declared.tailscale else None
    password = None
    if with_password:
        password = ctx.probe.web_password(names_of(name).container, service.name)
        if password is None:
            raise DevboxError(
                f"cannot read the {service.name} password from drone {name}: is it running? (devbox status {name})",
                ExitCode.PODMAN,
            )
    return WebAccess(
        drone=name,
        service=service.name,
        url=web.url("127.0.0.1", port) if port is not None else None,
        tailnet_url=web.url(tailnet, service.web.port) if tailnet else None,
        user=declared.login_user or getpass.getuser(),
        password=password,
    )
