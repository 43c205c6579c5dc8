"""The broker's tokens kept between its runs: a 0600 JSON file on the user's runtime tmpfs.

The broker exits when idle; keeping its tokens here lets the next run reuse them
(no mint per burst of git calls) and lets `devbox destroy` revoke them. The file is
outside every drone's mounts and never leaves the runtime directory. Each token's
monotonic expiry is kept with the boot it belongs to: after a reboot it means nothing,
and the token is then never taken as fresh.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from devbox.broker.github import Token
from devbox.broker.tokens import Held, Key
from devbox.units.install import atomic_write

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def boot_id() -> str:
    try:
        return BOOT_ID.read_text(encoding="ascii").strip()
    except OSError:
        return ""


def load(path: Path) -> list[tuple[Key, Held]]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(raw, dict):
        return []
    same_boot = bool(raw.get("boot_id")) and raw.get("boot_id") == boot_id()
    entries: list[tuple[Key, Held]] = []
    for item in raw.get("tokens", []):
        try:
            key: Key = (
                int(item["installation"]),
                tuple(item["repos"]),
                tuple((str(k), str(v)) for k, v in item["permissions"]),
            )
            token = Token(
                token=str(item["token"]),
                expires_at=datetime.fromisoformat(item["expires_at"]),
                permissions=dict(item["granted"]),
                repositories=tuple(item["repositories"]),
            )
            mono = item.get("mono_expiry")
            mono_expiry = float(mono) if same_boot and mono is not None else None
        except (AttributeError, KeyError, TypeError, ValueError):
            continue
        entries.append((key, Held(token, mono_expiry)))
    return entries


def save(path: Path, entries: list[tuple[Key, Held]]) -> None:
    data = {
        "boot_id": boot_id(),
        "tokens": [
            {
                "installation": key[0],
                "repos": list(key[1]),
                "permissions": [list(p) for p in key[2]],
                "token": held.token.token,
                "expires_at": held.token.expires_at.isoformat(),
                "mono_expiry": held.mono_expiry,
                "granted": held.token.permissions,
                "repositories": list(held.token.repositories),
            }
            for key, held in entries
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(path, json.dumps(data), mode=0o600)
