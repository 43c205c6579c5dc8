"""A small HTTP/1.1 server on the socket systemd hands over (socket activation, Accept=no).

It exits after an idle period without closing the listening socket's path: systemd
keeps listening and starts the broker again on the next request, so nothing runs
while a drone is idle.

Endpoints: GET /healthz; GET /token[?repo=OWNER/NAME] (the token alone);
GET /git-credential?host=H&path=OWNER/NAME.git (git credential helper lines);
DELETE /token (revoke what the drone holds; devbox destroy).
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from devbox.broker.service import DroneBroker, NotAllowed
from devbox.errors import DevboxError, ExitCode

SD_LISTEN_FDS_START = 3
MAX_REQUEST = 4096
REQUEST_TIMEOUT = 5.0
DEFAULT_IDLE_EXIT = 60.0

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


def read_request(conn: socket.socket) -> tuple[str, str] | Response:
    """(method, path) of one request, or the error response to send."""
    conn.settimeout(REQUEST_TIMEOUT)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(1024)
            if not chunk:
                break
            data += chunk
            if len(data) > MAX_REQUEST:
                return Response(431, "request too large\n")
    except TimeoutError:
        return Response(408, "request timed out\n")
    line = data.split(b"\r\n", 1)[0].decode("ascii", "replace")
    parts = line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[1].startswith("/"):
        return Response(400, "malformed request\n")
    return parts[0], parts[1]


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


def handle(handler: Handler, conn: socket.socket) -> None:
    with conn:
        request = read_request(conn)
        try:
            response = request if isinstance(request, Response) else handler(*request)
        except Exception:  # a bug must not kill the broker, nor show anything secret
            response = Response(500, "internal error in the broker; see journalctl --user -u the broker unit\n")
        try:
            conn.sendall(response.encode())
        except OSError:
            pass


def serve(handler: Handler, listener: socket.socket, idle_exit: float = DEFAULT_IDLE_EXIT) -> None:
    """Answer until no request has come for `idle_exit` seconds."""
    listener.settimeout(idle_exit)
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:  # idle timeout, or the listener closed: systemd starts us again on demand
            return
        threading.Thread(target=handle, args=(handler, conn), daemon=True).start()


def serve_from_systemd(name: str) -> None:
    """The broker's entry point: its socket from systemd, its repos from the drone's unit file."""
    from devbox.broker.setup import broker_for

    listener = listening_socket()
    broker, idle_exit = broker_for(name)
    serve(make_handler(broker), listener, idle_exit)
