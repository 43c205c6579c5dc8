"""What the idle clean-up looks at and does inside drones, through the podman command.

- in a running drone (`podman exec`): open SSH sessions, the cgroup's CPU time, tmux sessions;
- for a stopped drone (`podman run --rm` of its image with its home volume):
  the git work check and the push to rescue branches;
- `podman volume inspect` / `export` for the home volume.

The scripts run in the drone's image are in templates/cleanup/ and need only
`sh`, `find` and `git` there. Parsing is in plain functions, tested on their own.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from devbox.names import DRONE_SSH_PORT
from devbox.paths import templates_dir

# Not the user's work: caches, git internals (the clean-up's own git reads stay out too), tool state.
SKIP_DIRS = (".cache", ".git", ".local", "node_modules", "__pycache__")
# Where the image's init keeps the drone's identities in the home (templates/image/CONTRACT.md).
DRONE_STATE = ".local/state/devbox-drone"
IDENTITY_DIRS = ("ssh", "tailscale", "syncthing")  # host key, tailnet node, Syncthing device
# The init writes it after `tailscale up` with the auth key succeeded (templates/image/devbox-drone-init).
TAILSCALE_REGISTERED = f"{DRONE_STATE}/tailscale/devbox-registered"
# A regular file under the volume's mount point ($1), the path ($2) resolved with its symlinks inside it:
# a drone's symlink must not make the host answer about its own files.
_REGULAR_FILE_IN = (
    'root=$(realpath -e -- "$1") && real=$(realpath -e -- "$1/$2") && '
    'case $real in "$root"/*) test -f "$real" ;; *) false ;; esac'
)
_TCP_ESTABLISHED = "01"


@dataclass(frozen=True)
class RepoWork:
    """One git repository in a drone's home, as the work check found it."""

    path: str  # relative to the home
    changes: int = 0  # lines of `git status --porcelain`
    stashes: int = 0
    unpushed: int = 0  # commits on local branches that no remote branch has
    error: str = ""  # git could not answer: counts as dirty
    has_remote: bool = True  # without one there is nowhere to push a rescue branch

    @property
    def dirty(self) -> bool:
        return bool(self.changes or self.stashes or self.unpushed or self.error)

    def describe(self) -> str:
        if self.error:
            return f"~/{self.path}: {self.error}"
        parts = [
            f"{count} {what}"
            for count, what in (
                (self.changes, "uncommitted changes"),
                (self.stashes, "stashes"),
                (self.unpushed, "unpushed commits"),
            )
            if count
        ]
        return f"~/{self.path}: " + (", ".join(parts) or "clean")


@dataclass(frozen=True)
class WorkCheck:
    repos: tuple[RepoWork, ...] = ()
    error: str = ""  # the check itself failed: nothing may be destroyed

    @property
    def dirty(self) -> tuple[RepoWork, ...]:
        return tuple(r for r in self.repos if r.dirty)

    @property
    def safe(self) -> bool:
        return not self.error and not self.dirty


@dataclass(frozen=True)
class Mounts:
    """What a throwaway container needs to act as the drone: its home, and for pushes its credentials."""

    volume: str  # drone-NAME-home
    home: str  # where the drone mounts it (the user's home path)
    socket_dir: str | None = None  # $XDG_RUNTIME_DIR/devbox/drones/NAME -> /run/devbox
    tools_dir: str | None = None  # Paths.tools_dir -> /usr/local/lib/devbox, its gitconfig -> /etc/gitconfig


@dataclass(frozen=True)
class PushResult:
    pushed: tuple[str, ...] = ()  # repository paths pushed
    failed: tuple[tuple[str, str], ...] = ()  # (path, why)


class Probe(Protocol):
    def ssh_sessions(self, container: str) -> int | None: ...  # None: could not tell
    def cpu_usage_usec(self, container: str) -> int | None: ...
    def inner_containers(self, container: str) -> int | None: ...  # running containers inside (--with containers)
    def newest_file(self, volume: str) -> datetime | None: ...  # newest mtime in the volume (SKIP_DIRS skipped)
    def check_work(self, image: str, mounts: Mounts) -> WorkCheck: ...
    def push_rescue(self, image: str, mounts: Mounts, branch: str, repos: Sequence[str]) -> PushResult: ...
    def export_volume(self, volume: str, target: Path) -> str: ...  # "" or why it failed
    def syncthing_id(self, container: str) -> str | None: ...  # the drone's Syncthing device ID
    def dotfiles_outcome(self, container: str) -> str | None: ...  # templates/drone/dotfiles' one line
    def devcontainer_outcome(self, container: str) -> str | None: ...  # the lifecycle hooks' last run
    def compose_outcome(self, container: str) -> str | None: ...  # a compose-based one's inner services' last up
    def ssh_host_key(self, container: str) -> str | None: ...  # the drone sshd's public host key line
    def forget_identity(self, volume: str) -> str: ...  # "" or why the drone's node/device/host keys stay
    def tailscale_registered(self, volume: str) -> bool: ...  # the init's marker is in the home volume
    def tmux_sessions(self, container: str, sample: float) -> str | None: ...  # sessions.sh's output; None: no look
    def web_password(self, container: str, service: str) -> str | None: ...  # a web service's password; None: no look


def count_ssh_sessions(proc_net_tcp: str, port: int = DRONE_SSH_PORT) -> int:
    """Established TCP connections whose local port is PORT, from /proc/net/tcp and tcp6 text."""
    count = 0
    for line in proc_net_tcp.splitlines():
        fields = line.split()
        if len(fields) < 4 or ":" not in fields[1]:
            continue
        local_port = fields[1].rsplit(":", 1)[1]
        try:
            if int(local_port, 16) == port and fields[3] == _TCP_ESTABLISHED:
                count += 1
        except ValueError:
            continue
    return count


_DEVICE_ID = re.compile(r"[A-Z2-7]{7}(-[A-Z2-7]{7}){7}")


def count_inner_containers(comm_lines: str) -> int:
    """Running containers inside a drone: each has one conmon, from the /proc/PID/comm lines of the drone."""
    return sum(1 for line in comm_lines.splitlines() if line.strip() == "conmon")


def parse_device_id(text: str) -> str | None:
    """A Syncthing device ID (eight groups of seven base32 characters) from a command's output."""
    found = _DEVICE_ID.search(text)
    return found.group(0) if found else None


def parse_password(text: str) -> str | None:
    """The one line of printable ASCII the init prints for a web service's password."""
    line = text.strip()
    return line if line and "\n" not in line and line.isascii() and line.isprintable() else None


def parse_cpu_stat(text: str) -> int | None:
    """usage_usec from a cgroup v2 cpu.stat."""
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "usage_usec" and value.strip().isdigit():
            return int(value.strip())
    return None


def parse_work(output: str) -> WorkCheck:
    """check-work.sh's lines -> WorkCheck."""
    repos: list[RepoWork] = []
    for line in output.splitlines():
        fields = line.split("\t")
        try:
            if fields[0] == "repo" and len(fields) == 6:
                changes, stashes, unpushed = (int(f.strip()) for f in fields[2:5])
                repos.append(RepoWork(fields[1], changes, stashes, unpushed, has_remote=fields[5] == "1"))
            elif fields[0] == "error" and len(fields) >= 3:
                repos.append(RepoWork(fields[1], error=f"git failed: {fields[2]}"))
        except ValueError:
            return WorkCheck(error=f"unreadable work check output: {line!r}")
    return WorkCheck(tuple(repos))


def parse_push(output: str) -> PushResult:
    pushed: list[str] = []
    failed: list[tuple[str, str]] = []
    for line in output.splitlines():
        fields = line.split("\t")
        if fields[0] == "pushed" and len(fields) >= 2:
            pushed.append(fields[1])
        elif fields[0] == "failed" and len(fields) >= 3:
            failed.append((fields[1], fields[2]))
    return PushResult(tuple(pushed), tuple(failed))


def parse_newest(text: str) -> datetime | None:
    try:
        return datetime.fromtimestamp(float(text.strip()), tz=UTC) if text.strip() else None
    except ValueError:
        return None


def _first_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


class PodmanProbe:
    def __init__(self, podman_command: str, timeout: float = 120.0) -> None:
        self._podman = podman_command
        self._timeout = timeout

    def _run(self, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess[str] | None:
        try:
            return subprocess.run(
                [self._podman, *args],
                capture_output=True,
                text=True,
                timeout=timeout or self._timeout,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None

    def ssh_sessions(self, container: str) -> int | None:
        result = self._run("exec", container, "sh", "-c", "cat /proc/net/tcp /proc/net/tcp6 2>/dev/null; true")
        if result is None or result.returncode != 0:
            return None
        return count_ssh_sessions(result.stdout)

    def tmux_sessions(self, container: str, sample: float) -> str | None:
        """The drone user's tmux sessions and their processes' CPU over SAMPLE seconds (devbox/drone/sessions.py)."""
        script = (templates_dir() / "cleanup" / "sessions.sh").read_text(encoding="utf-8")
        result = self._run("exec", container, "sh", "-c", script, "sessions.sh", f"{sample:g}", timeout=30 + sample)
        if result is None or result.returncode != 0:
            return None
        return result.stdout

    def inner_containers(self, container: str) -> int | None:
        result = self._run("exec", container, "sh", "-c", "cat /proc/[0-9]*/comm 2>/dev/null; true")
        if result is None or result.returncode != 0:
            return None
        return count_inner_containers(result.stdout)

    def syncthing_id(self, container: str) -> str | None:
        """The image's init knows where Syncthing keeps its config (templates/image/CONTRACT.md)."""
        result = self._run("exec", container, "devbox-drone-init", "syncthing-id", timeout=20)
        if result is None or result.returncode != 0:
            return None
        return parse_device_id(result.stdout)

    def web_password(self, container: str, service: str) -> str | None:
        """The password the init made for web service SERVICE (templates/image/CONTRACT.md). It comes
        back on the exec's output only: never an argument, never logged."""
        result = self._run("exec", container, "devbox-drone-init", "web-password", service, timeout=20)
        if result is None or result.returncode != 0:
            return None
        return parse_password(result.stdout)

    def ssh_host_key(self, container: str) -> str | None:
        """The init keeps the host key in the home volume (templates/image/CONTRACT.md)."""
        path = f"$HOME/{DRONE_STATE}/ssh/ssh_host_ed25519_key.pub"
        result = self._run("exec", container, "sh", "-c", f'cat "{path}"', timeout=20)
        if result is None or result.returncode != 0:
            return None
        fields = result.stdout.split()
        return " ".join(fields[:2]) if len(fields) >= 2 and fields[0] == "ssh-ed25519" else None

    def dotfiles_outcome(self, container: str) -> str | None:
        return self._outcome(container, "$HOME/.local/state/devbox/dotfiles")

    def devcontainer_outcome(self, container: str) -> str | None:
        return self._outcome(container, f"$HOME/{DRONE_STATE}/devcontainer/outcome")

    def compose_outcome(self, container: str) -> str | None:
        return self._outcome(container, f"$HOME/{DRONE_STATE}/compose/outcome")

    def _outcome(self, container: str, path: str) -> str | None:
        """The one line a script in the drone left at PATH about its last run."""
        result = self._run("exec", container, "sh", "-c", f'cat "{path}"', timeout=20)
        if result is None or result.returncode != 0:
            return None
        return result.stdout.strip()[:300] or None

    def cpu_usage_usec(self, container: str) -> int | None:
        result = self._run("exec", container, "cat", "/sys/fs/cgroup/cpu.stat")
        if result is None or result.returncode != 0:
            return None
        return parse_cpu_stat(result.stdout)

    def newest_file(self, volume: str) -> datetime | None:
        """`find` on the host in the rootless user namespace (`podman unshare`): volume files belong to subuids."""
        result = self._run("volume", "inspect", "--format", "{{.Mountpoint}}", volume)
        if result is None or result.returncode != 0 or not result.stdout.strip():
            return None
        prune = " -o ".join(f"-name {name}" for name in SKIP_DIRS)
        script = f'find "$1" -mindepth 1 \\( {prune} \\) -prune -o -printf "%T@\\n" | sort -rn | head -n 1'
        found = self._run("unshare", "sh", "-c", script, "sh", result.stdout.strip(), timeout=600)
        return parse_newest(found.stdout) if found is not None and found.returncode == 0 else None

    def forget_identity(self, volume: str) -> str:
        """For a copy of a drone: without this it would be the same tailnet node and Syncthing device."""
        result = self._run("volume", "inspect", "--format", "{{.Mountpoint}}", volume)
        if result is None or result.returncode != 0 or not result.stdout.strip():
            return f"cannot find volume {volume}"
        state = f"{result.stdout.strip()}/{DRONE_STATE}"
        removed = self._run("unshare", "rm", "-rf", "--", *(f"{state}/{name}" for name in IDENTITY_DIRS))
        if removed is None or removed.returncode != 0:
            return (removed.stderr.strip() if removed is not None else "podman unshare did not finish") or "rm failed"
        return ""

    def tailscale_registered(self, volume: str) -> bool:
        """The drone's node is registered: False when it cannot be told (the key then stays mounted)."""
        result = self._run("volume", "inspect", "--format", "{{.Mountpoint}}", volume)
        if result is None or result.returncode != 0 or not result.stdout.strip():
            return False
        root = result.stdout.strip()
        found = self._run("unshare", "sh", "-c", _REGULAR_FILE_IN, "sh", root, TAILSCALE_REGISTERED, timeout=30)
        return found is not None and found.returncode == 0

    def _throwaway(self, image: str, mounts: Mounts, script: str, *args: str, network: bool = False) -> list[str]:
        argv = ["run", "--rm", "--userns=keep-id", "--entrypoint=sh", "--label=io.devbox.cleanup=1"]
        argv += [] if network else ["--network=none"]
        argv += ["-v", f"{mounts.volume}:{mounts.home}", "--workdir", mounts.home]
        if mounts.socket_dir:
            argv += ["-v", f"{mounts.socket_dir}:/run/devbox"]
        if mounts.tools_dir:
            argv += ["-v", f"{mounts.tools_dir}:/usr/local/lib/devbox:ro"]
            argv += ["-v", f"{mounts.tools_dir}/gitconfig:/etc/gitconfig:ro"]
        text = (templates_dir() / "cleanup" / script).read_text(encoding="utf-8")
        return [*argv, image, "-c", text, script, *args]

    def check_work(self, image: str, mounts: Mounts) -> WorkCheck:
        result = self._run(*self._throwaway(image, mounts, "check-work.sh", mounts.home), timeout=300)
        if result is None:
            return WorkCheck(error="the work check did not finish")
        if result.returncode != 0:
            return WorkCheck(error=f"the work check failed: {_first_line(result.stderr or result.stdout)}")
        return parse_work(result.stdout)

    def push_rescue(self, image: str, mounts: Mounts, branch: str, repos: Sequence[str]) -> PushResult:
        argv = self._throwaway(image, mounts, "rescue-work.sh", mounts.home, branch, *repos, network=True)
        result = self._run(*argv, timeout=600)
        if result is None:
            return PushResult(failed=tuple((r, "the push did not finish") for r in repos))
        parsed = parse_push(result.stdout)
        if result.returncode != 0 and not parsed.pushed and not parsed.failed:
            return PushResult(failed=tuple((r, _first_line(result.stderr)) for r in repos))
        return parsed

    def export_volume(self, volume: str, target: Path) -> str:
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        partial = target.with_name(target.name + ".partial")
        result = self._run("volume", "export", "--output", str(partial), volume, timeout=3600)
        if result is None or result.returncode != 0:
            partial.unlink(missing_ok=True)
            return _first_line(result.stderr) if result else "podman volume export did not finish"
        partial.chmod(0o600)
        partial.replace(target)
        return ""
