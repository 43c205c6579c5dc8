"""`devbox egress NAME POLICY`: another egress policy for a drone, its home volume untouched.

The fence's lines of the unit are swapped (units/egress.py), its hook file written, and a running
drone restarted: the fence is loaded as a container starts, so a new policy needs a new start.
"""

from __future__ import annotations

from dataclasses import dataclass

from devbox.commands import locks
from devbox.commands.progress import Progress, no_progress
from devbox.context import Context, host_facts
from devbox.drone.egress import parse_egress
from devbox.errors import DevboxError, ExitCode
from devbox.fence.check import require_enforceable
from devbox.names import names_of
from devbox.units import install
from devbox.units.egress import with_egress
from devbox.units.installed import require_drone
from devbox.units.render import fence_files


@dataclass(frozen=True)
class EgressChange:
    name: str
    before: str
    after: str
    restarted: bool


@locks.locked
def change(ctx: Context, name: str, policy_text: str, progress: Progress = no_progress) -> EgressChange:
    policy = str(parse_egress(policy_text))
    record = require_drone(ctx.paths, name)
    before = record.declared.egress
    if policy == before:
        return EgressChange(name, before, policy, restarted=False)
    declared = record.declared
    if parse_egress(policy).fenced:
        require_enforceable()
    host = host_facts(ctx)
    try:
        text = record.path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DevboxError(f"cannot read {record.path}: {exc.strerror}", ExitCode.ENVIRONMENT) from None
    new_text = with_egress(text, declared, policy, host)
    from dataclasses import replace

    progress("writing the unit")
    files = fence_files(replace(declared, egress=policy), host)
    install.apply(install.plan(files, ctx.paths, force=True))
    install.atomic_write(record.path, new_text)
    ctx.systemd.daemon_reload()
    service = names_of(name).service
    running = ctx.systemd.states([service])[service].active_state in ("active", "activating", "reloading")
    if running:
        progress(f"restarting {service}")
        ctx.systemd.restart(service)
    return EgressChange(name, before, policy, restarted=running)
