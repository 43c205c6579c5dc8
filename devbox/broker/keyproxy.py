"""The model API key proxy: one drone's plain-HTTP requests in, the key's header set, TLS to the upstream out.

Socket-activated like the broker (drone-NAME-keys.socket, Accept=no), it exits when idle. A request
for `/NAME/rest` goes to key NAME's upstream as `BASE/rest`, with the key in its header; only the
keys written into the drone's unit are served (403 for any other). Whatever key-like header the
drone sends is dropped. Responses stream back as they arrive (server-sent events chunk by chunk):
a chunked body is relayed piece by piece, never gathered. One request per connection
(`Connection: close` both ways), so a request can never ride on another one's key.

Each request and refusal is one audit event in the journal: upstream, method, path (no query),
status, bytes and duration; never a header, a body or the key.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from devbox.host import journal

MAX_HEAD = 64 * 1024
CHUNK = 1024 * 1024  # at most this much is read before it is passed on (a read returns what is there)
LINGER = 1.0  # seconds a closing connection still reads what the client sends
# Never passed on: hop-by-hop headers, the proxy's own framing, and every header that carries a key.
_DROPPED = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "proxy-authenticate",
        "te",
        "trailer",
        "upgrade",
        "host",
        "expect",
        "authorization",
        "x-api-key",
        "api-key",
        "x-goog-api-key",
    }
)
_DROPPED_BACK = frozenset({"connection", "keep-alive", "proxy-connection", "upgrade"})
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    408: "Request Timeout",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


@dataclass(frozen=True)
class Upstream:
    """Where key NAME's requests go, and the header that carries the key."""

    name: str
    url: str  # https://host[:port][/base]
    header: str  # lower case
    value: str = field(repr=False)  # prefix + key: never logged, never in an error
    ca_file: str | None = None

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 443

    @property
    def base_path(self) -> str:
        return urlsplit(self.url).path.rstrip("/")

    @property
    def authority(self) -> str:
        return self.host if self.port == 443 else f"{self.host}:{self.port}"

    def tls(self) -> ssl.SSLContext:
        """The system's CAs, and the configured extra bundle (the host's config: never the drone's)."""
        context = ssl.create_default_context()
        if self.ca_file:
            context.load_verify_locations(cafile=self.ca_file)
        return context


@dataclass(frozen=True)
class Limits:
    head_timeout: float = 10.0  # seconds for the request's head to arrive
    read_timeout: float = 300.0  # seconds without a byte from either side before giving up
    connect_timeout: float = 15.0
    max_connections: int = 64


class Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


@dataclass
class Request:
    method: str
    key: str
    rest: str  # the path after /NAME, with its query
    headers: list[tuple[str, str]]
    length: int | None  # Content-Length, or None
    chunked: bool

    @property
    def path(self) -> str:
        """For the audit: the path without its query (which may carry anything)."""
        return self.rest.split("?", 1)[0][:200] or "/"


Recorder = Callable[..., None]


def _reply(status: int, text: str) -> bytes:
    body = text.encode()
    return (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


def parse_head(data: bytes) -> tuple[str, str, list[tuple[str, str]]]:
    """(method, target, headers) of a request head; Refused(400) for anything malformed."""
    try:
        text = data.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        raise Refused(400, "malformed request") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[2] not in ("HTTP/1.1", "HTTP/1.0") or not parts[1].startswith("/"):
        raise Refused(400, "malformed request line")
    if not parts[0] or not set(parts[0]) <= _TOKEN:
        raise Refused(400, "malformed method")
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or not set(name) <= _TOKEN:  # also refuses obsolete line folding
            raise Refused(400, "malformed header")
        if any(c in value for c in "\r\n\0"):
            raise Refused(400, "malformed header")
        headers.append((name, value.strip(" \t")))
    return parts[0], parts[1], headers


def _framing(headers: list[tuple[str, str]]) -> tuple[int | None, bool]:
    """(Content-Length, chunked); one framing only, or the request could hide another (smuggling)."""
    lengths = {v for k, v in headers if k.lower() == "content-length"}
    encodings = [v.lower() for k, v in headers if k.lower() == "transfer-encoding"]
    if encodings and lengths:
        raise Refused(400, "both Content-Length and Transfer-Encoding")
    if encodings:
        if encodings != ["chunked"]:
            raise Refused(400, "only Transfer-Encoding: chunked is supported")
        return None, True
    if len(lengths) > 1 or (lengths and not next(iter(lengths)).isdigit()):
        raise Refused(400, "bad Content-Length")
    return (int(next(iter(lengths))) if lengths else None), False


def build_request(head: bytes) -> Request:
    method, target, headers = parse_head(head)
    name, _, rest = target[1:].partition("/")
    name, _, query = name.partition("?")
    rest = "/" + rest + (f"?{query}" if query else "")
    length, chunked = _framing(headers)
    return Request(method, name, rest, headers, length, chunked)


def upstream_head(request: Request, upstream: Upstream) -> bytes:
    """The head sent upstream: the drone's headers but the dropped ones, and the key's own header."""
    named = {v.strip().lower() for k, v in request.headers if k.lower() == "connection" for v in v.split(",")}
    kept = [
        (k, v)
        for k, v in request.headers
        if k.lower() not in _DROPPED and k.lower() != upstream.header and k.lower() not in named
    ]
    lines = [f"{request.method} {upstream.base_path}{request.rest} HTTP/1.1", f"Host: {upstream.authority}"]
    lines += [f"{k}: {v}" for k, v in kept]
    lines += [f"{upstream.header}: {upstream.value}", "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def response_head(head: bytes) -> tuple[int, bytes, int | None, bool]:
    """(status, the head to send the drone, Content-Length, chunked) of an upstream response head."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise Refused(502, "the upstream sent a malformed answer")
    headers = [line.partition(":") for line in lines[1:] if line]
    kept = [(k, v.strip()) for k, _, v in headers if k.strip().lower() not in _DROPPED_BACK]
    length, chunked = None, False
    with contextlib.suppress(Refused):
        length, chunked = _framing(kept)
    out = [lines[0], *(f"{k}: {v}" for k, v in kept), "Connection: close"]
    return int(parts[1]), ("\r\n".join(out) + "\r\n\r\n").encode("latin-1"), length, chunked


class KeyProxy:
    """One drone's proxy: its name, the upstreams of its own keys, where audit events go."""

    def __init__(
        self,
        drone: str,
        upstreams: dict[str, Upstream],
        *,
        limits: Limits | None = None,
        record: Recorder = journal.record,
        touch: Callable[[], None] = lambda: None,
        missing: frozenset[str] = frozenset(),  # the drone's keys whose secret is not there
    ) -> None:
        self.drone, self.upstreams, self.limits = drone, upstreams, limits or Limits()
        self.record, self.touch, self.missing = record, touch, missing
        self.open = 0
        self._tls = {name: up.tls() for name, up in upstreams.items()}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        try:
            if self.open > self.limits.max_connections:
                writer.write(_reply(503, "the key proxy is busy; try again\n"))
                return
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError, OSError):
            pass
        finally:
            self.open -= 1
            with contextlib.suppress(Exception):
                await writer.drain()
                await self._linger(reader, writer)
            writer.close()

    async def _linger(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """End our side, then read what the client still sends (a refused request's body) for a
        moment: closing on unread input would reset the connection before the client reads the answer."""
        if writer.can_write_eof():
            writer.write_eof()
        deadline = time.monotonic() + LINGER
        while (left := deadline - time.monotonic()) > 0:
            if not await asyncio.wait_for(reader.read(CHUNK), left):
                return

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.limits.head_timeout)
        except asyncio.LimitOverrunError:
            writer.write(_reply(400, "request head too large\n"))
            return
        except TimeoutError:
            writer.write(_reply(408, "request timed out\n"))
            return
        try:
            request = build_request(head)
        except Refused as exc:
            writer.write(_reply(exc.status, exc.reason + "\n"))
            return
        upstream = self.upstreams.get(request.key)
        if upstream is None:
            self._refuse(request, "missing" if request.key in self.missing else "not-given")
            reason = "is not available (see the key proxy's journal)" if request.key in self.missing else "not given"
            writer.write(_reply(403, f"drone {self.drone}: key {request.key!r} {reason}\n"))
            return
        self.touch()
        await self._forward(request, upstream, reader, writer)

    def _audit(self, event: str, request: Request, message: str, **fields: object) -> None:
        """One audit event: what was asked and what came of it, never a header, a body or the key."""
        self.record(event, self.drone, message, method=request.method, path=request.path, **fields)

    def _refuse(self, request: Request, reason: str) -> None:
        message = f"refused {request.method} /{request.key}{request.path}: key {request.key} {reason}"
        warning = journal.PRIORITY_WARNING
        self._audit(
            journal.API_REFUSED, request, message, priority=warning, upstream=request.key, status=403, reason=reason
        )

    async def _forward(
        self, request: Request, upstream: Upstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        started = time.monotonic()
        status, sent = 502, 0
        try:
            if any(k.lower() == "expect" and v.lower() == "100-continue" for k, v in request.headers):
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            try:
                up_reader, up_writer = await asyncio.wait_for(
                    asyncio.open_connection(
                        upstream.host,
                        upstream.port,
                        ssl=self._tls[upstream.name],
                        server_hostname=upstream.host,
                        limit=CHUNK,
                    ),
                    self.limits.connect_timeout,
                )
            except (OSError, TimeoutError, ssl.SSLError) as exc:
                why = "unreachable"
                if isinstance(exc, ssl.SSLCertVerificationError):
                    why = f"certificate not trusted ({exc.verify_message})"
                writer.write(_reply(502, f"upstream {upstream.authority}: {why}\n"))
                return
            try:
                up_writer.write(upstream_head(request, upstream))
                await self._copy_body(reader, up_writer, request.length, request.chunked, Counter())
                status, sent = await self._relay_response(request, up_reader, writer)
            finally:
                up_writer.close()
        except Refused as exc:
            status = exc.status
            writer.write(_reply(exc.status, exc.reason + "\n"))
        finally:
            duration = round((time.monotonic() - started) * 1000)
            message = f"{request.method} {upstream.authority}{request.path} -> {status} ({sent} bytes, {duration} ms)"
            self._audit(
                journal.API_REQUEST,
                request,
                message,
                upstream=upstream.name,
                host=upstream.authority,
                status=status,
                bytes=sent,
                duration_ms=duration,
            )

    async def _relay_response(
        self, request: Request, up_reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[int, int]:
        while True:
            try:
                head = await asyncio.wait_for(up_reader.readuntil(b"\r\n\r\n"), self.limits.read_timeout)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                raise Refused(502, "the upstream sent no answer") from None
            status, out, length, chunked = response_head(head)
            writer.write(out)
            await writer.drain()
            if not 100 <= status < 200:
                break
        if request.method == "HEAD" or status in (204, 304):
            return status, 0
        sent = Counter()
        # Once the head is out, a broken body can only be cut short: the drone sees the connection end.
        with contextlib.suppress(Refused, asyncio.IncompleteReadError, TimeoutError):
            await self._copy_body(up_reader, writer, length, chunked, sent, until_eof=True)
        return status, sent.bytes

    async def _read(self, reader: asyncio.StreamReader, size: int) -> bytes:
        return await asyncio.wait_for(reader.read(size), self.limits.read_timeout)

    async def _line(self, reader: asyncio.StreamReader) -> bytes:
        return await asyncio.wait_for(reader.readuntil(b"\r\n"), self.limits.read_timeout)

    async def _copy_body(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        length: int | None,
        chunked: bool,
        sent: Counter,
        until_eof: bool = False,
    ) -> None:
        """Relay one body as it arrives, framing and all, counting the bytes that went through."""
        if chunked:
            await self._copy_chunked(reader, writer, sent)
        elif length is not None or until_eof:
            await self._copy_exact(reader, writer, length, sent)

    async def _copy_exact(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, left: int | None, sent: Counter
    ) -> None:
        """LEFT bytes, or everything up to the end of the stream when LEFT is None."""
        while left is None or left > 0:
            data = await self._read(reader, CHUNK if left is None else min(CHUNK, left))
            if not data:
                if left is None:
                    return
                raise asyncio.IncompleteReadError(b"", left)
            writer.write(data)
            await writer.drain()  # each piece leaves before the next is read: nothing is gathered
            sent.bytes += len(data)
            if left is not None:
                left -= len(data)

    async def _copy_chunked(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, sent: Counter) -> None:
        while True:
            line = await self._line(reader)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise Refused(400, "malformed chunked body") from None
            writer.write(line)
            sent.bytes += len(line)
            if size == 0:
                while True:  # trailers, then the empty line
                    trailer = await self._line(reader)
                    writer.write(trailer)
                    sent.bytes += len(trailer)
                    if trailer == b"\r\n":
                        await writer.drain()
                        return
            await self._copy_exact(reader, writer, size + 2, sent)  # the data and its CRLF


@dataclass
class Counter:
    bytes: int = 0


async def serve(proxy: KeyProxy, listener: socket.socket, idle_exit: float) -> None:
    """Answer until no connection has been open for `idle_exit` seconds; the socket's path stays
    (systemd keeps listening and starts the proxy again on the next request)."""
    server = await asyncio.start_server(proxy.handle, sock=listener, limit=MAX_HEAD)
    idle_since = time.monotonic()
    async with server:
        while True:
            await asyncio.sleep(min(1.0, idle_exit / 4))
            now = time.monotonic()
            if proxy.open:
                idle_since = now
            elif now - idle_since >= idle_exit:
                return


def load_upstreams(
    keys: dict[str, tuple[str, str, str, str | None]], credentials: Path | None
) -> tuple[dict[str, Upstream], frozenset[str]]:
    """Key NAME -> (upstream URL, header, prefix, ca_file), with each key from systemd's credential
    `key-NAME`; the names whose credential is missing come back apart (their requests get 403)."""
    upstreams, missing = {}, set()
    for name, (url, header, prefix, ca_file) in keys.items():
        try:
            secret = (credentials / f"key-{name}").read_text().strip() if credentials else ""
        except OSError:
            secret = ""
        if not secret:
            missing.add(name)
            continue
        upstreams[name] = Upstream(name, url, header, prefix + secret, ca_file)
    return upstreams, frozenset(missing)


def proxy_for(name: str, env: dict[str, str] | None = None) -> tuple[KeyProxy, float]:
    """Drone NAME's proxy as systemd starts it: the keys from its unit file, their upstreams from the
    config, each secret from the credential `key-NAME` (LoadCredential=)."""
    import os

    from devbox.broker.setup import MIN_IDLE_EXIT
    from devbox.config import load_config
    from devbox.paths import Paths
    from devbox.units.installed import require_drone

    env = dict(os.environ) if env is None else env
    paths = Paths.from_env(env)
    config = load_config(paths.config_file)
    record = require_drone(paths, name)
    wanted = {
        key: (c.upstream, c.header, c.prefix, c.ca_file)
        for key in record.declared.keys
        if (c := config.keys.get(key)) is not None
    }
    directory = env.get("CREDENTIALS_DIRECTORY")
    upstreams, missing = load_upstreams(wanted, Path(directory) if directory else None)
    missing |= frozenset(record.declared.keys) - frozenset(wanted)
    for key in sorted(missing):
        journal.record(
            journal.API_REFUSED,
            name,
            f"key {key} has no configured secret or upstream on this host: its requests get 403",
            priority=journal.PRIORITY_WARNING,
            upstream=key,
            reason="missing",
        )
    activity = paths.activity_file(name)

    def touch() -> None:  # an agent calling its model is the drone at work, for the idle clean-up
        with contextlib.suppress(OSError):
            activity.parent.mkdir(parents=True, exist_ok=True)
            activity.touch()

    return KeyProxy(name, upstreams, touch=touch, missing=missing), max(config.broker.idle_exit, MIN_IDLE_EXIT)


def serve_from_systemd(name: str) -> None:
    from devbox.broker.server import listening_socket

    listener = listening_socket()
    proxy, idle_exit = proxy_for(name)
    asyncio.run(serve(proxy, listener, idle_exit))
