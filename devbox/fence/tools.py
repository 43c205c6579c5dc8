"""The programs the fence runs: nft and nsenter live in sbin, which a user's PATH often lacks."""

from __future__ import annotations

import shutil

from devbox.errors import DevboxError, ExitCode

SBIN = "/usr/local/sbin:/usr/sbin:/sbin:/usr/local/bin:/usr/bin:/bin"


def tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=SBIN)
    if found is None:
        raise DevboxError(
            f"{name} is not installed: the network fence needs it (apt install nftables)", ExitCode.ENVIRONMENT
        )
    return found
