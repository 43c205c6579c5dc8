"""Audit events as structured journal entries: the journal is devbox's only store of what a drone did.

Each event is one entry sent with journald's native protocol, so its fields (DEVBOX_EVENT, DEVBOX_DRONE and
the event's own DEVBOX_* fields) are indexed and `journalctl --user DEVBOX_DRONE=NAME -o json` reads them
back, while plain `journalctl` shows the MESSAGE. Where there is no journal socket (tests, a container), the
message goes to stderr, which systemd also collects. Never pass a secret, a header or a body here.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
from collections.abc import Mapping

JOURNAL_SOCKET = "/run/systemd/journal/socket"
IDENTIFIER = "devbox"
EVENT_FIELD = "DEVBOX_EVENT"
DRONE_FIELD = "DEVBOX_DRONE"
FIELD_PREFIX = "DEVBOX_"

# The events devbox records, declared once: the audit reads back exactly these.
TOKEN_MINTED = "token-minted"
TOKEN_SERVED = "token-served"
TOKEN_REFUSED = "token-refused"
API_REQUEST = "api-request"
API_REFUSED = "api-refused"
EGRESS_BLOCKED = "egress-blocked"
SSH_LOGIN = "ssh-login"
DRONE_STARTED = "drone-started"
DRONE_STOPPED = "drone-stopped"

PRIORITY_INFO = 6
PRIORITY_WARNING = 4


def field_name(key: str) -> str:
    """DEVBOX_<KEY>: journald field names are upper-case letters, digits and underscores."""
    name = FIELD_PREFIX + "".join(c if c.isalnum() else "_" for c in key.upper())
    return name[:64]


def encode(fields: Mapping[str, str]) -> bytes:
    """journald's native datagram: KEY=value lines, or KEY, a 64-bit length and the raw value when it has a newline."""
    out = bytearray()
    for key, value in fields.items():
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            out += key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


def event_fields(event: str, drone: str, message: str, details: Mapping[str, object], priority: int) -> dict[str, str]:
    fields = {
        "MESSAGE": message,
        "PRIORITY": str(priority),
        "SYSLOG_IDENTIFIER": IDENTIFIER,
        EVENT_FIELD: event,
        DRONE_FIELD: drone,
    }
    for key, value in details.items():
        if value is not None:
            fields[field_name(key)] = str(value)
    return fields


def record(
    event: str,
    drone: str,
    message: str,
    *,
    priority: int = PRIORITY_INFO,
    socket_path: str = JOURNAL_SOCKET,
    **details: object,
) -> None:
    """Send one audit event; losing the journal never breaks the caller (the event then goes to stderr)."""
    payload = encode(event_fields(event, drone, message, details, priority))
    if os.path.exists(socket_path):
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(payload, socket_path)
            return
        except OSError:
            pass
    print(f"{IDENTIFIER} {event} {drone}: {message}", file=sys.stderr, flush=True)
