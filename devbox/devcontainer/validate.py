"""Judging one configuration (a devcontainer.json, or an entry of an image's metadata label) whole:
what is refused up front, then every key through model.py's checks and runargs.py's allow-list.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from devbox.devcontainer.model import HOOKS, KNOWN_KEYS, Checker, DevcontainerConfig
from devbox.devcontainer.read import Document, JsonPath
from devbox.devcontainer.runargs import check_run_args


def _check_every_string(checker: Checker, value: Any, path: JsonPath) -> None:
    """Keys and values at any depth (features' options too) pass the --env value check."""
    if isinstance(value, str):
        checker.checked(path, value)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_every_string(checker, item, (*path, index))
    elif isinstance(value, dict):
        for key, item in value.items():
            checker.checked((*path, key), key)
            _check_every_string(checker, item, (*path, key))


def _refuse_up_front(checker: Checker, compose: bool) -> None:
    """What a devcontainer.json may never ask for: one line each."""
    if checker.get("privileged") is True:
        raise checker.refuse(("privileged",), "privileged containers are refused")
    if checker.get("dockerComposeFile") is not None and not compose:
        raise checker.refuse(("dockerComposeFile",), "docker compose configurations are taken from a workspace only")
    _check_every_string(checker, checker.doc.value, ())
    for key in sorted(set(checker.doc.value) - KNOWN_KEYS):
        checker.notes.append(f"{checker.doc.where((key,))}: {key} is not used by devbox")
    if checker.get("initializeCommand") is not None:
        where = checker.doc.where(("initializeCommand",))
        checker.notes.append(f"{where}: initializeCommand is never run (nothing from a repository runs on this host)")


def check(document: Document, workspace: Path | None, *, compose: bool = False) -> DevcontainerConfig:
    """DOCUMENT (variables already substituted) as a DevcontainerConfig, or one line that refuses it.
    COMPOSE: a workspace's file, whose dockerComposeFile devcontainer/compose.py reads."""
    checker = Checker(document, workspace)
    _refuse_up_front(checker, compose)
    run = check_run_args(checker, checker.strings("runArgs"))
    cpus, memory = checker.host_requirements()
    init = checker.get("init")
    if init is not None and not isinstance(init, bool):
        raise checker.refuse(("init",), "init must be true or false")
    folder = checker.get("workspaceFolder")
    return DevcontainerConfig(
        image=checker.image(),
        container_env=checker.env("containerEnv") + run.env,
        remote_env=checker.env("remoteEnv"),
        remote_user=checker.user("remoteUser"),
        container_user=checker.user("containerUser"),
        mounts=checker.mounts() + run.mounts,
        workspace_folder=None
        if folder is None
        else checker.target(("workspaceFolder",), checker.string(("workspaceFolder",), folder)),
        ports=checker.ports(),
        cap_add=tuple(dict.fromkeys([*(checker.cap(p, v) for p, v in checker.strings("capAdd")), *run.cap_add])),
        security_opt=tuple(
            dict.fromkeys([*(checker.security_opt(p, v) for p, v in checker.strings("securityOpt")), *run.security_opt])
        ),
        init=init or run.init or None,
        cpus=cpus,
        memory=memory,
        hooks=tuple((key, checker.hook((key,), checker.get(key))) for key in HOOKS if checker.get(key) is not None),
        repositories=checker.repositories(),
        notes=tuple(checker.notes),
    )
