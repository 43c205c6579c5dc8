"""Reaching a drone: the SSH target (with its host key recorded), the workspace an editor opens,
the argv of `devbox exec`. The CLI only executes what these return.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import replace

from devbox.commands import lifecycle
from devbox.context import Context
from devbox.drone import access
from devbox.drone.access import SshTarget
from devbox.names import names_of
from devbox.units.installed import require_drone


def ssh_target(ctx: Context, name: str, from_elsewhere: bool = False) -> SshTarget:
    """How to reach drone NAME over SSH from here (or, FROM_ELSEWHERE, from the user's other machines)."""
    record = require_drone(ctx.paths, name)
    key = ctx.paths.drone_key(name)
    identity = str(key) if key.exists() else None
    tailnet = ctx.config.tailscale.tailnet
    user = record.declared.login_user or getpass.getuser()  # keep-id: else the drone user is the host user
    target = access.ssh_target(record.declared, user, tailnet, identity, from_elsewhere=from_elsewhere)
    known_hosts = lifecycle.record_host_key(ctx, target)
    return replace(target, known_hosts=str(known_hosts)) if known_hosts else target


def editor_workspace(ctx: Context, name: str, path: str | None) -> str:
    """The directory an editor opens: PATH, else the drone's workspace, else its first checkout."""
    record = require_drone(ctx.paths, name)
    return path or record.declared.path or access.workspace(os.path.expanduser("~"), record.repos)


def exec_argv(ctx: Context, name: str, command: list[str], tty: bool) -> list[str]:
    """`podman exec` into the drone as its user, in its home; a login shell without COMMAND."""
    require_drone(ctx.paths, name)
    argv = ["podman", "exec", "--interactive", *(["--tty"] if tty else [])]
    return [*argv, "--workdir", os.path.expanduser("~"), names_of(name).container, *(command or ["bash", "-l"])]
