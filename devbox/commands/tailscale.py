"""The Tailscale auth key's life in a drone: mounted until the drone's node is registered, then gone.

`create` writes the key as the Podman secret drone-NAME-tailscale-authkey and the Quadlet drop-in
drone-NAME.container.d/tailscale-authkey.conf that mounts it. The drone's init writes a marker in
its home volume once `tailscale up` with the key has succeeded. `retire_key`, which `devbox start`
and `restart` run before the drone starts, finds that marker (host/probe.py) and removes the
drop-in and the secret; Quadlet recreates the container on every start, so from then on the key
is not in the drone. The drone can only make devbox take its key away (a marker it forges costs
it its own tailnet login); nothing it writes brings the key back: `login` (`devbox tailscale-login
NAME`), run by a person, does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from devbox.commands.inventory import DroneRecord, require_drone
from devbox.errors import invalid
from devbox.names import names_of
from devbox.units import install

if TYPE_CHECKING:
    from collections.abc import Callable

    from devbox.context import Context
    from devbox.host.secrets import Secret


def resolve_key(ctx: Context) -> Secret:
    """The auth key from the config's [tailscale] auth_key reference."""
    import getpass

    from devbox.host.secrets import Resolver

    reference = ctx.config.tailscale.auth_key_reference(getpass.getuser())
    return Resolver(op_token_file=ctx.paths.state_dir / "op-token").resolve(reference)


def on_tailnet(record: DroneRecord) -> bool:
    return record.labels.get("tailscale") == "true"


def key_mounted(ctx: Context, name: str) -> bool:
    """The key drop-in is there: the next start mounts the key."""
    return (ctx.paths.quadlet_dir / names_of(name).tailscale_dropin).is_file()


def retire_key(ctx: Context, record: DroneRecord, progress: Callable[[str], None]) -> bool:
    """Stop mounting the key once the drone's node is registered. True when it did that now."""
    names = names_of(record.name)
    if not on_tailnet(record) or not key_mounted(ctx, record.name):
        return False
    if not ctx.probe.tailscale_registered(names.volume):
        return False
    progress("the drone's tailnet node is registered: removing its Tailscale auth key")
    install.remove_file(ctx.paths.quadlet_dir / names.tailscale_dropin)
    ctx.systemd.daemon_reload()
    # After the reload: no start of the drone asks for the secret any more.
    ctx.podman.remove_secret(names.tailscale_secret)
    return True


def login(ctx: Context, name: str, progress: Callable[[str], None]) -> None:
    """Give a drone its auth key again (its node is gone, or its state was lost) and restart it."""
    from devbox.commands import lifecycle
    from devbox.units.render import render_tailscale_key

    record = require_drone(ctx.paths, name)
    if not on_tailnet(record):
        raise invalid(f"drone {name} is not on a tailnet: there is no key to give it")
    key = resolve_key(ctx)  # fails before any write
    names = names_of(name)
    progress(f"writing the Podman secret {names.tailscale_secret}")
    ctx.podman.create_secret(names.tailscale_secret, key.value)
    dropin = render_tailscale_key(name, lifecycle.host_facts(ctx))
    install.atomic_write(ctx.paths.quadlet_dir / dropin.relative_path, dropin.text)
    ctx.systemd.daemon_reload()
    # Not through retire_key: the drone's old marker goes only when its init starts with the key.
    lifecycle.restart(ctx, name, progress, keep_key=True)
