"""Fakes at devbox's two outside interfaces (systemd, Podman), recording what they were asked."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from devbox.commands.lifecycle import Context
from devbox.config import Config
from devbox.errors import DevboxError, ExitCode
from devbox.host.podman import ContainerInfo
from devbox.host.probe import Mounts, PushResult, WorkCheck
from devbox.host.systemd import UnitState
from devbox.paths import Paths
from devbox.units import unitfile

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
    enabled: set[str] = field(default_factory=set)
    stopped_at: dict[str, datetime] = field(default_factory=dict)
    results: dict[str, str] = field(default_factory=dict)  # unit -> systemd's Result (default success)
    # What systemd's NeedDaemonReload answers from: the unit files as the last reload saw them, and
    # the manager-wide flag every enable or disable sets until the next reload.
    seen_files: dict[str, int] | None = None
    unit_files_outdated: bool = False

    def _unit_files(self) -> dict[str, int]:
        roots = (self.quadlet_dir, self.quadlet_dir.parent.parent / "systemd" / "user")
        return {str(p): p.lstat().st_mtime_ns for root in roots if root.exists() for p in root.rglob("*")}

    def need_daemon_reload(self) -> bool:
        return self.unit_files_outdated or self._unit_files() != self.seen_files

    failed: set[str] = field(default_factory=set)  # units in systemd's failed state

    def daemon_reload(self) -> None:
        self.calls.append(("daemon-reload", ""))
        if self.fail_reload:
            raise DevboxError("systemd could not reload the user manager: boom", ExitCode.SYSTEMD)
        self.seen_files, self.unit_files_outdated = self._unit_files(), False
        self.loaded = set()
        for path in self.quadlet_dir.glob("drone-*.container"):
            if unitfile.is_ours(path.read_text()):
                name = path.name.removesuffix(".container")
                self.loaded |= {f"{name}.service", f"{name}-creds.socket", f"{name}-creds.service"}
        user_units = self.quadlet_dir.parent.parent / "systemd" / "user"
        if user_units.is_dir():  # the key proxy's socket and service, the clean-up timer: plain unit files
            self.loaded |= {p.name for p in user_units.iterdir() if p.suffix in (".socket", ".service", ".timer")}

    def start(self, unit: str) -> None:
        self.calls.append(("start", unit))
        if unit in self.fail_start or unit not in self.loaded:
            raise DevboxError(f"systemd could not start {unit}: Job for {unit} failed.", ExitCode.SYSTEMD)
        self.active.add(unit)
        self.failed.discard(unit)

    def stop(self, unit: str) -> None:
        self.calls.append(("stop", unit))
        self.active.discard(unit)

    def restart(self, unit: str) -> None:
        self.calls.append(("restart", unit))
        self.active.add(unit)

    def reset_failed(self, unit: str) -> None:
        self.calls.append(("reset-failed", unit))
        self.failed.discard(unit)

    def enable(self, unit: str) -> None:
        self.calls.append(("enable", unit))
        self.unit_files_outdated = True
        self.enabled.add(unit)
        self.active.add(unit)

    def disable(self, unit: str) -> None:
        self.calls.append(("disable", unit))
        self.unit_files_outdated = True
        self.enabled.discard(unit)
        self.active.discard(unit)

    def inactive_since(self, unit: str) -> datetime | None:
        return self.stopped_at.get(unit)

    def states(self, units: Sequence[str]) -> dict[str, UnitState]:
        self.calls.append(("states", ",".join(units)))
        return {
            u: UnitState(
                u,
                "loaded" if u in self.loaded else "not-found",
                "failed" if u in self.failed else "active" if u in self.active else "inactive",
                "failed" if u in self.failed else "running" if u in self.active else "dead",
                n_restarts=0 if u in self.loaded else None,
                active_since=FIXED_NOW if u in self.active else None,
                result=self.results.get(u, "success") if u in self.loaded else None,
            )
            for u in units
        }


@dataclass
class FakePodman:
    images: set[str] = field(default_factory=lambda: {"localhost/devbox-drone:latest"})
    pullable: set[str] = field(default_factory=set)
    containers: dict[str, ContainerInfo] = field(default_factory=dict)
    volumes: set[str] = field(default_factory=set)
    secrets: dict[str, str] = field(default_factory=dict)
    secret_error: str = ""
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

    def create_secret(self, name: str, value: str) -> None:
        self.calls.append(f"create_secret {name}")  # never the value
        if self.secret_error:
            raise DevboxError(f"podman could not create secret {name}: {self.secret_error}", ExitCode.PODMAN)
        self.secrets[name] = value

    def remove_secret(self, name: str) -> bool:
        self.calls.append(f"remove_secret {name}")
        return self.secrets.pop(name, None) is not None

    def version(self) -> str:
        return "5.4.2"

    # Volume contents as bytes (a tar in real life); failures injected half-way through a stream.
    volume_data: dict[str, bytes] = field(default_factory=dict)
    export_fails_after: int | None = None  # bytes written before `podman volume export` fails
    import_fails: bool = False

    def create_volume(self, name: str) -> None:
        self.calls.append(f"create_volume {name}")
        if name in self.volumes:
            raise DevboxError(f"podman could not create volume {name}: volume already exists", ExitCode.PODMAN)
        self.volumes.add(name)
        self.volume_data[name] = b""

    def export_volume(self, name: str, write: Callable[[bytes], object]) -> int:
        self.calls.append(f"export_volume {name}")
        data = self.volume_data.get(name, b"")
        if self.export_fails_after is not None:
            write(data[: self.export_fails_after])
            raise DevboxError(f"podman could not export volume {name}: disk on fire", ExitCode.PODMAN)
        for start in range(0, len(data), 4096):
            write(data[start : start + 4096])
        return len(data)

    def import_volume(self, name: str, chunks: Iterable[bytes]) -> int:
        self.calls.append(f"import_volume {name}")
        received = b""
        for chunk in chunks:
            received += chunk
            if self.import_fails:
                raise DevboxError(f"podman could not import volume {name}: no space left on device", ExitCode.PODMAN)
        self.volume_data[name] = self.volume_data.get(name, b"") + received
        return len(received)


@dataclass
class FakeProbe:
    """What the clean-up measures and does in drones, as data; records the actions."""

    ssh: dict[str, int] = field(default_factory=dict)  # container -> open sessions
    cpu: dict[str, int] = field(default_factory=dict)  # container -> usage_usec
    files: dict[str, datetime] = field(default_factory=dict)  # volume -> newest mtime
    work: dict[str, WorkCheck] = field(default_factory=dict)  # volume -> work check
    push_fails: dict[str, str] = field(default_factory=dict)  # repo path -> why
    export_error: str = ""
    syncthing_ids: dict[str, str] = field(default_factory=dict)  # container -> device ID
    calls: list[str] = field(default_factory=list)

    dotfiles: dict[str, str] = field(default_factory=dict)  # container -> outcome line
    host_keys: dict[str, str] = field(default_factory=dict)  # container -> "ssh-ed25519 AAAA..."

    def ssh_host_key(self, container: str) -> str | None:
        return self.host_keys.get(container)

    def forget_identity(self, volume: str) -> str:
        self.calls.append(f"forget_identity {volume}")
        return ""

    registered: set[str] = field(default_factory=set)  # volumes whose drone's tailnet node is registered

    def tailscale_registered(self, volume: str) -> bool:
        self.calls.append(f"tailscale_registered {volume}")
        return volume in self.registered

    def dotfiles_outcome(self, container: str) -> str | None:
        return self.dotfiles.get(container)

    devcontainer: dict[str, str] = field(default_factory=dict)  # container -> the hooks' outcome line

    def devcontainer_outcome(self, container: str) -> str | None:
        return self.devcontainer.get(container)

    compose: dict[str, str] = field(default_factory=dict)  # container -> the inner services' last `up`

    def compose_outcome(self, container: str) -> str | None:
        return self.compose.get(container)

    def syncthing_id(self, container: str) -> str | None:
        self.calls.append(f"syncthing_id {container}")
        return self.syncthing_ids.get(container)

    def ssh_sessions(self, container: str) -> int | None:
        return self.ssh.get(container, 0)

    tmux: dict[str, str | None] = field(default_factory=dict)  # container -> sessions.sh's output

    def tmux_sessions(self, container: str, sample: float) -> str | None:
        self.calls.append(f"tmux_sessions {container}")
        return self.tmux.get(container, "")

    passwords: dict[tuple[str, str], str] = field(default_factory=dict)  # (container, service) -> password

    def web_password(self, container: str, service: str) -> str | None:
        self.calls.append(f"web_password {container} {service}")  # the call, never the password
        return self.passwords.get((container, service))

    def cpu_usage_usec(self, container: str) -> int | None:
        return self.cpu.get(container)

    inner: dict[str, int] = field(default_factory=dict)  # container -> running containers inside it

    def inner_containers(self, container: str) -> int | None:
        self.calls.append(f"inner_containers {container}")
        return self.inner.get(container, 0)

    def newest_file(self, volume: str) -> datetime | None:
        return self.files.get(volume)

    def check_work(self, image: str, mounts: Mounts) -> WorkCheck:
        self.calls.append(f"check_work {mounts.volume}")
        return self.work.get(mounts.volume, WorkCheck())

    def push_rescue(self, image: str, mounts: Mounts, branch: str, repos: Sequence[str]) -> PushResult:
        self.calls.append(f"push_rescue {mounts.volume} {branch} {' '.join(repos)}")
        failed = tuple((r, self.push_fails[r]) for r in repos if r in self.push_fails)
        return PushResult(tuple(r for r in repos if r not in self.push_fails), failed)

    def export_volume(self, volume: str, target: Path) -> str:
        self.calls.append(f"export_volume {volume} {target}")
        if not self.export_error:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("tar")
        return self.export_error


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
    probe: FakeProbe = field(default_factory=FakeProbe)
    now: datetime = FIXED_NOW
    quadlet_version: tuple[int, int] | None = (5, 4)  # Debian 13's
    builder: object | None = None  # a devcontainer ImageBuilder (tests/unit/test_devcontainer_create.py)

    def context(self, config: Config | None = None) -> Context:
        return Context(
            self.paths,
            systemd_factory=lambda: self.systemd,
            podman_factory=lambda: self.podman,
            clock=lambda: self.now,
            devbox_command=("/opt/devbox/bin/python3", "-m", "devbox"),
            config=config,
            probe_factory=lambda: self.probe,
            quadlet_version_factory=lambda: self.quadlet_version,
            image_builder_factory=None if self.builder is None else lambda _: self.builder,
        )

    def leftovers(self) -> list[str]:
        """files() plus what devbox keeps per drone outside ~/.config: authorized_keys, private keys."""
        roots = (self.paths.drones_dir, self.paths.state_dir / "ssh")
        found = [str(p) for root in roots if root.exists() for p in root.rglob("*") if p.is_file()]
        return self.files() + sorted(found)

    def files(self) -> list[str]:
        """Every file under the user's config directories, relative, sorted."""
        root = self.paths.quadlet_dir.parent.parent
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "devbox" not in p.parts)
