"""The fence's watcher, one per fenced drone, inside the drone's network namespace (the hook starts
it there, in the drone's service, so it stops with the drone).

- Every blocked packet is copied by the ruleset to NFLOG group rules.LOG_GROUP; the watcher reads
  the headers and records each as an egress-blocked audit event (destination, port, protocol),
  at most RATE a second (the rest are counted into the next event): a kernel `log` rule writes
  nothing from a network namespace other than the host's.
- For allow:, it asks the drone's own resolvers (the ones the fence lets DNS go to) for each
  name again when the shortest TTL of its answer runs out, and adds new addresses to the sets.
"""

from __future__ import annotations

import ipaddress
import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from devbox.drone.egress import ALLOW, parse_egress
from devbox.fence import rules
from devbox.host import journal

NETLINK_NETFILTER = 12
NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET = 0
NFULNL_MSG_CONFIG = 1
NFULA_CFG_CMD = 1
NFULA_CFG_MODE = 2
NFULNL_CFG_CMD_BIND = 1
NFULNL_COPY_PACKET = 2
NFULA_PAYLOAD = 9
NLM_F_REQUEST = 1
NLM_F_ACK = 4
COPY_RANGE = 128  # the IP and transport headers are all the watcher reads
RATE = 20  # events a second at most; more are counted into the next one
PROTOCOLS = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp"}
MIN_TTL, MAX_TTL = 5, 3600  # seconds between two resolutions of one name


@dataclass(frozen=True)
class Blocked:
    destination: str
    port: int | None
    protocol: str


def _attribute(kind: int, data: bytes) -> bytes:
    length = 4 + len(data)
    return struct.pack("=HH", length, kind) + data + b"\0" * (-length % 4)


def _config_message(group: int, attribute: bytes, seq: int) -> bytes:
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(group)) + attribute
    kind = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG
    return struct.pack("=IHHII", 16 + len(body), kind, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


def open_log(group: int = rules.LOG_GROUP) -> socket.socket:
    """A netlink socket bound to NFLOG GROUP in this process's network namespace, copying headers."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.bind((0, 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    bind = _attribute(NFULA_CFG_CMD, struct.pack("=B", NFULNL_CFG_CMD_BIND))
    mode = _attribute(NFULA_CFG_MODE, struct.pack(">IBB", COPY_RANGE, NFULNL_COPY_PACKET, 0))
    for seq, attribute in enumerate((bind, mode), 1):
        sock.send(_config_message(group, attribute, seq))
        _check_ack(sock.recv(4096))
    return sock


def _check_ack(reply: bytes) -> None:
    length, kind = struct.unpack_from("=IH", reply)
    if kind == 2:  # NLMSG_ERROR: 0 is the acknowledgement
        (error,) = struct.unpack_from("=i", reply, 16)
        if error:
            raise OSError(-error, f"NFLOG bind: {os.strerror(-error)}")


def _attributes(data: bytes) -> Iterator[tuple[int, bytes]]:
    offset = 0
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            return
        yield kind & 0x3FFF, data[offset + 4 : offset + length]
        offset += length + (-length % 4)


def parse_packet(payload: bytes) -> Blocked | None:
    """The destination, port and protocol of an IPv4 or IPv6 packet's headers."""
    if not payload:
        return None
    version = payload[0] >> 4
    if version == 4 and len(payload) >= 20:
        header, proto = (payload[0] & 0x0F) * 4, payload[9]
        destination = str(ipaddress.IPv4Address(payload[16:20]))
    elif version == 6 and len(payload) >= 40:
        header, proto = 40, payload[6]
        destination = str(ipaddress.IPv6Address(payload[24:40]))
    else:
        return None
    port = None
    if proto in (6, 17, 132) and len(payload) >= header + 4:
        (port,) = struct.unpack_from(">H", payload, header + 2)
    return Blocked(destination, port, PROTOCOLS.get(proto, str(proto)))


def parse_messages(data: bytes) -> Iterator[Blocked]:
    """The blocked packets in one netlink read (one or more NFULNL_MSG_PACKET messages)."""
    offset = 0
    while offset + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, offset)
        if length < 16:
            return
        if kind == (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET:
            for attr, value in _attributes(data[offset + 20 : offset + length]):
                if attr == NFULA_PAYLOAD:
                    found = parse_packet(value)
                    if found is not None:
                        yield found
        offset += length + (-length % 4)


class Limiter:
    """At most RATE events a second; how many were held back goes with the next one."""

    def __init__(self, rate: int = RATE, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.clock = rate, clock
        self.window, self.sent, self.held = clock(), 0, 0

    def admit(self) -> int | None:
        """None: hold this one back; else how many were held back before it."""
        now = self.clock()
        if now - self.window >= 1:
            self.window, self.sent = now, 0
        if self.sent >= self.rate:
            self.held += 1
            return None
        self.sent += 1
        held, self.held = self.held, 0
        return held


def record(drone: str, blocked: Blocked, held: int) -> None:
    where = blocked.destination if blocked.port is None else f"{blocked.destination} port {blocked.port}"
    more = f" ({held} more not recorded)" if held else ""
    journal.record(
        journal.EGRESS_BLOCKED,
        drone,
        f"drone {drone}: the network fence blocked {blocked.protocol} to {where}{more}",
        priority=journal.PRIORITY_WARNING,
        destination=blocked.destination,
        port=blocked.port,
        protocol=blocked.protocol,
        not_recorded=held or None,
    )


def log_blocked(drone: str, sock: socket.socket, container: int | None = None) -> None:
    """Until the container's first process (CONTAINER, a pidfd) ends: the watcher must not outlive
    the drone, or its service would wait for it to stop."""
    import select

    limiter = Limiter()
    watched: list[int] = [sock.fileno()] + ([] if container is None else [container])
    while True:
        ready, _, _ = select.select(watched, [], [])
        if container is not None and container in ready:
            return
        try:
            data = sock.recv(65536)
        except OSError:  # ENOBUFS: the kernel dropped copies faster than we read; keep reading
            limiter.held += 1
            continue
        for blocked in parse_messages(data):
            held = limiter.admit()
            if held is not None:
                record(drone, blocked, held)


# --- allow:'s names, resolved again when their records expire -------------------------------------


def dns_query(name: str, qtype: int, ident: int) -> bytes:
    labels = b"".join(bytes([len(part)]) + part.encode("ascii") for part in name.rstrip(".").split("."))
    return struct.pack(">HHHHHH", ident, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack(">HH", qtype, 1)


def _skip_name(data: bytes, offset: int) -> int:
    while offset < len(data):
        length = data[offset]
        if length == 0:
            return offset + 1
        if length & 0xC0 == 0xC0:
            return offset + 2
        offset += 1 + length
    raise ValueError("truncated name")


def dns_answers(data: bytes, ident: int) -> list[tuple[str, int]]:
    """(address, ttl) of the A and AAAA records of a DNS reply to query IDENT."""
    got, flags, questions, answers = struct.unpack_from(">HHHH", data)
    if got != ident or not flags & 0x8000 or flags & 0x000F:
        return []
    offset = 12
    for _ in range(questions):
        offset = _skip_name(data, offset) + 4
    found = []
    for _ in range(answers):
        offset = _skip_name(data, offset)
        kind, _class, ttl, length = struct.unpack_from(">HHIH", data, offset)
        offset += 10
        rdata = data[offset : offset + length]
        offset += length
        if kind == 1 and length == 4:
            found.append((str(ipaddress.IPv4Address(rdata)), ttl))
        elif kind == 28 and length == 16:
            found.append((str(ipaddress.IPv6Address(rdata)), ttl))
    return found


def resolve(name: str, resolvers: Sequence[str], timeout: float = 3.0) -> tuple[list[str], int]:
    """The name's addresses and the shortest TTL among them, from the first resolver that answers."""
    for server in resolvers:
        family = socket.AF_INET6 if ":" in server else socket.AF_INET
        found: list[tuple[str, int]] = []
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.settimeout(timeout)
                for qtype in (1, 28):
                    ident = random.randrange(1 << 16)
                    sock.sendto(dns_query(name, qtype, ident), (server, 53))
                    found += dns_answers(sock.recv(4096), ident)
        except (OSError, ValueError, struct.error):
            continue
        if found:
            ttl = max(MIN_TTL, min(MAX_TTL, min(t for _, t in found)))
            return sorted({a for a, _ in found}), ttl
    return [], MIN_TTL * 6


def re_resolve(policy_text: str, resolvers: Sequence[str], nft: str) -> None:
    """For ever: each allow: name again when its answer expires; new addresses go into the sets."""
    policy = parse_egress(policy_text)
    names = [d for d in policy.allowed if not _is_address(d.host)]
    due = {d: 0.0 for d in names}
    while names:
        now = time.monotonic()
        for destination in names:
            if due[destination] > now:
                continue
            addresses, ttl = resolve(destination.host, resolvers)
            due[destination] = now + ttl
            pairs = [(ipaddress.ip_address(a), destination.port) for a in addresses]
            update = rules.allow_update(pairs)
            if update:
                subprocess.run([nft, "-f", "-"], input=update, text=True, capture_output=True, timeout=30)
        time.sleep(max(1.0, min(due.values()) - time.monotonic()))


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


def main(argv: Sequence[str]) -> int:
    """python -m devbox.fence.watch DRONE PID POLICY RESOLVER...: inside the drone's network namespace;
    PID is the container's first process, whose end ends the watcher."""
    drone, pid, policy_text, *resolvers = argv
    try:
        container = os.pidfd_open(int(pid))
    except OSError:
        return 0  # the drone is gone already
    sock = open_log()
    if parse_egress(policy_text).mode == ALLOW:
        from devbox.fence.tools import tool

        args = (policy_text, resolvers, tool("nft"))
        threading.Thread(target=re_resolve, args=args, daemon=True).start()
    log_blocked(drone, sock, container)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
