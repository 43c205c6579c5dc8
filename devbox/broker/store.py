"""The broker's tokens kept between its runs: a 0600 JSON file on the user's runtime tmpfs.

The broker exits when idle; keeping its tokens here lets the next run reuse them
(no mint per burst of git calls) and lets `devbox destroy` revoke them. The file is
outside every drone's mounts and never leaves the runtime directory.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from devbox.broker.github import Token
from devbox.broker.tokens import Key
from devbox.units.install import atomic_write


def load(path: Path) -> list[tuple[Key, Token]]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    entries: list[tuple[Key, Token]] = []
    for item in raw.get("tokens", []) if isinstance(raw, dict) else []:
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
        except (KeyError, TypeError, ValueError):
            continue
        entries.append((key, token))
    return entries


def save(path: Path, entries: list[tuple[Key, Token]]) -> None:
    data = {
        "tokens": [
            {
                "installation": key[0],
                "repos": list(key[1]),
                "permissions": [list(p) for p in key[2]],
                "token": token.token,
                "expires_at": token.expires_at.isoformat(),
                "granted": token.permissions,
                "repositories": list(token.repositories),
            }
            for key, token in entries
        ]
    }
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(path, json.dumps(data), mode=0o600)
