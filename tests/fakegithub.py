"""A fake GitHub API on loopback that speaks the GitHub App protocol.

It verifies the App's RS256 JWT with the App's public key against its own (skewable)
clock, knows installations, mints `ghs_` tokens scoped to the requested repositories and
permissions, revokes them, and records every request. Canned answers (faults) and
tampered token responses can be queued for the next requests.

    with FakeGitHub(installations={"acme": (7, {"api"}, {"contents": "write"})}) as gh:
        app = GitHubApp(AppConfig(gh.app_id, rsa_keypair()[0], gh.url))
"""

from __future__ import annotations

import email.utils
import functools
import json
import re
import secrets
import string
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LEVELS = {"read": 1, "write": 2, "admin": 3}
DOCS = "https://docs.github.com/rest"
MSG_IAT = "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued"
MSG_EXP_PAST = "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires"
MSG_EXP_FAR = "'Expiration time' claim ('exp') is too far in the future"
MSG_BAD_JWT = "A JSON web token could not be decoded"
MSG_NOT_ACCESSIBLE = (
    "There is at least one repository that does not exist or is not accessible to the parent installation."
)
MSG_PERMISSIONS = "The permissions requested are not granted to this installation."

Answer = tuple[int, dict[str, str], Any]  # status, headers, body (dict -> JSON, str -> text, None -> empty)


@functools.cache
def rsa_keypair(label: str = "app") -> tuple[bytes, bytes]:
    """(private PEM, public PEM): one 2048-bit key per label, made once per test session."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


def http_date(when: float) -> str:
    return email.utils.formatdate(when, usegmt=True)


@dataclass(frozen=True)
class Installation:
    id: int
    repos: frozenset[str]
    permissions: dict[str, str]


@dataclass
class Minted:
    owner: str
    repos: frozenset[str]
    permissions: dict[str, str]
    expires_at: float
    revoked: bool = False


@dataclass(frozen=True)
class Canned:
    """An answer for the next request, whatever it is. `drop` closes the connection without
    answering; `hang` holds the request (until the server stops) so the client times out."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    hang: bool = False


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    body: Any
    headers: dict[str, str]  # lower-cased names, without Authorization
    auth: str  # the Authorization scheme only: "Bearer", "token" or ""
    claims: dict[str, Any] | None  # the JWT's claims (unverified) when it sent one
    status: int  # what the fake answered (0: dropped or hung)


def _error(status: int, message: str) -> Answer:
    return status, {}, {"message": message, "documentation_url": DOCS, "status": str(status)}


class FakeGitHub:
    def __init__(
        self,
        app_id: str = "12345",
        public_key: bytes | None = None,
        installations: Mapping[str, tuple[int, Iterable[str], Mapping[str, str]]] | None = None,
        prefix: str = "",
    ) -> None:
        self.app_id = app_id
        self.public_key = public_key or rsa_keypair()[1]
        self.installations = {
            owner: Installation(iid, frozenset(repos), dict(perms))
            for owner, (iid, repos, perms) in (installations or {}).items()
        }
        self.prefix = prefix.rstrip("/")
        self.offset = 0.0  # seconds added to the real time: the fake's clock skew
        self.minted: dict[str, Minted] = {}
        self.requests: list[Recorded] = []
        self._canned: deque[Canned] = deque()
        self._tampers: deque[Callable[[dict[str, Any]], None]] = deque()
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- test controls ---------------------------------------------------------------

    def now(self) -> float:
        return time.time() + self.offset

    @property
    def url(self) -> str:
        assert self._server is not None, "start the fake first (use it as a context manager)"
        return f"http://127.0.0.1:{self._server.server_address[1]}{self.prefix}"

    def queue(self, status: int = 200, body: Any = None, headers: Mapping[str, str] | None = None, **kw: Any) -> None:
        """Answer the next request (after those already queued) with this, whatever it asks."""
        with self._lock:
            self._canned.append(Canned(status, body, dict(headers or {}), **kw))

    def tamper(self, change: Callable[[dict[str, Any]], None]) -> None:
        """Let `change` edit the body of the next token response (to make it broader than asked)."""
        with self._lock:
            self._tampers.append(change)

    def token_allows(self, token: str, full_name: str, permission: str | None = None, level: str = "read") -> bool:
        """Would GitHub let `token` at `owner/repo` (with `permission` at `level`) now?"""
        owner, _, repo = full_name.partition("/")
        with self._lock:
            minted = self.minted.get(token)
        if minted is None or minted.revoked or minted.expires_at <= self.now():
            return False
        if minted.owner != owner or repo not in minted.repos:
            return False
        return permission is None or LEVELS.get(minted.permissions.get(permission, ""), 0) >= LEVELS[level]

    def __enter__(self) -> FakeGitHub:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.fake = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    # -- the protocol ----------------------------------------------------------------

    def answer(self, method: str, path: str, headers: Mapping[str, str], raw: bytes) -> Canned | Answer:
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        auth = headers.get("Authorization", "")
        with self._lock:
            canned = self._canned.popleft() if self._canned else None
        if canned is not None:
            answer: Canned | Answer = canned
        else:
            answer = self._route(method, path, auth, headers, body)
        status = 0 if isinstance(answer, Canned) and (answer.drop or answer.hang) else _status(answer)
        recorded = Recorded(
            method,
            path,
            body,
            {k.lower(): v for k, v in headers.items() if k.lower() != "authorization"},
            auth.split(" ", 1)[0],
            _claims(auth),
            status,
        )
        with self._lock:
            self.requests.append(recorded)
        return answer

    def _route(self, method: str, path: str, auth: str, headers: Mapping[str, str], body: Any) -> Answer:
        if headers.get("X-GitHub-Api-Version", "2022-11-28") != "2022-11-28":
            return _error(400, "Invalid API version")
        if not path.startswith(self.prefix + "/"):
            return _error(404, "Not Found")
        route = path[len(self.prefix) :]
        if method == "GET" and (match := re.fullmatch(r"/repos/([^/]+)/([^/]+)/installation", route)):
            return self._check_jwt(auth) or self._installation(match[1], match[2])
        if method == "POST" and (match := re.fullmatch(r"/app/installations/(\d+)/access_tokens", route)):
            return self._check_jwt(auth) or self._create_token(int(match[1]), body)
        if method == "DELETE" and route == "/installation/token":
            return self._revoke(auth)
        return _error(404, "Not Found")

    def _check_jwt(self, auth: str) -> Answer | None:
        """None when the Bearer JWT is the App's and valid by this fake's clock, else GitHub's 401."""
        import jwt

        scheme, _, value = auth.partition(" ")
        if scheme != "Bearer":
            return _error(401, MSG_BAD_JWT)
        try:
            claims = jwt.decode(
                value,
                self.public_key,
                algorithms=["RS256"],
                options={
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                    "require": ["iat", "exp", "iss"],
                },
            )
        except jwt.PyJWTError:
            return _error(401, MSG_BAD_JWT)
        now, iat, exp = self.now(), claims["iat"], claims["exp"]
        if not isinstance(iat, int) or iat > now + 60:
            return _error(401, MSG_IAT)
        if not isinstance(exp, int) or exp <= now:
            return _error(401, MSG_EXP_PAST)
        if exp - iat > 600 or exp > now + 600:
            return _error(401, MSG_EXP_FAR)
        if str(claims["iss"]) != str(self.app_id):
            return _error(401, "Integration not found")
        return None

    def _installation(self, owner: str, repo: str) -> Answer:
        found = self.installations.get(owner)
        if found is None or repo not in found.repos:
            return _error(404, "Not Found")
        return (
            200,
            {},
            {
                "id": found.id,
                "account": {"login": owner, "type": "Organization"},
                "app_id": int(self.app_id) if self.app_id.isdigit() else self.app_id,
                "repository_selection": "selected",
                "permissions": {"metadata": "read", **found.permissions},
            },
        )

    def _create_token(self, installation_id: int, body: Any) -> Answer:
        owner, found = next(((o, i) for o, i in self.installations.items() if i.id == installation_id), ("", None))
        if found is None:
            return _error(404, "Not Found")
        if body is not None and not isinstance(body, dict):
            return _error(400, "Problems parsing JSON")
        body = body or {}
        repos = body.get("repositories")
        selection = "all" if repos is None else "selected"
        repos = sorted(found.repos) if repos is None else repos
        if not set(repos) <= found.repos:
            return _error(422, MSG_NOT_ACCESSIBLE)
        asked = body.get("permissions") or found.permissions
        for name, level in asked.items():
            if LEVELS.get(level, 99) > LEVELS.get(found.permissions.get(name, ""), 0):
                return _error(422, MSG_PERMISSIONS)
        token = "ghs_" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(36))
        expires_at = int(self.now()) + 3600
        granted = {"metadata": "read", **asked}  # GitHub always adds metadata: read
        with self._lock:
            self.minted[token] = Minted(owner, frozenset(repos), granted, expires_at)
            tamper = self._tampers.popleft() if self._tampers else None
        answer = {
            "token": token,
            "expires_at": datetime.fromtimestamp(expires_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "permissions": dict(granted),
            "repository_selection": selection,
            "repositories": [
                {"id": 1000 + n, "name": r, "full_name": f"{owner}/{r}", "private": True} for n, r in enumerate(repos)
            ],
        }
        if tamper is not None:
            tamper(answer)
        return 201, {}, answer

    def _revoke(self, auth: str) -> Answer:
        scheme, _, token = auth.partition(" ")
        if scheme not in ("token", "Bearer") or not token:
            return _error(401, "Requires authentication")
        with self._lock:
            minted = self.minted.get(token)
            if minted is None or minted.revoked or minted.expires_at <= self.now():
                return _error(401, "Bad credentials")
            minted.revoked = True
        return 204, {}, None


def _status(answer: Canned | Answer) -> int:
    return answer.status if isinstance(answer, Canned) else answer[0]


def _claims(auth: str) -> dict[str, Any] | None:
    import jwt

    scheme, _, value = auth.partition(" ")
    if scheme != "Bearer":
        return None
    try:
        return jwt.decode(value, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ThreadingHTTPServer

    def _serve(self) -> None:
        fake: FakeGitHub = self.server.fake  # type: ignore[attr-defined]
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        answer = fake.answer(self.command, self.path, self.headers, raw)
        if isinstance(answer, Canned):
            if answer.hang:
                fake._release.wait(timeout=30)
            if answer.drop or answer.hang:
                self.close_connection = True
                return
            answer = (answer.status, answer.headers, answer.body)
        status, extra, body = answer
        data = b"" if body is None else body.encode() if isinstance(body, str) else json.dumps(body).encode()
        headers = {"Date": http_date(fake.now()), "Content-Type": "application/json; charset=utf-8"}
        headers = {k: v for k, v in headers.items() if k.lower() not in {e.lower() for e in extra}} | extra
        self.send_response_only(status)
        for name, value in {**headers, "Content-Length": str(len(data)), "Connection": "close"}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.close_connection = True

    do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = _serve

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass
