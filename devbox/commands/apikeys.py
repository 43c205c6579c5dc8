"""Model API keys for a drone: which ones it gets, and their secrets resolved for the key proxy.

The proxy (broker/keyproxy.py) loads each key as a systemd credential from a file: the user's own
file for a `file:` reference, else a 0600 copy devbox keeps in its state directory, written at
create time like the GitHub App key. The key never goes into a unit file, the environment, argv,
the journal, an error message or the drone.
"""

from __future__ import annotations

from collections.abc import Sequence

from devbox.context import Context
from devbox.errors import invalid
from devbox.units import install
from devbox.values import validate_key_name


def drone_keys(ctx: Context, requested: Sequence[str]) -> tuple[str, ...]:
    """The config's [drone] keys and --key NAME, each one a [keys.NAME] of the config."""
    names = tuple(dict.fromkeys([*ctx.config.drone.keys, *(validate_key_name(k) for k in requested)]))
    for name in names:
        if name not in ctx.config.keys:
            configured = ", ".join(sorted(ctx.config.keys)) or "none"
            raise invalid(
                f"no model API key {name!r} in {ctx.paths.config_file}: add a [keys.{name}] table "
                f"with secret = ... (configured: {configured})"
            )
    return names


def without_key_env(ctx: Context, keys: Sequence[str], env: dict[str, str]) -> dict[str, str]:
    """ENV without the variables the drone's keys set (ANTHROPIC_BASE_URL...). The same value again is
    dropped (restore reads them back from the unit with the rest); another value is refused: the
    tools would miss the proxy, or the placeholder would pose as a key."""
    from devbox.context import key_facts

    ours = {name: value for key in key_facts(ctx) if key.name in keys for name, value in key.env}
    for name, value in env.items():
        if name in ours and value != ours[name]:
            raise invalid(f"--env {name} is set by the key proxy for this drone's keys: leave it out")
    return {name: value for name, value in env.items() if name not in ours}


def secret_references(ctx: Context) -> tuple[str, ...]:
    """Every key's secret reference: a file: one's directory is never mounted into a drone."""
    return tuple(key.secret for key in ctx.config.keys.values())


def install_keys(ctx: Context, names: Sequence[str]) -> None:
    """Resolve each key (a failure stops before anything is written), then write the copies.

    A file: reference is read too, which checks that the file is there and private (0600)."""
    from devbox.host.secrets import Resolver

    resolver = Resolver(op_token_file=ctx.paths.state_dir / "op-token")
    resolved = [(name, resolver.resolve(ctx.config.keys[name].secret)) for name in names]
    for name, secret in resolved:
        if secret.reference.startswith("file:"):
            continue
        path = ctx.paths.key_copy(name)
        for directory in (path.parent.parent, path.parent):
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        install.atomic_write(path, secret.value + "\n", mode=0o600)
