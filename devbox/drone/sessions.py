"""tmux sessions in a drone: names, the commands that open them, and what runs in them.

Sessions outlive the connection: `devbox attach NAME [SESSION]` opens or re-attaches a tmux
session over SSH (or mosh), `devbox sessions NAME` lists them, and the idle clean-up counts a
session with a client attached, or whose processes use CPU, as activity (its `session` signal).

What a drone reports comes from templates/cleanup/sessions.sh, run in the drone as its user: one
line per session and per pane (tmux's own formats), then two samples of /proc/PID/stat a moment
apart. Parsing is pure and tested on recorded output; nothing here runs a command.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from devbox.errors import invalid
from devbox.values import printable

DEFAULT_SESSION = "main"
SAMPLE_SECONDS = 1.0  # how long the processes of each session are watched for CPU use
BUSY_SHARE = 0.01  # of one CPU during the sample: more is busy (the `cpu` signal's threshold)
_SESSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}")


def validate_session(name: str) -> str:
    """A session name: 1 to 40 of letters, digits, '_' and '-', starting with a letter or digit.

    tmux itself rewrites '.' and ':' and reads them as targets; the name also travels through
    the remote shell of ssh and mosh, so nothing else is allowed rather than quoted."""
    if _SESSION.fullmatch(name) is None:
        shown = repr(name) if printable(name) else "(a name with invisible characters)"
        raise invalid(
            f"invalid session name {shown}: use 1 to 40 of A-Z, a-z, 0-9, '_' and '-', starting with a letter or digit"
        )
    return name


def attach_command(session: str) -> list[str]:
    """The command, run in the drone, that attaches to SESSION, or makes it first."""
    return ["tmux", "new-session", "-A", "-s", validate_session(session)]


@dataclass(frozen=True)
class Window:
    index: int
    commands: tuple[str, ...]  # the foreground command of each pane


@dataclass(frozen=True)
class Session:
    name: str
    created: datetime
    attached: int  # clients attached now
    activity: datetime  # the newest of the session's input and its windows' output
    windows: tuple[Window, ...]
    cpu_seconds: float  # used by its processes during the sample
    sample_seconds: float

    @property
    def busy(self) -> bool:
        return self.cpu_seconds > 0 and self.cpu_seconds >= BUSY_SHARE * self.sample_seconds


@dataclass(frozen=True)
class Report:
    """What a drone said about its sessions; `tmux` is False when its image has no tmux."""

    sessions: tuple[Session, ...]
    tmux: bool = True


@dataclass(frozen=True)
class _Proc:
    ppid: int
    start: int  # starttime: a pid used again is another process
    ticks: int  # utime + stime + cutime + cstime: its own CPU and that of the children it reaped


def _parse_stat(line: str) -> tuple[int, _Proc] | None:
    """One /proc/PID/stat line; the command name (in parentheses) may hold spaces and parentheses."""
    head, _, rest = line.rpartition(")")
    pid_text = head.split(" (", 1)[0]
    fields = rest.split()
    if not pid_text.isdigit() or len(fields) < 20:
        return None
    try:
        # After the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14) ... starttime(19)
        ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
        return int(pid_text), _Proc(int(fields[1]), int(fields[19]), ticks)
    except ValueError:
        return None


def _tree(procs: dict[int, _Proc], roots: set[int]) -> set[int]:
    """ROOTS and every descendant of them among PROCS."""
    children: dict[int, list[int]] = {}
    for pid, proc in procs.items():
        children.setdefault(proc.ppid, []).append(pid)
    found, todo = set(), [r for r in roots if r in procs]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, ()))
    return found


def _used_ticks(before: dict[int, _Proc], after: dict[int, _Proc], roots: set[int]) -> int:
    """CPU ticks the processes under ROOTS used between the samples. A process gone by the second
    sample is left out (its time went to whoever reaped it, counted there if that is in the tree)."""
    used = 0
    for pid in _tree(after, roots):
        now, then = after[pid], before.get(pid)
        used += now.ticks - then.ticks if then is not None and then.start == now.start else now.ticks
    return max(used, 0)


def _when(text: str) -> datetime:
    return datetime.fromtimestamp(int(text), tz=UTC) if text.isdigit() else datetime.fromtimestamp(0, tz=UTC)


def parse_report(text: str, sample_seconds: float = SAMPLE_SECONDS, clock_ticks: int | None = None) -> Report:
    """templates/cleanup/sessions.sh's output -> the sessions, oldest first."""
    if text.strip() == "no-tmux":
        return Report((), tmux=False)
    hz = clock_ticks or os.sysconf("SC_CLK_TCK")
    heads: dict[str, list[str]] = {}
    panes: dict[str, list[tuple[int, int, int, str]]] = {}  # session id -> (window, pane pid, activity, command)
    samples: list[dict[int, _Proc]] = []
    for line in text.splitlines():
        if line == "sample":
            samples.append({})
        elif samples:
            parsed = _parse_stat(line)
            if parsed is not None:
                samples[-1][parsed[0]] = parsed[1]
        elif line.startswith("S\t") and len(fields := line.split("\t", 5)) == 6:
            heads[fields[1]] = fields[2:]
        elif line.startswith("P\t") and len(fields := line.split("\t", 5)) == 6 and fields[2].isdigit():
            window, pid, activity = int(fields[2]), int(fields[3]) if fields[3].isdigit() else 0, fields[4]
            panes.setdefault(fields[1], []).append((window, pid, int(activity) if activity.isdigit() else 0, fields[5]))
    before, after = (samples + [{}, {}])[:2]
    found = []
    for session_id, (created, attached, activity, name) in heads.items():
        own = panes.get(session_id, [])
        windows: dict[int, list[str]] = {}
        for window, _, _, command in own:
            windows.setdefault(window, []).append(command)
        newest = max([int(activity) if activity.isdigit() else 0, *(p[2] for p in own)])
        ticks = _used_ticks(before, after, {p[1] for p in own}) if after else 0
        found.append(
            Session(
                name=name,
                created=_when(created),
                attached=int(attached) if attached.isdigit() else 0,
                activity=_when(str(newest)),
                windows=tuple(Window(i, tuple(c)) for i, c in sorted(windows.items())),
                cpu_seconds=ticks / hz,
                sample_seconds=sample_seconds,
            )
        )
    return Report(tuple(sorted(found, key=lambda s: (s.created, s.name))))
