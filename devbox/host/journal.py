"""Audit events as structured journal entries: the journal is devbox's only store of what a drone did.

Each event is one entry sent with journald's native protocol, so its fields (DEVBOX_EVENT, DEVBOX_DRONE and
the event's own DEVBOX_* fields) are indexed and `journalctl --user DEVBOX_DRONE=NAME -o json` reads them
back, while plain `journalctl` shows the MESSAGE. Where there is no journal socket (tests, a container), the
message goes to stderr, which systemd also collects. Never pass a secret, a header or a body here.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
from collections.abc import Mapping, Sequence

from devbox.errors import DevboxError, ExitCode, cannot_run

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

# systemd's own catalogue ids for a unit's job done: started, stopped (sd-messages.h).
UNIT_STARTED_ID = "39f53479d3a045ac8e11786248231fbf"
UNIT_STOPPED_ID = "9d1aaa27d60140bd96365438aad20286"

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


# -- reading back -------------------------------------------------------------------------------

Entry = dict[str, object]
READ_TIMEOUT = 60.0


def query_argv(groups: Sequence[Sequence[str]], since: float | None = None, fields: Sequence[str] = ()) -> list[str]:
    """journalctl's argv for entries matching any of GROUPS (each a list of FIELD=value matches, all of
    which must hold), oldest first, as JSON: only FIELDS of each (and the cursor and timestamps), if given.

    No --user: on a volatile journal (no SplitMode) --user finds no file of the user's at all, while a
    member of systemd-journal reads the shared file; callers put _UID=... in every group instead."""
    argv = ["journalctl", "--no-pager", "--quiet", "-o", "json"]
    if since is not None:
        argv.append(f"--since=@{int(since)}")  # whole seconds, never later than asked: callers filter exactly
    if fields:
        argv.append("--output-fields=" + ",".join(fields))
    for index, group in enumerate(groups):
        argv += (["+"] if index else []) + list(group)
    return argv


def read_entries(argv: list[str], timeout: float = READ_TIMEOUT) -> list[Entry]:
    """Run journalctl (from query_argv) and parse its one JSON object per line."""
    try:
        result = subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=timeout, check=False)
    except OSError as exc:
        raise cannot_run("journalctl", exc) from None
    except subprocess.TimeoutExpired:
        raise DevboxError(f"journalctl did not answer within {timeout:.0f}s", ExitCode.ENVIRONMENT) from None
    if result.returncode != 0:
        detail = result.stderr.strip().splitlines()[-1:] or [f"exit status {result.returncode}"]
        raise DevboxError(f"journalctl failed: {detail[0]}", ExitCode.ENVIRONMENT)
    return parse_entries(result.stdout)


def parse_entries(text: str) -> list[Entry]:
    """`journalctl -o json` output: one object per line; lines that are not objects are skipped."""
    entries = []
    for line in text.split("\n"):  # not splitlines(): a value may hold U+2028 and the like, unescaped in JSON
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def text_of(value: object) -> str:
    """A field's value as text: journalctl -o json gives a string, a list of byte values (for values that
    are not printable UTF-8), null (too large), or a list of those (a field given more than once: the last)."""
    if isinstance(value, list) and value and all(isinstance(v, (list, str)) or v is None for v in value):
        value = value[-1]
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, int) and 0 <= v < 256 for v in value):
        return bytes(value).decode("utf-8", "replace")
    return ""
