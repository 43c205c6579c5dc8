"""Activity signals for the idle clean-up, each with the time it was last seen.

| signal  | measured by |
|---------|-------------|
| ssh     | established TCP connections to port 2222 inside the running drone (/proc/net/tcp{,6}); open = active now |
| session | the drone user's tmux sessions (devbox/drone/sessions.py): one with a client attached, or whose processes
|         | use CPU during a short sample, = active now; else the newest input or output in any of them |
| broker  | mtime of ~/.local/state/devbox/activity/NAME.broker, touched by the credential broker on every request |
| touch   | mtime of ~/.local/state/devbox/activity/NAME.touch, written by `devbox touch NAME` |
| cpu     | the container cgroup's usage_usec against the value kept in NAME.cpu at the last `--apply`;
|         | more than 1% of one CPU over the interval (and 1 s at least) = active at that check |
| containers | with --with containers: running containers inside the drone (one conmon each, from the
|         | drone's /proc); one or more = active now, like an open SSH session |
| files   | the newest mtime in the home volume (`find` on the host; .git, .cache, .local, node_modules skipped) |
| started | when the container started (a drone someone just started is in use) |
| stopped | when drone-NAME.service last stopped (systemd's InactiveEnterTimestamp, else NAME.stopped written by
|         | `devbox stop` and the clean-up): a stopped drone is idle from then at the latest |
| created | the drone's creation time, from its unit file |
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from devbox.cleanup.policy import Signal
from devbox.drone import sessions as tmux
from devbox.host.probe import Probe
from devbox.paths import Paths

# The activity records kept per drone, one file each (Paths.activity_file).
RECORD_KINDS = ("broker", "touch", "cpu", "stopped")

CPU_ACTIVE_SHARE = 0.01  # of one CPU over the time between two checks
CPU_ACTIVE_MIN_USEC = 1_000_000


@dataclass(frozen=True)
class DroneView:
    """What activity needs to know about one drone (from lifecycle's status and unit file)."""

    name: str
    running: bool
    container: str
    volume: str
    created: datetime | None
    started: datetime | None
    stopped: datetime | None
    containers: bool = False  # --with containers: its inner containers count as activity


def _mtime(path: Path) -> datetime | None:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, tz=UTC)
    except OSError:
        return None


def _read_cpu_state(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _when(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def cpu_signal(usage: int | None, state: dict[str, object], now: datetime) -> tuple[Signal, dict[str, object] | None]:
    """The cpu signal from this check's usage and the last recorded one; and the state to record next."""
    last_active = _when(state.get("active"))
    if usage is None:
        return Signal("cpu", last_active, "not measured"), None
    before, checked = state.get("usage_usec"), _when(state.get("checked"))
    detail = "first measurement"
    if isinstance(before, int) and checked is not None and usage >= before:
        used = usage - before
        interval = max((now - checked).total_seconds(), 1.0)
        threshold = max(CPU_ACTIVE_MIN_USEC, CPU_ACTIVE_SHARE * interval * 1_000_000)
        detail = f"{used / 1_000_000:.1f} s CPU since the last check"
        if used >= threshold:
            last_active = now
    elif isinstance(before, int):
        detail = "restarted since the last check"
    new_state: dict[str, object] = {
        "usage_usec": usage,
        "checked": now.isoformat(),
        "active": last_active.isoformat() if last_active else None,
    }
    return Signal("cpu", last_active, detail), new_state


def session_signal(output: str | None, now: datetime, sample: float = tmux.SAMPLE_SECONDS) -> Signal:
    """The session signal from what templates/cleanup/sessions.sh printed in the drone (None: could not look)."""
    if output is None:
        return Signal("session", None, "could not look")
    report = tmux.parse_report(output, sample)
    if not report.tmux:
        return Signal("session", None, "no tmux in the image")
    if not report.sessions:
        return Signal("session", None, "no tmux session")
    why = [f"{s.name}: {s.attached} attached" for s in report.sessions if s.attached]
    why += [f"{s.name}: busy ({s.cpu_seconds:.2f} s CPU in {s.sample_seconds:g} s)" for s in report.sessions if s.busy]
    if why:
        return Signal("session", now, "; ".join(why), live=True)
    count = len(report.sessions)
    newest = max(s.activity for s in report.sessions)
    quiet = f"{count} quiet session{'s' if count > 1 else ''}, none attached"
    return Signal("session", newest, quiet)


def gather(
    view: DroneView,
    paths: Paths,
    probe: Probe,
    now: datetime,
    record: bool,
    write_state: Callable[[Path, str], None],
) -> list[Signal]:
    """Every signal of one drone. RECORD: keep this check's CPU reading for the next one (--apply)."""
    signals: list[Signal] = []
    if view.running:
        sessions = probe.ssh_sessions(view.container)
        if sessions:
            signals.append(Signal("ssh", now, f"{sessions} open session{'s' if sessions > 1 else ''}", live=True))
        else:
            signals.append(Signal("ssh", None, "no open session" if sessions == 0 else "could not look"))
        signals.append(session_signal(probe.tmux_sessions(view.container, tmux.SAMPLE_SECONDS), now))
    else:
        signals.append(Signal("ssh", None, "not running"))
        signals.append(Signal("session", None, "not running"))
    signals.append(Signal("broker", _mtime(paths.activity_file(view.name, "broker"))))
    signals.append(Signal("touch", _mtime(paths.activity_file(view.name, "touch"))))
    cpu_path = paths.activity_file(view.name, "cpu")
    state = _read_cpu_state(cpu_path)
    if view.running:
        cpu, new_state = cpu_signal(probe.cpu_usage_usec(view.container), state, now)
        if record and new_state is not None:
            write_state(cpu_path, json.dumps(new_state) + "\n")
    else:
        cpu = Signal("cpu", _when(state.get("active")), "not running")
    signals.append(cpu)
    if view.containers:
        signals.append(_containers_signal(view, probe, now))
    files = probe.newest_file(view.volume)
    signals.append(Signal("files", files, "" if files else "no files"))
    if view.running:
        signals.append(Signal("started", view.started))
    else:
        stopped = view.stopped or _mtime(paths.activity_file(view.name, "stopped"))
        signals.append(Signal("stopped", stopped))
    signals.append(Signal("created", view.created))
    return signals


def _containers_signal(view: DroneView, probe: Probe, now: datetime) -> Signal:
    if not view.running:
        return Signal("containers", None, "not running")
    running = probe.inner_containers(view.container)
    if running:
        return Signal("containers", now, f"{running} container{'s' if running > 1 else ''} running inside", live=True)
    return Signal("containers", None, "none running inside" if running == 0 else "could not look")


def mark(paths: Paths, name: str, kind: str, when: datetime) -> Path:
    """Record that KIND happened to the drone at WHEN (the file's mtime is the record)."""
    path = paths.activity_file(name, kind)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.touch()
    os.utime(path, (when.timestamp(), when.timestamp()))
    return path


def forget(paths: Paths, name: str) -> None:
    """Drop a destroyed drone's activity records."""
    for kind in RECORD_KINDS:
        paths.activity_file(name, kind).unlink(missing_ok=True)
