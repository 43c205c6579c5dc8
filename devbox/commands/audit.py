"""`devbox audit NAME`: one drone's timeline, read back from the journal (devbox keeps no other store).

Three kinds of entries make the timeline, and each is believed only from the sender journald itself
names (its trusted `_`-fields, which no sender can set):

- devbox's own events (journal.record: the broker, and whatever else devbox runs on the host), with
  DEVBOX_EVENT and DEVBOX_* fields: source "devbox". Taken only from native-protocol entries that did
  not come from the drone's own service (where the container's output is), so the drone cannot forge one.
- systemd's job messages for drone-NAME.service ("Started", "Stopped"), sent by the user manager
  itself (init.scope): source "systemd". They are there however the drone was started or stopped
  (devbox, `systemctl --user`, the idle clean-up, a reboot), and devbox writes nothing for them.
- sshd's "Accepted publickey for USER from ADDR port N" lines in the container's output: source
  "drone". sshd runs inside the drone, so anything in the drone can print such a line: these say what
  the drone reported, never more, and they can only ever become ssh-login events.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from devbox.errors import DevboxError, ExitCode
from devbox.host import journal
from devbox.names import names_of
from devbox.values import validate_name

if TYPE_CHECKING:
    from devbox.context import Context

SOURCE_DEVBOX = "devbox"
SOURCE_SYSTEMD = "systemd"
SOURCE_DRONE = "drone"

MANAGER_SCOPE = "init.scope"  # the user manager's own cgroup: only systemd itself sends from there
# The only devbox events sent from within drone-NAME.service: the fence watcher's (devbox/fence/watch.py).
FROM_DRONE_SERVICE = frozenset({journal.EGRESS_BLOCKED})
_JOB_EVENTS = {journal.UNIT_STARTED_ID: journal.DRONE_STARTED, journal.UNIT_STOPPED_ID: journal.DRONE_STOPPED}
_EVENT_NAME = re.compile(r"[a-z][a-z0-9-]{0,63}")
# sshd's line for a successful authentication (auth2.c), as `sshd -e` writes it to the container's output.
_ACCEPTED = re.compile(
    r"Accepted (?P<method>[\w-]+) for (?P<user>\S+) from (?P<address>\S+) port (?P<port>\d+)"
    r"(?: ssh2)?(?::\s*(?P<key>.+?))?\s*"
)
# Groups who may read every journal file; on a volatile journal, the only way to read one's own entries.
JOURNAL_GROUPS = ("systemd-journal", "adm")
PERSISTENT_JOURNAL = Path("/var/log/journal")

Reader = Callable[[list[str]], list[journal.Entry]]
# What job_event and ssh_event read (journalctl adds the cursor and the timestamps itself).
READ_FIELDS = (
    "MESSAGE",
    "MESSAGE_ID",
    "JOB_RESULT",
    "USER_UNIT",
    "CONTAINER_NAME",
    "_SYSTEMD_USER_UNIT",
    "_SYSTEMD_UNIT",
    "_TRANSPORT",
)


@dataclass(frozen=True)
class AuditEvent:
    time: datetime
    event: str  # one of the names in host/journal.py
    source: str  # devbox, systemd or drone (see the module's docstring)
    unit: str  # the sender's unit as journald saw it
    message: str
    details: dict[str, str] = field(default_factory=dict)
    cursor: str = ""  # journald's cursor: `journalctl --cursor=...` finds the entry


@dataclass(frozen=True)
class Timeline:
    drone: str
    since: datetime | None
    installed: bool  # False: a destroyed drone, read from what the journal still holds
    events: list[AuditEvent]


def queries(name: str, uid: int) -> list[tuple[list[list[str]], tuple[str, ...]]]:
    """The journal queries for one drone, each (match groups, fields to output; () for all): its devbox
    events with every field (their DEVBOX_* details are open-ended); the manager's jobs for its service
    and its container's output with the fields read here only (conmon's entries carry its whole command
    line: a chatty drone's output would otherwise be megabytes). Every group holds only the user's own
    entries (_UID, set by journald)."""
    names = names_of(name)
    own = f"_UID={uid}"
    return [
        ([[own, f"{journal.DRONE_FIELD}={name}"]], ()),
        (
            [
                [own, f"USER_UNIT={names.service}", f"_SYSTEMD_USER_UNIT={MANAGER_SCOPE}"],
                [own, f"CONTAINER_NAME={names.container}", f"_SYSTEMD_USER_UNIT={names.service}"],
            ],
            READ_FIELDS,
        ),
    ]


def _time(entry: journal.Entry) -> datetime | None:
    try:
        micros = int(journal.text_of(entry.get("__REALTIME_TIMESTAMP")))
    except ValueError:
        return None
    return datetime.fromtimestamp(micros / 1_000_000, UTC)


def _field(entry: journal.Entry, key: str) -> str:
    return journal.text_of(entry.get(key))


def _sender_unit(entry: journal.Entry) -> str:
    return _field(entry, "_SYSTEMD_USER_UNIT") or _field(entry, "_SYSTEMD_UNIT")


def devbox_event(entry: journal.Entry, name: str, when: datetime) -> AuditEvent | None:
    event = _field(entry, journal.EVENT_FIELD)
    if not _EVENT_NAME.fullmatch(event) or _field(entry, journal.DRONE_FIELD) != name:
        return None
    # Native protocol only: a stdout line cannot carry fields.
    if _field(entry, "_TRANSPORT") != "journal":
        return None
    # From the drone's own service only the fence's watcher: Podman runs the fence hook, which starts
    # it, in that service's cgroup. Nothing in the drone reaches the journal socket; conmon sends the
    # drone's output as plain MESSAGE lines, and no line becomes a field.
    if _field(entry, "_SYSTEMD_USER_UNIT") == names_of(name).service and event not in FROM_DRONE_SERVICE:
        return None
    skip = {journal.EVENT_FIELD, journal.DRONE_FIELD}
    details = {
        key.removeprefix(journal.FIELD_PREFIX).lower(): journal.text_of(value)
        for key, value in entry.items()
        if key.startswith(journal.FIELD_PREFIX) and key not in skip
    }
    return AuditEvent(
        when, event, SOURCE_DEVBOX, _sender_unit(entry), _field(entry, "MESSAGE"), details, _field(entry, "__CURSOR")
    )


def job_event(entry: journal.Entry, name: str, when: datetime) -> AuditEvent | None:
    event = _JOB_EVENTS.get(_field(entry, "MESSAGE_ID"))
    service = names_of(name).service
    if event is None or _field(entry, "USER_UNIT") != service or _field(entry, "_SYSTEMD_USER_UNIT") != MANAGER_SCOPE:
        return None
    details = {"result": _field(entry, "JOB_RESULT")} if _field(entry, "JOB_RESULT") else {}
    return AuditEvent(
        when, event, SOURCE_SYSTEMD, service, _field(entry, "MESSAGE"), details, _field(entry, "__CURSOR")
    )


def ssh_event(entry: journal.Entry, name: str, when: datetime) -> AuditEvent | None:
    names = names_of(name)
    if _field(entry, "CONTAINER_NAME") != names.container or _field(entry, "_SYSTEMD_USER_UNIT") != names.service:
        return None
    found = _ACCEPTED.fullmatch(_field(entry, "MESSAGE").strip())
    if found is None:
        return None
    details = {k: v for k, v in found.groupdict().items() if v}
    message = f"SSH login as {details['user']} from {details['address']} port {details['port']} ({details['method']})"
    return AuditEvent(when, journal.SSH_LOGIN, SOURCE_DRONE, names.service, message, details, _field(entry, "__CURSOR"))


def event_of(entry: journal.Entry, name: str) -> AuditEvent | None:
    """The audit event an entry stands for, or None (most of a drone's output is not one)."""
    when = _time(entry)
    if when is None:
        return None
    if journal.EVENT_FIELD in entry:
        return devbox_event(entry, name, when)
    if "MESSAGE_ID" in entry:
        return job_event(entry, name, when)
    return ssh_event(entry, name, when)


def timeline_of(entries: Iterable[journal.Entry], name: str, since: datetime | None = None) -> list[AuditEvent]:
    """The events among ENTRIES, oldest first (entries of the same microsecond keep the journal's order)."""
    events = [e for e in (event_of(entry, name) for entry in entries) if e is not None]
    if since is not None:
        events = [e for e in events if e.time >= since]
    return sorted(events, key=lambda e: e.time)


def check_readable(groups: Iterable[str], persistent: bool, uid: int) -> None:
    """A volatile journal keeps no per-user file: only root or a member of systemd-journal or adm reads it."""
    if not persistent and uid != 0 and not set(groups) & set(JOURNAL_GROUPS):
        raise DevboxError(
            "the journal is volatile (no /var/log/journal), so only members of systemd-journal or adm can read "
            "devbox's events: sudo mkdir /var/log/journal && sudo systemctl restart systemd-journald, "
            "or sudo usermod -aG systemd-journal $USER",
            ExitCode.ENVIRONMENT,
        )


def current_uid() -> int:
    return os.getuid()


def _group_names() -> list[str]:
    import grp

    names = []
    for gid in {os.getgid(), *os.getgroups()}:
        try:
            names.append(grp.getgrgid(gid).gr_name)
        except KeyError:
            continue
    return names


def audit(ctx: Context, name: str, since: int | None = None, read: Reader | None = None) -> Timeline:
    """NAME's timeline (the last SINCE seconds of it, if given). A destroyed drone's past is still
    shown while the journal keeps it; a name with neither a unit nor an event is not found."""
    from devbox.units.installed import find_drones

    validate_name(name)
    check_readable(_group_names(), PERSISTENT_JOURNAL.is_dir(), current_uid())
    start = ctx.clock() - timedelta(seconds=since) if since is not None else None
    read = read or journal.read_entries
    entries = [
        entry
        for groups, fields in queries(name, current_uid())
        for entry in read(journal.query_argv(groups, start.timestamp() if start else None, fields))
    ]
    events = timeline_of(entries, name, start)
    installed = name in find_drones(ctx.paths)
    if not installed and not events:
        when = " in that time" if start else ""
        raise DevboxError(f"no such drone: {name} (and no events of it in the journal{when})", ExitCode.NOT_FOUND)
    return Timeline(name, start, installed, events)
