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
    services: tuple[str, ...] = ()  # `with` in the file (a Python keyword)
    env: dict[str, str] = field(default_factory=dict)
    keys: tuple[str, ...] = ()  # [keys.NAME] every new drone gets (create --key adds to them)
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
class KeyConfig:
    """A model API key the host-side key proxy (broker/keyproxy.py) sets on a drone's requests.

    The drone reaches it at http://KEY_PROXY_ADDRESS/NAME/... and never sees the secret."""

    name: str
    secret: str  # a secret reference: op://..., env:NAME, file:PATH
    upstream: str  # https://host[:port][/base]
    header: str = "authorization"
    prefix: str = ""  # put before the key in the header, for example "Bearer "
    base_url_env: str | None = None  # the drone variable tools read the base URL from
    key_env: str | None = None  # a placeholder key for tools that insist on one (never the key)
    base_path: str = ""  # appended to the base URL the drone gets, for example /v1
    ca_file: str | None = None  # an extra CA bundle for the upstream's certificate (tests, a private CA)


# Defaults for well-known upstreams; the secret always comes from the user's [keys.NAME].
KEY_DEFAULTS: dict[str, dict[str, str]] = {
    "anthropic": {
        "upstream": "https://api.anthropic.com",
        "header": "x-api-key",
        "base_url_env": "ANTHROPIC_BASE_URL",
        "key_env": "ANTHROPIC_API_KEY",
    },
    "openai": {
        "upstream": "https://api.openai.com",
        "header": "authorization",
        "prefix": "Bearer ",
        "base_url_env": "OPENAI_BASE_URL",
        "key_env": "OPENAI_API_KEY",
        "base_path": "/v1",
    },
}


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
    keys: dict[str, KeyConfig] = field(default_factory=dict)  # [keys.NAME]
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


def _services(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise DevboxError('expected a list of service names, for example ["syncthing"]', ExitCode.INVALID_INPUT)
    from devbox.drone.services import validate_services

    return validate_services(_str(item) for item in value)


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DevboxError("expected a number", ExitCode.INVALID_INPUT)
    return values.parse_cpus(value)


_DRONE_KEYS: dict[str, Callable[[Any], Any]] = {
    "image": lambda v: values.validate_image(_str(v)),
    "cpus": _number,
    "memory": lambda v: values.parse_memory(_str(v)),
    "syncthing": _bool,
    "with": lambda v: _services(v),
    "env": _env_table,
    "keys": lambda v: _key_names(v),
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
_HEADER = re.compile(r"[A-Za-z0-9-]{1,64}")
# Headers a key can never go in: they frame the request or route it.
_FORBIDDEN_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "te", "upgrade", "expect"})
_HTTPS_URL = re.compile(r"https://[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?")
_BASE_PATH = re.compile(r"(/[A-Za-z0-9._~-]+)*")


def _key_names(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise DevboxError('expected a list of key names, for example ["anthropic"]', ExitCode.INVALID_INPUT)
    return tuple(dict.fromkeys(values.validate_key_name(v) for v in value))


def _header(value: Any) -> str:
    header = _str(value)
    if not _HEADER.fullmatch(header) or header.lower() in _FORBIDDEN_HEADERS:
        raise DevboxError("expected an HTTP header name such as x-api-key or authorization", ExitCode.INVALID_INPUT)
    return header.lower()


def _prefix(value: Any) -> str:
    prefix = _str(value)
    if len(prefix) > 64 or not all(" " <= c <= "~" for c in prefix):
        raise DevboxError('expected up to 64 printable ASCII characters, such as "Bearer "', ExitCode.INVALID_INPUT)
    return prefix


def _env_name(value: Any) -> str:
    return values.validate_env_key(_str(value))


def _absolute_file(value: Any) -> str:
    path = _str(value)
    if not path.startswith("/") or not values.PLAIN_PATH.fullmatch(path):
        raise DevboxError("expected an absolute path of a-z, 0-9, '.', '_', '-', '/'", ExitCode.INVALID_INPUT)
    return path


_KEY_KEYS: dict[str, Callable[[Any], Any]] = {
    "secret": _secret_reference,
    "upstream": _matching(_HTTPS_URL, "an https URL such as https://api.anthropic.com"),
    "header": _header,
    "prefix": _prefix,
    "base_url_env": _env_name,
    "key_env": _env_name,
    "base_path": _matching(_BASE_PATH, "a URL path such as /v1, or empty"),
    "ca_file": _absolute_file,
}


def _parse_keys(raw: Any, path: Path) -> dict[str, KeyConfig]:
    if not isinstance(raw, dict):
        raise DevboxError(f"{path}: keys: expected tables [keys.NAME]", ExitCode.CONFIG)
    keys = {}
    for name, table in raw.items():
        try:
            values.validate_key_name(name)
        except DevboxError as exc:
            raise DevboxError(f"{path}: keys.{name}: {exc.message}", ExitCode.CONFIG) from None
        if not isinstance(table, dict):
            raise DevboxError(f"{path}: keys.{name}: expected a table [keys.{name}]", ExitCode.CONFIG)
        checked = {**KEY_DEFAULTS.get(name, {}), **_check_table(table, _KEY_KEYS, (), path, prefix=f"keys.{name}.")}
        for required in ("secret", "upstream"):
            if required not in checked:
                raise DevboxError(f"{path}: keys.{name}: {required} is required", ExitCode.CONFIG)
        keys[name] = KeyConfig(name=name, **checked)
    return keys


_TOP_KEYS: dict[str, Callable[[Any], Any]] = {
    "max_drones": _count,
    "flavor": _matching(re.compile(r"plain|zerg"), '"plain" or "zerg"'),
}
_SECTIONS = ("drone", "github", "broker", "cleanup", "tailscale", "ssh", "identity", "dotfiles", "keys")


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
    api_keys = _parse_keys(raw.get("keys", {}), path)
    unknown = [k for k in sections["drone"].get("keys", ()) if k not in api_keys]
    if unknown:
        raise DevboxError(f"{path}: drone.keys: {unknown[0]} has no [keys.{unknown[0]}] table", ExitCode.CONFIG)
    github = GitHubConfig(**sections["github"])
    if bool(github.app_id) != bool(github.private_key):
        raise DevboxError(f"{path}: github: set both app_id and private_key, or neither", ExitCode.CONFIG)
    return Config(
        drone=DroneDefaults(**{("services" if k == "with" else k): v for k, v in sections["drone"].items()}),
        github=github,
        broker=BrokerConfig(**sections["broker"]),
        cleanup=CleanupConfig(**sections["cleanup"]),
        tailscale=TailscaleConfig(**{"enabled": "tailscale" in raw, **sections["tailscale"]}),
        ssh=SshConfig(**sections["ssh"]),
        identity=IdentityConfig(**sections["identity"]),
        dotfiles=DotfilesConfig(**sections["dotfiles"]),
        keys=api_keys,
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
