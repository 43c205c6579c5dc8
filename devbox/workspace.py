"""`devbox create --path DIR`: a directory on the host becomes the drone's workspace.

It is bind-mounted at the same path inside the drone, so paths read the same on both
sides; under keep-id the drone user is the host user, so ownership needs no mapping.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from devbox.errors import DevboxError, ExitCode

# What a Volume= value holds without quoting trouble (Quadlet splits on ':').
_PLAIN = re.compile(r"/[A-Za-z0-9._/@+-]*")


def _bad(message: str) -> DevboxError:
    return DevboxError(message, ExitCode.INVALID_INPUT)


def validate_workspace(given: str, home: Path) -> str:
    """The resolved absolute path of an existing directory that is neither /, the home, nor above it."""
    path = Path(os.path.expanduser(given))
    try:
        resolved = path.resolve(strict=True)
    except FileNotFoundError:
        raise _bad(f"--path {given}: no such directory") from None
    except (OSError, RuntimeError) as exc:
        raise _bad(f"--path {given}: cannot be resolved ({exc.strerror or exc})") from None
    if not resolved.is_dir():
        raise _bad(f"--path {given}: not a directory")
    home_resolved = home.resolve()
    if resolved == Path("/"):
        raise _bad(f"--path {given}: refusing to mount / into a drone")
    if resolved == home_resolved or resolved in home_resolved.parents:
        raise _bad(f"--path {given}: refusing to mount your whole home into a drone: give a project directory")
    text = str(resolved)
    if not _PLAIN.fullmatch(text) or ":" in text:
        raise _bad(f"--path {given}: use a path of letters, digits and ._@+- only (it goes into a unit file)")
    return text


def name_from_path(path: str) -> str:
    """`/home/dev/code/My_App.v2` -> `my-app-v2`; refused when that is not a valid drone name."""
    from devbox.spec import validate_name

    base = Path(path).name
    candidate = base.lower().replace("_", "-").replace(".", "-")
    try:
        return validate_name(candidate)
    except DevboxError:
        raise _bad(
            f"cannot derive a drone name from {path!r} ({candidate!r} is not a valid name): give NAME explicitly"
        ) from None


def selinux_enabled() -> bool:
    """Bind mounts need a relabel (:z) where SELinux is on."""
    return Path("/sys/fs/selinux/enforce").exists()
