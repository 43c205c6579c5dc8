"""The idle clean-up as use-cases: `devbox cleanup [--apply]`, `devbox touch` (the timer is cleanup/timer.py).

`run` measures every drone (cleanup/activity.py), decides (cleanup/policy.py), and with
`apply` acts: stop, destroy, or push dirty work to rescue branches first, or
keep the drone and export its home volume. It returns a report; the CLI prints it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path

from devbox.cleanup import activity
from devbox.cleanup.activity import DroneView, gather
from devbox.cleanup.policy import Action, Decision, Policy, Rescue, Signal, WorkCheck, decide, settle
from devbox.commands import inventory, lifecycle, locks
from devbox.commands.progress import Progress, no_progress
from devbox.drone.spec import DroneSpec
from devbox.errors import DevboxError
from devbox.host.probe import Mounts
from devbox.names import names_of
from devbox.units import install, installed
from devbox.units.installed import DroneRecord


@dataclass
class DroneReport:
    name: str
    state: str  # lifecycle's summary: running, stopped, ...
    policy: Policy
    signals: list[Signal]
    decision: Decision
    done: str = ""  # what --apply did
    error: str = ""  # why --apply could not do it


@dataclass
class Report:
    now: datetime
    applied: bool
    drones: list[DroneReport] = field(default_factory=list)
    tokens_live: int = 0  # remembered GitHub tokens still not revoked after this run's retry

    @property
    def errors(self) -> list[DroneReport]:
        return [d for d in self.drones if d.error]


def policy_for(ctx: lifecycle.Context, declared: DroneSpec) -> Policy:
    """The config's [cleanup] windows, overridden by the drone's own (its io.devbox.idle-* labels)."""
    config = ctx.config.cleanup
    return Policy(
        idle_stop=timedelta(seconds=declared.idle_stop or config.idle_stop),
        idle_destroy=timedelta(seconds=declared.idle_destroy or config.idle_destroy),
        keep=declared.keep,
    )


def _write_state(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    install.atomic_write(path, text, mode=0o600)


def run(ctx: lifecycle.Context, *, apply: bool = False, progress: Progress = no_progress) -> Report:
    now = ctx.clock()
    report = Report(now, apply)
    if apply:  # tokens a destroy could not revoke: tried again once a day
        report.tokens_live = lifecycle.revoke_remembered(ctx)
    records = installed.find_drones(ctx.paths)
    for status in inventory.list_drones(ctx):
        record = records[status.name]
        if record.damaged:  # its labels (policy, keep) cannot be trusted: left for a person
            continue
        progress(f"checking drone {status.name}")
        view = _view(ctx, status, record, now)
        policy = policy_for(ctx, record.declared)
        signals = gather(view, ctx.paths, ctx.probe, now, record=apply, write_state=_write_state)
        candidate = decide(view.running, signals, policy, now)
        decision = candidate
        if candidate.action is Action.DESTROY:
            decision = settle(candidate, _check_work(ctx, status.name, record.image))
        drone = DroneReport(status.name, status.state, policy, signals, decision)
        if apply:
            _act_unless_changed(ctx, drone, record, candidate)
        report.drones.append(drone)
    return report


def _view(ctx: lifecycle.Context, status: inventory.DroneStatus, record: DroneRecord, now: datetime) -> DroneView:
    running = status.state in ("running", "starting")
    return DroneView(
        name=status.name,
        running=running,
        container=names_of(status.name).container,
        volume=names_of(status.name).volume,
        created=record.declared.created,
        started=(status.started or now) if running else None,
        stopped=None if running else ctx.systemd.inactive_since(names_of(status.name).service),
        containers=record.declared.containers,
    )


def _act_unless_changed(ctx: lifecycle.Context, drone: DroneReport, record: DroneRecord, candidate: Decision) -> None:
    """Stop or destroy holding the drone's lock, and only when the decision still stands under it.

    Measuring and the work check take a while and run unlocked: meanwhile the user may have
    started, stopped, used or made the drone anew. A drone another devbox command holds is skipped.
    """
    if drone.decision.action is Action.KEEP:
        return
    try:
        with locks.drone_lock(ctx.paths, drone.name, wait=0):
            change = _changed(ctx, record, candidate)
            if not change:
                _act(ctx, drone, record.image, candidate)
                return
    except locks.Busy:
        change = "another devbox command is changing it"
    drone.decision = replace(
        drone.decision, action=Action.KEEP, reasons=(*drone.decision.reasons, f"{change}: skipped")
    )
    drone.done = f"skipped: {change}"


def _changed(ctx: lifecycle.Context, record: DroneRecord, candidate: Decision) -> str:
    """Why the candidate action no longer holds for the drone as it is now ("" when it still does)."""
    now_record = installed.find_drones(ctx.paths).get(record.name)
    if now_record is None or now_record.declared.created != record.declared.created:
        return "destroyed or made anew since it was checked"
    status = next((s for s in inventory.list_drones(ctx) if s.name == record.name), None)
    if status is None:
        return "gone since it was checked"
    now = ctx.clock()
    view = _view(ctx, status, now_record, now)
    signals = gather(view, ctx.paths, ctx.probe, now, record=False, write_state=_write_state)
    again = decide(view.running, signals, policy_for(ctx, now_record.declared), now)
    if again.action is not candidate.action:
        return f"changed since it was checked: {status.state} now, {again.reasons[0]}"
    return ""


def _mounts(ctx: lifecycle.Context, name: str, with_credentials: bool = False) -> Mounts:
    return Mounts(
        volume=names_of(name).volume,
        home=os.path.expanduser("~"),
        socket_dir=str(ctx.paths.socket_dir(name)) if with_credentials else None,
        tools_dir=str(ctx.paths.tools_dir) if with_credentials else None,
    )


def _check_work(ctx: lifecycle.Context, name: str, image: str) -> WorkCheck:
    if not ctx.podman.volume_exists(names_of(name).volume):
        return WorkCheck()  # no home, no work to lose
    return ctx.probe.check_work(image, _mounts(ctx, name))


def _act(ctx: lifecycle.Context, drone: DroneReport, image: str, candidate: Decision) -> None:
    action = drone.decision.action
    try:
        if action is Action.STOP:
            lifecycle.stop(ctx, drone.name)
            drone.done = "stopped"
        elif action is Action.DESTROY:
            _destroy(ctx, drone)
        elif action in (Action.RESCUE_THEN_DESTROY, Action.EXPORT_AND_KEEP) and drone.decision.work is not None:
            rescue = _rescue(ctx, drone.name, image, drone.decision.work, drone.decision)
            drone.decision = settle(candidate, drone.decision.work, rescue)
            if drone.decision.action is Action.RESCUE_THEN_DESTROY:
                _destroy(ctx, drone)
                drone.done = "work pushed to rescue branches, then " + drone.done
            elif rescue.export_path and not rescue.export_error:
                drone.done = f"kept; home volume exported to {rescue.export_path}"
            else:
                drone.done = "kept"
                drone.error = f"could neither push nor export its work: {rescue.export_error}"
    except DevboxError as exc:
        drone.error = exc.message


def _destroy(ctx: lifecycle.Context, drone: DroneReport) -> None:
    keep_volume = ctx.config.cleanup.keep_volume
    lifecycle.destroy(ctx, drone.name, keep_volume=keep_volume)
    drone.done = "destroyed" + (" (home volume kept)" if keep_volume else "")


def rescue_branch(name: str, now: datetime) -> str:
    return f"devbox/rescue/{name}/{now:%Y%m%d}"


def _rescue(ctx: lifecycle.Context, name: str, image: str, work: WorkCheck, decision: Decision) -> Rescue:
    """Push dirty work with the drone's own credentials; when any push fails, export the home volume."""
    now = ctx.clock()
    branch = rescue_branch(name, now)
    dirty = [r.path for r in work.dirty]
    broker_file = ctx.paths.activity_file(name, "broker")
    before = broker_file.stat() if broker_file.exists() else None
    socket = names_of(name).creds_socket
    result, error = None, ""
    try:
        ctx.systemd.start(socket)
        result = ctx.probe.push_rescue(image, _mounts(ctx, name, with_credentials=True), branch, dirty)
    except DevboxError as exc:
        error = exc.message
    finally:
        for unit in (socket, names_of(name).creds_service):
            try:
                ctx.systemd.stop(unit)
            except DevboxError:
                pass
        # The rescue's own credential requests are not the user's activity.
        if before is not None:
            os.utime(broker_file, ns=(before.st_atime_ns, before.st_mtime_ns))
        else:
            broker_file.unlink(missing_ok=True)
    if result is not None:
        error = "; ".join(f"~/{path}: {why}" for path, why in result.failed)
        if not result.failed and set(result.pushed) >= set(dirty):
            return Rescue(pushed=tuple(f"~/{p} -> {branch}" for p in result.pushed))
    target = ctx.paths.rescue_dir / f"{name}-{now:%Y%m%d}.tar"
    export_error = ctx.probe.export_volume(names_of(name).volume, target)
    pushed = tuple(f"~/{p} -> {branch}" for p in (result.pushed if result else ()))
    return Rescue(pushed=pushed, error=error or "not pushed", export_path=str(target), export_error=export_error)


def touch(ctx: lifecycle.Context, name: str) -> Path:
    """`devbox touch NAME`: the user says the drone is in use."""
    installed.require_drone(ctx.paths, name)
    return activity.mark(ctx.paths, name, "touch", ctx.clock())
