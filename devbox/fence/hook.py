"""The fence's OCI hook: crun runs it (createRuntime) after it made the drone's namespaces and
before any process of the drone runs; a failure here fails the container's start, so a drone whose
fence could not be applied never runs.

crun runs hooks as root of the rootless user namespace Podman made, which owns the drone's network
namespace with full capabilities, while the drone's own root holds no CAP_NET_ADMIN (Podman's
bounding set): so devbox can load the rules and the drone cannot change them.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from devbox.drone.egress import ALLOW, EgressPolicy, parse_egress
from devbox.errors import DevboxError, ExitCode
from devbox.fence.rules import Address, FenceInputs, ruleset
from devbox.fence.tools import tool

EGRESS_ANNOTATION = "io.devbox.egress"
DRONE_ANNOTATION = "io.devbox.drone"


def _addresses(text: str) -> list[Address]:
    found = []
    for word in text.split():
        try:
            found.append(ipaddress.ip_address(word.split("%")[0]))
        except ValueError:
            continue
    return found


def resolvers(resolv_conf: str) -> tuple[Address, ...]:
    """The nameserver lines of the drone's resolv.conf (as Podman wrote it, before the drone ran)."""
    lines = (line.split() for line in resolv_conf.splitlines())
    return tuple(a for words in lines if words[:1] == ["nameserver"] for a in _addresses(" ".join(words[1:2])))


def hosts_entries(hosts: str) -> dict[str, list[Address]]:
    """name -> addresses of the drone's /etc/hosts (host.containers.internal is there)."""
    table: dict[str, list[Address]] = {}
    for line in hosts.splitlines():
        words = line.split("#")[0].split()
        if len(words) < 2:
            continue
        for address in _addresses(words[0]):
            for name in words[1:]:
                table.setdefault(name.lower(), []).append(address)
    return table


def resolve(host: str, hosts: Mapping[str, list[Address]]) -> list[Address]:
    """A host of a policy or URL: an address as is, the drone's /etc/hosts, else the host's resolver."""
    bare = host.strip("[]")
    try:
        return [ipaddress.ip_address(bare)]
    except ValueError:
        pass
    if bare.lower() in hosts:
        return list(hosts[bare.lower()])
    try:
        infos = socket.getaddrinfo(bare, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return []  # a name that does not resolve now is allowed nothing until it does
    return list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos))


_DEFAULT_PORTS = {"https": 443, "http": 80, "ssh": 22, "git": 9418}


def _url_destination(url: str) -> tuple[str, int] | None:
    """(host, port) of a URL git fetches from; None for file:// and git@host:path (an scp-like address
    has no scheme: it is ssh on 22, which a fenced drone reaches on the internet anyway)."""
    try:
        parts = urlsplit(url)
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return None
    return (parts.hostname, port) if parts.hostname and port else None


def host_addresses() -> tuple[Address, ...]:
    """The host's own addresses (this process runs in the host's network namespace)."""
    try:
        out = subprocess.run([tool("ip"), "-j", "addr"], capture_output=True, text=True, timeout=10).stdout
        links = json.loads(out or "[]")
    except (OSError, ValueError, subprocess.SubprocessError, DevboxError):
        return ()
    found = []
    for link in links:
        for info in link.get("addr_info", []):
            found += _addresses(str(info.get("local", "")))
    return tuple(a for a in found if not a.is_loopback)


# Podman (5.3 on) with pasta: the DNS forwarder in the drone and the host as host.containers.internal.
PASTA_DNS = ipaddress.ip_address("169.254.1.1")
PASTA_HOST = ipaddress.ip_address("169.254.1.2")
HOST_RESOLV_CONFS = ("/etc/resolv.conf", "/run/systemd/resolve/resolv.conf")


def host_resolvers(read: Callable[[str], str]) -> tuple[Address, ...]:
    """The host's own nameservers, which Podman gives the drone (loopback ones it replaces with
    systemd-resolved's upstream list, the second file)."""
    found: list[Address] = []
    for path in HOST_RESOLV_CONFS:
        try:
            found += [a for a in resolvers(read(path)) if not a.is_loopback]
        except OSError:
            continue
    return tuple(found)


def _read(path: str) -> str:
    return Path(path).read_text(encoding="utf-8", errors="replace")


def inputs_for(
    policy: EgressPolicy, env: Mapping[str, str], files: Mapping[str, str], read: Callable[[str], str] = _read
) -> FenceInputs:
    """What the ruleset needs, from the drone's environment and what Podman gives it.

    At createRuntime Podman has not written the drone's resolv.conf and hosts yet (it does after the
    network is set up, before the drone's first process runs), so they are derived as Podman derives
    them: its DNS forwarder and the host's nameservers; host.containers.internal is pasta's address.
    """
    hosts = {"host.containers.internal": [PASTA_HOST], "host.docker.internal": [PASTA_HOST]}
    hosts |= hosts_entries(files.get("/etc/hosts", ""))
    devbox: list[tuple[Address, int]] = []
    # What devbox fetches into the drone under every policy: the git remote (through the broker) and the
    # dotfiles the user named at create.
    for variable in ("DEVBOX_GIT_URL", "DEVBOX_DOTFILES_URL"):
        source = _url_destination(env.get(variable, ""))
        if source is not None:
            devbox += [(address, source[1]) for address in resolve(source[0], hosts)]
    allowed: list[tuple[Address, int | None]] = []
    if policy.mode == ALLOW:
        for destination in policy.allowed:
            allowed += [(address, destination.port) for address in resolve(destination.host, hosts)]
    found = (PASTA_DNS, *resolvers(files.get("/etc/resolv.conf", "")), *host_resolvers(read))
    return FenceInputs(
        resolvers=tuple(dict.fromkeys(found)),
        host_addresses=() if policy.mode == ALLOW else host_addresses(),
        devbox=tuple(devbox),
        allowed=tuple(allowed),
    )


def bundle_files(config: Mapping[str, Any], wanted: Iterable[str]) -> dict[str, str]:
    """The drone's files Podman bind-mounts (resolv.conf, hosts), read from their sources."""
    sources = {m.get("destination"): m.get("source") for m in config.get("mounts", [])}
    found = {}
    for destination in wanted:
        source = sources.get(destination)
        if source:
            try:
                found[destination] = Path(source).read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
    return found


def load(netns: str, rules: str) -> None:
    """Load RULES into the network namespace at NETNS, in one nft transaction."""
    argv = [tool("nsenter"), f"--net={netns}", tool("nft"), "-f", "-"]
    done = subprocess.run(argv, input=rules, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no output"])[0]
        raise DevboxError(f"nft could not load the fence: {reason}", ExitCode.ENVIRONMENT)


def apply(state: Mapping[str, Any]) -> str:
    """Apply the fence for the container whose OCI state is STATE; returns the drone's name."""
    annotations = state.get("annotations") or {}
    policy = parse_egress(str(annotations.get(EGRESS_ANNOTATION, "fenced")))
    drone = str(annotations.get(DRONE_ANNOTATION, state.get("id", "?")))
    if not policy.fenced:
        return drone
    config = json.loads((Path(state["bundle"]) / "config.json").read_text(encoding="utf-8"))
    check_capabilities(config)
    env = dict(item.partition("=")[::2] for item in config.get("process", {}).get("env", []))
    files = bundle_files(config, ("/etc/resolv.conf", "/etc/hosts"))
    inputs = inputs_for(policy, env, files)
    netns = f"/proc/{int(state['pid'])}/ns/net"
    load(netns, ruleset(policy, inputs))
    start_watcher(int(state["pid"]), drone, policy, inputs)
    return drone


# Capabilities that get past the fence from inside: NET_ADMIN changes the rules, NET_RAW sends
# frames on a packet socket (which netfilter's output hook never sees), SYS_ADMIN does either.
FENCE_BREAKERS = ("CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_SYS_ADMIN")


def check_capabilities(config: Mapping[str, Any]) -> None:
    bounding = config.get("process", {}).get("capabilities", {}).get("bounding", [])
    found = [cap for cap in FENCE_BREAKERS if cap in bounding]
    if found:
        raise DevboxError(
            f"the drone would have {', '.join(found)}, which gets past the fence from inside: "
            "drop it from the devcontainer.json's capAdd, or give the drone --egress open",
            ExitCode.INVALID_INPUT,
        )


def start_watcher(pid: int, drone: str, policy: EgressPolicy, inputs: FenceInputs) -> None:
    """devbox/fence/watch.py in the drone's network namespace, detached: it lives in the drone's
    service (Podman runs this hook there), so it stops with the drone."""
    netns = f"/proc/{pid}/ns/net"
    argv = [tool("nsenter"), f"--net={netns}", sys.executable, "-m", "devbox.fence.watch", drone, str(pid), str(policy)]
    argv += [str(address) for address in inputs.resolvers]
    null = subprocess.DEVNULL
    subprocess.Popen(argv, stdin=null, stdout=null, stderr=null, start_new_session=True, close_fds=True)


def main() -> int:
    try:
        drone = apply(json.load(sys.stdin))
    except (DevboxError, OSError, ValueError, KeyError, subprocess.SubprocessError) as exc:
        print(f"devbox: the network fence could not be applied, so the drone does not start: {exc}", file=sys.stderr)
        return 1
    print(f"devbox: network fence applied to drone {drone}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
