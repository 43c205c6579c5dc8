"""The idle clean-up's policy: pure functions from what was measured to a decision.

No I/O here. `cleanup/activity.py` gathers the signals, `host/probe.py` checks and rescues
work, `commands/sweep.py` runs the whole thing. Rules, in order:

1. a drone with `keep` (label `io.devbox.keep=true`) is never touched;
2. an open SSH session, or a tmux session with a client attached or using CPU, means active,
   whatever the clock says;
3. idle time = now - the newest signal (a drone with no signal at all is kept:
   nothing to measure from is no reason to act);
4. running and idle longer than `idle_stop`: stop;
5. stopped and idle longer than `idle_destroy`: destroy, but only when no repo
   in its home has uncommitted changes, a stash or unpushed commits. Dirty work
   is pushed to `devbox/rescue/NAME/DATE` first; when that fails the drone is
   kept and its home volume exported.

A window boundary is not crossed: idle exactly `idle_stop` is still kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum

from devbox.host.probe import WorkCheck
from devbox.values import format_duration


class Action(Enum):
    KEEP = "keep"
    STOP = "stop"
    DESTROY = "destroy"
    RESCUE_THEN_DESTROY = "rescue-then-destroy"
    EXPORT_AND_KEEP = "export-and-keep"


@dataclass(frozen=True)
class Signal:
    """One kind of activity and when it was last seen (None: never)."""

    kind: str  # ssh, session, broker, cpu, files, touch, started, stopped, created
    at: datetime | None
    detail: str = ""
    live: bool = False  # happening now (an open SSH session, a busy tmux session): always active


@dataclass(frozen=True)
class Policy:
    idle_stop: timedelta
    idle_destroy: timedelta
    keep: bool = False


@dataclass(frozen=True)
class Rescue:
    """The outcome of pushing dirty work to rescue branches, or of exporting the home volume."""

    pushed: tuple[str, ...] = ()  # "~/repo -> devbox/rescue/NAME/DATE"
    error: str = ""  # why the push failed (then the volume is exported)
    export_path: str | None = None
    export_error: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.pushed) and not self.error


@dataclass(frozen=True)
class Decision:
    action: Action
    reasons: tuple[str, ...]
    idle: timedelta | None = None
    last: Signal | None = None
    work: WorkCheck | None = None
    rescue: Rescue | None = None
    notes: tuple[str, ...] = field(default=())


def age(now: datetime, at: datetime) -> str:
    """`3h12m`, `2d4h`, `45s`: two units at most, for reading."""
    seconds = max(0, int((now - at).total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    units = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    first = next((i for i, (n, _) in enumerate(units) if n), 3)
    shown = [f"{n}{u}" for n, u in units[first : first + 2] if n]
    return "".join(shown) or "0s"


def describe(signal: Signal, now: datetime) -> str:
    if signal.live:
        return f"{signal.kind}: {signal.detail or 'now'}"
    if signal.at is None:
        return f"{signal.kind}: {signal.detail or 'never'}"
    when = f"{age(now, signal.at)} ago"
    return f"{signal.kind}: {when}" + (f" ({signal.detail})" if signal.detail else "")


def newest(signals: Sequence[Signal]) -> Signal | None:
    dated = [s for s in signals if s.at is not None]
    return max(dated, key=lambda s: s.at) if dated else None  # type: ignore[arg-type,return-value]


def decide(running: bool, signals: Sequence[Signal], policy: Policy, now: datetime) -> Decision:
    """keep, stop or destroy, from the signals alone (destroy still needs `settle`)."""
    if policy.keep:
        return Decision(Action.KEEP, ("exempt (keep)",))
    live = [s for s in signals if s.live]
    if live:
        return Decision(Action.KEEP, tuple(f"active: {describe(s, now)}" for s in live))
    last = newest(signals)
    if last is None or last.at is None:
        return Decision(Action.KEEP, ("no activity signal to measure idleness from",))
    idle = now - last.at
    since = f"idle {age(now, last.at)} (last: {last.kind})"
    window = policy.idle_stop if running else policy.idle_destroy
    name = "idle_stop" if running else "idle_destroy"
    limit = format_duration(window.total_seconds())
    if idle <= window:
        return Decision(Action.KEEP, (f"{since}, within {name} {limit}",), idle, last)
    action = Action.STOP if running else Action.DESTROY
    return Decision(action, (f"{since}, over {name} {limit}",), idle, last)


def settle(decision: Decision, work: WorkCheck, rescue: Rescue | None = None) -> Decision:
    """A destroy only stands on clean work; dirty work is rescued first, or the drone is kept and exported.

    `rescue` is None before a rescue was tried (a dry run, or the first pass of --apply).
    """
    if decision.action is not Action.DESTROY:
        return decision
    reasons = list(decision.reasons)
    if work.error:
        reasons.append(f"work check failed: {work.error}; nothing destroyed")
        return _with(decision, Action.KEEP, reasons, work, rescue)
    if work.safe:
        reasons.append("no uncommitted changes, stashes or unpushed commits" if work.repos else "no git repositories")
        return _with(decision, Action.DESTROY, reasons, work, rescue)
    reasons.extend(r.describe() for r in work.dirty)
    if rescue is None:  # not tried yet (a dry run): say what will be tried
        if all(r.has_remote and not r.error for r in work.dirty):
            reasons.append("will push it to a rescue branch first (if that fails: keep, export the home volume)")
            return _with(decision, Action.RESCUE_THEN_DESTROY, reasons, work, rescue)
        reasons.append("no remote to push a rescue branch to: will keep it and export the home volume")
        return _with(decision, Action.EXPORT_AND_KEEP, reasons, work, rescue)
    if rescue.ok:
        reasons.extend(f"pushed {p}" for p in rescue.pushed)
        return _with(decision, Action.RESCUE_THEN_DESTROY, reasons, work, rescue)
    reasons.append(f"could not push to a rescue branch: {rescue.error or 'nothing pushed'}")
    if rescue.export_path and not rescue.export_error:
        reasons.append(f"home volume exported to {rescue.export_path}")
    elif rescue.export_error:
        reasons.append(f"export failed: {rescue.export_error}")
    return _with(decision, Action.EXPORT_AND_KEEP, reasons, work, rescue)


def _with(decision: Decision, action: Action, reasons: list[str], work: WorkCheck, rescue: Rescue | None) -> Decision:
    return Decision(action, tuple(reasons), decision.idle, decision.last, work, rescue, decision.notes)
