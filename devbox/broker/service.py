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

from devbox.broker import pending, store
from devbox.broker.github import Token
from devbox.broker.tokens import TokenCache, cache_key
from devbox.errors import DevboxError, ExitCode
from devbox.host import journal


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
    pending_path: Path | None = None  # where tokens that could not be revoked are remembered
    record: Callable[..., None] = journal.record  # the audit trail (tests replace it)

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
        try:
            if self.app is None:
                raise DevboxError(f"no GitHub App is configured for drone {self.name}", ExitCode.CREDENTIALS)
            owner = self._owner_of(repo)
        except NotAllowed as exc:
            self._refused(repo, str(exc))
            raise
        except DevboxError as exc:
            self._refused(repo, exc.message)
            raise
        minted: list[Token] = []
        try:
            token = self._cached_or_minted(owner, minted)
        except DevboxError as exc:
            self._refused(repo, exc.message, by="github")
            raise
        with self._lock:
            store.save(self.store_path, self._cache.items())
        self._served(token, owner, repo, fresh=bool(minted))
        return token

    def _cached_or_minted(self, owner: str, minted: list[Token]) -> Token:
        """The owner's token from the cache, or a new one (then also appended to MINTED)."""
        assert self.app is not None
        app, names = self.app, self._by_owner[owner]
        with self._lock:
            installation = self._installations.get(owner)
        if installation is None:
            installation = app.installation_for(owner, names[0])
            with self._lock:
                self._installations[owner] = installation

        def mint() -> Token:
            minted.append(app.create_token(installation, names, self.permissions))
            return minted[-1]

        return self._cache.get(cache_key(installation, names, self.permissions), mint)

    def _served(self, token: Token, owner: str, asked: str | None, fresh: bool) -> None:
        """One audit event per token handed out: what it opens and until when, never the token."""
        repos = ",".join(f"{owner}/{name}" for name in token.repositories) or ",".join(self.repos)
        permissions = ",".join(f"{k}:{v}" for k, v in sorted(token.permissions.items()))
        expires = token.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        event, verb = (journal.TOKEN_MINTED, "minted") if fresh else (journal.TOKEN_SERVED, "served a cached")
        message = f"{verb} token for {repos} ({permissions}) until {expires}"
        self.record(event, self.name, message, repos=repos, permissions=permissions, expires=expires, asked=asked)

    def _refused(self, asked: str | None, reason: str, by: str = "broker") -> None:
        """BY: the broker (not one of the drone's repositories) or github (it would not mint)."""
        message = f"refused a token for {asked or 'the default repository'}: {reason}"
        self.record(
            journal.TOKEN_REFUSED,
            self.name,
            message,
            priority=journal.PRIORITY_WARNING,
            asked=asked,
            reason=reason,
            by=by,
        )

    def git_credential(self, host: str, path: str) -> str:
        if host.lower() != self.host.lower():
            reason = f"drone {self.name} has no credentials for {host}"
            self._refused(f"{host}/{path}", reason)
            raise NotAllowed(reason)
        token = self.token(path or None)
        expiry = int(token.expires_at.timestamp())
        return f"username=x-access-token\npassword={token.token}\npassword_expiry_utc={expiry}\n"

    def revoke_all(self) -> tuple[int, int]:
        """Revoke every token this drone holds, dropping them from memory and the store first so
        none is served again; (revoked, left live and remembered for a retry)."""
        with self._lock:
            held = self._cache.clear()
            stored = [h.token for _, h in store.load(self.store_path)]
            self.store_path.unlink(missing_ok=True)
        return revoke_tokens(_unique(held + stored), self.app, self.pending_path, self.name)

    def retry_pending(self) -> int:
        """Retry the revocations that failed before (at the broker's start); how many remain live."""
        if self.pending_path is None:
            return 0
        return pending.revoke_pending(self.pending_path, self.app)


def _unique(tokens: list[Token]) -> list[Token]:
    return list({t.token: t for t in tokens}.values())


def revoke_tokens(
    tokens: list[Token], app: TokenSource | None, pending_path: Path | None, drone: str
) -> tuple[int, int]:
    """Revoke each token; the ones GitHub did not confirm are remembered in `pending_path`."""
    failed = []
    for token in tokens:
        try:
            if app is None:
                raise DevboxError("no GitHub App to revoke with", ExitCode.CREDENTIALS)
            app.revoke(token.token)
        except DevboxError:
            failed.append(token)
    if pending_path is not None:
        pending.remember(pending_path, failed, drone)
    return len(tokens) - len(failed), len(failed)


def revoke_stored(store_path: Path, app: TokenSource | None, pending_path: Path | None = None) -> int:
    """Revoke the tokens kept in a drone's store and remove it; how many were revoked.

    With `pending_path`, the ones that could not be revoked are remembered there for
    `pending.revoke_pending` to retry (destroy then reports them as live)."""
    tokens = [held.token for _, held in store.load(store_path)]
    revoked, _ = revoke_tokens(tokens, app, pending_path, store_path.stem)
    store_path.unlink(missing_ok=True)
    return revoked
