"""Can this host enforce the network fence? Asked by create, `devbox egress` and doctor, so that a
fenced drone is refused in one line rather than run open (its start would fail in the hook anyway)."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess

from devbox.drone.egress import parse_egress
from devbox.errors import DevboxError, ExitCode
from devbox.fence.rules import FenceInputs, ruleset
from devbox.fence.tools import SBIN

FIX = "install nftables (Debian/Ubuntu: apt install nftables; Fedora: dnf install nftables)"


def enforcement_problem() -> str | None:
    """None when nft, nsenter and the kernel's nf_tables work in a network namespace of the user's own."""
    missing = [name for name in ("nft", "nsenter", "unshare") if shutil.which(name, path=SBIN) is None]
    if missing:
        return f"{', '.join(missing)} not found: {FIX}"
    probe = FenceInputs(resolvers=(ipaddress.ip_address("192.0.2.53"),))
    argv = ["unshare", "-rn", str(shutil.which("nft", path=SBIN)), "-c", "-f", "-"]
    try:
        done = subprocess.run(
            argv, input=ruleset(parse_egress("fenced"), probe), capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"cannot check nftables in a user namespace: {exc}"
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return f"the kernel refuses the fence's rules in a user namespace ({reason}): a kernel with nf_tables is needed"
    return None


def require_enforceable() -> None:
    """A fence that cannot be enforced here is an error, never a drone that runs open."""
    problem = enforcement_problem()
    if problem is not None:
        raise DevboxError(f"the network fence cannot be enforced here: {problem}", ExitCode.ENVIRONMENT)
