"""devbox: remote development containers on rootless Podman, owned by systemd."""

__version__ = "0.1.0"
