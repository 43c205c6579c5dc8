"""The loopback port test behind every claimed port: a port bound by someone else is not free, per kind."""

from __future__ import annotations

import socket

from devbox.host.ports import loopback_free


def test_a_bound_port_is_taken_for_its_kind_only() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        assert not loopback_free(port)
        assert loopback_free(port, socket.SOCK_DGRAM)  # TCP and UDP ports are separate
    assert loopback_free(port)  # released


def test_a_bound_udp_port_is_taken() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("127.0.0.1", 0))
        assert not loopback_free(holder.getsockname()[1], socket.SOCK_DGRAM)
