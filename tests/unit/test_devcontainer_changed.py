"""`status` says when a --path drone's devcontainer.json changed since its image was built."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from devbox.commands.devcontainer import _document, changed_since_build
from devbox.devcontainer import discover
from devbox.devcontainer.build import config_hash
from devbox.drone.spec import DroneSpec

CONFIG = '{\n  // a comment\n  "build": {"dockerfile": "Dockerfile"},\n  "containerEnv": {"A": "1"},\n}\n'


def _drone(workspace: Path) -> DroneSpec:
    relative = ".devcontainer/devcontainer.json"
    document = _document("demo", workspace, relative, str(workspace))
    built = config_hash(discover.source(workspace, relative, document))
    return DroneSpec(
        name="demo",
        image="localhost/x:1",
        created=datetime(2026, 11, 30, tzinfo=UTC),
        version="0",
        path=str(workspace),
        devcontainer=relative,
        devcontainer_hash=built,
    )


def _workspace(tmp_path: Path) -> Path:
    (tmp_path / ".devcontainer").mkdir()
    (tmp_path / ".devcontainer" / "devcontainer.json").write_text(CONFIG)
    (tmp_path / ".devcontainer" / "Dockerfile").write_text("FROM localhost/devbox-base:trixie\n")
    return tmp_path


def test_unchanged_then_changed_config_and_context(tmp_path: Path) -> None:
    workspace = _workspace(tmp_path)
    declared = _drone(workspace)
    assert changed_since_build(declared, tmp_path / "compose") is False
    (workspace / ".devcontainer" / "Dockerfile").write_text("FROM localhost/devbox-base:trixie\nRUN true\n")
    assert changed_since_build(declared, tmp_path / "compose") is True


def test_unknown_for_a_repo_drone_or_an_unreadable_config(tmp_path: Path) -> None:
    workspace = _workspace(tmp_path)
    declared = _drone(workspace)
    assert changed_since_build(replace(declared, path=None), tmp_path / "compose") is None
    (workspace / ".devcontainer" / "devcontainer.json").write_text("{ not json")
    assert changed_since_build(declared, tmp_path / "compose") is None
