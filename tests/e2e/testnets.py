"""Networks the end-to-end tests make for drones to reach (or be refused): two network namespaces joined
to this host by veth pairs, each with HTTP servers, and one server on the machine's own addresses.

"inet" stands for the internet (TEST-NET-3, 203.0.113.0/30), "lan" for a private network
(10.213.77.0/30). The machine shares this host's network namespace, so the namespaces, veth pairs and
routes are made here, as root, and removed again even when a test fails. A drone's packet to one of
these addresses goes to a server a test started, never further.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from typing import Any

from tests.e2e.helpers import wait_for

NETS = {  # name: (host side, namespace side)
    "inet": ("203.0.113.1", "203.0.113.2"),
    "lan": ("10.213.77.1", "10.213.77.2"),
}
PORTS = (8080, 8081, 53)  # a server on each, in each namespace
HOST_PORT = 18931  # the machine's own server, reached as host.containers.internal


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _remove_nets() -> None:
    for name in NETS:
        ns = f"dbxf-{name}"
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
        for pid in pids:
            subprocess.run(["kill", pid], capture_output=True)
        ip("netns", "del", ns, check=False)  # takes its veth end, and so the pair and the host's route
        ip("link", "del", f"dbxf-{name}0", check=False)


@contextlib.contextmanager
def drone_test_networks(machine: Any) -> Iterator[dict[str, str]]:
    """Two namespaces joined to this host by veth pairs, each with HTTP servers on PORTS."""
    _remove_nets()
    servers: list[subprocess.Popen[bytes]] = []
    try:
        for name, (outside, inside) in NETS.items():
            ns, here, there = f"dbxf-{name}", f"dbxf-{name}0", f"dbxf-{name}1"
            ip("netns", "add", ns)
            ip("link", "add", here, "type", "veth", "peer", "name", there, "netns", ns)
            ip("addr", "add", f"{outside}/30", "dev", here)
            ip("link", "set", here, "up")
            ip("-n", ns, "addr", "add", f"{inside}/30", "dev", there)
            ip("-n", ns, "link", "set", there, "up")
            ip("-n", ns, "link", "set", "lo", "up")
            # Back to whoever asked (the machine's address, through pasta): only into this namespace's pair.
            ip("-n", ns, "route", "add", "default", "via", outside)
            # Never a packet out of this host: the route to the server must be the veth pair.
            assert f"dev {here}" in ip("route", "get", inside).stdout
            for port in PORTS:
                argv = ["ip", "netns", "exec", ns, "python3", "-m", "http.server", str(port), "--bind", inside]
                servers.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        servers.append(
            subprocess.Popen(
                ["python3", "-m", "http.server", str(HOST_PORT), "--bind", "0.0.0.0"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        for _, inside in NETS.values():
            for port in PORTS:
                probe = f"curl -s -o /dev/null -m 2 http://{inside}:{port}/"
                wait_for(lambda p=probe: machine.root(p, check=False).returncode == 0, 20, probe)
        yield {name: inside for name, (_, inside) in NETS.items()}
    finally:
        for server in servers:
            server.terminate()
        _remove_nets()
