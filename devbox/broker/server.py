"""A small HTTP/1.1 server on the socket systemd hands over (socket activation, Accept=no).

It exits after an idle period without closing the listening socket's path: systemd
keeps listening and starts the broker again on the next request, so nothing runs
while a drone is idle. Idle means no connection open and none for that period, so a
request in flight (a slow mint) is never cut.

A drone must not be able to starve or crash its broker: one thread reads every
connection without blocking, each request has a whole-request deadline, at most
`Limits.max_connections` are open at once (past that, the oldest still being read, or
the newcomer, is answered 503 at once), and a small fixed pool of threads answers
complete requests. An accept() error from exhausted resources pauses accepting briefly
instead of ending the broker.

Endpoints: GET /healthz; GET /token[?repo=OWNER/NAME] (the token alone);
GET /git-credential?host=H&path=OWNER/NAME.git (git credential helper lines);
DELETE /token (revoke what the drone holds; devbox destroy).
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import selectors
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from devbox.broker.service import DroneBroker, NotAllowed
from devbox.errors import DevboxError, ExitCode

log = logging.getLogger(__name__)

SD_LISTEN_FDS_START = 3
MAX_REQUEST = 4096
DEFAULT_IDLE_EXIT = 60.0
# accept() errors that mean "out of resources for now", not "the listener is gone".
_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# accept() errors about the one connection being accepted; the next one may be fine.
_TRANSIENT = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EINTR, errno.EPERM})


@dataclass(frozen=True)
class Limits:
    request_timeout: float = 5.0  # seconds from accept to the end of the request's headers
    send_timeout: float = 5.0  # seconds for the answer to leave
    max_connections: int = 256  # open at once, being read or answered
    workers: int = 8  # threads answering complete requests
    accept_batch: int = 16  # connections accepted per turn of the loop, so reads keep up
    accept_backoff: float = 0.1  # seconds without accepting after EMFILE and the like


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


@dataclass(frozen=True)
class Response:
    status: int
    body: str

    def encode(self) -> bytes:
        body = self.body.encode()
        head = (
            f"HTTP/1.1 {self.status} {_REASONS.get(self.status, 'Error')}\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        return head.encode() + body


def listening_socket(env: dict[str, str] | None = None) -> socket.socket:
    """The socket systemd passed (fd 3). Refuse to run without one."""
    env = dict(os.environ) if env is None else env
    if env.get("LISTEN_PID") != str(os.getpid()) or env.get("LISTEN_FDS", "0") == "0":
        raise DevboxError(
            "the broker runs only under its socket unit (no LISTEN_FDS from systemd): "
            "systemctl --user start drone-NAME-creds.socket",
            ExitCode.ENVIRONMENT,
        )
    for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(key, None)
    return socket.socket(fileno=SD_LISTEN_FDS_START)


Handler = Callable[[str, str], Response]


def make_handler(broker: DroneBroker) -> Handler:
    """The broker's routes. The query may narrow a request to one of the drone's repos, never widen it."""

    def handle_request(method: str, target: str) -> Response:
        parsed = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        if parsed.path == "/healthz" and method == "GET":
            return Response(200, "ok\n")
        if parsed.path not in ("/token", "/git-credential"):
            return Response(404, "not found\n")
        if method == "DELETE" and parsed.path == "/token":
            revoked, left = broker.revoke_all()
            if left:
                return Response(502, f"revoked {revoked}; {left} could not be revoked yet and will be retried\n")
            return Response(200, f"revoked {revoked}\n")
        if method != "GET":
            return Response(405, "only GET\n")
        broker.touch()
        try:
            if parsed.path == "/token":
                return Response(200, broker.token(query.get("repo")).token + "\n")
            return Response(200, broker.git_credential(query.get("host", broker.host), query.get("path", "")))
        except NotAllowed as exc:
            return Response(403, f"{exc}\n")
        except DevboxError as exc:
            status = 503 if "no GitHub App is configured" in exc.message else 502
            return Response(status, f"{exc.message}\n")

    return handle_request


def parse_request(data: bytes) -> tuple[str, str] | Response:
    """(method, path) of one request's bytes, or the error response to send."""
    line = data.split(b"\r\n", 1)[0].decode("ascii", "replace")
    parts = line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[1].startswith("/"):
        return Response(400, "malformed request\n")
    return parts[0], parts[1]


def answer(handler: Handler, request: tuple[str, str] | Response) -> Response:
    if isinstance(request, Response):
        return request
    try:
        return handler(*request)
    except Exception:  # a bug must not kill the broker, nor show anything secret
        return Response(500, "internal error in the broker; see journalctl --user -u the broker unit\n")


@dataclass
class _Reading:
    conn: socket.socket
    deadline: float
    data: bytes = b""


@dataclass
class _Counts:
    """Connections handed to the workers and not yet closed, shared with them."""

    busy: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class _ListenerGone(Exception):
    """The listening socket was closed or broke: stop serving (systemd starts us again)."""


class _Server:
    def __init__(self, handler: Handler, listener: socket.socket, idle_exit: float, limits: Limits) -> None:
        self.handler, self.listener, self.idle_exit, self.limits = handler, listener, idle_exit, limits
        self.selector = selectors.DefaultSelector()
        self.reading: OrderedDict[int, _Reading] = OrderedDict()  # in accept order, which is deadline order
        self.counts = _Counts()
        self.jobs: queue.Queue[tuple[socket.socket, tuple[str, str] | Response] | None] = queue.Queue()
        self.workers: list[threading.Thread] = []
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        self.paused_until = 0.0
        self.idle_since: float | None = time.monotonic()

    # -- the loop ----------------------------------------------------------------------

    def run(self) -> None:
        self.listener.setblocking(False)
        self.selector.register(self.wake_r, selectors.EVENT_READ, "wake")
        listening = False
        try:
            while self.listener.fileno() != -1:
                now = time.monotonic()
                self._expire(now)
                if self._idle_for(now) >= self.idle_exit:
                    return
                want = now >= self.paused_until
                if want != listening:
                    self._listen(want)
                    listening = want
                self._turn(self.selector.select(self._timeout(now)))
        except _ListenerGone:
            return
        finally:
            self._stop()

    def _turn(self, events: list[tuple[selectors.SelectorKey, int]]) -> None:
        accept = False
        for key, _ in events:
            if key.data == "wake":
                _drain(self.wake_r)
            elif key.data == "listener":
                accept = True
            else:
                self._read(key.fd)
        if accept:  # after the reads: a client already in must not be evicted by the newcomers
            self._accept()

    def _listen(self, on: bool) -> None:
        if self.listener.fileno() == -1:
            raise _ListenerGone
        if on:
            self.selector.register(self.listener, selectors.EVENT_READ, "listener")
        else:
            self.selector.unregister(self.listener)

    def _open(self) -> int:
        with self.counts.lock:
            return len(self.reading) + self.counts.busy

    def _idle_for(self, now: float) -> float:
        if self._open():
            self.idle_since = None
            return 0.0
        if self.idle_since is None:
            self.idle_since = now
        return now - self.idle_since

    def _timeout(self, now: float) -> float:
        """Until the next deadline, the end of a pause or the idle exit; at most a second, so a
        listener closed under us (tests) is noticed."""
        limits = [1.0, self.idle_exit - self._idle_for(now)]
        if self.reading:
            limits.append(next(iter(self.reading.values())).deadline - now)
        if self.paused_until > now:
            limits.append(self.paused_until - now)
        return max(0.0, min(limits))

    # -- connections -------------------------------------------------------------------

    def _accept(self) -> None:
        for _ in range(self.limits.accept_batch):
            try:
                conn, _ = self.listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in _TRANSIENT:
                    continue
                if exc.errno in _EXHAUSTED:
                    self._pause(exc)
                    return
                raise _ListenerGone from exc
            self._admit(conn)

    def _pause(self, exc: OSError) -> None:
        if self.paused_until == 0.0 or time.monotonic() - self.paused_until > 10:
            log.warning("accepting paused briefly: %s", os.strerror(exc.errno or 0))
        self.paused_until = time.monotonic() + self.limits.accept_backoff

    def _admit(self, conn: socket.socket) -> None:
        conn.setblocking(False)
        if self._open() >= self.limits.max_connections:
            if not self.reading:
                _reply_now(conn, Response(503, "the broker is busy; try again\n"))
                return
            oldest = next(iter(self.reading))
            self._finish(oldest, Response(503, "the broker is busy; try again\n"))
        deadline = time.monotonic() + self.limits.request_timeout
        self.reading[conn.fileno()] = _Reading(conn, deadline)
        self.selector.register(conn, selectors.EVENT_READ, "conn")

    def _read(self, fd: int) -> None:
        pending = self.reading.get(fd)
        if pending is None:
            return
        try:
            chunk = pending.conn.recv(1024)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        pending.data += chunk
        if len(pending.data) > MAX_REQUEST:
            self._finish(fd, Response(431, "request too large\n"))
        elif not chunk or b"\r\n\r\n" in pending.data:
            self._dispatch(fd, parse_request(pending.data))

    def _expire(self, now: float) -> None:
        while self.reading:
            fd, pending = next(iter(self.reading.items()))
            if pending.deadline > now:
                return
            self._finish(fd, Response(408, "request timed out\n"))

    def _finish(self, fd: int, response: Response) -> None:
        """Answer a connection still being read, from the loop, without waiting on it."""
        pending = self.reading.pop(fd)
        self.selector.unregister(pending.conn)
        _reply_now(pending.conn, response)

    def _dispatch(self, fd: int, request: tuple[str, str] | Response) -> None:
        if isinstance(request, Response):
            self._finish(fd, request)
            return
        with self.counts.lock:  # moved from reading to busy at once: never counted as idle between
            pending = self.reading.pop(fd)
            self.counts.busy += 1
        self.selector.unregister(pending.conn)
        self.jobs.put((pending.conn, request))
        if len(self.workers) < self.limits.workers:
            worker = threading.Thread(target=self._work, name="broker-worker", daemon=True)
            worker.start()
            self.workers.append(worker)

    def _work(self) -> None:
        while (job := self.jobs.get()) is not None:
            conn, request = job
            try:
                conn.settimeout(self.limits.send_timeout)
                with conn:
                    conn.sendall(answer(self.handler, request).encode())
            except OSError:
                pass
            finally:
                with self.counts.lock:
                    self.counts.busy -= 1
                _poke(self.wake_w)

    def _stop(self) -> None:
        for fd in list(self.reading):
            self._finish(fd, Response(503, "the broker is stopping; try again\n"))
        for _ in self.workers:
            self.jobs.put(None)
        self.selector.close()
        self.wake_r.close()  # wake_w stays open: a worker finishing late may still poke it


def _reply_now(conn: socket.socket, response: Response) -> None:
    """Send a short answer if the socket takes it at once, and close: the loop never waits on a client.

    What the client sent is read first (as far as it is there): closing on unread input makes
    the client's next read fail with a reset instead of the end of the answer."""
    with conn:
        try:
            conn.send(response.encode())
            conn.recv(MAX_REQUEST + 1)
        except OSError:
            pass


def _drain(sock: socket.socket) -> None:
    try:
        while sock.recv(4096):
            pass
    except OSError:
        pass


def _poke(sock: socket.socket) -> None:
    try:
        sock.send(b"x")
    except OSError:  # full already (the loop will wake) or closed (the loop is gone)
        pass


def serve(
    handler: Handler, listener: socket.socket, idle_exit: float = DEFAULT_IDLE_EXIT, limits: Limits | None = None
) -> None:
    """Answer until no connection has been open for `idle_exit` seconds, or the listener goes."""
    _Server(handler, listener, idle_exit, limits or Limits()).run()


def serve_from_systemd(name: str) -> None:
    """The broker's entry point: its socket from systemd, its repos from the drone's unit file."""
    from devbox.broker.setup import broker_for

    listener = listening_socket()
    broker, idle_exit = broker_for(name)
    # Revocations that failed before are retried beside serving, never in a request's way.
    threading.Thread(target=_retry_pending, args=(broker,), name="broker-revoke", daemon=True).start()
    serve(make_handler(broker), listener, idle_exit)


def _retry_pending(broker: DroneBroker) -> None:
    try:
        left = broker.retry_pending()
    except (DevboxError, OSError) as exc:
        log.warning("retrying earlier revocations failed: %s", exc)
        return
    if left:
        log.warning("%d GitHub token(s) could not be revoked yet; devbox retries later", left)
