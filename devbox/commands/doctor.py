"""`devbox doctor`: is this host ready for drones? Each check says what to do when it fails."""

from __future__ import annotations

import os
import pwd
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from devbox.errors import cannot_run
from devbox.host import quadlet

PODMAN_MIN = (4, 4)  # Quadlet arrived in 4.4
PODMAN_RECOMMENDED = (5, 0)


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok, warn, fail
    detail: str
    fix: str = ""


class Host:
    """What doctor reads from the machine; tests replace it."""

    def __init__(self) -> None:
        self.uid = os.getuid()
        self.user = pwd.getpwuid(self.uid).pw_name
        self.runtime_dir = Path(os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{self.uid}")

    def run(self, argv: list[str]) -> tuple[int, str]:
        """Exit status and output; a program that cannot be started is a status (127, 126), never an exception."""
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
        except FileNotFoundError:
            return 127, f"{argv[0]}: not found"
        except OSError as exc:
            return 126, cannot_run(argv[0], exc).message
        except subprocess.TimeoutExpired:
            return 124, f"{argv[0]}: timed out"
        return result.returncode, (result.stdout + result.stderr).strip()

    def read(self, path: str | Path) -> str | None:
        try:
            return Path(path).read_text()
        except OSError:
            return None

    def exists(self, path: str | Path) -> bool:
        return Path(path).exists()

    def quadlet(self) -> Path | None:
        return quadlet.generator_path()

    def fence_problem(self) -> str | None:
        from devbox.fence.check import enforcement_problem

        return enforcement_problem()

    def drone_names(self) -> list[str]:
        from devbox.paths import Paths
        from devbox.units.installed import find_drones

        return sorted(find_drones(Paths.from_env()))

    def drones_with_keys(self) -> list[str]:
        """The drones with model API keys: each has a key proxy's socket and service."""
        from devbox.paths import Paths
        from devbox.units.installed import find_drones

        return sorted(name for name, record in find_drones(Paths.from_env()).items() if record.declared.keys)


def check_podman(host: Host) -> Check:
    code, out = host.run(["podman", "--version"])
    if code == 126:
        fix = "install Podman 5 (Debian 13: apt install podman), or make it and every directory on PATH readable"
        return Check("podman", "fail", out, fix)
    if code != 0:
        return Check("podman", "fail", "podman is not installed", "install Podman 5 (Debian 13: apt install podman)")
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", out)
    version = tuple(int(x) for x in match.groups()[:2]) if match else (0, 0)
    text = match.group(0) if match else out
    if version < PODMAN_MIN:
        return Check("podman", "fail", f"Podman {text} has no Quadlet", "install Podman 5 or newer (4.4 at the least)")
    if version < PODMAN_RECOMMENDED:
        return Check("podman", "warn", f"Podman {text}: devbox is tested with Podman 5", "upgrade to Podman 5")
    return Check("podman", "ok", f"Podman {text}")


def check_quadlet(host: Host) -> Check:
    path = host.quadlet()
    if path is None:
        return Check(
            "quadlet",
            "fail",
            "the Quadlet generator is missing",
            "install Podman 5 (it ships /usr/libexec/podman/quadlet)",
        )
    return Check("quadlet", "ok", str(path))


def check_user_manager(host: Host) -> Check:
    code, out = host.run(["systemctl", "--user", "is-system-running"])
    state = out.splitlines()[-1].strip() if out else ""
    if state in ("running", "degraded"):
        return Check(
            "user manager",
            "ok" if state == "running" else "warn",
            f"systemd --user is {state}",
            "" if state == "running" else "see `systemctl --user --failed`",
        )
    return Check(
        "user manager",
        "fail",
        f"systemd --user is not reachable ({state or 'no answer'})",
        "log in through a systemd session (PID 1 must be systemd) and check XDG_RUNTIME_DIR",
    )


def check_linger(host: Host) -> Check:
    if host.exists(f"/var/lib/systemd/linger/{host.user}"):
        return Check("linger", "ok", f"enabled for {host.user}")
    return Check(
        "linger",
        "fail",
        f"not enabled for {host.user}: drones stop when you log out",
        f"sudo loginctl enable-linger {host.user}",
    )


def _subids(text: str | None, user: str, uid: int) -> int:
    total = 0
    for line in (text or "").splitlines():
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[0] in (user, str(uid)) and parts[2].isdigit():
            total += int(parts[2])
    return total


def check_subids(host: Host) -> Check:
    uids = _subids(host.read("/etc/subuid"), host.user, host.uid)
    gids = _subids(host.read("/etc/subgid"), host.user, host.uid)
    if uids >= 65536 and gids >= 65536:
        return Check("subordinate ids", "ok", f"{uids} uids, {gids} gids")
    return Check(
        "subordinate ids",
        "fail",
        f"{host.user} has {uids} subordinate uids and {gids} gids (65536 needed)",
        f"sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {host.user}",
    )


def check_cgroups(host: Host) -> Check:
    if not host.exists("/sys/fs/cgroup/cgroup.controllers"):
        return Check(
            "cgroup controllers",
            "warn",
            "not the unified cgroup v2 hierarchy: --cpus and --memory will fail",
            "boot with cgroup v2 (systemd.unified_cgroup_hierarchy=1)",
        )
    path = f"/sys/fs/cgroup/user.slice/user-{host.uid}.slice/user@{host.uid}.service/cgroup.controllers"
    controllers = set((host.read(path) or "").split())
    missing = sorted({"cpu", "memory"} - controllers)
    if missing:
        return Check(
            "cgroup controllers",
            "warn",
            f"not delegated to your user manager: {', '.join(missing)}; --cpus/--memory will fail",
            "add a drop-in for user@.service with Delegate=cpu cpuset io memory pids",
        )
    return Check("cgroup controllers", "ok", "cpu and memory are delegated")


def check_podman_socket(host: Host) -> Check:
    code, out = host.run(["systemctl", "--user", "is-active", "podman.socket"])
    if code == 0 or host.exists(host.runtime_dir / "podman" / "podman.sock"):
        return Check("podman.socket", "ok", "the Podman API socket is listening")
    return Check(
        "podman.socket", "fail", "the Podman API socket is not listening", "systemctl --user enable --now podman.socket"
    )


def check_brokers(host: Host) -> Check:
    """Each drone's credential socket and broker, and its key proxy's when it has model API keys,
    as `systemctl show` reports them."""
    from devbox.commands.brokerstate import broker_state, broker_units, key_proxy_state, key_proxy_units
    from devbox.host.systemd import SystemctlSystemd, parse_show

    names = host.drone_names()
    if not names:
        return Check("credential brokers", "ok", "no drones yet")
    with_keys = host.drones_with_keys()
    units = [unit for name in names for unit in broker_units(name)]
    units += [unit for name in with_keys for unit in key_proxy_units(name)]
    code, out = host.run(
        ["systemctl", "--user", "show", "--timestamp=unix", f"--property={SystemctlSystemd.PROPERTIES}", "--", *units]
    )
    if code != 0:
        return Check("credential brokers", "warn", f"systemctl show failed: {out.splitlines()[-1] if out else code}")
    states = parse_show(out, units)
    pairs = [(name, pair) for name in names for pair in (broker_state(states, name), key_proxy_state(states, name))]
    stuck = [
        (name, pair)
        for name, pair in pairs
        if not pair.healthy and not (pair.role != "broker" and pair.state == "missing")
    ]
    if not stuck:
        return Check("credential brokers", "ok", f"{len(names)} drone(s): none failed")
    detail = "; ".join(f"drone {name}'s {broker.role}: {broker.describe()}" for name, broker in stuck)
    fixes = [
        f"find the cause with {broker.journal_command()}, then " + " && ".join(broker.reset_commands())
        for _, broker in stuck
    ]
    return Check("credential brokers", "fail", detail, "; ".join(fixes))


def check_devcontainer_cli(host: Host) -> Check:
    """The builder for a repository's devcontainer.json: optional, so a warning when it is missing."""
    from devbox.devcontainer.build import CLI_VERSION, INSTALL_HINT

    node_code, node = host.run(["node", "--version"])
    cli_code, cli = host.run(["devcontainer", "--version"])
    if node_code != 0:
        return Check(
            "devcontainer builder",
            "warn",
            "node is not installed: drones from a repository's devcontainer.json cannot be built",
            f"apt install nodejs, then {INSTALL_HINT}",
        )
    if cli_code != 0:
        return Check(
            "devcontainer builder",
            "warn",
            f"the Dev Containers CLI (devcontainer) is not installed (node {node.strip()} is)",
            INSTALL_HINT,
        )
    version = cli.strip().splitlines()[-1] if cli.strip() else "unknown"
    return Check("devcontainer builder", "ok", f"devcontainer {version} (tested: {CLI_VERSION}), node {node.strip()}")


def check_fence(host: Host) -> Check:
    """The network fence new drones get by default (README: The network fence)."""
    problem = host.fence_problem()
    if problem is None:
        return Check("network fence", "ok", "nftables works in the drones' network namespaces")
    from devbox.fence.check import FIX

    return Check(
        "network fence",
        "fail",
        f"fenced and allow: drones cannot start: {problem}",
        f'{FIX}; or, knowing what it lets drones reach, [drone] egress = "open" in the config',
    )


def check_containers(host: Host) -> Check:
    """--with containers: a warning only, drones without it do not need any of this."""
    from devbox.drone.containers import TUN, host_problem

    release = (host.read("/proc/sys/kernel/osrelease") or "").strip()
    problem = host_problem(host.exists(TUN), release)
    if problem:
        return Check("containers in drones", "warn", f"--with containers cannot work: {problem}", CONTAINERS_FIX)
    return Check("containers in drones", "ok", f"{TUN} and Linux {release} (overlay in a user namespace)")


CONTAINERS_FIX = "Linux 5.13 or newer with the tun module (modprobe tun), or make drones without --with containers"


CHECKS: list[Callable[[Host], Check]] = [
    check_podman,
    check_quadlet,
    check_user_manager,
    check_linger,
    check_subids,
    check_cgroups,
    check_podman_socket,
    check_brokers,
    check_containers,
    check_devcontainer_cli,
    check_fence,
]


def run_checks(host: Host | None = None) -> list[Check]:
    host = host or Host()
    return [check(host) for check in CHECKS]
