"""DroneSpec: what one drone is, validated; the names derived from it; its labels.

Every check refuses bad input with one line that says what is allowed. Nothing
here rewrites a value silently: a name is accepted as given or refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from devbox.errors import invalid
from devbox.names import LABEL_PREFIX, DroneNames, names_of
from devbox.values import (
    HTTP_URL,
    PLAIN_PATH,
    format_duration,
    name_from_repo,
    parse_cpus,
    parse_duration,
    parse_memory,
    parse_port,
    validate_env_key,
    validate_env_value,
    validate_image,
    validate_name,
    validate_repo,
)

SOCKET_PATH_MAX = 107  # sun_path is 108 bytes with the terminating NUL


@dataclass(frozen=True)
class DroneSpec:
    """A validated drone. Build it with `DroneSpec.build`, which checks every field."""

    name: str
    image: str
    created: datetime
    version: str
    repos: tuple[str, ...] = ()
    cpus: float | None = None
    memory: str | None = None
    ssh_port: int | None = None
    syncthing: bool = False
    env: tuple[tuple[str, str], ...] = field(default=())
    permissions: tuple[tuple[str, str], ...] = ()
    idle_stop: int | None = None  # seconds; None: the config's [cleanup] idle_stop
    idle_destroy: int | None = None
    keep: bool = False  # never touched by the idle clean-up
    tailscale: bool = False  # joins the tailnet; its auth key is the Podman secret `tailscale_secret`
    login_server: str | None = None  # Headscale; None: Tailscale's control plane
    tailscale_ssh: bool = False
    ssh_keys: tuple[str, ...] = ()  # checked public key lines (sshkeys.py) for the drone's authorized_keys
    path: str | None = None  # a host directory mounted at the same path as the workspace (workspace.py checks it)
    dotfiles_url: str | None = None  # cloned into ~/.dotfiles on first start (identity.py checks it)
    dotfiles_branch: str | None = None

    @classmethod
    def build(
        cls,
        *,
        name: str | None,
        repos: list[str] | tuple[str, ...],
        image: str,
        created: datetime,
        version: str,
        cpus: str | float | None = None,
        memory: str | None = None,
        ssh_port: str | int | None = None,
        syncthing: bool = False,
        env: dict[str, str] | None = None,
        permissions: dict[str, str] | None = None,
        idle_stop: str | None = None,
        idle_destroy: str | None = None,
        keep: bool = False,
        tailscale: bool = False,
        login_server: str | None = None,
        tailscale_ssh: bool = False,
        ssh_keys: tuple[str, ...] | list[str] = (),
        path: str | None = None,
        dotfiles_url: str | None = None,
        dotfiles_branch: str | None = None,
    ) -> DroneSpec:
        checked_repos = tuple(validate_repo(r) for r in repos)
        if len(set(checked_repos)) != len(checked_repos):
            raise invalid("the same repository is given twice")
        if name is None:
            if path is not None:
                from devbox.drone.workspace import name_from_path

                name = name_from_path(path)
            elif checked_repos:
                name = name_from_repo(checked_repos[0])
            else:
                raise invalid("give a drone NAME, or --repo or --path to derive one from")
        if path is not None and not PLAIN_PATH.fullmatch(path):
            raise invalid(f"invalid workspace path {path!r}")
        if login_server is not None and not HTTP_URL.fullmatch(login_server):
            raise invalid(f"invalid login server {login_server!r}")
        if dotfiles_url is not None or dotfiles_branch is not None or ssh_keys:
            from devbox.drone import identity, sshkeys

            dotfiles_url = None if dotfiles_url is None else identity.validate_dotfiles_url(dotfiles_url)
            dotfiles_branch = None if dotfiles_branch is None else identity.validate_branch(dotfiles_branch)
            ssh_keys = [sshkeys.parse_public_key(key, "an SSH key") for key in ssh_keys]
        env_items = tuple(sorted((validate_env_key(k), validate_env_value(k, v)) for k, v in (env or {}).items()))
        return cls(
            name=validate_name(name),
            image=validate_image(image),
            created=created,
            version=version,
            repos=checked_repos,
            cpus=None if cpus is None else parse_cpus(cpus),
            memory=None if memory is None else parse_memory(memory),
            ssh_port=None if ssh_port is None else parse_port(ssh_port),
            syncthing=syncthing,
            env=env_items,
            permissions=tuple(sorted((permissions or {}).items())) if checked_repos else (),
            idle_stop=None if idle_stop is None else parse_duration(idle_stop),
            idle_destroy=None if idle_destroy is None else parse_duration(idle_destroy),
            keep=keep,
            tailscale=tailscale,
            login_server=login_server if tailscale else None,
            tailscale_ssh=tailscale_ssh and tailscale,
            ssh_keys=tuple(ssh_keys),
            path=path,
            dotfiles_url=dotfiles_url,
            dotfiles_branch=dotfiles_branch if dotfiles_url else None,
        )

    @property
    def names(self) -> DroneNames:
        """The unit, container, volume, secret and socket names (devbox/names.py)."""
        return names_of(self.name)

    @property
    def unit(self) -> str:
        return self.names.unit

    @property
    def service(self) -> str:
        return self.names.service

    @property
    def container(self) -> str:
        return self.names.container

    @property
    def volume(self) -> str:
        return self.names.volume

    @property
    def tailscale_secret(self) -> str:
        return self.names.tailscale_secret

    @property
    def creds_socket_unit(self) -> str:
        return self.names.creds_socket

    @property
    def creds_service_unit(self) -> str:
        return self.names.creds_service

    def labels(self) -> dict[str, str]:
        """Everything devbox reads back from the unit file later."""
        labels = {
            "drone": self.name,
            "version": self.version,
            "created": self.created.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "repos": ",".join(self.repos),
            "syncthing": "true" if self.syncthing else "false",
        }
        if self.ssh_port is not None:
            labels["ssh-port"] = str(self.ssh_port)
        if self.permissions:
            labels["permissions"] = ",".join(f"{k}:{v}" for k, v in self.permissions)
        if self.idle_stop is not None:
            labels["idle-stop"] = format_duration(self.idle_stop)
        if self.idle_destroy is not None:
            labels["idle-destroy"] = format_duration(self.idle_destroy)
        if self.keep:
            labels["keep"] = "true"
        if self.path:
            labels["path"] = self.path
        if self.dotfiles_url:
            labels["dotfiles"] = self.dotfiles_url
            if self.dotfiles_branch:
                labels["dotfiles-branch"] = self.dotfiles_branch
        if self.tailscale:
            labels["tailscale"] = "true"
            if self.login_server:
                labels["login-server"] = self.login_server
            if self.tailscale_ssh:
                labels["tailscale-ssh"] = "true"
        return {LABEL_PREFIX + k: v for k, v in labels.items()}


def parse_permissions_label(value: str) -> dict[str, str]:
    return dict(item.split(":", 1) for item in value.split(",") if ":" in item)
