"""DroneSpec: what one drone is, validated; the names derived from it; its labels.

Every check refuses bad input with one line that says what is allowed. Nothing
here rewrites a value silently: a name is accepted as given or refused.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from devbox.drone import mosh, web
from devbox.drone.egress import OPEN, parse_egress, read_egress
from devbox.drone.extras import ContainerExtras
from devbox.drone.services import CONTAINERS, WEB_SERVICES, validate_services
from devbox.errors import DevboxError, invalid
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
    validate_key_name,
    validate_login_name,
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
    services: tuple[str, ...] = ()  # --with NAME: drone/services.py (syncthing is its own field)
    mosh_ports: tuple[int, int] | None = None  # --with mosh: UDP ports published on 127.0.0.1 (drone/mosh.py)
    web_ports: web.WebPorts = ()  # (web service, its host port on 127.0.0.1): drone/web.py
    env: tuple[tuple[str, str], ...] = field(default=())
    permissions: tuple[tuple[str, str], ...] = ()
    idle_stop: int | None = None  # seconds; None: the config's [cleanup] idle_stop
    idle_destroy: int | None = None
    keep: bool = False  # never touched by the idle clean-up
    tailscale: bool = False  # joins the tailnet; its auth key is the Podman secret `tailscale_secret`
    login_server: str | None = None  # Headscale; None: Tailscale's control plane
    tailscale_ssh: bool = False
    ssh_keys: tuple[str, ...] = ()  # checked public key lines (drone/sshkeys.py) for the drone's authorized_keys
    path: str | None = None  # a host directory mounted at the same path as the workspace (drone/workspace.py checks it)
    dotfiles_url: str | None = None  # cloned into ~/.dotfiles on first start (drone/identity.py checks it)
    dotfiles_branch: str | None = None
    devcontainer: str | None = None  # the repository's devcontainer.json, relative to the workspace
    devcontainer_hash: str | None = None  # the hash its built image is cached by
    devcontainer_env: tuple[str, ...] = ()  # names in `env` whose value is the devcontainer.json's (built anew)
    login_user: str | None = None  # who SSH logs in as when not the host user (a devcontainer's remote user)
    ports: tuple[tuple[int, int], ...] = ()  # (host port on 127.0.0.1, drone port): forwardPorts
    extras: ContainerExtras | None = None  # the rest of the devcontainer.json (devbox/devcontainer/)
    keys: tuple[str, ...] = ()  # model API keys ([keys.NAME]) the host's key proxy sets for this drone
    egress: str = "open"  # the egress policy's one spelling (drone/egress.py); fenced when not open

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
        services: tuple[str, ...] | list[str] = (),
        mosh_ports: str | tuple[int, int] | None = None,
        web_ports: str | web.WebPorts | None = None,
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
        devcontainer: str | None = None,
        devcontainer_hash: str | None = None,
        devcontainer_env: tuple[str, ...] = (),
        login_user: str | None = None,
        ports: tuple[tuple[int, int], ...] = (),
        extras: ContainerExtras | None = None,
        keys: tuple[str, ...] | list[str] = (),
        egress: str = "open",
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
        checked_services = validate_services(services)
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
            services=checked_services,
            web_ports=web.validate_ports(web_ports, checked_services) if web_ports else (),
            mosh_ports=None if mosh_ports is None else mosh.validate_ports(mosh_ports),
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
            devcontainer=devcontainer,
            devcontainer_hash=devcontainer_hash,
            devcontainer_env=tuple(sorted(validate_env_key(k) for k in devcontainer_env)),
            login_user=None if login_user is None else validate_login_name(login_user, "the login user"),
            ports=tuple((parse_port(host), parse_port(port)) for host, port in ports),
            extras=extras,
            keys=tuple(sorted({validate_key_name(key) for key in keys})),
            egress=str(parse_egress(egress)),
        )

    @property
    def fenced(self) -> bool:
        """The network fence applies (drone/egress.py): every policy but open."""
        return self.egress != OPEN

    @property
    def names(self) -> DroneNames:
        """The unit, container, volume, secret and socket names (devbox/names.py)."""
        return names_of(self.name)

    @property
    def containers(self) -> bool:
        """--with containers: rootless Podman in the drone (the unit's extra settings, its store volume)."""
        return CONTAINERS in self.services

    @property
    def web_services(self) -> tuple[str, ...]:
        """The web services it runs (drone/services.py): their ports, pasta's loopback option."""
        return tuple(name for name in self.services if name in WEB_SERVICES)

    def labels(self) -> dict[str, str]:
        """Everything devbox reads back from the unit file later (the LABELS table)."""
        found = ((label.key, label.format(getattr(self, label.field))) for label in LABELS)
        return {LABEL_PREFIX + key: text for key, text in found if text is not None}


def parse_permissions_label(value: str) -> dict[str, str]:
    return dict(item.split(":", 1) for item in value.split(",") if ":" in item)


# --- the drone's labels: one table ---------------------------------------------------------------
# Each label declares one DroneSpec field in the unit file. From this table come the labels a
# drone's unit carries, what `restore` carries over as a create option, and the typed reading of
# an installed unit (declared_fields). Formats return None for "no label"; parsers are lenient
# (a damaged label reads as the field's default), because one bad unit must not stop `list`.


def _text(value: object) -> str | None:
    return None if value is None or value == "" else str(value)


def _flag(value: object) -> str | None:
    """A label present only when true."""
    return "true" if value else None


def _boolean(value: object) -> str:
    return "true" if value else "false"


def _duration(value: int | None) -> str | None:
    return None if value is None else format_duration(value)


def _created(value: datetime) -> str:
    return value.strftime(CREATED_FORMAT)


def _permissions(pairs: tuple[tuple[str, str], ...]) -> str | None:
    return ",".join(f"{k}:{v}" for k, v in pairs) or None


def _ports(pairs: tuple[tuple[int, int], ...]) -> str | None:
    return ",".join(f"{host}:{port}" for host, port in pairs) or None


def _read_ports(text: str) -> tuple[tuple[int, int], ...]:
    pairs = (item.partition(":") for item in text.split(","))
    return tuple((int(host), int(port)) for host, _, port in pairs if host.isdigit() and port.isdigit())


def _names(names: tuple[str, ...]) -> str | None:
    return ",".join(names) or None


def _read_names(text: str) -> tuple[str, ...]:
    return tuple(name for name in text.split(",") if name)


def _egress(policy: str) -> str | None:
    return None if policy == OPEN else policy


def _read_egress(text: str) -> str:
    return str(read_egress(text))


def _is_true(text: str) -> bool:
    return text == "true"


def _read_created(text: str) -> datetime | None:
    try:
        return datetime.strptime(text, CREATED_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def _read_optional_int(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def _read_duration(text: str) -> int | None:
    try:
        return parse_duration(text)
    except DevboxError:
        return None


CREATED_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True)
class Label:
    key: str  # after io.devbox.
    field: str  # the DroneSpec field it declares
    format: Callable[[Any], str | None]
    parse: Callable[[str], Any]  # the label's text -> the field's value
    default: Any = None  # the field's value when the label is absent
    option: str | None = None  # the create option (CreateRequest field) `restore` fills from the label
    to_option: Callable[[str], Any] = str  # the label's text -> that option's value


LABELS: tuple[Label, ...] = (
    Label("drone", "name", str, str, ""),
    Label("version", "version", str, str, ""),
    Label("created", "created", _created, _read_created),
    Label("repos", "repos", lambda repos: ",".join(repos), lambda text: tuple(r for r in text.split(",") if r), ()),
    Label("syncthing", "syncthing", _boolean, _is_true, False, "syncthing", _is_true),
    Label("with", "services", _names, _read_names, (), "services", _read_names),
    # Claimed like ssh-port: restore keeps the range unless another drone holds it (commands/backup.py).
    Label("mosh-ports", "mosh_ports", mosh.format_ports, mosh.parse_ports, None, "mosh_ports", mosh.parse_ports),
    Label("web-ports", "web_ports", web.format_ports, web.parse_ports, (), "web_ports", web.parse_ports),
    Label("ssh-port", "ssh_port", _text, _read_optional_int, None, "ssh_port", _read_optional_int),
    # restore gives exactly these permissions (and drops the config's others): lifecycle.request_from_unit
    Label("permissions", "permissions", _permissions, lambda text: tuple(parse_permissions_label(text).items()), ()),
    Label("idle-stop", "idle_stop", _duration, _read_duration, None, "idle_stop"),
    Label("idle-destroy", "idle_destroy", _duration, _read_duration, None, "idle_destroy"),
    Label("keep", "keep", _flag, _is_true, False, "keep", _is_true),
    Label("path", "path", _text, str, None, "path"),
    Label("dotfiles", "dotfiles_url", _text, str, None, "dotfiles"),
    Label("dotfiles-branch", "dotfiles_branch", _text, str, None, "dotfiles_branch"),
    Label("tailscale", "tailscale", _flag, _is_true, False, "tailscale", _is_true),
    # The tailnet's own settings come from the config of the host that (re)creates the drone.
    Label("login-server", "login_server", _text, str),
    Label("tailscale-ssh", "tailscale_ssh", _flag, _is_true, False),
    # restore builds the same devcontainer.json again (cached by its hash); the ports are claims.
    Label("devcontainer", "devcontainer", _text, str, None, "devcontainer"),
    Label("devcontainer-hash", "devcontainer_hash", _text, str),
    # Which Environment= lines are the configuration's: restore and rebuild take them from it anew.
    Label("devcontainer-env", "devcontainer_env", _names, _read_names, ()),
    # Built again from the image at restore, so no create option.
    Label("login-user", "login_user", _text, str),
    Label("ports", "ports", _ports, _read_ports, ()),
    # The key proxy serves exactly these; restore asks the new host's config for them again.
    Label("keys", "keys", _names, _read_names, (), "keys", _read_names),
    # Absent: open, as every drone ran before the fence; so open needs no label.
    Label("egress", "egress", _egress, _read_egress, OPEN, "egress", _read_egress),
)
LABEL_KEYS = frozenset(label.key for label in LABELS)


def declared_fields(labels: Mapping[str, str]) -> dict[str, Any]:
    """The DroneSpec fields a unit's labels (prefix removed) declare, typed; defaults for absent ones."""
    return {label.field: label.parse(labels[label.key]) if label.key in labels else label.default for label in LABELS}


def label_options(labels: Mapping[str, str]) -> dict[str, Any]:
    """The create options (CreateRequest field -> value) a unit's labels carry over; an absent label
    gives its field's default (a drone without `tailscale` stays off the tailnet)."""
    return {
        label.option: label.to_option(labels[label.key]) if label.key in labels else label.default
        for label in LABELS
        if label.option
    }
