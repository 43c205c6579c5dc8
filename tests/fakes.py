"""Fakes at devbox's two outside interfaces (systemd, Podman), recording what they were asked."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from devbox import unitfile
from devbox.config import Config, Paths
from devbox.errors import DevboxError, ExitCode
from devbox.lifecycle import Context
from devbox.podman import ContainerInfo
from devbox.systemd import UnitState

FIXED_NOW = datetime(2026, 11, 22, 8, 0, 0, tzinfo=UTC)


@dataclass
class FakeSystemd:
    """A user manager that 'generates' drone-NAME.service from the Quadlet directory on reload."""

    quadlet_dir: Path
    backend: str = "fake"
    calls: list[tuple[str, str]] = field(default_factory=list)
    active: set[str] = field(default_factory=set)
    loaded: set[str] = field(default_factory=set)
    fail_start: set[str] = field(default_factory=set)
    fail_reload: bool = False

    def daemon_reload(self) -> None:
        self.calls.append(("daemon-reload", ""))
        if self.fail_reload:
            raise DevboxError("systemd could not reload the user manager: boom", ExitCode.SYSTEMD)
        self.loaded = set()
        for path in self.quadlet_dir.glob("drone-*.container"):
            if unitfile.is_ours(path.read_text()):
                name = path.name.removesuffix(".container")
                self.loaded |= {f"{name}.service", f"{name}-creds.socket", f"{name}-creds.service"}

    def start(self, unit: str) -> None:
        self.calls.append(("start", unit))
        if unit in self.fail_start or unit not in self.loaded:
            raise DevboxError(f"systemd could not start {unit}: Job for {unit} failed.", ExitCode.SYSTEMD)
        self.active.add(unit)

    def stop(self, unit: str) -> None:
        self.calls.append(("stop", unit))
        self.active.discard(unit)

    def restart(self, unit: str) -> None:
        self.calls.append(("restart", unit))
        self.active.add(unit)

    def reset_failed(self, unit: str) -> None:
        self.calls.append(("reset-failed", unit))

    def states(self, units: Sequence[str]) -> dict[str, UnitState]:
        self.calls.append(("states", ",".join(units)))
        return {
            u: UnitState(
                u,
                "loaded" if u in self.loaded else "not-found",
                "active" if u in self.active else "inactive",
                "running" if u in self.active else "dead",
                n_restarts=0 if u in self.loaded else None,
                active_since=FIXED_NOW if u in self.active else None,
            )
            for u in units
        }


@dataclass
class FakePodman:
    images: set[str] = field(default_factory=lambda: {"localhost/devbox-drone:latest"})
    pullable: set[str] = field(default_factory=set)
    containers: dict[str, ContainerInfo] = field(default_factory=dict)
    volumes: set[str] = field(default_factory=set)
    calls: list[str] = field(default_factory=list)

    def drone_containers(self) -> dict[str, ContainerInfo]:
        self.calls.append("drone_containers")
        return dict(self.containers)

    def image_exists(self, ref: str) -> bool:
        self.calls.append(f"image_exists {ref}")
        return ref in self.images

    def pull(self, ref: str) -> None:
        self.calls.append(f"pull {ref}")
        if ref not in self.pullable:
            raise DevboxError(f"podman could not pull {ref}: manifest unknown", ExitCode.PODMAN)
        self.images.add(ref)

    def volume_exists(self, name: str) -> bool:
        return name in self.volumes

    def remove_volume(self, name: str) -> bool:
        self.calls.append(f"remove_volume {name}")
        if name in self.volumes:
            self.volumes.discard(name)
            return True
        return False

    def remove_container(self, name: str) -> bool:
        self.calls.append(f"remove_container {name}")
        return self.containers.pop(name.removeprefix("drone-"), None) is not None

    def version(self) -> str:
        return "5.4.2"


def fake_paths(root: Path, runtime: Path) -> Paths:
    env = {
        "HOME": str(root / "home"),
        "XDG_CONFIG_HOME": str(root / "home/.config"),
        "XDG_RUNTIME_DIR": str(runtime),
        "DEVBOX_CONFIG": str(root / "home/.config/devbox/config.toml"),
    }
    return Paths.from_env(env)


@dataclass
class World:
    paths: Paths
    systemd: FakeSystemd
    podman: FakePodman

    def context(self, config: Config | None = None) -> Context:
        return Context(
            self.paths,
            systemd_factory=lambda: self.systemd,
            podman_factory=lambda: self.podman,
            clock=lambda: FIXED_NOW,
            devbox_command=("/opt/devbox/bin/python3", "-m", "devbox"),
            config=config,
        )

    def files(self) -> list[str]:
        """Every file under the user's config directories, relative, sorted."""
        root = self.paths.quadlet_dir.parent.parent
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "devbox" not in p.parts)
