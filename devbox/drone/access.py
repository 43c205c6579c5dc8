"""Reaching a drone from the user's machines: ssh argv, ~/.ssh/config blocks, editor commands, port URLs.

Pure functions of a drone's labels and the config: nothing here asks systemd or Podman.
A drone on a tailnet is reached by its node name on port 2222; one without a tailnet on
its published 127.0.0.1 port.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from devbox.drone.spec import DroneSpec
from devbox.errors import DevboxError, ExitCode
from devbox.names import DRONE_SSH_PORT, tailnet_name


@dataclass(frozen=True)
class SshTarget:
    name: str  # the drone; also the Host alias in ~/.ssh/config
    host: str
    port: int
    user: str  # the host user (keep-id), or the image's remote user a devcontainer drone runs as
    on_tailnet: bool
    identity_file: str | None = None
    known_hosts: str | None = None  # devbox's own file, holding the key the drone itself reported

    @property
    def host_key_alias(self) -> str | None:
        # Local drones share 127.0.0.1: key their host keys by drone, not by port.
        return None if self.on_tailnet else f"devbox-{self.name}"


def ssh_target(
    declared: DroneSpec,
    user: str,
    tailnet: str | None,
    identity_file: str | None = None,
    *,
    from_elsewhere: bool = False,
) -> SshTarget:
    """How to reach the drone's sshd: from this server its published 127.0.0.1 port; from your
    other machines (ssh-config, open) its tailnet name."""
    name, port = declared.name, declared.ssh_port
    if declared.tailscale and (from_elsewhere or port is None):
        return SshTarget(name, tailnet_name(name, tailnet), DRONE_SSH_PORT, user, True, identity_file)
    if port is None:
        raise DevboxError(
            f"drone {name} has no tailnet and no published SSH port: recreate it with --ssh-port", ExitCode.CONFLICT
        )
    return SshTarget(name, "127.0.0.1", port, user, False, identity_file)


def ssh_argv(target: SshTarget, command: list[str]) -> list[str]:
    argv = ["ssh", "-p", str(target.port)]
    if target.host_key_alias:
        argv += ["-o", f"HostKeyAlias={target.host_key_alias}"]
    if target.identity_file:
        argv += ["-i", target.identity_file, "-o", "IdentitiesOnly=yes"]
    if target.known_hosts:
        argv += ["-o", f"UserKnownHostsFile={target.known_hosts}", "-o", "StrictHostKeyChecking=yes"]
    argv.append(f"{target.user}@{target.host}")
    return argv + (["--", *command] if command else [])


def ssh_config_block(target: SshTarget) -> str:
    lines = [f"Host {target.name}", f"    HostName {target.host}", f"    Port {target.port}", f"    User {target.user}"]
    if target.host_key_alias:
        lines.append(f"    HostKeyAlias {target.host_key_alias}")
    if target.identity_file:
        lines += [f"    IdentityFile {target.identity_file}", "    IdentitiesOnly yes"]
    if target.known_hosts:
        lines.append(f"    UserKnownHostsFile {target.known_hosts} ~/.ssh/known_hosts")
    return "\n".join(lines) + "\n"


def ssh_config(targets: list[SshTarget], mosh: tuple[str, ...] = ()) -> str:
    """The blocks; MOSH names the drones made --with mosh (mosh logs in with these blocks too)."""
    header = [
        "# devbox drones: `devbox ssh-config >> ~/.ssh/config`, then `ssh NAME` (VS Code, Zed and JetBrains",
        "# Gateway use these hosts too).",
    ]
    if mosh:
        header.append(f"# mosh NAME works with these blocks too for {', '.join(mosh)} (UDP 60000-61000 on the drone).")
    if any(not t.on_tailnet for t in targets):
        header.append("# Drones without a tailnet listen on 127.0.0.1 of this server only: use them from here.")
    return "\n".join(header) + "\n\n" + "\n".join(ssh_config_block(t) for t in targets)


def workspace(home: str, repos: list[str]) -> str:
    """Where an editor opens: the one repository's checkout, else the home directory."""
    if len(repos) == 1:
        return str(PurePosixPath(home) / repos[0].split("/", 1)[1])
    return home


def code_argv(target: SshTarget, path: str) -> list[str]:
    """VS Code Remote-SSH; the Host alias must be in ~/.ssh/config (devbox ssh-config)."""
    return ["code", "--remote", f"ssh-remote+{target.name}", path]


def zed_argv(target: SshTarget, path: str) -> list[str]:
    return ["zed", f"ssh://{target.user}@{target.host}:{target.port}{path}"]


def port_url(target: SshTarget, port: int, scheme: str = "http") -> str:
    if not target.on_tailnet:
        raise DevboxError(
            f"drone {target.name} is not on a tailnet: forward the port over SSH instead: "
            f"ssh -p {target.port} -L {port}:127.0.0.1:{port} {target.user}@{target.host}",
            ExitCode.CONFLICT,
        )
    return f"{scheme}://{target.host}:{port}/"


def known_hosts_text(previous: str, alias: str, key: str | None) -> str:
    """PREVIOUS with ALIAS's line replaced by KEY, or dropped when KEY is None (a drone made anew has a new key)."""
    lines = [line for line in previous.splitlines() if line.split(" ", 1)[0] != alias]
    lines += [f"{alias} {key}"] if key is not None else []
    return "".join(line + "\n" for line in lines)
