"""The clean-up's report, as text for people (and the journal) and as JSON for scripts."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from devbox.cleanup.policy import describe
from devbox.commands.sweep import DroneReport, Report
from devbox.values import format_duration


def _iso(when: datetime | None) -> str | None:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ") if when else None


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
    }


def report_text(report: Report) -> str:
    mode = "applied" if report.applied else "dry run, nothing done (devbox cleanup --apply acts)"
    lines = [f"devbox cleanup at {report.now:%Y-%m-%d %H:%M:%S} UTC: {mode}"]
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
