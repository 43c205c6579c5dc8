"""devbox-cleanup.timer: installed with the first drone, removed with the last (unless [cleanup] keep_timer).

`create` writes its files before the daemon-reload the drone needs anyway and enables it
afterwards (then reloads again: only the first drone pays that); `destroy` removes them with the
drone's own files, before its one reload.
"""

from __future__ import annotations

from pathlib import Path

from devbox.context import Context, host_facts
from devbox.units import install
from devbox.units.render import CLEANUP_SERVICE, CLEANUP_TIMER, render_cleanup


def timer_installed(ctx: Context) -> bool:
    return (ctx.paths.unit_dir / CLEANUP_TIMER).is_file()


def _plan(ctx: Context) -> list[install.PlannedFile]:
    return install.plan(render_cleanup(host_facts(ctx)), ctx.paths)


def write_timer(ctx: Context) -> list[install.PlannedFile]:
    """Write (or refresh) devbox-cleanup.{timer,service}; what was written, for a rollback.
    The caller reloads the user manager, then calls enable_timer."""
    return install.apply(_plan(ctx))


def enable_timer(ctx: Context, changed: bool) -> None:
    """Enable and start the timer, whose files the last daemon-reload loaded.

    Enabling marks every unit of the manager NeedDaemonReload=yes until the next reload
    (`systemctl status` then warns that each drone's unit changed on disk): reload once more."""
    linked = (ctx.paths.unit_dir / "timers.target.wants" / CLEANUP_TIMER).exists()
    if changed or not linked:
        ctx.systemd.enable(CLEANUP_TIMER)
        ctx.systemd.daemon_reload()


def install_timer(ctx: Context) -> list[install.PlannedFile]:
    """`devbox cleanup --install`: write, reload when something changed, enable and start."""
    planned = _plan(ctx)
    written = install.apply(planned)
    if written:
        ctx.systemd.daemon_reload()
    enable_timer(ctx, changed=bool(written))
    return planned


def remove_timer(ctx: Context) -> list[Path]:
    """Disable and stop the timer and remove its files; the caller reloads the user manager."""
    removed: list[Path] = []
    if timer_installed(ctx):
        ctx.systemd.disable(CLEANUP_TIMER)
    # devbox-cleanup.service is not stopped: it may be the very process destroying the last drone.
    for unit in (CLEANUP_TIMER, CLEANUP_SERVICE):
        if install.remove_file(ctx.paths.unit_dir / unit):
            removed.append(ctx.paths.unit_dir / unit)
    return removed


def uninstall_timer(ctx: Context) -> list[Path]:
    """`devbox cleanup --uninstall`."""
    removed = remove_timer(ctx)
    if removed:
        ctx.systemd.daemon_reload()
    return removed
