"""The UDP ports a `--with mosh` drone claims on 127.0.0.1, like its SSH port (`devbox mosh`: commands/sessions.py)."""

from __future__ import annotations

import socket
from collections.abc import Callable

from devbox.drone import mosh
from devbox.errors import DevboxError, ExitCode
from devbox.host.ports import loopback_free
from devbox.paths import Paths
from devbox.units.installed import find_drones


def udp_free(port: int) -> bool:
    return loopback_free(port, socket.SOCK_DGRAM)


def free_mosh_ports(
    paths: Paths, is_free: Callable[[int], bool] | None = None, taken: tuple[tuple[int, int], ...] = ()
) -> tuple[int, int]:
    """The lowest range no drone claims (nor TAKEN) and whose every port is free on 127.0.0.1."""
    is_free = is_free or udp_free
    claimed = [r.declared.mosh_ports for r in find_drones(paths).values() if r.declared.mosh_ports] + list(taken)
    for ports in mosh.candidate_ranges():
        if not any(mosh.overlaps(ports, other) for other in claimed) and all(
            is_free(p) for p in range(ports[0], ports[1] + 1)
        ):
            return ports
    raise DevboxError(
        f"no free UDP ports for mosh in {mosh.FIRST_PORT}-{mosh.LAST_PORT}: destroy a drone made --with mosh",
        ExitCode.LIMIT,
    )


def claimed_elsewhere(paths: Paths, value: str | tuple[int, int] | None) -> bool:
    """PORTS overlap a range another drone claims (a restored copy beside its original)."""
    ports = None if value is None else mosh.validate_ports(value)
    if ports is None:
        return False
    return any(
        r.declared.mosh_ports and mosh.overlaps(ports, r.declared.mosh_ports) for r in find_drones(paths).values()
    )
