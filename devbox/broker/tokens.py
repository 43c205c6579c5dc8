"""Installation tokens kept until shortly before they expire, minted once however many ask at once.

Freshness is judged twice: by GitHub's `expires_at` against the wall clock, and by the
monotonic time elapsed since the mint. A token is served only while both agree it has
comfortable life left, so a wall clock set back (or forward) never serves an expired token.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from devbox.broker.github import Token

Key = tuple[int, tuple[str, ...], tuple[tuple[str, str], ...]]

DEFAULT_REFRESH_MARGIN = 300.0  # seconds before expiry from which a token is minted afresh
MAX_TOKEN_LIFE = 3600.0  # GitHub's installation tokens live an hour at most, whatever our clock says


def cache_key(installation_id: int, repos: Sequence[str], permissions: Mapping[str, str]) -> Key:
    return installation_id, tuple(sorted(repos)), tuple(sorted(permissions.items()))


@dataclass(frozen=True)
class Held:
    """A token and the monotonic time by which it expires (None: unknown, so never fresh)."""

    token: Token
    mono_expiry: float | None


@dataclass
class _Flight:
    """One mint in progress; the threads that asked for the same key wait on `done`."""

    done: threading.Event = field(default_factory=threading.Event)
    token: Token | None = None
    error: BaseException | None = None


class TokenCache:
    def __init__(
        self,
        refresh_margin: float = DEFAULT_REFRESH_MARGIN,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.refresh_margin = refresh_margin
        self._clock = clock
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._held: dict[Key, Held] = {}
        self._flights: dict[Key, _Flight] = {}

    def _fresh(self, held: Held, wall: float, mono: float) -> bool:
        """Both clocks leave more than the margin: the wall clock by expires_at, the monotonic one by elapsed time."""
        if held.mono_expiry is None:
            return False
        return min(held.token.expires_at.timestamp() - wall, held.mono_expiry - mono) > self.refresh_margin

    def get(self, key: Key, mint: Callable[[], Token]) -> Token:
        """The cached token while it is fresh, else one from `mint`."""
        # Both clocks are read once, before any mint: a token's life counts from no later than this.
        wall, mono = self._clock(), self._monotonic()
        with self._lock:
            held = self._held.get(key)
            if held is not None and self._fresh(held, wall, mono):
                return held.token
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if not leader:
            return _follow(flight)
        return self._lead(key, flight, mint, wall, mono)

    def _lead(self, key: Key, flight: _Flight, mint: Callable[[], Token], wall: float, mono: float) -> Token:
        try:
            flight.token = mint()
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                del self._flights[key]
                if flight.token is not None:  # a failed mint caches nothing; the next get tries again
                    life = min(flight.token.expires_at.timestamp() - wall, MAX_TOKEN_LIFE)
                    self._held[key] = Held(flight.token, mono + life)
            flight.done.set()
        return flight.token

    def put(self, key: Key, held: Held) -> None:
        """Seed the cache (with a token kept from an earlier broker run)."""
        with self._lock:
            self._held[key] = held

    def items(self) -> list[tuple[Key, Held]]:
        with self._lock:
            return list(self._held.items())

    def forget(self, key: Key) -> Token | None:
        """Drop a key's token (to revoke it); the token, if there was one."""
        with self._lock:
            held = self._held.pop(key, None)
        return held.token if held else None

    def tokens(self) -> list[Token]:
        """Every token held, for revoking them all when the drone goes."""
        with self._lock:
            return [held.token for held in self._held.values()]

    def clear(self) -> list[Token]:
        """Drop every token (they are being revoked); the tokens dropped."""
        with self._lock:
            dropped = [held.token for held in self._held.values()]
            self._held.clear()
        return dropped


def _follow(flight: _Flight) -> Token:
    flight.done.wait()
    if flight.error is not None:
        raise flight.error
    assert flight.token is not None
    return flight.token
