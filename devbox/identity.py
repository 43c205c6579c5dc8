"""Who the user is in every drone: git's user.name and user.email, and dotfiles to clone.

The identity comes from `[identity]` in the config, else from the host's
`git config --global`; it lands in the gitconfig every drone mounts read-only.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from devbox.errors import DevboxError, ExitCode
from devbox.render import GitIdentity

_TEXT = re.compile(r"[^\x00-\x1f\x7f]{1,200}")
_EMAIL = re.compile(r"[^\s<>\x00-\x1f\x7f]{1,200}")
# Where dotfiles may come from: https, http (local servers), ssh and scp-like git URLs, file://.
_DOTFILES_URL = re.compile(
    r"(https?|ssh|git|file)://[^\s\x00-\x1f\x7f]{1,500}|[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^\s]{1,400}"
)
_BRANCH = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,199}")


def _bad(message: str) -> DevboxError:
    return DevboxError(message, ExitCode.INVALID_INPUT)


def validate_git_name(value: str) -> str:
    if not _TEXT.fullmatch(value):
        raise _bad("a git user name is 1 to 200 characters on one line")
    return value


def validate_email(value: str) -> str:
    if not _EMAIL.fullmatch(value):
        raise _bad("a git email is 1 to 200 characters without spaces or <>")
    return value


def validate_dotfiles_url(value: str) -> str:
    if re.match(r"[a-z]+://[^/@]*:[^/@]*@", value):
        # The URL goes into a unit file: a password or token there would be readable by anyone who can read it.
        raise _bad("the dotfiles URL holds a password or token: use a public URL or an SSH URL")
    if not _DOTFILES_URL.fullmatch(value):
        raise _bad(f"invalid dotfiles URL {value!r}: use https://, ssh://, file:// or git@host:path")
    return value


def validate_branch(value: str) -> str:
    if not _BRANCH.fullmatch(value) or ".." in value or value.endswith((".lock", "/")):
        raise _bad(f"invalid branch name {value!r}")
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
    return value if result.returncode == 0 and _TEXT.fullmatch(value) else None


def git_identity(name: str | None, email: str | None, home: Path) -> GitIdentity:
    """The config's values first, then the host's global git config."""
    return GitIdentity(
        name=name or host_git_config("user.name", home),
        email=email or host_git_config("user.email", home),
    )
