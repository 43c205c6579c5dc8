"""DroneSpec: what one drone is, validated; the names derived from it; its labels.

Every check refuses bad input with one line that says what is allowed. Nothing
here rewrites a value silently: a name is accepted as given or refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from devbox.errors import DevboxError, ExitCode

LABEL_PREFIX = "io.devbox."
SOCKET_PATH_MAX = 107  # sun_path is 108 bytes with the terminating NUL

# DESIGN.md asks for two characters at least; one letter is as good a hostname
# and unit name as two, so a single [a-z] is accepted too.
_NAME = re.compile(r"[a-z](?:[a-z0-9-]{0,38}[a-z0-9])?")
_OWNER = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})")
_REPO = re.compile(r"[A-Za-z0-9._-]{1,100}")
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_IMAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,254}")
_MEMORY = re.compile(r"([0-9]+(?:\.[0-9]+)?)([bkmg]?)", re.IGNORECASE)
_MEMORY_FACTOR = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_MEMORY_MIN = 6 * 1024**2  # Podman refuses less than 6 MiB
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
RESERVED_ENV_PREFIX = "DEVBOX_"
# A path that goes into a unit value (Volume=, LoadCredential=) needing no quoting; Quadlet splits on ':'.
PLAIN_PATH = re.compile(r"/[A-Za-z0-9._/@+-]*")
# The http(s) URLs the config takes (GitHub API, git, Headscale).
HTTP_URL = re.compile(r"https?://[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?")


def _bad(message: str) -> DevboxError:
    return DevboxError(message, ExitCode.INVALID_INPUT)


def validate_name(name: str) -> str:
    if not _NAME.fullmatch(name) or "--" in name or not name.isascii():
        raise _bad(
            f"invalid drone name {name!r}: use 1 to 40 of a-z, 0-9 and '-', "
            "starting with a letter, not ending with '-', without '--'"
        )
    return name


def validate_repo(repo: str) -> str:
    owner, sep, rest = repo.partition("/")
    valid = (
        sep == "/"
        and _OWNER.fullmatch(owner) is not None
        and _REPO.fullmatch(rest) is not None
        and rest not in (".", "..")
        and not rest.endswith(".git")
    )
    if not valid:
        raise _bad(f"invalid repository {repo!r}: expected OWNER/REPO, for example acme/widgets")
    return repo


def name_from_repo(repo: str) -> str:
    """`Acme/My_Repo.js` -> `acme-my-repo-js`; refused (never rewritten further) when not a valid name."""
    candidate = validate_repo(repo).lower().replace("/", "-").replace("_", "-").replace(".", "-")
    try:
        return validate_name(candidate)
    except DevboxError:
        raise _bad(
            f"cannot derive a drone name from {repo!r} ({candidate!r} is not a valid name): give NAME explicitly"
        ) from None


def validate_image(image: str) -> str:
    if not _IMAGE.fullmatch(image) or "//" in image:
        raise _bad(f"invalid image reference {image!r}: expected something like registry/name:tag")
    return image


def parse_memory(value: str) -> str:
    """Podman's size syntax: a number with an optional b, k, m or g; at least 6m."""
    match = _MEMORY.fullmatch(value.strip())
    if not match:
        raise _bad(f"invalid memory size {value!r}: use a number with b, k, m or g, for example 512m or 4g")
    number, unit = match.groups()
    if float(number) * _MEMORY_FACTOR[unit.lower()] < _MEMORY_MIN:
        raise _bad(f"invalid memory size {value!r}: Podman needs at least 6m")
    return f"{number}{unit.lower()}"


def parse_cpus(value: str | float) -> float:
    try:
        cpus = float(value)
    except (TypeError, ValueError):
        raise _bad(f"invalid cpu count {value!r}: use a number greater than 0, for example 2 or 0.5") from None
    if not 0 < cpus <= 1024:
        raise _bad(f"invalid cpu count {value!r}: use a number greater than 0, for example 2 or 0.5")
    return cpus


def parse_port(value: str | int) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        port = 0
    if not 1 <= port <= 65535:
        raise _bad(f"invalid port {value!r}: use a number from 1 to 65535")
    return port


_DURATION = re.compile(r"([0-9]{1,6})([smhd])")
_DURATION_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: str) -> int:
    """`90s`, `30m`, `12h`, `14d` -> seconds (at least one second)."""
    match = _DURATION.fullmatch(value.strip()) if isinstance(value, str) else None
    if not match or int(match.group(1)) == 0:
        raise _bad(f"invalid duration {value!r}: use a number with s, m, h or d, for example 90s, 30m, 12h or 14d")
    return int(match.group(1)) * _DURATION_SECONDS[match.group(2)]


def format_duration(seconds: float) -> str:
    """The shortest exact spelling parse_duration reads back: 43200 -> `12h`."""
    whole = int(seconds)
    for unit in ("d", "h", "m"):
        if whole and whole % _DURATION_SECONDS[unit] == 0:
            return f"{whole // _DURATION_SECONDS[unit]}{unit}"
    return f"{whole}s"


def validate_env_value(key: str, value: str) -> str:
    if _CONTROL.search(value):
        raise _bad(f"invalid value for environment variable {key}: newlines and control characters are not allowed")
    return value


def parse_env(item: str) -> tuple[str, str]:
    """`KEY=VALUE` from the command line."""
    key, sep, value = item.partition("=")
    if not sep:
        raise _bad(f"invalid --env {item!r}: expected KEY=VALUE")
    return validate_env_key(key), validate_env_value(key, value)


def validate_env_key(key: str) -> str:
    if not _ENV_KEY.fullmatch(key):
        raise _bad(f"invalid environment variable name {key!r}: use letters, digits and '_', not starting with a digit")
    if key.startswith(RESERVED_ENV_PREFIX):
        raise _bad(
            f"invalid environment variable name {key!r}: names starting with {RESERVED_ENV_PREFIX} are devbox's own"
        )
    return key


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
            raise _bad("the same repository is given twice")
        if name is None:
            if path is not None:
                from devbox.drone.workspace import name_from_path

                name = name_from_path(path)
            elif checked_repos:
                name = name_from_repo(checked_repos[0])
            else:
                raise _bad("give a drone NAME, or --repo or --path to derive one from")
        if path is not None and not PLAIN_PATH.fullmatch(path):
            raise _bad(f"invalid workspace path {path!r}")
        if login_server is not None and not HTTP_URL.fullmatch(login_server):
            raise _bad(f"invalid login server {login_server!r}")
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

    # Derived names: one place, so the unit, the container and the volume agree.
    @property
    def unit(self) -> str:
        return f"drone-{self.name}"

    @property
    def service(self) -> str:
        return unit_service(self.name)

    @property
    def container(self) -> str:
        return f"drone-{self.name}"

    @property
    def volume(self) -> str:
        return home_volume(self.name)

    @property
    def tailscale_secret(self) -> str:
        return tailscale_secret(self.name)

    @property
    def creds_socket_unit(self) -> str:
        return f"drone-{self.name}-creds.socket"

    @property
    def creds_service_unit(self) -> str:
        return f"drone-{self.name}-creds.service"

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


def autostart_dropin(name: str) -> str:
    """The Quadlet drop-in whose presence means the drone starts with the user manager."""
    return f"drone-{name}.container.d/autostart.conf"


def unit_service(name: str) -> str:
    return f"drone-{name}.service"


def home_volume(name: str) -> str:
    return f"drone-{name}-home"


def tailscale_secret(name: str) -> str:
    """The Podman secret holding a drone's Tailscale auth key (mounted 0400, never in the environment)."""
    return f"drone-{name}-tailscale-authkey"
