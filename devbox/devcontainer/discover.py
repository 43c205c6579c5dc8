"""Finding a workspace's devcontainer.json where the Dev Containers spec looks for it.

`.devcontainer/devcontainer.json`, `.devcontainer.json`, `.devcontainer/SUB/devcontainer.json`.
A repository's files are untrusted: a config file, a Dockerfile or a build context that
resolves (through symbolic links or `..`) outside the workspace is refused, so nothing of the
host's is read or sent to a build.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from devbox.devcontainer.model import DevcontainerSource
from devbox.devcontainer.read import Document
from devbox.errors import invalid

CONFIG_NAME = "devcontainer.json"
_PART = re.compile(r"[A-Za-z0-9._-]{1,64}")  # of the config's path: it becomes a label's value


def inside(workspace: Path, path: Path, what: str) -> Path:
    """PATH resolved, refused unless it is WORKSPACE or below it."""
    root = workspace.resolve()
    resolved = path.resolve()
    if resolved != root and root not in resolved.parents:
        raise invalid(f"{what} {path} is outside the workspace {root} (a symbolic link or '..'): refused")
    return resolved


def candidates(workspace: Path) -> list[str]:
    """Every configuration in WORKSPACE, relative paths, in the spec's order of preference."""
    found = []
    for relative in (f".devcontainer/{CONFIG_NAME}", f".{CONFIG_NAME}"):
        if (workspace / relative).is_file():
            found.append(relative)
    folder = workspace / ".devcontainer"
    if folder.is_dir():
        found += sorted(
            f".devcontainer/{sub.name}/{CONFIG_NAME}"
            for sub in folder.iterdir()
            if _PART.fullmatch(sub.name) and (sub / CONFIG_NAME).is_file()
        )
    return found


def choose(workspace: Path, wanted: str | None) -> str | None:
    """The configuration to use, relative to WORKSPACE: WANTED (SUB or a path), or the only one there."""
    found = candidates(workspace)
    if wanted is not None:
        relative = wanted if wanted.endswith(".json") else f".devcontainer/{wanted}/{CONFIG_NAME}"
        if (
            relative.startswith("/")
            or ".." in Path(relative).parts
            or not all(map(_PART.fullmatch, Path(relative).parts))
        ):
            raise invalid(f"--devcontainer {wanted!r}: give SUB or a path inside the workspace")
        if not (workspace / relative).is_file():
            listed = ", ".join(found) or "none"
            raise invalid(f"--devcontainer {wanted!r}: no {relative} in {workspace} (found: {listed})")
        return relative
    if len(found) > 1:
        subs = ", ".join(found)
        raise invalid(f"{workspace} has several devcontainer.json files ({subs}): choose one with --devcontainer")
    return found[0] if found else None


def source(workspace: Path, relative: str, document: Document) -> DevcontainerSource:
    """Where the build finds its files, each checked to be inside the workspace."""
    config_file = inside(workspace, workspace / relative, "the devcontainer.json")
    build: Any = document.value.get("build")
    context = build.get("context") if isinstance(build, dict) else document.value.get("context")
    dockerfile = build.get("dockerfile") if isinstance(build, dict) else document.value.get("dockerFile")
    if context is not None and not isinstance(context, str):
        raise document.refuse(("build", "context"), "build.context must be a string")
    if dockerfile is not None and not isinstance(dockerfile, str):
        raise document.refuse(("build", "dockerfile"), "build.dockerfile must be a string")
    context_dir = inside(workspace, config_file.parent / (context or "."), "the build context")
    if dockerfile:
        inside(workspace, config_file.parent / dockerfile, "the Dockerfile")
    return DevcontainerSource(workspace=workspace.resolve(), config_file=config_file, context_dir=context_dir)
