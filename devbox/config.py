"""The user's config file and the XDG paths devbox writes to.

`~/.config/devbox/config.toml` (or `$DEVBOX_CONFIG`). Every key has a default, so
a missing or empty file works. An unknown key or a bad value is refused with the
file, the key and what is allowed.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devbox import values
from devbox.errors import DevboxError, ExitCode

DEFAULT_IMAGE = "localhost/devbox-drone:latest"


@dataclass(frozen=True)
class DroneDefaults:
    image: str = DEFAULT_IMAGE
    cpus: float | None = None
    memory: str | None = None
    syncthing: bool = False
    env: dict[str, str] = field(default_factory=dict)
    egress: str = "fenced"  # new drones' egress policy (drone/egress.py)


DEFAULT_PERMISSIONS = {"contents": "write", "pull_requests": "write"}
PERMISSION_LEVELS = ("read", "write", "admin")


@dataclass(frozen=True)
class GitHubConfig:
    """The GitHub App whose installation tokens drones get. Disabled until app_id and private_key are set."""

    app_id: str | None = None
    private_key: str | None = None  # a secret reference: file:PATH, op://..., env:NAME
    api_url: str = "https://api.github.com"
    host: str = "github.com"
    git_url: str | None = None  # where git reaches repositories; default https://HOST
    installation_id: int | None = None
    permissions: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_PERMISSIONS))

    @property
    def enabled(self) -> bool:
        return bool(self.app_id and self.private_key)

    @property
    def repo_base_url(self) -> str:
        return (self.git_url or f"https://{self.host}").rstrip("/")


@dataclass(frozen=True)
class BrokerConfig:
    idle_exit: float = 600.0  # seconds without a request before the broker exits


@dataclass(frozen=True)
class CleanupConfig:
    """The daily idle clean-up (see cleanup/policy.py); drones override the windows with labels."""

    idle_stop: int = 12 * 3600  # seconds without activity before a running drone is stopped
    idle_destroy: int = 14 * 86400  # seconds without activity before a stopped drone is destroyed
    keep_timer: bool = False  # keep devbox-cleanup.timer when the last drone goes
    keep_volume: bool = False  # a drone the clean-up destroys keeps its home volume


DEFAULT_TAILSCALE_KEY = "op://DevBox/{user}-tailscale-authkey/password"


@dataclass(frozen=True)
class TailscaleConfig:
    """Each drone joins the tailnet as its own node. On when the config has a [tailscale] table."""

    enabled: bool = False
    auth_key: str = DEFAULT_TAILSCALE_KEY  # a secret reference; {user} is the login name
    login_server: str | None = None  # a Headscale URL; None: Tailscale's own control plane
    ssh: bool = False  # also run Tailscale SSH (`tailscale up --ssh`)
    tailnet: str | None = None  # the MagicDNS suffix (tail1234.ts.net): full names in ssh-config and status

    def auth_key_reference(self, user: str) -> str:
        return self.auth_key.replace("{user}", user)


@dataclass(frozen=True)
class SshConfig:
    """Public keys installed in every drone, on top of the user's ~/.ssh/*.pub."""

    authorized_keys: tuple[str, ...] = ()
    default_keys: bool = True  # read ~/.ssh/*.pub when no --ssh-key is given


@dataclass(frozen=True)
class IdentityConfig:
    """git's user.name and user.email in drones; unset ones come from the host's git config --global."""

    name: str | None = None
    email: str | None = None


@dataclass(frozen=True)
class DotfilesConfig:
    repo: str | None = None  # cloned into ~/.dotfiles on a drone's first start; its installer runs
    branch: str | None = None


@dataclass(frozen=True)
class Config:
    drone: DroneDefaults = field(default_factory=DroneDefaults)
    github: GitHubConfig = field(default_factory=GitHubConfig)
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    cleanup: CleanupConfig = field(default_factory=CleanupConfig)
    tailscale: TailscaleConfig = field(default_factory=TailscaleConfig)
    ssh: SshConfig = field(default_factory=SshConfig)
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    dotfiles: DotfilesConfig = field(default_factory=DotfilesConfig)
    max_drones: int = 0  # 0: no limit
    flavor: str = "plain"  # or "zerg": a few messages in the swarm's words


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise DevboxError("expected true or false", ExitCode.INVALID_INPUT)
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise DevboxError("expected a string", ExitCode.INVALID_INPUT)
    return value


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DevboxError("expected a whole number, 0 or more", ExitCode.INVALID_INPUT)
    return value


def _env_table(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise DevboxError('expected a table of NAME = "value"', ExitCode.INVALID_INPUT)
    return {values.validate_env_key(k): values.validate_env_value(k, _str(v)) for k, v in value.items()}


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DevboxError("expected a number", ExitCode.INVALID_INPUT)
    return values.parse_cpus(value)


_DRONE_KEYS: dict[str, Callable[[Any], Any]] = {
    "image": lambda v: values.validate_image(_str(v)),
    "cpus": _number,
    "memory": lambda v: values.parse_memory(_str(v)),
    "syncthing": _bool,
    "env": _env_table,
    "egress": lambda v: str(_egress_policy(_str(v))),
}


def _egress_policy(text: str) -> object:
    from devbox.drone.egress import parse_egress

    return parse_egress(text)


_APP_ID = re.compile(r"[0-9]{1,12}|Iv[0-9A-Za-z.]{4,40}")
_HOST = re.compile(r"[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?")
_URL = values.HTTP_URL
_PERMISSION = re.compile(r"[a-z][a-z_]{0,63}")


def _matching(pattern: re.Pattern[str], what: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise DevboxError(f"expected {what}", ExitCode.INVALID_INPUT)
        return value

    return check


def _secret_reference(value: Any) -> str:
    from devbox.host.secrets import validate_reference

    return validate_reference(_str(value))


def _installation(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise DevboxError("expected a positive whole number", ExitCode.INVALID_INPUT)
    return value


def parse_permission(name: str, level: str) -> tuple[str, str]:
    if not _PERMISSION.fullmatch(name):
        raise DevboxError(
            f"invalid permission name {name!r}: for example contents or pull_requests", ExitCode.INVALID_INPUT
        )
    if level not in PERMISSION_LEVELS:
        raise DevboxError(f"invalid level {level!r} for {name}: use read, write or admin", ExitCode.INVALID_INPUT)
    return name, level


def _permissions(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise DevboxError('expected a table like { contents = "write" }', ExitCode.INVALID_INPUT)
    return dict(parse_permission(k, _str(v)) for k, v in value.items())


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value <= 86400:
        raise DevboxError("expected a number of seconds from 1 to 86400", ExitCode.INVALID_INPUT)
    return float(value)


_GITHUB_KEYS: dict[str, Callable[[Any], Any]] = {
    "app_id": _matching(_APP_ID, "the App's numeric id or its client id (Iv...)"),
    "private_key": _secret_reference,
    "api_url": _matching(_URL, "an http(s) URL such as https://api.github.com"),
    "host": _matching(_HOST, "a host name such as github.com"),
    "git_url": _matching(_URL, "an http(s) URL such as https://github.com"),
    "installation_id": _installation,
    "permissions": _permissions,
}
_BROKER_KEYS: dict[str, Callable[[Any], Any]] = {"idle_exit": _seconds}
_CLEANUP_KEYS: dict[str, Callable[[Any], Any]] = {
    "idle_stop": lambda v: values.parse_duration(_str(v)),
    "idle_destroy": lambda v: values.parse_duration(_str(v)),
    "keep_timer": _bool,
    "keep_volume": _bool,
}
_DOMAIN = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+")


def _tailscale_key(value: Any) -> str:
    from devbox.host.secrets import validate_reference

    reference = _str(value)
    validate_reference(reference.replace("{user}", "user"))
    return reference


def _public_keys(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise DevboxError(
            'expected a list of public key lines ["ssh-ed25519 AAAA... me@laptop"]', ExitCode.INVALID_INPUT
        )
    from devbox.drone.sshkeys import parse_public_key

    return tuple(parse_public_key(_str(line), "ssh.authorized_keys") for line in value)


_TAILSCALE_KEYS: dict[str, Callable[[Any], Any]] = {
    "enabled": _bool,
    "auth_key": _tailscale_key,
    "login_server": _matching(_URL, "an http(s) URL such as https://headscale.example.com"),
    "ssh": _bool,
    "tailnet": _matching(_DOMAIN, "a MagicDNS suffix such as tail1234.ts.net"),
}
_SSH_KEYS: dict[str, Callable[[Any], Any]] = {"authorized_keys": _public_keys, "default_keys": _bool}


def _checked(check_name: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        from devbox.drone import identity

        return getattr(identity, check_name)(_str(value))

    return check


_IDENTITY_KEYS: dict[str, Callable[[Any], Any]] = {
    "name": _checked("validate_git_name"),
    "email": _checked("validate_email"),
}
_DOTFILES_KEYS: dict[str, Callable[[Any], Any]] = {
    "repo": _checked("validate_dotfiles_url"),
    "branch": _checked("validate_branch"),
}
_TOP_KEYS: dict[str, Callable[[Any], Any]] = {
    "max_drones": _count,
    "flavor": _matching(re.compile(r"plain|zerg"), '"plain" or "zerg"'),
}
_SECTIONS = ("drone", "github", "broker", "cleanup", "tailscale", "ssh", "identity", "dotfiles")


def load_config(path: Path) -> Config:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Config()
    except (OSError, UnicodeDecodeError) as exc:
        raise DevboxError(f"{path}: cannot read the config file: {exc}", ExitCode.CONFIG) from None
    except tomllib.TOMLDecodeError as exc:
        raise DevboxError(f"{path}: not valid TOML: {exc}", ExitCode.CONFIG) from None
    return parse_config(raw, path)


def parse_config(raw: dict[str, Any], path: Path) -> Config:
    top = _check_table(raw, _TOP_KEYS, _SECTIONS, path, prefix="")
    sections = {}
    tables = (
        ("drone", _DRONE_KEYS),
        ("github", _GITHUB_KEYS),
        ("broker", _BROKER_KEYS),
        ("cleanup", _CLEANUP_KEYS),
        ("tailscale", _TAILSCALE_KEYS),
        ("ssh", _SSH_KEYS),
        ("identity", _IDENTITY_KEYS),
        ("dotfiles", _DOTFILES_KEYS),
    )
    for name, keys in tables:
        table = raw.get(name, {})
        if not isinstance(table, dict):
            raise DevboxError(f"{path}: {name}: expected a table [{name}]", ExitCode.CONFIG)
        sections[name] = _check_table(table, keys, (), path, prefix=f"{name}.")
    github = GitHubConfig(**sections["github"])
    if bool(github.app_id) != bool(github.private_key):
        raise DevboxError(f"{path}: github: set both app_id and private_key, or neither", ExitCode.CONFIG)
    return Config(
        drone=DroneDefaults(**sections["drone"]),
        github=github,
        broker=BrokerConfig(**sections["broker"]),
        cleanup=CleanupConfig(**sections["cleanup"]),
        tailscale=TailscaleConfig(**{"enabled": "tailscale" in raw, **sections["tailscale"]}),
        ssh=SshConfig(**sections["ssh"]),
        identity=IdentityConfig(**sections["identity"]),
        dotfiles=DotfilesConfig(**sections["dotfiles"]),
        **top,
    )


def _check_table(
    table: dict[str, Any],
    keys: dict[str, Callable[[Any], Any]],
    sections: tuple[str, ...],
    path: Path,
    prefix: str,
) -> dict[str, Any]:
    checked: dict[str, Any] = {}
    for key, value in table.items():
        if key in sections:
            continue
        if key not in keys:
            allowed = ", ".join(sorted([*keys, *(f"[{s}]" for s in sections)]))
            raise DevboxError(f"{path}: unknown key {prefix}{key} (allowed: {allowed})", ExitCode.CONFIG)
        try:
            checked[key.replace("-", "_")] = keys[key](value)
        except DevboxError as exc:
            raise DevboxError(f"{path}: {prefix}{key}: {exc.message}", ExitCode.CONFIG) from None
    return checked
