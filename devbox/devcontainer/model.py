"""The interface between the devcontainer.json reader and the image builder (devcontainer-brief.md, item 1).

A minimal copy, with the same names, of the one the configuration side writes: the builder needs it first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

Progress = Callable[[str], None]  # commands/progress.py's shape; this layer sits below commands


@dataclass(frozen=True)
class DevcontainerSource:
    workspace: Path  # the --path directory, or the repository's checkout on this host
    config_file: Path  # the devcontainer.json, inside workspace
    context_dir: Path  # build.context resolved against the config file's directory, or that directory


@dataclass(frozen=True)
class BuiltImage:
    tag: str  # the runnable drone image, devbox's contract layer included
    metadata: tuple[dict[str, Any], ...]  # the image's devcontainer.metadata label, parsed
    config_hash: str
    remote_uid: int | None = None  # the remote user's ids, name and home in the image
    remote_gid: int | None = None
    remote_user: str | None = None
    remote_home: str | None = None


class ImageBuilder(Protocol):
    def build(self, source: DevcontainerSource, progress: Progress) -> BuiltImage: ...
