"""A small GitHub App REST client: the App's JWT, installation lookup, scoped tokens, revocation.

Every token request names its repositories and permissions, and a response broader than
the request is refused. The retry policy lives in `GitHubApp._request` and nowhere else.
No token, JWT or key text ever reaches a message: errors are written from status codes
and GitHub's scrubbed `message` field only.
"""

from __future__ import annotations

import email.utils
import functools
import http.client
import json
import logging
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from typing import Any
from urllib.parse import quote

from devbox.errors import DevboxError, ExitCode

log = logging.getLogger(__name__)

API_VERSION = "2022-11-28"
BACKOFF = (0.5, 1.0, 2.0)  # seconds before each retry; its length is the retry count
MAX_WAIT = 60.0  # a rate limit that resets later than this is reported, not waited for
# A new token can be refused for a few seconds until GitHub's replicas know it.
REPLICATION_WINDOW = 30.0  # seconds after a mint in which a 401 for that token may be lag
REPLICATION_WAIT = 2.0  # seconds before the one retry
SKEW_TOLERANCE = 60.0  # seconds between GitHub's Date and our clock that a JWT survives
LEVELS = {"read": 1, "write": 2, "admin": 3}
# GitHub adds `metadata: read` to every installation token, asked for or not.
IMPLICIT = {"metadata": "read"}
_SECRET = re.compile(r"gh[pousr]_[A-Za-z0-9]{20,}|eyJ[\w-]+\.[\w-]+\.[\w-]+|-----BEGIN[\s\S]*?(?:-----END[^-]*-----|$)")
_CLOCK_COMPLAINT = re.compile(r"\b(iat|exp)\b")


@dataclass(frozen=True)
class AppConfig:
    app_id: str
    private_key_pem: bytes = field(repr=False)
    api_url: str = "https://api.github.com"
    installation_id: int | None = None


@dataclass(frozen=True)
class Token:
    token: str = field(repr=False)
    expires_at: datetime
    permissions: dict[str, str]
    repositories: tuple[str, ...]


@dataclass(frozen=True)
class _Reply:
    status: int
    headers: Message
    body: Any  # parsed JSON, or None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect would carry the Authorization header elsewhere: treat 3xx as the answer."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def make_jwt(app_id: str, private_key_pem: bytes, now: float) -> str:
    """The App's RS256 JWT; GitHub allows exp at most 10 minutes after iat."""
    import jwt

    claims = {"iat": int(now) - 60, "exp": int(now) + 540, "iss": str(app_id)}
    return jwt.encode(claims, _signing_key(private_key_pem), "RS256")


@functools.lru_cache(maxsize=4)
def _signing_key(private_key_pem: bytes) -> Any:
    """The parsed key, once: loading checks the RSA key and takes tens of milliseconds."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        return load_pem_private_key(private_key_pem, password=None)
    except (ValueError, TypeError):
        raise DevboxError("the GitHub App's private key is not a readable PEM key", ExitCode.CREDENTIALS) from None


def scrub(text: str, limit: int = 200) -> str:
    """Text safe for a message: secret-looking parts replaced, then cut to `limit` characters."""
    text = " ".join(_SECRET.sub("[redacted]", text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _message(reply: _Reply) -> str:
    body = reply.body
    text = body.get("message") if isinstance(body, dict) else None
    return scrub(text) if isinstance(text, str) and text else http.client.responses.get(reply.status, "error")


class GitHubApp:
    def __init__(
        self,
        config: AppConfig,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        timeout: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._clock = clock
        self._sleep = sleep
        self._timeout = timeout
        self._monotonic = monotonic
        self._base = config.api_url.rstrip("/") + "/"
        self._opener = urllib.request.build_opener(_NoRedirect)
        self.clock_offset = 0.0  # GitHub's clock minus ours, learnt from a 401 about iat/exp
        self._minted: dict[str, float] = {}  # token -> monotonic time of its mint, for replication lag

    def now(self) -> float:
        """The time by GitHub's clock, as far as we know it."""
        return self._clock() + self.clock_offset

    def installation_for(self, owner: str, repo: str) -> int:
        if self.config.installation_id is not None:
            return self.config.installation_id
        reply = self._request("GET", f"repos/{quote(owner, safe='')}/{quote(repo, safe='')}/installation")
        if reply.status == 404:
            raise DevboxError(
                f"the GitHub App is not installed for {owner} "
                f"(install it on the account or org that owns {owner}/{repo})",
                ExitCode.CREDENTIALS,
            )
        body = self._expect(reply, 200, f"looking up the App's installation for {owner}/{repo}")
        if not isinstance(body.get("id"), int):
            raise DevboxError(f"GitHub's installation for {owner}/{repo} has no id", ExitCode.CREDENTIALS)
        return body["id"]

    def create_token(self, installation_id: int, repos: Sequence[str], permissions: Mapping[str, str]) -> Token:
        """A token for exactly `repos` (names without owner) with at most `permissions`."""
        if not repos or not permissions:  # GitHub reads an empty list as "everything the installation has"
            raise DevboxError("a token must name its repositories and permissions", ExitCode.INVALID_INPUT)
        bad = [r for r in repos if "/" in r] + [f"{k}={v}" for k, v in permissions.items() if v not in LEVELS]
        if bad:
            raise DevboxError(f"not a repository name or permission level: {', '.join(bad)}", ExitCode.INVALID_INPUT)
        payload = {"repositories": list(repos), "permissions": dict(permissions)}
        reply = self._request("POST", f"app/installations/{installation_id}/access_tokens", payload)
        minted_at = self._monotonic()
        if reply.status == 422:
            raise DevboxError(
                f"GitHub App installation {installation_id} cannot grant a token for {', '.join(repos)} "
                f"(some of these repositories are not in the installation, or the permissions are not granted): "
                f"{_message(reply)}",
                ExitCode.CREDENTIALS,
            )
        body = self._expect(reply, 201, f"creating a token for installation {installation_id}")
        try:
            expires_at = datetime.fromisoformat(body["expires_at"])
            token = Token(
                token=str(body["token"]),
                expires_at=(expires_at if expires_at.tzinfo else expires_at.replace(tzinfo=UTC)).astimezone(UTC),
                permissions={str(k): str(v) for k, v in body["permissions"].items()},
                repositories=tuple(sorted(str(r["name"]) for r in body.get("repositories") or [])),
            )
        except (AttributeError, KeyError, TypeError, ValueError):
            raise DevboxError("GitHub's token response is malformed", ExitCode.CREDENTIALS) from None
        self._remember_mint(token.token, minted_at)
        broader = _broader(body.get("repository_selection"), token, repos, permissions)
        if broader:
            self._revoke_quietly(token.token)
            raise DevboxError(f"refused a GitHub token broader than requested: {broader}", ExitCode.CREDENTIALS)
        return token

    def revoke(self, token: str) -> None:
        reply = self._request("DELETE", "installation/token", token=token)
        if reply.status == 401 and self._just_minted(token):  # not known everywhere yet, not revoked already
            self._sleep(REPLICATION_WAIT)
            reply = self._request("DELETE", "installation/token", token=token)
        if reply.status not in (204, 401):  # 401: expired or revoked already
            self._expect(reply, 204, "revoking a token")
        self._minted.pop(token, None)

    def _remember_mint(self, token: str, when: float) -> None:
        self._minted = {t: m for t, m in self._minted.items() if when - m < REPLICATION_WINDOW}
        self._minted[token] = when

    def _just_minted(self, token: str) -> bool:
        minted = self._minted.get(token)
        return minted is not None and self._monotonic() - minted < REPLICATION_WINDOW

    def _revoke_quietly(self, token: str) -> None:
        try:
            self.revoke(token)
        except DevboxError as exc:
            log.warning("could not revoke a refused token: %s", exc)

    def _jwt(self) -> str:
        return make_jwt(self.config.app_id, self.config.private_key_pem, self.now())

    def _expect(self, reply: _Reply, status: int, doing: str) -> dict[str, Any]:
        if reply.status != status:
            hint = self._hint_401(reply) if reply.status == 401 else ""
            raise DevboxError(
                f"GitHub answered {reply.status} while {doing}: {_message(reply)}{hint}", ExitCode.CREDENTIALS
            )
        if not isinstance(reply.body, dict):
            raise DevboxError(f"GitHub's answer while {doing} is not a JSON object", ExitCode.CREDENTIALS)
        return reply.body

    def _request(self, method: str, path: str, payload: Any = None, token: str | None = None) -> _Reply:
        """One API call under the retry policy; the first answer not worth retrying. Signed by JWT unless `token`."""
        retries, clock_fixed = 0, False
        while True:
            authorization = "Bearer " + self._jwt() if token is None else f"token {token}"
            reply = self._send(method, path, authorization, payload)
            if token is None and not clock_fixed and self._fix_clock(reply):
                clock_fixed = True  # one more try, with GitHub's time; not counted as a retry
                continue
            fault = self._fault(reply, retries)
            if fault is None and not isinstance(reply, str):  # a transport failure (str) is always a fault
                return reply
            problem, wait = fault or (str(reply), 0.0)
            if retries == len(BACKOFF):
                raise DevboxError(
                    f"GitHub API {method} {path} failed after {retries + 1} attempts: {problem}", ExitCode.CREDENTIALS
                )
            log.info("%s %s: %s; retrying in %.1f s", method, path, problem, wait)
            self._sleep(wait)
            retries += 1

    def _fault(self, reply: _Reply | str, retries: int) -> tuple[str, float] | None:
        """(what went wrong, seconds to wait) for an answer worth retrying, None for a final one."""
        backoff = BACKOFF[min(retries, len(BACKOFF) - 1)]
        if isinstance(reply, str):
            return reply, backoff
        if reply.status >= 500:
            return f"GitHub answered {reply.status}: {_message(reply)}", backoff
        if reply.status not in (403, 429):
            return None
        wait = self._rate_limit_wait(reply)
        if wait is None:
            return (f"GitHub answered 429: {_message(reply)}", backoff) if reply.status == 429 else None
        problem = f"rate limited by GitHub ({reply.status}: {_message(reply)})"
        if wait > MAX_WAIT:
            raise DevboxError(
                f"{problem}; it resets in {wait:.0f} s, longer than the broker waits ({MAX_WAIT:.0f} s)",
                ExitCode.CREDENTIALS,
            )
        return problem, wait

    def _send(self, method: str, path: str, authorization: str, payload: Any) -> _Reply | str:
        """One HTTP exchange: the reply, or what went wrong with the connection."""
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(self._base + path, data=data, method=method)
        request.add_header("Accept", "application/vnd.github+json")
        request.add_header("X-GitHub-Api-Version", API_VERSION)
        request.add_header("User-Agent", "devbox-broker")
        request.add_header("Authorization", authorization)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                status, headers, raw = response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            with error:
                status, headers, raw = error.code, error.headers, error.read()
        except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
            reason = getattr(error, "reason", None) or error
            return f"cannot reach GitHub at {self.config.api_url}: {scrub(str(reason))}"
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        return _Reply(status, headers, body)

    def _fix_clock(self, reply: _Reply | str) -> bool:
        """After GitHub refused the JWT's iat/exp: take its clock from the Date header."""
        if isinstance(reply, str) or reply.status != 401:
            return False
        server = _server_time(reply)
        if server is None or not _CLOCK_COMPLAINT.search(_message(reply)):
            return False
        self.clock_offset = server - self._clock()
        log.warning("our clock is %+.0f s off GitHub's; signing with GitHub's time", -self.clock_offset)
        return True

    def _hint_401(self, reply: _Reply) -> str:
        """A refused JWT is a clock problem when GitHub says so or its Date is far from ours, else a key problem."""
        server = _server_time(reply)
        skew = None if server is None else server - self._clock()
        if _CLOCK_COMPLAINT.search(_message(reply)) or (skew is not None and abs(skew) > SKEW_TOLERANCE):
            side = "behind" if skew is not None and skew > 0 else "ahead of"
            off = "" if skew is None else f" (this host's clock is {abs(skew):.0f} s {side} GitHub's Date header)"
            return f"; a clock problem, not a key problem{off}: set this host's time right (NTP, timedatectl)"
        return " (check the App id and its private key)"

    def _rate_limit_wait(self, reply: _Reply) -> float | None:
        """Seconds GitHub asks us to wait before retrying a 403/429, None when it does not say."""
        headers = reply.headers
        retry_after = headers.get("retry-after", "").strip()
        if retry_after.isdigit():
            return float(retry_after)
        reset = headers.get("x-ratelimit-reset", "").strip()
        # Every GitHub answer carries x-ratelimit-reset: it means a limit only when nothing remains.
        if reset.isdigit() and (headers.get("x-ratelimit-remaining") == "0" or reply.status == 429):
            return max(0.0, float(reset) - (_server_time(reply) or self.now()))
        return None


def _server_time(reply: _Reply) -> float | None:
    try:
        return email.utils.parsedate_to_datetime(reply.headers.get("Date", "")).timestamp()
    except (TypeError, ValueError):
        return None


def _broader(selection: object, token: Token, repos: Sequence[str], permissions: Mapping[str, str]) -> str:
    """What in a token response goes beyond the request ("" when nothing does)."""
    problems = []
    if selection != "selected":
        problems.append(f"repository_selection is {str(selection)!r}, not 'selected'")
    got, asked = {r.lower() for r in token.repositories}, {r.lower() for r in repos}
    if got != asked:
        extra, missing = sorted(got - asked), sorted(asked - got)
        problems.append(f"repositories differ (extra: {', '.join(extra) or '-'}; missing: {', '.join(missing) or '-'})")
    for name, level in sorted(token.permissions.items()):
        allowed = permissions.get(name) or IMPLICIT.get(name)
        if allowed is None or LEVELS.get(level, 99) > LEVELS[allowed]:
            problems.append(f"permission {name}={level} was not requested")
    return scrub("; ".join(problems), 400)  # the names come from the response: keep them safe and short
