"""What one drone's broker answers: tokens for the drone's own repositories, nothing wider.

The repositories and permissions come from the drone's unit file, never from the
request: a request can only pick which of the drone's repositories it needs.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from devbox.broker import store
from devbox.broker.github import Token
from devbox.broker.tokens import TokenCache, cache_key
from devbox.errors import DevboxError, ExitCode


class TokenSource(Protocol):
    def installation_for(self, owner: str, repo: str) -> int: ...
    def create_token(self, installation_id: int, repos: Sequence[str], permissions: Mapping[str, str]) -> Token: ...
    def revoke(self, token: str) -> None: ...
    def now(self) -> float: ...


class NotAllowed(Exception):
    """The request names something outside the drone's repositories (HTTP 403)."""


@dataclass
class DroneBroker:
    name: str
    repos: tuple[str, ...]  # owner/name, from the unit file
    permissions: dict[str, str]
    host: str  # the git host whose credentials git may ask for
    app: TokenSource | None  # None: no GitHub App configured
    store_path: Path
    activity_path: Path
    clock: Callable[[], float]

    def __post_init__(self) -> None:
        self._cache = TokenCache(clock=self.app.now if self.app else self.clock)
        self._installations: dict[str, int] = {}
        self._lock = threading.Lock()
        self._by_owner: dict[str, list[str]] = defaultdict(list)
        for repo in self.repos:
            owner, name = repo.split("/", 1)
            self._by_owner[owner.lower()].append(name)
        for key, held in store.load(self.store_path):
            self._cache.put(key, held)

    def touch(self) -> None:
        """Record this request's time for the idle clean-up."""
        try:
            self.activity_path.parent.mkdir(parents=True, exist_ok=True)
            self.activity_path.touch()
        except OSError:
            pass

    def _owner_of(self, repo: str | None) -> str:
        if not self.repos:
            raise NotAllowed(f"drone {self.name} has no repositories")
        if repo is None:
            return self.repos[0].split("/", 1)[0].lower()
        wanted = repo.strip("/").removesuffix(".git").lower()
        if wanted not in (r.lower() for r in self.repos):
            raise NotAllowed(f"{wanted} is not one of drone {self.name}'s repositories")
        return wanted.split("/", 1)[0]

    def token(self, repo: str | None = None) -> Token:
        if self.app is None:
            raise DevboxError(f"no GitHub App is configured for drone {self.name}", ExitCode.CREDENTIALS)
        owner = self._owner_of(repo)
        names = self._by_owner[owner]
        with self._lock:
            installation = self._installations.get(owner)
        if installation is None:
            installation = self.app.installation_for(owner, names[0])
            with self._lock:
                self._installations[owner] = installation
        key = cache_key(installation, names, self.permissions)
        app = self.app
        token = self._cache.get(key, lambda: app.create_token(installation, names, self.permissions))
        with self._lock:
            store.save(self.store_path, self._cache.items())
        return token

    def git_credential(self, host: str, path: str) -> str:
        if host.lower() != self.host.lower():
            raise NotAllowed(f"drone {self.name} has no credentials for {host}")
        token = self.token(path or None)
        expiry = int(token.expires_at.timestamp())
        return f"username=x-access-token\npassword={token.token}\npassword_expiry_utc={expiry}\n"

    def revoke_all(self) -> int:
        """Revoke every token this drone holds (devbox destroy)."""
        return revoke_stored(self.store_path, self.app)


def revoke_stored(store_path: Path, app: TokenSource | None) -> int:
    """Revoke the tokens kept in a drone's store and remove it; how many were revoked."""
    entries = store.load(store_path)
    revoked = 0
    if app is not None:
        for _, held in entries:
            try:
                app.revoke(held.token.token)
                revoked += 1
            except DevboxError:
                pass
    store_path.unlink(missing_ok=True)
    return revoked
