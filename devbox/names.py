"""Every name devbox derives from a drone's name, and the prefix of its labels: declared once,
so the unit, the container, the volume, the secret and the sockets always agree.
"""

from __future__ import annotations

from dataclasses import dataclass

LABEL_PREFIX = "io.devbox."
# The label every drone carries; Podman filters on it to list drones.
DRONE_LABEL = LABEL_PREFIX + "drone"
# The drone's sshd listens here inside the container; --ssh-port publishes it, the tailnet reaches it.
DRONE_SSH_PORT = 2222
# Inside a drone with model API keys, the key proxy's address (devbox forwards it to the host's
# keys.sock). Not 127.0.0.1: tailscaled (userspace networking) hands tailnet peers' connections there.
KEY_PROXY_ADDRESS = "127.0.0.3:9119"
# What the drone's tools get where they insist on a key of their own (ANTHROPIC_API_KEY): never the key.
PLACEHOLDER_KEY = "devbox-proxy"


@dataclass(frozen=True)
class DroneNames:
    """The names of one drone's objects. Make it with `names_of`."""

    drone: str

    @property
    def unit(self) -> str:
        """The Quadlet unit's stem, which is also the container's name."""
        return f"drone-{self.drone}"

    @property
    def container(self) -> str:
        return self.unit

    @property
    def service(self) -> str:
        return f"{self.unit}.service"

    @property
    def container_file(self) -> str:
        """The Quadlet file under ~/.config/containers/systemd."""
        return f"{self.unit}.container"

    @property
    def dropin_dir(self) -> str:
        return f"{self.container_file}.d"

    @property
    def autostart_dropin(self) -> str:
        """The Quadlet drop-in whose presence means the drone starts with the user manager."""
        return f"{self.dropin_dir}/autostart.conf"

    @property
    def tailscale_dropin(self) -> str:
        """The Quadlet drop-in that mounts the Tailscale auth key; gone once the drone's node is registered."""
        return f"{self.dropin_dir}/tailscale-authkey.conf"

    @property
    def volume(self) -> str:
        return f"{self.unit}-home"

    @property
    def containers_volume(self) -> str:
        """The image and container store of Podman inside the drone (--with containers)."""
        return f"{self.unit}-containers"

    @property
    def hooks_file(self) -> str:
        """The per-drone devcontainer.json (lifecycle hooks) under Paths.drones_dir."""
        return f"{self.drone}/devcontainer.json"

    @property
    def compose_file(self) -> str:
        """The inner services of a compose-based devcontainer.json (compose file) under Paths.drones_dir."""
        return f"{self.drone}/compose.yaml"

    @property
    def tailscale_secret(self) -> str:
        """The Podman secret holding the Tailscale auth key (mounted 0400, never in the environment)."""
        return f"{self.unit}-tailscale-authkey"

    @property
    def creds_socket(self) -> str:
        return f"{self.unit}-creds.socket"

    @property
    def creds_service(self) -> str:
        return f"{self.unit}-creds.service"

    @property
    def keys_socket(self) -> str:
        """The model API key proxy's socket unit (only for a drone with keys)."""
        return f"{self.unit}-keys.socket"

    @property
    def keys_service(self) -> str:
        return f"{self.unit}-keys.service"

    @property
    def user_units(self) -> tuple[str, str]:
        """The broker's unit pair under ~/.config/systemd/user."""
        return (self.creds_socket, self.creds_service)


def names_of(drone: str) -> DroneNames:
    return DroneNames(drone)


def devcontainer_volume(drone: str, source: str) -> str:
    """A named volume a devcontainer.json mounts, the drone's own: no repository reaches another's volumes."""
    return f"drone-{drone}-vol-{source}"


def tailnet_name(name: str, tailnet: str | None) -> str:
    """MagicDNS answers the bare node name on the tailnet; the full name works everywhere."""
    return f"{name}.{tailnet}" if tailnet else name
