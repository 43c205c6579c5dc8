"""The network fence as an nftables ruleset: pure, from a policy and the addresses found at start.

The ruleset is loaded into the drone's network namespace from outside (devbox/fence/hook.py); it
filters what the drone sends (the output hook), so a blocked packet never reaches pasta, which
would otherwise carry it out as the user. README: The network fence.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from devbox.drone.egress import ALLOW, EgressPolicy

TABLE = "devbox_fence"
LOG_GROUP = 7431  # the NFLOG group blocked packets are copied to (devbox/fence/watch.py reads it)

# What `fenced` keeps a drone from: the host (pasta maps it to 169.254.1.2), the LAN and every
# private, link-local, shared (CGNAT) and multicast range. The tailnet is not among them on
# purpose: tailscaled runs in userspace networking inside the drone, so 100.64.0.0/10 never
# crosses the drone's kernel; blocking it stops only a tailnet a host route would lead to.
BLOCKED_V4 = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/4",
    "255.255.255.255/32",
)
BLOCKED_V6 = ("::ffff:0:0/96", "fc00::/7", "fe80::/10", "ff00::/8")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class FenceInputs:
    """What the ruleset needs besides the policy, found as the drone starts."""

    resolvers: tuple[Address, ...] = ()  # the drone's resolv.conf: DNS (port 53) to these only
    host_addresses: tuple[Address, ...] = ()  # the host's own addresses, blocked under `fenced`
    devbox: tuple[tuple[Address, int], ...] = ()  # what devbox serves over the network (the git URL)
    allowed: tuple[tuple[Address, int | None], ...] = ()  # allow:'s destinations, resolved


def _elements(items: Iterable[str]) -> str:
    listed = sorted(dict.fromkeys(items))
    return "{ " + ", ".join(listed) + " }" if listed else ""


def _set(name: str, kind: str, items: Iterable[str], interval: bool = False) -> list[str]:
    elements = _elements(items)
    lines = [f"  set {name} {{", f"    type {kind}"]
    if interval:
        lines += ["    flags interval", "    auto-merge"]  # a host address may lie in a blocked range
    if elements:
        lines.append(f"    elements = {elements}")
    return [*lines, "  }"]


def _split(addresses: Iterable[Address]) -> tuple[list[str], list[str]]:
    addresses = list(addresses)  # read twice
    v4 = [str(a) for a in addresses if a.version == 4]
    v6 = [str(a) for a in addresses if a.version == 6]
    return v4, v6


def _with_ports(pairs: Iterable[tuple[Address, int]], version: int) -> list[str]:
    return [f"{address} . {port}" for address, port in pairs if address.version == version]


def ruleset(policy: EgressPolicy, inputs: FenceInputs) -> str:
    """The `nft -f` input: the table is replaced whole, in one transaction."""
    dns4, dns6 = _split(inputs.resolvers)
    lines = [f"table inet {TABLE} {{}}", f"delete table inet {TABLE}", f"table inet {TABLE} {{"]
    lines += _set("dns4", "ipv4_addr", dns4) + _set("dns6", "ipv6_addr", dns6)
    lines += _set("devbox4", "ipv4_addr . inet_service", _with_ports(inputs.devbox, 4))
    lines += _set("devbox6", "ipv6_addr . inet_service", _with_ports(inputs.devbox, 6))
    if policy.mode == ALLOW:
        ports = [(a, p) for a, p in inputs.allowed if p is not None]
        any4, any6 = _split(a for a, p in inputs.allowed if p is None)
        lines += _set("allow4", "ipv4_addr . inet_service", _with_ports(ports, 4))
        lines += _set("allow6", "ipv6_addr . inet_service", _with_ports(ports, 6))
        lines += _set("allowany4", "ipv4_addr", any4) + _set("allowany6", "ipv6_addr", any6)
    else:
        host4, host6 = _split(inputs.host_addresses)
        lines += _set("blocked4", "ipv4_addr", [*BLOCKED_V4, *host4], interval=True)
        lines += _set("blocked6", "ipv6_addr", [*BLOCKED_V6, *host6], interval=True)
    lines += [
        # Blocked: counted, copied to the watcher, and refused at once (a TCP reset, else an ICMP error).
        "  chain blocked {",
        f"    counter log group {LOG_GROUP}",
        "    meta l4proto tcp reject with tcp reset",
        "    reject with icmpx type admin-prohibited",
        "  }",
        "  chain output {",
        "    type filter hook output priority filter; policy accept;",
        '    oifname "lo" accept',
        "    ct state established,related accept",
        # The link's own chatter (IPv6 neighbour discovery, multicast listener reports) stays on the link.
        "    icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } accept",
        "    icmpv6 type { mld-listener-report, mld2-listener-report } accept",
        "    meta l4proto igmp accept",
        "    meta l4proto { tcp, udp } ip daddr @dns4 th dport 53 accept",
        "    meta l4proto { tcp, udp } ip6 daddr @dns6 th dport 53 accept",
        "    meta l4proto tcp ip daddr . tcp dport @devbox4 accept",
        "    meta l4proto tcp ip6 daddr . tcp dport @devbox6 accept",
    ]
    if policy.mode == ALLOW:
        lines += [
            "    meta l4proto { tcp, udp } ip daddr . th dport @allow4 accept",
            "    meta l4proto { tcp, udp } ip6 daddr . th dport @allow6 accept",
            "    ip daddr @allowany4 accept",
            "    ip6 daddr @allowany6 accept",
            "    jump blocked",
        ]
    else:
        lines += ["    ip daddr @blocked4 jump blocked", "    ip6 daddr @blocked6 jump blocked"]
    return "\n".join([*lines, "  }", "}", ""])


def allow_update(allowed: Iterable[tuple[Address, int | None]]) -> str:
    """The `nft -f` input that adds re-resolved addresses of allow:'s names (never removes: a
    connection to an address the name had stays allowed until the drone restarts)."""
    pairs = list(allowed)
    ports = [(a, p) for a, p in pairs if p is not None]
    any4, any6 = _split(a for a, p in pairs if p is None)
    lines = []
    for name, items in (
        ("allow4", _with_ports(ports, 4)),
        ("allow6", _with_ports(ports, 6)),
        ("allowany4", any4),
        ("allowany6", any6),
    ):
        if items:
            lines.append(f"add element inet {TABLE} {name} {_elements(items)}")
    return "\n".join(lines) + ("\n" if lines else "")
