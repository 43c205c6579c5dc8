"""devbox rebuild: a devcontainer.json drone built again from its current configuration.

The image is built first, while the drone keeps running; then its units are rendered anew from
the same options (its labels, its own --env, its SSH keys, its ports) and the drone is restarted,
so Quadlet recreates the container from the new image. Every volume stays: the home, and the
configuration's named volumes. The once-per-drone hooks run again when the build changed
(their markers hold the build's hash). If anything fails, the old units are put back.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from devbox.commands import backup, devcontainer, lifecycle, locks
from devbox.commands.progress import Progress, no_progress
from devbox.commands.tailscale import key_mounted
from devbox.context import Context
from devbox.drone.spec import DroneSpec
from devbox.drone.sshkeys import parse_public_key
from devbox.errors import DevboxError, invalid
from devbox.names import names_of
from devbox.units import install
from devbox.units.installed import DroneRecord, find_drones, require_drone
from devbox.units.render import Place, RenderedFile, authorized_keys_file

RUNNING = ("active", "activating", "reloading")


@dataclass
class RebuildResult:
    spec: DroneSpec
    previous_image: str
    restarted: bool  # it was running, and runs the new image now
    notes: list[str] = field(default_factory=list)

    @property
    def image_changed(self) -> bool:
        return self.spec.image != self.previous_image


def _authorized_keys(ctx: Context, name: str) -> list[str]:
    """The keys the drone admits now (its --ssh-key and --new-ssh-key ones too): a rebuild adds none."""
    path = install.target_path(ctx.paths, Place.DRONES, authorized_keys_file(name))
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    return [line for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _kept(ctx: Context, record: DroneRecord, files: list[RenderedFile]) -> list[RenderedFile]:
    """The drop-ins stay as they are: no autostart for a stopped drone, no auth key once it is retired."""
    names = names_of(record.name)
    dropped = set()
    if not record.autostart:
        dropped.add(names.autostart_dropin)
    if not key_mounted(ctx, record.name):
        dropped.add(names.tailscale_dropin)
    return [f for f in files if f.relative_path not in dropped]


def new_spec(ctx: Context, record: DroneRecord, *, fresh: bool, progress: Progress) -> tuple[DroneSpec, list[str]]:
    """The drone's spec from its unit's options and its workspace's current devcontainer.json, built."""
    declared = record.declared
    text = record.path.read_text(encoding="utf-8")
    request, _ = backup.request_from_unit(text, record.name, dict(ctx.config.github.permissions))
    request = replace(request, image=None)  # the image is the configuration's, built anew
    spec = lifecycle.build_spec(ctx, request)
    keys = tuple(parse_public_key(key, "an SSH key of the drone") for key in _authorized_keys(ctx, record.name))
    spec = replace(spec, created=declared.created, ssh_keys=keys)
    own_ports = {host for host, _ in declared.ports}  # its own published ports are taken by itself

    def is_free(port: int) -> bool:
        return port in own_ports or lifecycle.port_free(port)

    built, notes = devcontainer.prepare(ctx, request, spec, build=True, is_free=is_free, progress=progress, fresh=fresh)
    if not built.devcontainer:
        raise invalid(f"drone {record.name}'s devcontainer.json is gone: nothing to rebuild it from")
    return built, notes


@locks.locked
def rebuild(ctx: Context, name: str, *, fresh: bool = False, progress: Progress = no_progress) -> RebuildResult:
    record = require_drone(ctx.paths, name)
    if not record.declared.devcontainer:
        raise invalid(f"drone {name} was not made from a devcontainer.json: there is nothing to rebuild")
    spec, notes = new_spec(ctx, record, fresh=fresh, progress=progress)
    service = names_of(name).service
    running = ctx.systemd.states([service])[service].active_state in RUNNING
    planned = install.plan(_kept(ctx, record, lifecycle.render_files(ctx, spec)), ctx.paths, force=True)
    progress("writing unit files")
    with locks.claims_lock(ctx.paths, waiting=progress):  # a create may have claimed a new forwarded port
        others = {n: r for n, r in find_drones(ctx.paths).items() if n != name}
        lifecycle.refuse_claimed(spec, lifecycle.port_owners(others), "rebuild")
        written = install.apply(planned)
    try:
        ctx.systemd.daemon_reload()
        lifecycle.check_generated(ctx, name)
        if running:
            progress(f"restarting {service} on the new image")
            lifecycle.start_or_explain(ctx, service, ctx.systemd.restart)
    except BaseException:
        _put_back(ctx, written, service if running else None)
        raise
    return RebuildResult(spec, record.image, running, notes)


def _put_back(ctx: Context, written: list[install.PlannedFile], service: str | None) -> None:
    """The old units again, and the drone on its old image if it was running; the first error is the one told."""
    try:
        install.rollback(written)
        ctx.systemd.daemon_reload()
        if service is not None:
            ctx.systemd.restart(service)
    except (DevboxError, OSError):
        pass
