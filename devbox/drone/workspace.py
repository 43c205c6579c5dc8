"""`devbox create --path DIR`: a directory on the host becomes the drone's workspace.

It is bind-mounted at the same path inside the drone, so paths read the same on both
sides; under keep-id the drone user is the host user, so ownership needs no mapping.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from devbox.errors import DevboxError, invalid
from devbox.values import PLAIN_PATH

# Mounted at the same path, these would shadow the drone's own system, or hand it the host's.
SYSTEM_DIRS = tuple(
    Path(p)
    for p in ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/root", "/run")
    + ("/sbin", "/sys", "/usr", "/var/lib", "/var/run", "/var/log", "/var/cache", "/var/spool", "/nix")
)


def _overlaps(path: Path, other: Path) -> bool:
    return path == other or other in path.parents or path in other.parents


def validate_workspace(given: str, home: Path, private: tuple[Path, ...] = ()) -> str:
    """The resolved path of an existing project directory a drone may have.

    Refused: /, the home and the directories above it, the home's hidden directories
    (~/.ssh, ~/.config with systemd's user units, devbox's own state with keys), system
    directories, and PRIVATE (the runtime directory with the Podman and credential sockets,
    devbox's config, data and state directories, ~/.ssh, ~/.gnupg, the directory of every
    `file:` secret such as the GitHub App key), or anything inside or above them.
    """
    path = Path(os.path.expanduser(given))
    try:
        resolved = path.resolve(strict=True)
    except FileNotFoundError:
        raise invalid(f"--path {given}: no such directory") from None
    except (OSError, RuntimeError) as exc:
        raise invalid(f"--path {given}: cannot be resolved ({getattr(exc, 'strerror', None) or exc})") from None
    if not resolved.is_dir():
        raise invalid(f"--path {given}: not a directory")
    home_resolved = home.resolve()
    if resolved == Path("/"):
        raise invalid(f"--path {given}: refusing to mount / into a drone")
    if resolved == home_resolved or resolved in home_resolved.parents:
        raise invalid(f"--path {given}: refusing to mount your whole home into a drone: give a project directory")
    if home_resolved in resolved.parents and resolved.relative_to(home_resolved).parts[0].startswith("."):
        raise invalid(f"--path {given}: refusing a hidden directory of your home (keys, settings, devbox's state)")
    for other in (*private, *SYSTEM_DIRS):
        try:
            other = other.resolve()
        except OSError:
            pass
        if _overlaps(resolved, other):
            raise invalid(f"--path {given}: refusing to mount {other} or what is in or above it into a drone")
    text = str(resolved)
    if not PLAIN_PATH.fullmatch(text):
        raise invalid(f"--path {given}: use a path of letters, digits and ._@+- only (it goes into a unit file)")
    return text


def secret_file_dirs(references: Iterable[str | None]) -> list[Path]:
    """The directory of each `file:` secret reference: a drone must not have it, nor what is near it."""
    return [Path(os.path.expanduser(r[5:])).parent for r in references if r and r.startswith("file:")]


def name_from_path(path: str) -> str:
    """`/home/dev/code/My_App.v2` -> `my-app-v2`; refused when that is not a valid drone name."""
    from devbox.values import validate_name

    base = Path(path).name
    candidate = base.lower().replace("_", "-").replace(".", "-")
    try:
        return validate_name(candidate)
    except DevboxError:
        raise invalid(
            f"cannot derive a drone name from {path!r} ({candidate!r} is not a valid name): give NAME explicitly"
        ) from None
