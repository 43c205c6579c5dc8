"""Who the user is in every drone: git's user.name and user.email, and dotfiles to clone.

The identity comes from `[identity]` in the config, else from the host's
`git config --global`; it lands in the gitconfig every drone mounts read-only.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from devbox.errors import invalid
from devbox.values import printable

# Both also pass values.printable: no line break git, systemd or Python would split at.
_TEXT = re.compile(r".{1,200}", re.DOTALL)
_EMAIL = re.compile(r"[^\s<>]{1,200}")
# Where dotfiles may come from: https, ssh (also scp-like user@host:path) and file://; plain http only
# from this machine, since their installer runs in the drone.
_SCP_LIKE = re.compile(r"[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[A-Za-z0-9._~/+-]{1,400}")
_URL_TEXT = re.compile(r"[A-Za-z0-9._~:/?#\[\]@!$&'()*+,;=%-]{1,500}")
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "host.containers.internal")
_BRANCH = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,199}")


@dataclass(frozen=True)
class GitIdentity:
    name: str | None = None
    email: str | None = None


def _one_line(value: str) -> bool:
    return _TEXT.fullmatch(value) is not None and printable(value)


def validate_git_name(value: str) -> str:
    if not _one_line(value):
        raise invalid("a git user name is 1 to 200 characters on one line")
    return value


def validate_email(value: str) -> str:
    if not _EMAIL.fullmatch(value) or not printable(value):
        raise invalid("a git email is 1 to 200 characters without spaces or <>")
    return value


def validate_dotfiles_url(value: str) -> str:
    """A URL git clones and whose installer then runs: no secrets in it (it goes into the unit), no plain
    http from elsewhere, nothing a unit file or git's command line could read as more than a URL."""
    if not _URL_TEXT.fullmatch(value) or value.startswith("-"):
        raise invalid("invalid dotfiles URL: use https://, ssh://, file:// or git@host:path")
    if _SCP_LIKE.fullmatch(value):
        return value
    from urllib.parse import urlsplit

    try:
        url = urlsplit(value)
        host = url.hostname
    except ValueError:
        raise invalid("invalid dotfiles URL: use https://, ssh://, file:// or git@host:path") from None
    if url.scheme in ("http", "https") and ("@" in url.netloc or url.query or url.fragment):
        # The URL goes into a unit file: a user, password or token there is readable by anyone who reads it.
        raise invalid("the dotfiles URL holds a user name, password, token or query: use a public URL or an SSH URL")
    if url.scheme == "ssh" and (url.password is not None or url.query or url.fragment):
        raise invalid("the dotfiles URL holds a password or query: use an SSH key")
    if url.scheme == "http" and host not in LOCAL_HOSTS:
        raise invalid("dotfiles over plain http only from this machine: their installer runs in the drone; use https")
    if url.scheme not in ("http", "https", "ssh", "file") or (url.scheme != "file" and not host):
        raise invalid("invalid dotfiles URL: use https://, ssh://, file:// or git@host:path")
    return value


def validate_branch(value: str) -> str:
    if not _BRANCH.fullmatch(value) or ".." in value or value.endswith((".lock", "/")):
        raise invalid(f"invalid branch name {value!r}")
    return value


def host_git_config(key: str, home: Path) -> str | None:
    """One key of the global git config of the user whose home is HOME, or None (no git, unset, or unusable)."""
    git = shutil.which("git")
    if git is None:
        return None
    try:
        result = subprocess.run(
            [git, "config", "--global", "--get", key],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
            env={**os.environ, "HOME": str(home)},
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    value = result.stdout.strip()
    return value if result.returncode == 0 and _one_line(value) else None


def git_identity(name: str | None, email: str | None, home: Path) -> GitIdentity:
    """The config's values first, then the host's global git config."""
    return GitIdentity(
        name=name or host_git_config("user.name", home),
        email=email or host_git_config("user.email", home),
    )
