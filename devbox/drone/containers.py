"""--with containers: what rootless Podman inside a drone needs from the host (README "Containers in a drone").

The drone's unit (templates/quadlet/drone.container.j2) adds /dev/net/tun (pasta, the inner
containers' network) and unmasks /proc; the drone's init (templates/image/devbox-drone-init) sets
Podman up as the drone user. The inner store uses the kernel's own overlay in a user namespace
(there is no /dev/fuse in a drone for fuse-overlayfs), which needs Linux 5.13 or newer.
"""

from __future__ import annotations

import platform
import re
from pathlib import Path

from devbox.errors import DevboxError, ExitCode

TUN = Path("/dev/net/tun")
KERNEL_MIN = (5, 13)  # overlay mounts in a user namespace


def kernel_version(release: str) -> tuple[int, int] | None:
    found = re.match(r"(\d+)\.(\d+)", release)
    return (int(found.group(1)), int(found.group(2))) if found else None


def host_problem(tun_exists: bool, release: str) -> str | None:
    """Why containers cannot run in a drone on this host, or None."""
    version = kernel_version(release)
    if version is not None and version < KERNEL_MIN:
        need = ".".join(map(str, KERNEL_MIN))
        return f"Linux {release} cannot mount overlay in a user namespace (Linux {need} or newer can)"
    if not tun_exists:
        return f"{TUN} is missing, which the inner containers' network (pasta) needs"
    return None


def check_host() -> None:
    """Refuse --with containers on a host where it cannot work: one line saying why."""
    problem = host_problem(TUN.exists(), platform.release())
    if problem:
        raise DevboxError(f"--with containers cannot work on this host: {problem}", ExitCode.ENVIRONMENT)
