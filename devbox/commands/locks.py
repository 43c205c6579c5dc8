"""One lock per drone: what changes a drone (create, start, stop, restart, destroy, restore, and the
idle clean-up right before it stops or destroys one) runs holding it, so no two of them interleave.

It is a `flock` on `$XDG_RUNTIME_DIR/devbox/locks/NAME.lock`: the kernel releases it when its
holder exits, even on `kill -9`, so a crashed command never leaves a drone locked. The files
are never removed (removing a lock file while someone waits on it would hand out two locks);
they are empty but for the holder's PID, on a tmpfs that a reboot empties.

The lock is re-entrant within one process (restore holds it around create, the clean-up
around stop and destroy).
"""

from __future__ import annotations

import fcntl
import functools
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Concatenate, ParamSpec, TypeVar

from devbox.errors import DevboxError, ExitCode
from devbox.paths import Paths

if TYPE_CHECKING:
    from devbox.context import Context

WAIT_SECONDS = 900.0  # a first start pulls an image: give the holder that long
POLL_SECONDS = 0.05

_held: dict[str, tuple[int, int]] = {}  # lock path -> (fd, depth) for what this process holds


class Busy(DevboxError):
    """Another process holds the drone's lock."""


def _holder(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return f" (PID {pid})" if pid.isdigit() else ""


def _open(paths: Paths, name: str) -> int:
    path = paths.lock_file(name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise DevboxError(f"cannot open the lock of drone {name} ({path}): {exc.strerror}", ExitCode.FAILURE) from None


def _acquire(fd: int, name: str, wait: float, waiting: Callable[[str], None] | None) -> None:
    deadline = time.monotonic() + wait
    told = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        if time.monotonic() >= deadline:
            raise Busy(
                f"drone {name} is busy: another devbox command{_holder(fd)} is changing it; try again later",
                ExitCode.BUSY,
            )
        if waiting is not None and not told:
            waiting(f"waiting for another devbox command{_holder(fd)} working on drone {name}")
            told = True
        time.sleep(POLL_SECONDS)


@contextmanager
def drone_lock(
    paths: Paths, name: str, *, wait: float = WAIT_SECONDS, waiting: Callable[[str], None] | None = None
) -> Iterator[None]:
    """Hold drone NAME's lock; wait up to WAIT seconds for it (0: fail at once with Busy)."""
    key = str(paths.lock_file(name))
    if key in _held:
        fd, depth = _held[key]
        _held[key] = (fd, depth + 1)
        try:
            yield
        finally:
            _held[key] = (fd, _held[key][1] - 1)
        return
    fd = _open(paths, name)
    try:
        _acquire(fd, name, wait, waiting)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _held[key] = (fd, 1)
        try:
            yield
        finally:
            del _held[key]
    finally:
        os.close(fd)  # closing the only descriptor releases the flock


CLAIMS = "-claims"  # not a drone name (names start with a letter): the lock around claiming ports and slots


@contextmanager
def claims_lock(paths: Paths, *, waiting: Callable[[str], None] | None = None) -> Iterator[None]:
    """Held from the last check of what other drones claim (ports, max_drones) to the write of a new
    drone's unit, so two creates of different drones never take the same port or the last slot."""
    with drone_lock(paths, CLAIMS, wait=60.0, waiting=waiting):
        yield


P = ParamSpec("P")
R = TypeVar("R")


def locked(action: Callable[Concatenate[Context, str, P], R]) -> Callable[Concatenate[Context, str, P], R]:
    """Run a use-case `action(ctx, name, ...)` holding drone NAME's lock; its `progress` hears of a wait."""

    @functools.wraps(action)
    def run(ctx: Context, name: str, /, *args: P.args, **kwargs: P.kwargs) -> R:
        progress = kwargs.get("progress")
        with drone_lock(ctx.paths, name, waiting=progress if callable(progress) else None):
            return action(ctx, name, *args, **kwargs)

    return run
