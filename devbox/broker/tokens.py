"""Installation tokens kept until shortly before they expire, minted once however many ask at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from devbox.broker.github import Token

Key = tuple[int, tuple[str, ...], tuple[tuple[str, str], ...]]

DEFAULT_REFRESH_MARGIN = 300.0  # seconds before expires_at from which a token is minted afresh


def cache_key(installation_id: int, repos: Sequence[str], permissions: Mapping[str, str]) -> Key:
    return installation_id, tuple(sorted(repos)), tuple(sorted(permissions.items()))


@dataclass
class _Flight:
    """One mint in progress; the threads that asked for the same key wait on `done`."""

    done: threading.Event = field(default_factory=threading.Event)
    token: Token | None = None
    error: BaseException | None = None


class TokenCache:
    def __init__(self, refresh_margin: float = DEFAULT_REFRESH_MARGIN, clock: Callable[[], float] = time.time) -> None:
        self.refresh_margin = refresh_margin
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[Key, Token] = {}
        self._flights: dict[Key, _Flight] = {}

    def get(self, key: Key, mint: Callable[[], Token]) -> Token:
        """The cached token while more than `refresh_margin` seconds remain, else one from `mint`."""
        with self._lock:
            token = self._tokens.get(key)
            if token is not None and token.expires_at.timestamp() - self._clock() > self.refresh_margin:
                return token
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if not leader:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            assert flight.token is not None
            return flight.token
        try:
            flight.token = mint()
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                del self._flights[key]
                if flight.token is not None:  # a failed mint caches nothing; the next get tries again
                    self._tokens[key] = flight.token
            flight.done.set()
        return flight.token

    def put(self, key: Key, token: Token) -> None:
        """Seed the cache (with a token kept from an earlier broker run)."""
        with self._lock:
            self._tokens[key] = token

    def items(self) -> list[tuple[Key, Token]]:
        with self._lock:
            return list(self._tokens.items())

    def forget(self, key: Key) -> Token | None:
        """Drop a key's token (to revoke it); the token, if there was one."""
        with self._lock:
            return self._tokens.pop(key, None)

    def tokens(self) -> list[Token]:
        """Every token held, for revoking them all when the drone goes."""
        with self._lock:
            return list(self._tokens.values())
