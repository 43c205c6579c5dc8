"""What a repository's devcontainer.json adds to its drone's container, checked.

devbox/devcontainer/ reads and judges the repository's file and builds this; the units are
rendered from it. Every value here has passed the same checks as a user's own options.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ContainerExtras:
    volumes: tuple[str, ...] = ()  # Volume= values, SOURCE:TARGET[:OPTIONS]
    cap_add: tuple[str, ...] = ()  # capabilities from the allow-list (devcontainer/model.py)
    security_opt: tuple[str, ...] = ()  # --security-opt values from the allow-list
    uid: int | None = None  # keep-id maps the host user onto the image's remote user
    gid: int | None = None
    workdir: str | None = None  # workspaceFolder
    home: str | None = None  # the remote user's home in the image: the home volume goes there
    hooks: str | None = None  # the per-drone devcontainer.json (lifecycle hooks, JSON text), mounted read-only
    compose: str | None = None  # a compose-based devcontainer.json's other services (compose file text), read-only
    hosts: tuple[str, ...] = ()  # their names, each 127.0.0.1 in the drone (they share its network)
