"""Ways in that outlive the connection: `devbox mosh`, `devbox attach`, `devbox sessions`.

The CLI only executes the argv these return (and prints what `sessions` finds).
"""

from __future__ import annotations

from devbox.commands import reach
from devbox.context import Context
from devbox.drone import access, mosh
from devbox.drone import sessions as tmux
from devbox.drone.services import MOSH
from devbox.errors import DevboxError, ExitCode
from devbox.names import names_of
from devbox.units.installed import require_drone


def utf8_environment(environ: dict[str, str]) -> dict[str, str]:
    """mosh needs a UTF-8 character set on both ends, and the server takes the client's locale."""
    chosen = environ.get("LC_ALL") or environ.get("LC_CTYPE") or environ.get("LANG") or ""
    if "utf-8" in chosen.lower() or "utf8" in chosen.lower():
        return environ
    return {**environ, "LC_ALL": "C.UTF-8"}


def mosh_argv(ctx: Context, name: str, command: list[str]) -> list[str]:
    """The mosh client for drone NAME from this server: SSH as `devbox ssh` runs it, the drone's UDP ports."""
    record = require_drone(ctx.paths, name)
    if MOSH not in record.declared.services:
        raise DevboxError(
            f"drone {name} was not made --with mosh: it has no UDP ports for it (devbox ssh {name} works)",
            ExitCode.CONFLICT,
        )
    target = reach.ssh_target(ctx, name)
    ports = None if target.on_tailnet else record.declared.mosh_ports
    return mosh.mosh_argv(access.ssh_argv(target, []), ports, command)


def attach_argv(ctx: Context, name: str, session: str | None, over_mosh: bool = False) -> list[str]:
    """Open or re-attach tmux session SESSION (default: main) in drone NAME, over SSH or mosh."""
    command = tmux.attach_command(session or tmux.DEFAULT_SESSION)
    if over_mosh:
        return mosh_argv(ctx, name, command)
    ssh = access.ssh_argv(reach.ssh_target(ctx, name), command)
    return [ssh[0], "-t", *ssh[1:]]  # a terminal for tmux, also when ssh's own input is not one


def list_sessions(ctx: Context, name: str, sample: float = tmux.SAMPLE_SECONDS) -> tmux.Report:
    """The drone user's tmux sessions in running drone NAME, with the CPU each used over SAMPLE seconds."""
    require_drone(ctx.paths, name)
    output = ctx.probe.tmux_sessions(names_of(name).container, sample)
    if output is None:
        raise DevboxError(f"cannot look into drone {name}: is it running? (devbox status {name})", ExitCode.PODMAN)
    return tmux.parse_report(output, sample)
