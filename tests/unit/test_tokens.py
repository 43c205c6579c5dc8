"""TokenCache: freshness by an injected clock, one mint per key however many ask at once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from devbox.broker.github import AppConfig, GitHubApp, Token
from devbox.broker.tokens import Held, TokenCache, cache_key
from devbox.errors import DevboxError, ExitCode
from tests.fakegithub import FakeGitHub, rsa_keypair

EXPIRES = 1_800_000_000.0
KEY = cache_key(7, ["web", "api"], {"pull_requests": "write", "contents": "read"})
WAIT = 10  # seconds any wait in these tests may take before it counts as hung


def token(name: str, expires_at: float = EXPIRES) -> Token:
    return Token(name, datetime.fromtimestamp(expires_at, UTC), {"contents": "read"}, ("api", "web"))


class Clock:
    """A settable clock that also tells how many times it was read."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.reads = 0
        self.read = threading.Condition()

    def __call__(self) -> float:
        with self.read:
            self.reads += 1
            self.read.notify_all()
        return self.now

    def wait_for_reads(self, count: int) -> None:
        with self.read:
            assert self.read.wait_for(lambda: self.reads >= count, timeout=WAIT)


class Mint:
    """A mint that counts its calls and hands out numbered tokens (or raises)."""

    def __init__(self, expires_at: float = EXPIRES, error: Exception | None = None) -> None:
        self.calls = 0
        self.lock = threading.Lock()
        self.expires_at = expires_at
        self.error = error
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def __call__(self) -> Token:
        with self.lock:
            self.calls += 1
            number = self.calls
        self.entered.set()
        assert self.release.wait(WAIT)
        if self.error is not None:
            raise self.error
        return token(f"t{number}", self.expires_at)


def test_the_key_ignores_order() -> None:
    assert KEY == (7, ("api", "web"), (("contents", "read"), ("pull_requests", "write")))
    assert cache_key(7, ["api", "web"], {"contents": "read", "pull_requests": "write"}) == KEY
    assert cache_key(8, ["api", "web"], {"contents": "read", "pull_requests": "write"}) != KEY


@pytest.mark.parametrize(
    ("remaining", "minted_again"),
    [(301.0, False), (300.0, True), (299.0, True), (3600.0, False), (0.0, True), (-5.0, True)],
)
def test_a_token_is_kept_while_more_than_the_margin_remains(remaining: float, minted_again: bool) -> None:
    clock = Clock(EXPIRES - 3600)
    cache, mint = TokenCache(clock=clock), Mint()
    first = cache.get(KEY, mint)
    clock.now = EXPIRES - remaining
    second = cache.get(KEY, mint)
    assert mint.calls == (2 if minted_again else 1)
    assert (second is first) is not minted_again


def test_the_margin_is_configurable() -> None:
    clock = Clock(EXPIRES - 120)
    cache, mint = TokenCache(refresh_margin=60, clock=clock), Mint()
    assert cache.get(KEY, mint) is cache.get(KEY, mint)
    clock.now = EXPIRES - 60
    assert cache.get(KEY, mint).token == "t2"


def test_keys_are_cached_apart() -> None:
    cache, mint = TokenCache(clock=Clock(0)), Mint()
    other = cache_key(7, ["api"], {"contents": "read"})
    assert cache.get(KEY, mint).token == "t1" and cache.get(other, mint).token == "t2"
    assert cache.get(KEY, mint).token == "t1" and mint.calls == 2


def _together(cache: TokenCache, mint: Mint, clock: Clock, count: int = 5) -> list[Token | BaseException]:
    """`count` threads ask at once; the mint is held until every one of them has read the clock
    inside get (the stale token makes each of them do so), so all of them are in the same flight."""
    barrier = threading.Barrier(count)
    results: list[Token | BaseException] = []
    lock = threading.Lock()

    def ask() -> None:
        barrier.wait(WAIT)
        try:
            result: Token | BaseException = cache.get(KEY, mint)
        except BaseException as exc:  # handed to the test
            result = exc
        with lock:
            results.append(result)

    reads = clock.reads
    mint.release.clear()
    threads = [threading.Thread(target=ask) for _ in range(count)]
    for thread in threads:
        thread.start()
    assert mint.entered.wait(WAIT)
    clock.wait_for_reads(reads + count)
    mint.release.set()
    for thread in threads:
        thread.join(WAIT)
        assert not thread.is_alive()
    return results


@pytest.fixture
def stale() -> Iterator[tuple[TokenCache, Clock]]:
    """A cache holding a token that is due for refreshing."""
    clock = Clock(EXPIRES - 3600)
    cache = TokenCache(clock=clock)
    cache.get(KEY, lambda: token("stale"))
    clock.now = EXPIRES - 60
    yield cache, clock


def test_five_threads_at_once_mint_once(stale: tuple[TokenCache, Clock]) -> None:
    cache, clock = stale
    mint = Mint(expires_at=EXPIRES + 3600)
    results = _together(cache, mint, clock)
    assert mint.calls == 1
    assert len(results) == 5 and all(isinstance(r, Token) and r.token == "t1" for r in results)
    assert cache.get(KEY, mint).token == "t1" and mint.calls == 1


def test_a_failing_mint_fails_every_waiter_and_caches_nothing(stale: tuple[TokenCache, Clock]) -> None:
    cache, clock = stale
    boom = DevboxError("GitHub API POST failed after 4 attempts", ExitCode.CREDENTIALS)
    mint = Mint(expires_at=EXPIRES + 3600, error=boom)
    results = _together(cache, mint, clock)
    assert mint.calls == 1
    assert results == [boom] * 5

    mint.error = None
    assert cache.get(KEY, mint).token == "t2" and mint.calls == 2


def test_a_first_mint_that_fails_caches_nothing() -> None:
    cache = TokenCache(clock=Clock(0))
    mint = Mint(error=DevboxError("no", ExitCode.CREDENTIALS))
    with pytest.raises(DevboxError):
        cache.get(KEY, mint)
    assert cache.tokens() == []
    mint.error = None
    assert cache.get(KEY, mint).token == "t2"


class Monotonic:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("elapsed", "minted_again"), [(3000.0, False), (3299.0, False), (3301.0, True), (3600.0, True), (7200.0, True)]
)
def test_a_wall_clock_set_back_never_serves_an_expired_token(elapsed: float, minted_again: bool) -> None:
    """The wall clock stands still (set back by as much as has passed); elapsed time still counts."""
    wall, mono = Clock(EXPIRES - 3600), Monotonic()
    cache, mint = TokenCache(clock=wall, monotonic=mono), Mint()
    first = cache.get(KEY, mint)
    mono.now += elapsed
    assert (cache.get(KEY, mint) is first) is not minted_again
    assert mint.calls == (2 if minted_again else 1)


def test_a_wall_clock_set_forward_mints_early_rather_than_late() -> None:
    wall, mono = Clock(EXPIRES - 3600), Monotonic()
    cache, mint = TokenCache(clock=wall, monotonic=mono), Mint()
    first = cache.get(KEY, mint)
    wall.now = EXPIRES - 100  # an hour's jump forward, seconds of real time
    mono.now += 5
    assert cache.get(KEY, mint) is not first and mint.calls == 2


def test_a_clock_behind_at_the_mint_cannot_stretch_a_tokens_life_past_an_hour() -> None:
    """expires_at two hours ahead of our clock (ours is behind): elapsed time still ends it after an hour."""
    wall, mono = Clock(EXPIRES - 7200), Monotonic()
    cache, mint = TokenCache(clock=wall, monotonic=mono), Mint()
    first = cache.get(KEY, mint)
    mono.now += 3400
    wall.now += 3400
    assert cache.get(KEY, mint) is not first


def test_a_token_of_unknown_age_is_never_fresh() -> None:
    cache, mint = TokenCache(clock=Clock(EXPIRES - 3600)), Mint()
    cache.put(KEY, Held(token("kept"), None))  # from a store written before a reboot
    assert cache.get(KEY, mint).token == "t1"


def test_clear_drops_every_token() -> None:
    cache, mint = TokenCache(clock=Clock(0)), Mint()
    cache.get(KEY, mint)
    assert [t.token for t in cache.clear()] == ["t1"] and cache.tokens() == []
    assert cache.get(KEY, mint).token == "t2"


def test_forget_and_tokens() -> None:
    cache, mint = TokenCache(clock=Clock(0)), Mint()
    other = cache_key(7, ["api"], {"contents": "read"})
    cache.get(KEY, mint)
    cache.get(other, mint)
    assert sorted(t.token for t in cache.tokens()) == ["t1", "t2"]
    assert cache.forget(KEY) is not None and cache.forget(KEY) is None
    assert [t.token for t in cache.tokens()] == ["t2"]
    assert cache.get(KEY, mint).token == "t3"


# -- with the GitHub App client and the fake GitHub ------------------------------------


def test_the_cache_in_front_of_github() -> None:
    installations = {"acme": (7, {"api", "web"}, {"contents": "write"})}
    with FakeGitHub("99", installations=installations) as gh:
        app = GitHubApp(AppConfig("99", rsa_keypair()[0], gh.url), sleep=lambda _: None)
        clock = Clock(gh.now())
        cache = TokenCache(clock=clock)
        key = cache_key(7, ["api", "web"], {"contents": "read"})

        def mint() -> Token:
            return app.create_token(7, ["api", "web"], {"contents": "read"})

        first = cache.get(key, mint)
        assert cache.get(key, mint) is first
        clock.now = first.expires_at.timestamp() - 299
        second = cache.get(key, mint)
        assert second.token != first.token
        assert [r.method for r in gh.requests] == ["POST", "POST"]

        for held in cache.tokens():
            app.revoke(held.token)
        assert gh.minted[second.token].revoked and not gh.token_allows(second.token, "acme/api")
        assert not gh.minted[first.token].revoked  # replaced, not held: it runs out by itself
