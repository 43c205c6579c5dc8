"""Whether a port on the host's 127.0.0.1 is free: the one test behind every port devbox claims."""

from __future__ import annotations

import socket


def loopback_free(port: int, kind: socket.SocketKind = socket.SOCK_STREAM) -> bool:
    """True when a socket of KIND can bind 127.0.0.1:PORT now (another drone stopped may still claim it)."""
    with socket.socket(socket.AF_INET, kind) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
