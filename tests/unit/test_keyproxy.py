"""The model API key proxy on a real Unix socket, against a loopback TLS upstream with its own test CA."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devbox.broker import keyproxy
from devbox.host import journal
from tests.fakeupstream import FakeUpstream

KEY = "sk-ant-test-0123456789-secret"


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[FakeUpstream]:
    fake = FakeUpstream("x-api-key", KEY).start(tmp_path / "ca")
    yield fake
    fake.release.set()
    fake.stop()


class Running:
    def __init__(self, path: Path, events: list[tuple[str, str, dict[str, Any]]], thread: threading.Thread) -> None:
        self.path, self.events, self.thread = path, events, thread


def run_proxy(
    tmp_path: Path, upstreams: dict[str, keyproxy.Upstream], idle_exit: float = 30.0, **options: Any
) -> Running:
    events: list[tuple[str, str, dict[str, Any]]] = []

    def record(event: str, drone: str, message: str, **fields: Any) -> None:
        events.append((event, message, fields))

    proxy = keyproxy.KeyProxy("demo", upstreams, record=record, **options)
    path = tmp_path / "keys.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(64)
    thread = threading.Thread(target=asyncio.run, args=(keyproxy.serve(proxy, listener, idle_exit),), daemon=True)
    thread.start()
    return Running(path, events, thread)


def anthropic(fake: FakeUpstream, **changes: Any) -> dict[str, keyproxy.Upstream]:
    fields = {"url": fake.url + "/base", "header": "x-api-key", "value": KEY, "ca_file": str(fake.ca)} | changes
    return {"anthropic": keyproxy.Upstream("anthropic", **fields)}


def request(path: Path, raw: bytes, timeout: float = 10) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        conn.connect(str(path))
        conn.sendall(raw)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def post(path: str, body: bytes, *headers: str) -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.3:9119", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def test_the_key_header_is_set_and_the_drones_own_dropped(tmp_path: Path, upstream: FakeUpstream) -> None:
    running = run_proxy(tmp_path, anthropic(upstream))
    body = b'{"model": "m", "messages": []}'
    answer = request(
        running.path,
        post(
            "/anthropic/v1/messages?beta=true",
            body,
            "x-api-key: devbox-proxy",
            "Authorization: Bearer stolen",
            "X-Api-Key: another",
            "Connection: keep-alive, X-Hop",
            "X-Hop: 1",
            "anthropic-version: 2023-06-01",
        ),
    )
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    assert b"\r\nConnection: close\r\n" in answer
    (seen,) = upstream.seen
    headers = [(k.lower(), v) for k, v in seen.headers]
    assert seen.method == "POST" and seen.path == "/base/v1/messages?beta=true" and seen.body == body
    assert [v for k, v in headers if k == "x-api-key"] == [KEY]  # exactly one: the proxy's
    assert not [k for k, _ in headers if k in ("authorization", "x-hop")]
    assert ("host", f"127.0.0.1:{upstream.port}") in headers
    assert ("anthropic-version", "2023-06-01") in headers


def test_a_prefix_goes_before_the_key(tmp_path: Path, upstream: FakeUpstream) -> None:
    upstream.header, upstream.value = "authorization", f"Bearer {KEY}"
    up = keyproxy.Upstream("openai", upstream.url, "authorization", f"Bearer {KEY}", str(upstream.ca))
    running = run_proxy(tmp_path, {"openai": up})
    answer = request(running.path, post("/openai/v1/chat/completions", b"{}", "Authorization: Bearer devbox-proxy"))
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert [v for k, v in upstream.seen[0].headers if k.lower() == "authorization"] == [f"Bearer {KEY}"]


def test_a_key_the_drone_was_not_given_is_refused(tmp_path: Path, upstream: FakeUpstream) -> None:
    running = run_proxy(tmp_path, anthropic(upstream))
    answer = request(running.path, post("/openai/v1/chat/completions?key=x", b"{}"))
    assert answer.startswith(b"HTTP/1.1 403 ")
    assert b"key 'openai' not given" in answer
    assert upstream.seen == []
    ((event, _, fields),) = running.events
    assert event == journal.API_REFUSED
    assert fields["upstream"] == "openai" and fields["status"] == 403 and fields["path"] == "/v1/chat/completions"


def test_a_key_whose_secret_is_missing_is_refused_and_says_so(tmp_path: Path, upstream: FakeUpstream) -> None:
    running = run_proxy(tmp_path, {}, missing=frozenset({"anthropic"}))
    answer = request(running.path, post("/anthropic/v1/messages", b"{}"))
    assert answer.startswith(b"HTTP/1.1 403 ") and b"not available" in answer
    assert running.events[0][2]["reason"] == "missing"


def stream(conn: socket.socket, upstream: FakeUpstream) -> bytes:
    """Ask for server-sent events; the first must arrive while the upstream still holds back the rest."""
    conn.sendall(post("/anthropic/v1/messages", b'{"stream": true}'))
    received = b""
    while b'data: {"n": 0}' not in received:
        chunk = conn.recv(65536)
        assert chunk, received
        received += chunk
    assert not upstream.sent_last.is_set()
    upstream.release.set()
    while chunk := conn.recv(65536):
        received += chunk
    return received


def test_server_sent_events_stream_chunk_by_chunk(tmp_path: Path, upstream: FakeUpstream) -> None:
    running = run_proxy(tmp_path, anthropic(upstream))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(10)
        conn.connect(str(running.path))
        received = stream(conn, upstream)
    assert received.startswith(b"HTTP/1.1 200 ")
    assert b"text/event-stream" in received
    assert received.index(b'"n": 0') < received.index(b'"n": 1') < received.index(b'"n": 2')
    assert received.endswith(b"0\r\n\r\n")
    (event, message, fields) = running.events[-1]
    assert event == journal.API_REQUEST and fields["status"] == 200 and fields["bytes"] > 0


def test_the_audit_event_has_no_key_header_body_or_query(tmp_path: Path, upstream: FakeUpstream) -> None:
    running = run_proxy(tmp_path, anthropic(upstream))
    request(running.path, post("/anthropic/v1/messages?token=q-secret", b'{"prompt": "body-secret"}'))
    (event, message, fields) = running.events[-1]
    assert event == journal.API_REQUEST
    assert fields == fields | {"upstream": "anthropic", "method": "POST", "path": "/v1/messages", "status": 200}
    answer = json.dumps({"ok": True, "path": "/base/v1/messages?token=q-secret"})
    assert isinstance(fields["duration_ms"], int) and fields["bytes"] == len(answer)
    text = message + json.dumps(fields, default=str)
    for secret in (KEY, "q-secret", "body-secret", "x-api-key"):
        assert secret not in text


def test_a_chunked_request_body_is_passed_on(tmp_path: Path, upstream: FakeUpstream) -> None:
    running = run_proxy(tmp_path, anthropic(upstream))
    raw = (
        b"POST /anthropic/v1/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    assert request(running.path, raw).startswith(b"HTTP/1.1 200 ")
    assert upstream.seen[0].body == b"hello world"


@pytest.mark.parametrize(
    "raw",
    [
        b"POST /anthropic/v1 HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc",
        b"GET /anthropic/v1 HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"GET http://evil/anthropic HTTP/1.1\r\n\r\n",
        b"GET /anthropic HTTP/1.1\r\nX-Folded: a\r\n b\r\n\r\n",
        b"GET /anthropic HTTP/2.0\r\n\r\n",
    ],
)
def test_ambiguous_or_malformed_requests_are_refused(tmp_path: Path, upstream: FakeUpstream, raw: bytes) -> None:
    running = run_proxy(tmp_path, anthropic(upstream))
    assert request(running.path, raw).startswith(b"HTTP/1.1 400 ")
    assert upstream.seen == []


def test_an_untrusted_upstream_certificate_is_refused(tmp_path: Path, upstream: FakeUpstream) -> None:
    running = run_proxy(tmp_path, anthropic(upstream, ca_file=None))  # the system's CAs only
    answer = request(running.path, post("/anthropic/v1/messages", b"{}"))
    assert answer.startswith(b"HTTP/1.1 502 ") and b"certificate not trusted" in answer
    assert KEY.encode() not in answer
    assert running.events[-1][2]["status"] == 502


def test_an_unreachable_upstream_is_a_502(tmp_path: Path, upstream: FakeUpstream) -> None:
    from tests.fakeupstream import free_port

    running = run_proxy(tmp_path, anthropic(upstream, url=f"https://127.0.0.1:{free_port()}"))
    answer = request(running.path, post("/anthropic/v1/messages", b"{}"))
    assert answer.startswith(b"HTTP/1.1 502 ") and b"unreachable" in answer


def test_a_slow_request_head_times_out(tmp_path: Path, upstream: FakeUpstream) -> None:
    running = run_proxy(tmp_path, anthropic(upstream), limits=keyproxy.Limits(head_timeout=0.2))
    assert request(running.path, b"POST /anthropic/v1 HTTP/1.1\r\n").startswith(b"HTTP/1.1 408 ")


def test_expect_continue_is_answered_by_the_proxy(tmp_path: Path, upstream: FakeUpstream) -> None:
    running = run_proxy(tmp_path, anthropic(upstream))
    answer = request(running.path, post("/anthropic/v1/messages", b"{}", "Expect: 100-continue"))
    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 ")
    assert not [k for k, _ in upstream.seen[0].headers if k.lower() == "expect"]


def test_the_proxy_exits_when_idle_and_leaves_the_socket(tmp_path: Path, upstream: FakeUpstream) -> None:
    running = run_proxy(tmp_path, anthropic(upstream), idle_exit=0.3)
    request(running.path, post("/anthropic/v1/messages", b"{}"))
    running.thread.join(timeout=5)
    assert not running.thread.is_alive()
    assert running.path.exists()  # systemd's socket stays: the next request starts the proxy again


def test_upstreams_come_from_credential_files(tmp_path: Path) -> None:
    (tmp_path / "key-anthropic").write_text(KEY + "\n")
    upstreams, missing = keyproxy.load_upstreams(
        {
            "anthropic": ("https://api.anthropic.com", "x-api-key", "", None),
            "openai": ("https://api.openai.com", "authorization", "Bearer ", None),
        },
        tmp_path,
    )
    assert list(upstreams) == ["anthropic"] and missing == {"openai"}
    assert upstreams["anthropic"].value == KEY
    assert KEY not in repr(upstreams["anthropic"])


def test_many_connections_at_once_are_bounded(tmp_path: Path, upstream: FakeUpstream) -> None:
    running = run_proxy(tmp_path, anthropic(upstream), limits=keyproxy.Limits(max_connections=2, head_timeout=2))
    idle = []
    for _ in range(2):
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(str(running.path))
        idle.append(conn)
    time.sleep(0.2)
    try:
        assert request(running.path, post("/anthropic/v1/messages", b"{}")).startswith(b"HTTP/1.1 503 ")
    finally:
        for conn in idle:
            conn.close()


@pytest.mark.skipif(shutil.which("perl") is None, reason="no perl here to run the drone's key forwarder")
def test_the_drones_forwarder_passes_a_stream_through(tmp_path: Path, upstream: FakeUpstream) -> None:
    """templates/drone/key-forward (perl, as in the drone) between a TCP client and the proxy's socket."""
    from devbox.paths import templates_dir
    from tests.fakeupstream import free_port

    running = run_proxy(tmp_path, anthropic(upstream))
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "DEVBOX_KEY_PROXY": f"127.0.0.1:{port}",
        "DEVBOX_KEY_PROXY_SOCKET": str(running.path),
        "DEVBOX_KEY_FORWARD_LOG": str(tmp_path / "forward.log"),
    }
    forwarder = subprocess.Popen([str(templates_dir() / "drone" / "key-forward")], env=env)
    try:
        log = tmp_path / "forward.log"
        deadline = time.monotonic() + 10
        while not (log.exists() and "key proxy on" in log.read_text()):  # it says so once it listens
            assert time.monotonic() < deadline and forwarder.poll() is None
            time.sleep(0.05)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            received = stream(conn, upstream)  # the first event comes through the forwarder alone
        assert received.startswith(b"HTTP/1.1 200 ") and received.endswith(b"0\r\n\r\n")
    finally:
        forwarder.terminate()
        forwarder.wait(timeout=10)
