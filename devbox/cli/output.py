"""Turning results into what people and scripts read: JSON-ready dicts and plain tables.

Field names in `status_dict` are a stable interface (documented in the README).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn

from devbox.commands.inventory import DroneStatus
from devbox.drone.services import web_word
from devbox.errors import DevboxError, ExitCode
from devbox.names import DRONE_SSH_PORT
from devbox.paths import Paths
from devbox.values import format_duration, printable, rough_duration

if TYPE_CHECKING:
    from devbox.commands.audit import AuditEvent, Timeline
    from devbox.commands.backup import BackupResult, RestoreResult
    from devbox.commands.doctor import Check
    from devbox.commands.egress import EgressChange
    from devbox.commands.lifecycle import CreateResult, DestroyResult
    from devbox.commands.rebuild import RebuildResult
    from devbox.commands.sweep import DroneReport, Report
    from devbox.commands.web import WebAccess
    from devbox.drone.sessions import Report as SessionsReport

if TYPE_CHECKING:
    from devbox.commands.brokerstate import BrokerState
    from devbox.host.systemd import UnitState


def _iso(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def status_dict(status: DroneStatus, now: datetime) -> dict[str, Any]:
    return {
        "name": status.name,
        "state": status.state,
        "unit": status.unit,
        "unit_state": status.unit_state,
        "unit_sub_state": status.unit_sub_state,
        "container_state": status.container_state,
        "image": status.image,
        "repos": status.repos,
        "created": status.created,
        "started": _iso(status.started) if status.state == "running" else None,
        "uptime_seconds": status.uptime_seconds(now),
        "restarts": status.restarts,
        "ports": status.ports,
        "volume": status.volume,
        "volume_exists": status.volume_exists,
        "autostart": status.autostart,
        "ssh": address(status),
        "local_ssh": f"127.0.0.1:{status.ssh_port}" if status.ssh_port else None,
        "ssh_command": ssh_command(status),
        "tailscale": status.tailnet_name is not None,
        "tailnet_name": status.tailnet_name,
        "syncthing": status.syncthing,
        "with": list(status.services),
        "mosh_ports": "{}-{}".format(*status.mosh_ports) if status.mosh_ports else None,
        "web_ports": dict(status.web_ports),
        "syncthing_device_id": status.syncthing_id,
        "workspace": status.workspace,
        "dotfiles": status.dotfiles,
        "dotfiles_outcome": status.dotfiles_outcome,
        "devcontainer": status.devcontainer,
        "devcontainer_outcome": status.devcontainer_outcome,
        "compose_outcome": status.compose_outcome,
        "devcontainer_changed": status.devcontainer_changed,
        "killed_for_memory": status.killed_for_memory,
        "broker": None if status.broker is None else broker_dict(status.broker),
        "keys": status.keys,
        "key_proxy": None if status.key_proxy is None else broker_dict(status.key_proxy),
        "egress": status.egress,
    }


def broker_dict(broker: BrokerState) -> dict[str, Any]:
    """The credential broker's (or key proxy's) units as systemd reports them, and how to reset them when stuck."""
    return {
        "state": broker.state,
        "socket": _unit_dict(broker.socket),
        "service": _unit_dict(broker.service),
        "reset": broker.reset_commands(),
    }


def _unit_dict(unit: UnitState) -> dict[str, Any]:
    return {"unit": unit.name, "state": unit.active_state, "sub_state": unit.sub_state, "result": unit.result}


def address(status: DroneStatus) -> str | None:
    """HOST:PORT of the drone's sshd for your machines: its tailnet name, else the published local port."""
    if status.tailnet_name:
        return f"{status.tailnet_name}:{DRONE_SSH_PORT}"
    return f"127.0.0.1:{status.ssh_port}" if status.ssh_port else None


def ssh_command(status: DroneStatus) -> str | None:
    return f"devbox ssh {status.name}" if address(status) else None


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in [headers, *rows]
    ]
    return "\n".join(lines)


_STATE_COLOURS = {"running": "32", "starting": "33", "stopping": "33", "stopped": "2", "failed": "31;1"}


def paint(text: str, state: str, colour: bool) -> str:
    code = _STATE_COLOURS.get(state, "35")
    return f"\x1b[{code}m{text}\x1b[0m" if colour else text


def list_table(statuses: Sequence[DroneStatus], now: datetime, colour: bool = False) -> str:
    rows = [
        [
            s.name,
            s.state,
            rough_duration(s.uptime_seconds(now)),
            s.image,
            ",".join(s.repos) or "-",
            address(s) or "-",
        ]
        for s in statuses
    ]
    text = table(["NAME", "STATE", "UPTIME", "IMAGE", "REPOS", "SSH"], rows)
    if not colour:
        return text
    lines = text.split("\n")
    for index, status in enumerate(statuses, start=1):  # colour after padding, so columns stay aligned
        start = lines[index].index(status.state, len(status.name))
        end = start + len(status.state)
        lines[index] = lines[index][:start] + paint(status.state, status.state, True) + lines[index][end:]
    return "\n".join(lines)


def status_text(status: DroneStatus, now: datetime, flavor: str = "plain") -> str:
    data = status_dict(status, now)
    lines = [
        ("drone", status.name),
        ("state", f"{status.state} (unit {status.unit}: {status.unit_state}/{status.unit_sub_state})"),
        ("container", status.container_state or "none"),
        ("image", status.image),
        ("repos", ", ".join(status.repos) or "-"),
        ("created", status.created or "-"),
        ("uptime", rough_duration(data["uptime_seconds"])),
        ("restarts", "-" if status.restarts is None else str(status.restarts)),
        ("ports", ", ".join(status.ports) or "-"),
        *([("api keys", ", ".join(status.keys) + " (through the host's key proxy)")] if status.keys else []),
        (
            "volume",
            f"{status.volume}"
            + ("" if status.volume_exists is None else (" (exists)" if status.volume_exists else " (not created yet)")),
        ),
        ("autostart", "yes" if status.autostart else "no (stopped with devbox stop)"),
        ("ssh", f"{address(status)} ({ssh_command(status)})" if address(status) else "-"),
        *([("local ssh", f"127.0.0.1:{status.ssh_port}")] if status.tailnet_name and status.ssh_port else []),
        ("tailnet", status.tailnet_name or "no (SSH on the local port only)"),
        ("egress", status.egress),
    ]
    if status.killed_for_memory:
        memory = "killed for memory: give it more with --memory, or use less"
        lines.append(("last exit", f"Nuclear launch detected. ({memory})" if flavor == "zerg" else memory))
    if status.workspace:
        lines.append(("workspace", status.workspace))
    if status.dotfiles:
        lines.append(("dotfiles", f"{status.dotfiles}: {status.dotfiles_outcome or 'not run yet'}"))
    if status.devcontainer:
        changed = "; changed since its image was built" if status.devcontainer_changed else ""
        outcome = status.devcontainer_outcome or "hooks not run yet"
        lines.append(("devcontainer", f"{status.devcontainer}: {outcome}{changed}"))
    if status.compose_outcome:
        lines.append(("compose", status.compose_outcome))
    if status.services:
        lines.append(("with", ", ".join(status.services)))
    if status.mosh_ports:
        lines.append(("mosh", f"UDP 127.0.0.1:{data['mosh_ports']} (devbox mosh {status.name})"))
    for service, port in status.web_ports:
        word = web_word(service)
        lines.append((service, f"http://127.0.0.1:{port}/ (devbox open {status.name} {word} --password)"))
    if status.syncthing:
        lines.append(("syncthing", status.syncthing_id or "device ID not available (is the drone running?)"))
    if status.broker is not None:
        lines.extend(broker_lines(status.broker))
    if status.key_proxy is not None:
        lines.extend(broker_lines(status.key_proxy))
    width = max(len(k) for k, _ in lines)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in lines)


def broker_lines(broker: BrokerState) -> list[tuple[str, str]]:
    lines = [(broker.role, broker.describe())]
    if broker.reset_commands():
        lines.append((f"fix {broker.role}", f"find the cause with {broker.journal_command()}, then"))
        lines.extend(("", command) for command in broker.reset_commands())
    return lines


def colour_wanted() -> bool:
    """Colour on a terminal, never when piped or when NO_COLOR is set (https://no-color.org)."""
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def list_output(statuses: Sequence[DroneStatus], now: datetime, as_json: bool, colour: bool) -> str:
    """What `devbox list` prints, whichever way it was started (cli/app.py or cli/fastpath.py)."""
    if as_json:
        return json.dumps([status_dict(s, now) for s in statuses], indent=2, sort_keys=False)
    if statuses:
        return list_table(statuses, now, colour=colour)
    return "no drones yet: devbox create NAME --repo ORG/REPO"


# --- results of the other commands (their JSON field names are a stable interface too) ----------


def create_dict(result: CreateResult) -> dict[str, Any]:
    return {
        "name": result.spec.name,
        "unit": result.spec.names.service,
        "files": [{"path": str(item.path), "change": item.change.value} for item in result.files],
        "started": result.started,
        "dry_run": result.dry_run,
        "notes": result.notes,
    }


def rebuild_dict(result: RebuildResult) -> dict[str, Any]:
    return {
        "name": result.spec.name,
        "image": result.spec.image,
        "previous_image": result.previous_image,
        "image_changed": result.image_changed,
        "restarted": result.restarted,
        "devcontainer_hash": result.spec.devcontainer_hash,
        "notes": result.notes,
    }


def state_dict(name: str, state: str) -> dict[str, Any]:
    return {"name": name, "state": state}


def destroy_dict(name: str, result: DestroyResult) -> dict[str, Any]:
    return {
        "name": name,
        "removed_files": [str(path) for path in result.removed_files],
        "volume_removed": result.volume_removed,
        "volume_kept": result.volume_kept,
        "volumes_removed": result.other_volumes,
        "containers_store_removed": result.containers_removed,
        "tokens_revoked": result.tokens_revoked,
    }


def doctor_list(checks: Sequence[Check]) -> list[dict[str, Any]]:
    return [{"check": c.name, "status": c.status, "detail": c.detail, "fix": c.fix} for c in checks]


def backup_dict(result: BackupResult, where: str | None) -> dict[str, Any]:
    return {
        "name": result.name,
        "file": where,
        "size": result.size,
        "volume": {"name": result.volume, "size": result.volume_size, "sha256": result.volume_sha256},
        "running": result.running,
        "stopped": result.stopped,
        "live": result.live,
    }


def restore_dict(result: RestoreResult) -> dict[str, Any]:
    return {
        "name": result.name,
        "from": str(result.source),
        "original_name": result.original_name,
        "unit": result.create.spec.names.service,
        "files": [{"path": str(i.path), "change": i.change.value} for i in result.create.files],
        "volume": {"name": result.volume, "size": result.volume_size},
        "started": result.create.started,
        "ignored_labels": result.ignored_labels,
    }


# --- the clean-up's report, as text for people (and the journal) and as JSON for scripts ---------


def drone_dict(drone: DroneReport, now: datetime) -> dict[str, Any]:
    decision = drone.decision
    return {
        "name": drone.name,
        "state": drone.state,
        "action": decision.action.value,
        "reasons": list(decision.reasons),
        "idle_seconds": int(decision.idle.total_seconds()) if decision.idle is not None else None,
        "last_signal": decision.last.kind if decision.last else None,
        "policy": {
            "idle_stop": format_duration(drone.policy.idle_stop.total_seconds()),
            "idle_destroy": format_duration(drone.policy.idle_destroy.total_seconds()),
            "keep": drone.policy.keep,
        },
        "signals": [
            {
                "kind": s.kind,
                "at": _iso(s.at),
                "age_seconds": int((now - s.at).total_seconds()) if s.at else None,
                "live": s.live,
                "detail": s.detail,
            }
            for s in drone.signals
        ],
        "work": None
        if decision.work is None
        else {"error": decision.work.error, "repos": [asdict(r) for r in decision.work.repos]},
        "rescue": None if decision.rescue is None else asdict(decision.rescue),
        "done": drone.done or None,
        "error": drone.error or None,
    }


def report_dict(report: Report) -> dict[str, Any]:
    return {
        "time": _iso(report.now),
        "applied": report.applied,
        "drones": [drone_dict(d, report.now) for d in report.drones],
        "tokens_live": report.tokens_live,
    }


def report_text(report: Report) -> str:
    from devbox.cleanup.policy import describe

    mode = "applied" if report.applied else "dry run, nothing done (devbox cleanup --apply acts)"
    lines = [f"devbox cleanup at {report.now:%Y-%m-%d %H:%M:%S} UTC: {mode}"]
    if report.tokens_live:
        lines.append(f"{report.tokens_live} GitHub tokens of destroyed drones are still not revoked (retried daily)")
    if not report.drones:
        lines.append("no drones")
    for drone in report.drones:
        decision = drone.decision
        verb = decision.action.value if report.applied else f"would {decision.action.value}"
        if decision.action.value == "keep":
            verb = "keep"
        lines.append(f"{drone.name} ({drone.state}): {verb}: {decision.reasons[0]}")
        lines.extend(f"  {reason}" for reason in decision.reasons[1:])
        lines.append("  signals: " + "; ".join(describe(s, report.now) for s in drone.signals))
        if drone.done:
            lines.append(f"  done: {drone.done}")
        if drone.error:
            lines.append(f"  error: {drone.error}")
    return "\n".join(lines)


# --- devbox audit: one drone's timeline ----------------------------------------------------------


def _iso_micro(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def audit_event_dict(event: AuditEvent) -> dict[str, Any]:
    return {
        "time": _iso_micro(event.time),
        "event": event.event,
        "source": event.source,
        "unit": event.unit,
        "message": event.message,
        "details": dict(event.details),
        "cursor": event.cursor,
    }


def audit_dict(timeline: Timeline) -> dict[str, Any]:
    return {
        "drone": timeline.drone,
        "since": _iso_micro(timeline.since) if timeline.since else None,
        "installed": timeline.installed,
        "events": [audit_event_dict(e) for e in timeline.events],
    }


def _visible(text: str) -> str:
    """One line whatever a drone put in a value: line breaks and other invisible characters escaped."""
    return "".join(ch if printable(ch) else ch.encode("unicode_escape").decode("ascii") for ch in text)


def audit_text(timeline: Timeline) -> str:
    """One line per event, oldest first: time (UTC), event, source, what happened."""
    lines = [] if timeline.installed else [f"drone {timeline.drone} is not installed (destroyed?): its past events"]
    if not timeline.events:
        lines.append(
            f"no events of drone {timeline.drone}" + (f" since {_iso(timeline.since)}" if timeline.since else "")
        )
    width = max((len(e.event) for e in timeline.events), default=0)
    for event in timeline.events:
        when = event.time.strftime("%Y-%m-%d %H:%M:%S")
        lines.append(f"{when}  {event.event:<{width}}  {event.source:<7}  {_visible(event.message)}")
    return "\n".join(lines)


# The one way a DevboxError reaches the user (both the parsed and the fast path).
def web_access_dict(access: WebAccess) -> dict[str, Any]:
    data: dict[str, Any] = {
        "drone": access.drone,
        "service": access.service,
        "url": access.url,
        "tailnet_url": access.tailnet_url,
        "user": access.user,
    }
    if access.password is not None:
        data["password"] = access.password
    return data


def web_access_text(access: WebAccess) -> str:
    """The URLs, and the password only when it was asked for (this is stdout: never a log)."""
    word = web_word(access.service)
    rows = [("url", access.url or "no port on this server (made on a tailnet only)")]
    if access.tailnet_url:
        rows.append(("tailnet", f"{access.tailnet_url} (from your machines on the tailnet)"))
    rows.append(("user", f"{access.user} (HTTP basic auth; the login page asks for the password only)"))
    if access.password is not None:
        rows.append(("password", access.password))
    else:
        rows.append(("password", f"devbox open {access.drone} {word} --password"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def sessions_list(report: SessionsReport, now: datetime) -> list[dict[str, Any]]:
    return [
        {
            "name": s.name,
            "created": _iso(s.created),
            "attached": s.attached,
            "last_activity": _iso(s.activity),
            "idle_seconds": max(0, int((now - s.activity).total_seconds())),
            "busy": s.busy,
            "cpu_seconds": round(s.cpu_seconds, 2),
            "sample_seconds": s.sample_seconds,
            "windows": [{"index": w.index, "commands": list(w.commands)} for w in s.windows],
        }
        for s in report.sessions
    ]


def sessions_text(report: SessionsReport, name: str, now: datetime) -> str:
    """One row per session; a session made in the drone by hand may have any name: shown as repr then."""
    if not report.tmux:
        return f"drone {name} has no tmux (its image lacks it: see templates/image/CONTRACT.md)"
    if not report.sessions:
        return f"no tmux session in drone {name}: devbox attach {name} [SESSION] makes one"
    rows = [
        (
            s.name if s.name.isprintable() else repr(s.name),
            s.created.strftime("%Y-%m-%d %H:%M"),
            str(s.attached),
            "yes" if s.busy else "no",
            f"{rough_duration(max(0.0, (now - s.activity).total_seconds()))} ago",
            " ".join(f"{w.index}:{','.join(c if c.isprintable() else repr(c) for c in w.commands)}" for w in s.windows),
        )
        for s in report.sessions
    ]
    return table(("SESSION", "CREATED", "ATTACHED", "BUSY", "LAST ACTIVITY", "WINDOWS"), rows)


def flavour_message(flavor: str, exc: DevboxError) -> str:
    """With `flavor = "zerg"` in the config, a few errors speak the swarm's language first."""
    if flavor != "zerg":
        return exc.message
    line = {
        ExitCode.EXISTS: "Evolution chamber occupied.",
        ExitCode.LIMIT: "Spawn more overlords.",
        ExitCode.CREDENTIALS: "We require more minerals.",  # the App cannot reach the repository
    }.get(exc.code)
    return f"{line} ({exc.message})" if line else exc.message


def _flavoured(exc: DevboxError) -> str:
    try:
        from devbox.config import load_config

        flavor = load_config(Paths.from_env().config_file).flavor
    except DevboxError:
        return exc.message
    return flavour_message(flavor, exc)


def exit_with(exc: DevboxError, debug: bool = False) -> NoReturn:
    """The one way a DevboxError reaches the user: one line on stderr (and its details), its exit code."""
    if debug:
        import traceback

        traceback.print_exc()
    print(f"devbox: {_flavoured(exc)}", file=sys.stderr, flush=True)
    for line in exc.details:
        print(f"  {line}", file=sys.stderr, flush=True)
    sys.exit(int(exc.code))


def egress_dict(change: EgressChange) -> dict[str, Any]:
    """`devbox egress --json`."""
    return {"name": change.name, "before": change.before, "egress": change.after, "restarted": change.restarted}
