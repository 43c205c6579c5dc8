"""The user's config file and the XDG paths devbox writes to.

`~/.config/devbox/config.toml` (or `$DEVBOX_CONFIG`). Every key has a default, so
a missing or empty file works. An unknown key or a bad value is refused with the
file, the key and what is allowed.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devbox import spec
from devbox.errors import DevboxError, ExitCode

DEFAULT_IMAGE = "localhost/devbox-drone:latest"


@dataclass(frozen=True)
class Paths:
    """Where devbox reads and writes, for the invoking user."""

    config_file: Path
    quadlet_dir: Path
    unit_dir: Path
    runtime_dir: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Paths:
        env = os.environ if env is None else env
        home = Path(env.get("HOME") or Path.home())
        config_home = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
        runtime = Path(env.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}")
        config_file = Path(env.get("DEVBOX_CONFIG") or config_home / "devbox" / "config.toml")
        return cls(
            config_file=config_file,
            quadlet_dir=config_home / "containers" / "systemd",
            unit_dir=config_home / "systemd" / "user",
            runtime_dir=runtime,
        )

    def socket_dir(self, name: str) -> Path:
        return self.runtime_dir / "devbox" / "drones" / name

    def creds_socket(self, name: str) -> Path:
        return self.socket_dir(name) / "creds.sock"


@dataclass(frozen=True)
class DroneDefaults:
    image: str = DEFAULT_IMAGE
    cpus: float | None = None
    memory: str | None = None
    syncthing: bool = False
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Config:
    drone: DroneDefaults = field(default_factory=DroneDefaults)
    max_drones: int = 0  # 0: no limit


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
    return {spec.validate_env_key(k): spec.validate_env_value(k, _str(v)) for k, v in value.items()}


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DevboxError("expected a number", ExitCode.INVALID_INPUT)
    return spec.parse_cpus(value)


_DRONE_KEYS: dict[str, Callable[[Any], Any]] = {
    "image": lambda v: spec.validate_image(_str(v)),
    "cpus": _number,
    "memory": lambda v: spec.parse_memory(_str(v)),
    "syncthing": _bool,
    "env": _env_table,
}
_TOP_KEYS: dict[str, Callable[[Any], Any]] = {"max_drones": _count}
_SECTIONS = ("drone",)


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
    drone_raw = raw.get("drone", {})
    if not isinstance(drone_raw, dict):
        raise DevboxError(f"{path}: drone: expected a table [drone]", ExitCode.CONFIG)
    drone = _check_table(drone_raw, _DRONE_KEYS, (), path, prefix="drone.")
    return Config(drone=DroneDefaults(**drone), **top)


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
