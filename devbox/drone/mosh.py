"""mosh for a drone made `--with mosh`: its UDP ports, and the client's command line.

mosh logs in over SSH, starts `mosh-server` there as the drone user (no daemon: it lives as long
as its session) and then talks UDP to the port that server took. A drone's own small range of
ports is published on this server's 127.0.0.1 like its SSH port, the same numbers on both sides
(the server tells the client the port it took inside the drone), and written into its unit as
the label io.devbox.mosh-ports, so `restore` keeps it. Pure functions: nothing here runs a command.
"""

from __future__ import annotations

import shlex

from devbox.errors import invalid

FIRST_PORT = 60001  # mosh's own default range is 60000-61000; local drones take theirs from here up
PORTS_PER_DRONE = 4  # one port per mosh client connected at once
LAST_PORT = 65535


def format_ports(ports: tuple[int, int] | None) -> str | None:
    return None if ports is None else f"{ports[0]}-{ports[1]}"


def parse_ports(text: str) -> tuple[int, int] | None:
    """`60001-60004` -> (60001, 60004); None for anything else (a damaged label reads as none)."""
    low, sep, high = text.partition("-")
    if not (sep and low.isdigit() and high.isdigit()):
        return None
    first, last = int(low), int(high)
    return (first, last) if 1 <= first <= last <= LAST_PORT else None


def validate_ports(value: str | tuple[int, int]) -> tuple[int, int]:
    ports = parse_ports(value) if isinstance(value, str) else value
    if ports is None or not 1 <= ports[0] <= ports[1] <= LAST_PORT:
        raise invalid(f"invalid mosh port range {value!r}: expected FIRST-LAST, for example 60001-60004")
    return ports


def candidate_ranges() -> list[tuple[int, int]]:
    """Every range a drone may be given, lowest first."""
    return [
        (first, first + PORTS_PER_DRONE - 1)
        for first in range(FIRST_PORT, LAST_PORT - PORTS_PER_DRONE + 2, PORTS_PER_DRONE)
    ]


def overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def mosh_argv(ssh: list[str], ports: tuple[int, int] | None, command: list[str]) -> list[str]:
    """The mosh client, from SSH (`devbox ssh`'s argv without a command, ending in USER@HOST), the
    server asked for PORTS.

    `--bind-server=any`: the drone sees the login on whichever address Podman's port forwarding
    or the tailnet used, and the UDP port is published the same way: the server answers on all."""
    *ssh, login = ssh
    argv = ["mosh", f"--ssh={shlex.join(ssh)}", "--bind-server=any"]
    if ports is not None:
        argv.append(f"--port={ports[0]}:{ports[1]}")
    return [*argv, login, *(["--", *command] if command else [])]
