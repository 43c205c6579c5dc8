"""The merged configuration (the image's metadata entries, then devcontainer.json) as drone settings.

Merging follows the Dev Containers spec: later entries win for single values, environments
are merged key by key, lists (ports, capabilities, security options, mounts) are joined, and the
lifecycle hooks are collected in order. Each metadata entry is checked as strictly as the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devbox.devcontainer.model import HOOKS, BuiltImage, Command, DevcontainerConfig, Hook, Mount, NamedCommands
from devbox.devcontainer.read import Document
from devbox.devcontainer.validate import check
from devbox.drone.extras import ContainerExtras
from devbox.names import devcontainer_volume
from devbox.values import PLAIN_PATH


@dataclass(frozen=True)
class Merged:
    config: DevcontainerConfig  # single values and joined lists
    hooks: dict[str, Hook]  # each hook: one H of the hooks file (brief item 2)


def metadata_configs(image: BuiltImage) -> list[DevcontainerConfig]:
    """The image's devcontainer.metadata entries, each checked like a devcontainer.json."""
    found = []
    for index, entry in enumerate(image.metadata):
        where = Path(f"the devcontainer.metadata label of {image.tag}, entry {index + 1}")
        found.append(check(Document(where, entry if isinstance(entry, dict) else {}, {}), None))
    return found


def _hook_value(values: list[Hook]) -> Hook:
    """Several entries' commands for one hook as one: the object form, in order (run in order)."""
    unique: list[Command | NamedCommands] = []
    for value in values:  # the CLI's label repeats devcontainer.json's own entry: once is enough
        if value is not None and value not in unique:
            unique.append(value)
    if len(unique) <= 1:
        return unique[0] if unique else None
    named: list[tuple[str, Command]] = []
    for index, value in enumerate(unique, start=1):
        if isinstance(value, NamedCommands):
            named += [(f"{index}-{name}", command) for name, command in value.items]
        else:
            named.append((str(index), value))
    return NamedCommands(tuple(named))


def merge(entries: list[DevcontainerConfig]) -> Merged:
    """ENTRIES in order (metadata first, devcontainer.json last) as one configuration."""

    def last(attribute: str) -> Any:
        values = [getattr(e, attribute) for e in entries if getattr(e, attribute) is not None]
        return values[-1] if values else None

    def joined(attribute: str) -> tuple[Any, ...]:
        return tuple(dict.fromkeys(item for e in entries for item in getattr(e, attribute)))

    def env(attribute: str) -> tuple[tuple[str, str], ...]:
        merged: dict[str, str] = {}
        for entry in entries:
            merged.update(getattr(entry, attribute))
        return tuple(merged.items())

    mounts: dict[str, Mount] = {}
    for entry in entries:
        mounts.update((m.target, m) for m in entry.mounts)  # a later mount at the same target wins
    config = DevcontainerConfig(
        image=last("image"),
        container_env=env("container_env"),
        remote_env=env("remote_env"),
        remote_user=last("remote_user"),
        container_user=last("container_user"),
        mounts=tuple(mounts.values()),
        workspace_folder=last("workspace_folder"),
        ports=joined("ports"),
        cap_add=joined("cap_add"),
        security_opt=joined("security_opt"),
        init=any(e.init for e in entries) or None,
        cpus=last("cpus"),
        memory=last("memory"),
        repositories=entries[-1].repositories if entries else (),
        notes=tuple(note for e in entries for note in e.notes),
    )
    hooks = {name: _hook_value([dict(e.hooks).get(name) for e in entries]) for name in HOOKS}
    return Merged(config, hooks)


def _json_hook(value: Hook) -> Any:
    if isinstance(value, NamedCommands):
        return {name: command if isinstance(command, str) else list(command) for name, command in value.items}
    return list(value) if isinstance(value, tuple) else value


def hooks_file(merged: Merged, workspace_folder: str, config_hash: str) -> str:
    """The per-drone devcontainer.json the drone's init reads, mounted read-only. The once-per-drone
    hooks run again when the build's hash differs from the one their marker recorded (a rebuild)."""
    config = merged.config
    document = {
        "configHash": config_hash,
        "remoteUser": config.remote_user or config.container_user,
        "workspaceFolder": config.workspace_folder or workspace_folder,
        "remoteEnv": dict(config.remote_env),
        **{name: _json_hook(merged.hooks[name]) for name in HOOKS},
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def volume_spec(drone: str, mount: Mount) -> str:
    """A Volume= value: a bind of a workspace path, or the drone's own copy of a named volume."""
    source = mount.source if mount.kind == "bind" else devcontainer_volume(drone, mount.source)
    return f"{source}:{mount.target}" + (":ro" if mount.readonly else "")


def extras(
    drone: str, merged: Merged, image: BuiltImage, workdir: str | None, workspace_folder: str
) -> ContainerExtras:
    config = merged.config
    user_given = config.remote_user or config.container_user or image.remote_user
    return ContainerExtras(
        volumes=tuple(volume_spec(drone, m) for m in config.mounts),
        cap_add=config.cap_add,
        security_opt=config.security_opt,
        uid=image.remote_uid if user_given else None,
        gid=image.remote_gid if user_given else None,
        workdir=workdir,
        # sshd logs the remote user in to its home from the image's passwd: the drone's home
        # volume is mounted there, so SSH sessions, the init and the hooks share one home.
        home=drone_home(merged, image),
        hooks=hooks_file(merged, workspace_folder, image.config_hash),
    )


def drone_home(merged: Merged, image: BuiltImage) -> str | None:
    """Where the drone's home volume goes: the image's remote user's home; None: the host user's (%h)."""
    config = merged.config
    user_given = config.remote_user or config.container_user or image.remote_user
    return _home(image.remote_home) if user_given and image.remote_uid is not None else None


def _home(path: str | None) -> str | None:
    """The image's home directory for the remote user, when it is a plain absolute path (not /)."""
    if path is None or path == "/" or not PLAIN_PATH.fullmatch(path) or "/../" in f"{path}/":
        return None
    return path
