"""The Tailscale auth key's life in a drone: mounted until the drone's node is registered, then gone.

`create` writes the key as the Podman secret drone-NAME-tailscale-authkey and the Quadlet drop-in
drone-NAME.container.d/tailscale-authkey.conf that mounts it. The drone's init writes a marker in
its home volume once `tailscale up` with the key has succeeded. `retire_key`, which `devbox start`
and `restart` run before the drone starts, finds that marker (host/probe.py) and removes the
drop-in and the secret; Quadlet recreates the container on every start, so from then on the key
is not in the drone. The drone can only make devbox take its key away (a marker it forges costs
it its own tailnet login); nothing it writes brings the key back: lifecycle.tailscale_login (`devbox
tailscale-login NAME`), run by a person, does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from devbox.names import names_of
from devbox.units import install
from devbox.units.installed import DroneRecord

if TYPE_CHECKING:
    from devbox.commands.progress import Progress
    from devbox.context import Context
    from devbox.host.secrets import Secret


def resolve_key(ctx: Context) -> Secret:
    """The auth key from the config's [tailscale] auth_key reference."""
    import getpass

    from devbox.host.secrets import Resolver

    reference = ctx.config.tailscale.auth_key_reference(getpass.getuser())
    return Resolver(op_token_file=ctx.paths.state_dir / "op-token").resolve(reference)


def on_tailnet(record: DroneRecord) -> bool:
    return record.declared.tailscale


def key_mounted(ctx: Context, name: str) -> bool:
    """The key drop-in is there: the next start mounts the key."""
    return (ctx.paths.quadlet_dir / names_of(name).tailscale_dropin).is_file()


def retire_key(ctx: Context, record: DroneRecord, progress: Progress) -> bool:
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
