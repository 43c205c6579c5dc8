"""Podman's API JSON, as recorded from Podman 5.4.2 in the e2e machine, into ContainerInfo."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from devbox.podman import container_from_api

RECORDED = Path(__file__).resolve().parent.parent / "data" / "podman-5.4-containers-list.json"


def test_a_running_drone_from_the_recorded_list() -> None:
    (raw,) = json.loads(RECORDED.read_text())
    info = container_from_api(raw)
    assert (info.name, info.drone, info.state, info.image) == (
        "drone-t1",
        "t1",
        "running",
        "localhost/devbox-test:latest",
    )
    assert info.started_at == datetime.fromtimestamp(raw["StartedAt"], tz=UTC)
    assert info.labels["repos"] == "acme/demo" and info.labels["drone"] == "t1"
    assert "PODMAN_SYSTEMD_UNIT" not in info.labels
    assert info.ports == () and info.exit_code is None


def test_an_exited_container_with_ports() -> None:
    (raw,) = json.loads(RECORDED.read_text())
    raw = {
        **raw,
        "State": "exited",
        "ExitCode": 137,
        "Ports": [{"host_ip": "127.0.0.1", "container_port": 2222, "host_port": 2201, "range": 1, "protocol": "tcp"}],
    }
    info = container_from_api(raw)
    assert (info.state, info.started_at, info.exit_code) == ("exited", None, 137)
    assert info.ports == ("127.0.0.1:2201->2222/tcp",)
