"""The outside world the use-cases work on: paths, config, systemd, Podman, clock, probe.

Each part is made on first use, so a command pays only for what it touches (`devbox list`
never parses the config unless a drone is on a tailnet, and never imports pystemd).
Tests build a `Context` with fakes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devbox.errors import DevboxError, ExitCode
from devbox.paths import Paths
from devbox.values import PLAIN_PATH

if TYPE_CHECKING:
    from devbox.config import Config
    from devbox.host.podman import Podman
    from devbox.host.probe import Probe
    from devbox.host.systemd import Systemd


def real_context(image_builder_factory: Callable[[Context], Any] | None = None) -> Context:
    """The real world: this user's paths, systemd (pystemd or systemctl) and the Podman API socket;
    the devcontainer builder as the caller (the CLI, at the top of the layers) makes it."""
    paths = Paths.from_env()

    def connect_systemd() -> Systemd:
        from devbox.host import systemd

        return systemd.connect()

    def connect_podman() -> Podman:
        from devbox.host import podman

        return podman.PodmanPy(podman.default_socket(paths.runtime_dir))

    return Context(
        paths,
        systemd_factory=connect_systemd,
        podman_factory=connect_podman,
        image_builder_factory=image_builder_factory,
    )


class Context:
    """What the use-cases need from the outside world, made on first use."""

    def __init__(
        self,
        paths: Paths,
        *,
        systemd_factory: Callable[[], Systemd],
        podman_factory: Callable[[], Podman],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        devbox_command: Sequence[str] = (sys.executable, "-m", "devbox"),
        podman_command: str | None = None,
        config: Config | None = None,
        probe_factory: Callable[[], Probe] | None = None,
        quadlet_version_factory: Callable[[], tuple[int, int] | None] | None = None,
        image_builder_factory: Callable[[Context], Any] | None = None,
    ) -> None:
        self.paths = paths
        self._systemd_factory = systemd_factory
        self._podman_factory = podman_factory
        self.clock = clock
        self.devbox_command = tuple(devbox_command)
        self._podman_command = podman_command
        self._config = config
        self._probe_factory = probe_factory
        self._quadlet_version_factory = quadlet_version_factory
        self._image_builder_factory = image_builder_factory

    @cached_property
    def podman_command(self) -> str:
        """podman's absolute path, for what the API cannot do (volume export, exec)."""
        import shutil

        return self._podman_command or shutil.which("podman") or "/usr/bin/podman"

    @cached_property
    def quadlet_version(self) -> tuple[int, int] | None:
        """The Quadlet generator's (major, minor): rendering uses the keys it reads."""
        if self._quadlet_version_factory is not None:
            return self._quadlet_version_factory()
        from devbox.host.quadlet import generator_version

        return generator_version()

    @cached_property
    def config(self) -> Config:
        """config.toml, parsed on first use: `list` reads it only for a drone on a tailnet."""
        if self._config is not None:
            return self._config
        from devbox.config import load_config

        return load_config(self.paths.config_file)

    @cached_property
    def systemd(self) -> Systemd:
        return self._systemd_factory()

    @cached_property
    def podman(self) -> Podman:
        return self._podman_factory()

    @cached_property
    def probe(self) -> Probe:
        """What the idle clean-up measures and does inside drones (podman exec and run)."""
        if self._probe_factory is not None:
            return self._probe_factory()
        from devbox.host.probe import PodmanProbe

        return PodmanProbe(self.podman_command)

    @cached_property
    def image_builder(self) -> Any:
        """Builds a repository's devcontainer.json (a devcontainer.model.ImageBuilder; typed Any here
        because that layer sits above this one)."""
        if self._image_builder_factory is None:
            raise DevboxError("the devcontainer builder is not available in this devbox", ExitCode.ENVIRONMENT)
        return self._image_builder_factory(self)


@dataclass(frozen=True)
class KeyFacts:
    """A configured model API key as a drone's units need it: never the key itself."""

    name: str
    credential: str  # the key file the proxy loads (LoadCredential=)
    env: tuple[tuple[str, str], ...]  # the drone's variables: the base URL, a placeholder key


@dataclass(frozen=True)
class HostFacts:
    """What the units need to know about this host, gathered by the caller (render does no I/O)."""

    devbox_command: tuple[str, ...]  # argv that runs devbox here (the broker's ExecStart)
    podman_command: str  # absolute path of podman
    tools_dir: str  # Paths.tools_dir
    git_url: str = "https://github.com"
    github_key_path: str | None = None  # the App key file for LoadCredential=, when a GitHub App is set
    drones_dir: str = "/nonexistent/devbox-data/drones"  # Paths.drones_dir
    uid: int = 1000  # the invoking user: keep-id makes it the drone user
    gid: int = 1000
    selinux: bool = False  # bind mounts get :z
    # The host's Quadlet generator, (major, minor); None when unknown: then only keys every
    # Quadlet devbox supports (4.4 on) reads, with PodmanArgs= for the rest.
    quadlet_version: tuple[int, int] | None = None
    keys: tuple[KeyFacts, ...] = ()  # every [keys.NAME] of the config; a drone's units use its own


def selinux_enabled() -> bool:
    """Bind mounts need a relabel (:z) where SELinux is on."""
    return Path("/sys/fs/selinux/enforce").exists()


def plain_path(path: Path | str, what: str) -> str:
    """Paths that go into unit values unquoted (Volume=, LoadCredential=) must need no quoting."""
    text = str(path)
    if not PLAIN_PATH.fullmatch(text):
        raise DevboxError(f"{what} {text!r} has characters unit files cannot hold: use a plain path", ExitCode.CONFIG)
    return text


def github_key_path(ctx: Context) -> str | None:
    """The App key file the broker loads: the file itself for file:, else devbox's private copy."""
    reference = ctx.config.github.private_key
    if not ctx.config.github.enabled or reference is None:
        return None
    if reference.startswith("file:"):
        return plain_path(Path(os.path.expanduser(reference[5:])).resolve(), "the GitHub App key path")
    return plain_path(ctx.paths.github_key_copy, "the devbox state directory")


def key_file(ctx: Context, name: str) -> str:
    """The file key NAME's proxy loads: the file itself for file:, else devbox's private copy."""
    reference = ctx.config.keys[name].secret
    if reference.startswith("file:"):
        return plain_path(Path(os.path.expanduser(reference[5:])).resolve(), f"the key file of [keys.{name}]")
    return plain_path(ctx.paths.key_copy(name), "the devbox state directory")


def key_facts(ctx: Context) -> tuple[KeyFacts, ...]:
    from devbox.names import KEY_PROXY_ADDRESS, PLACEHOLDER_KEY

    facts = []
    for name, key in sorted(ctx.config.keys.items()):
        env = []
        if key.base_url_env:
            env.append((key.base_url_env, f"http://{KEY_PROXY_ADDRESS}/{name}{key.base_path}"))
        if key.key_env:
            env.append((key.key_env, PLACEHOLDER_KEY))
        facts.append(KeyFacts(name, key_file(ctx, name), tuple(env)))
    return tuple(facts)


def host_facts(ctx: Context) -> HostFacts:
    return HostFacts(
        devbox_command=ctx.devbox_command,
        podman_command=ctx.podman_command,
        tools_dir=plain_path(ctx.paths.tools_dir, "the devbox data directory"),
        git_url=ctx.config.github.repo_base_url,
        github_key_path=github_key_path(ctx),
        drones_dir=plain_path(ctx.paths.drones_dir, "the devbox data directory"),
        uid=os.getuid(),
        gid=os.getgid(),
        selinux=selinux_enabled(),
        quadlet_version=ctx.quadlet_version,
        keys=key_facts(ctx),
    )
