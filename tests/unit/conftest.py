from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from devbox.cli import app as cli
from devbox.commands import lifecycle, mosh
from tests.fakes import FakePodman, FakeSystemd, World, fake_paths


@pytest.fixture
def runtime_dir() -> Iterator[Path]:
    """A short XDG_RUNTIME_DIR: socket paths must stay under 108 bytes, pytest's tmp_path is long."""
    path = Path(tempfile.mkdtemp(prefix="dbx-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def world(tmp_path: Path, runtime_dir: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    paths = fake_paths(tmp_path, runtime_dir)
    w = World(paths, FakeSystemd(paths.quadlet_dir), FakePodman())
    monkeypatch.setattr(cli, "make_context", lambda: w.context())
    # Ports this host happens to use (an e2e machine shares its network) must not change what tests see.
    monkeypatch.setattr(lifecycle, "port_free", lambda port: True)
    # Nor whether this host has nftables: the fence's check is faked (tests/unit/test_egress.py tries it).
    monkeypatch.setattr("devbox.fence.check.enforcement_problem", lambda: None)
    monkeypatch.setattr(mosh, "udp_free", lambda port: True)
    monkeypatch.setenv("DEVBOX_CONFIG", str(paths.config_file))
    return w


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """urllib honours proxy variables; the fake GitHub the tests talk to is on loopback."""
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
