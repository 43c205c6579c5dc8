"""The one exception type devbox raises on purpose, and its named exit codes."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes a script can rely on. Documented in the README; never renumber."""

    OK = 0
    FAILURE = 1  # an unexpected error (a bug): run again with --debug
    USAGE = 2  # the command line itself is wrong (click's own code)
    INVALID_INPUT = 3  # a name, repo, path, env value, size or image reference is not acceptable
    CONFIG = 4  # the config file is unreadable or has a bad value
    NOT_FOUND = 5  # no such drone
    EXISTS = 6  # the drone exists already
    CONFLICT = 7  # a file devbox did not write is in the way (use --force)
    IMAGE = 8  # the image is not present and could not be pulled
    SYSTEMD = 9  # the user manager refused or failed an operation
    PODMAN = 10  # the Podman API is not reachable or failed
    SECRET = 11  # a secret reference could not be resolved
    ENVIRONMENT = 12  # the host lacks something devbox needs (see `devbox doctor`)
    LIMIT = 13  # a configured limit (such as max_drones) is reached
    CREDENTIALS = 14  # the GitHub App could not mint a token
    TOKENS_LIVE = 15  # GitHub tokens could not be revoked yet: they stay live until revoked or expired
    BUSY = 16  # another devbox command is changing the drone (its lock is held)
    DAMAGED = 17  # a drone's unit file cannot be read as Quadlet reads it (hand-edited): destroy removes it


class DevboxError(Exception):
    """An error with a one-line message for the user and an exit code."""

    def __init__(self, message: str, code: ExitCode = ExitCode.FAILURE, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        # Lines that explain a runtime failure (a unit's last journal lines), printed after the message.
        self.details = details or []

    def __str__(self) -> str:
        return self.message


def invalid(message: str) -> DevboxError:
    """The one way to refuse a value: its message says what is allowed."""
    return DevboxError(message, ExitCode.INVALID_INPUT)


def cannot_run(program: str, exc: OSError, code: ExitCode = ExitCode.ENVIRONMENT) -> DevboxError:
    """A program that could not be started: not executable, or looked up on a PATH with a
    directory the user cannot read (PermissionError then, not FileNotFoundError)."""
    return DevboxError(f"cannot run {program}: {exc.strerror or exc}", code)
