"""Tokens that could not be revoked yet, remembered until GitHub confirms it or they expire.

The file lives under devbox's state directory, not the runtime tmpfs, so it outlives the
broker process, a failed `devbox destroy` and a reboot. The next broker start, and
devbox's destroy and clean-up (through `revoke_pending`), try again. Writes are atomic,
0600, and serialised between processes by a lock file beside it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Protocol

from devbox.broker.github import Token
from devbox.errors import DevboxError
from devbox.units.install import atomic_write

# A token this long past its expires_at is dead at GitHub even if our clock runs somewhat fast.
EXPIRY_GRACE = 600.0


class Revoker(Protocol):
    def revoke(self, token: str) -> None: ...


def pending_file(state_dir: Path) -> Path:
    """Where unrevoked tokens are remembered, given devbox's state directory (Paths.state_dir)."""
    return state_dir / "broker" / "unrevoked-tokens.json"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = path.with_name(path.name + ".lock")
    with open(lock, "a", opener=_open_private) as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _open_private(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


def _read(path: Path) -> list[dict[str, str]]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    items = raw.get("tokens") if isinstance(raw, dict) else None
    return [i for i in items or [] if isinstance(i, dict) and isinstance(i.get("token"), str)]


def _write(path: Path, items: list[dict[str, str]]) -> None:
    if items:
        atomic_write(path, json.dumps({"tokens": items}), mode=0o600)
    else:
        path.unlink(missing_ok=True)


def remember(path: Path, tokens: Iterable[Token], drone: str) -> None:
    """Add tokens whose revocation failed (each once)."""
    new = [{"token": t.token, "expires_at": t.expires_at.isoformat(), "drone": drone} for t in tokens]
    if not new:
        return
    with _locked(path):
        items = _read(path)
        known = {i["token"] for i in items}
        _write(path, items + [i for i in new if i["token"] not in known])


def _dead(item: dict[str, str], now: float) -> bool:
    try:
        return datetime.fromisoformat(item["expires_at"]).timestamp() + EXPIRY_GRACE < now
    except (KeyError, TypeError, ValueError):
        return False  # an unreadable expiry: keep trying rather than forget a live token


def revoke_pending(
    path: Path, app: Revoker | None, clock: Callable[[], float] = time.time, drone: str | None = None
) -> int:
    """Try every remembered token again; how many are still live (0: nothing left to revoke),
    counting only DRONE's when it is given."""
    if not path.exists():
        return 0
    with _locked(path):
        now = clock()
        left = []
        for item in _read(path):
            if _dead(item, now):
                continue
            if app is not None and _revoked(app, item["token"]):
                continue
            left.append(item)
        _write(path, left)
    return sum(1 for item in left if drone is None or item.get("drone") == drone)


def _revoked(app: Revoker, token: str) -> bool:
    try:
        app.revoke(token)
    except DevboxError:
        return False
    return True
