"""The broker's socket server on a real Unix socket (systemd's part played by the test)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from devbox.broker import server
from devbox.broker.service import DroneBroker
from devbox.errors import DevboxError, ExitCode


@pytest.fixture
def broker(runtime_dir: Path):
    path = runtime_dir / "creds.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    broker = DroneBroker(
        name="demo",
        repos=(),
        permissions={},
        host="github.com",
        app=None,
        store_path=runtime_dir / "store.json",
        activity_path=runtime_dir / "activity",
        clock=time.time,
    )
    thread = threading.Thread(target=server.serve, args=(server.make_handler(broker), listener, 2.0), daemon=True)
    thread.start()
    yield path, thread
    listener.close()


def ask(path: Path, raw: bytes) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(10)
        conn.connect(str(path))
        conn.sendall(raw)
        chunks = []
        while chunk := conn.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def test_healthz_and_unconfigured_token(broker) -> None:
    path, _ = broker
    assert ask(path, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").endswith("\r\n\r\nok\n")
    reply = ask(path, b"GET /token HTTP/1.1\r\n\r\n")
    assert reply.startswith("HTTP/1.1 503 ") and reply.endswith("no GitHub App is configured for drone demo\n")


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"POST /token HTTP/1.1\r\n\r\n", 405),
        (b"GET /token?repo=acme/other HTTP/1.1\r\n\r\n", 503),
        (b"GET /nothing HTTP/1.1\r\n\r\n", 404),
        (b"garbage\r\n\r\n", 400),
        (b"GET /token HTTP/1.1\r\n" + b"X: " + b"a" * 5000 + b"\r\n\r\n", 431),
    ],
)
def test_bad_requests_get_an_error_not_a_crash(broker, raw: bytes, status: int) -> None:
    path, thread = broker
    assert ask(path, raw).startswith(f"HTTP/1.1 {status} ")
    assert ask(path, b"GET /healthz HTTP/1.1\r\n\r\n").endswith("ok\n")
    assert thread.is_alive()


def test_it_exits_when_idle(broker) -> None:
    _, thread = broker
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_it_refuses_to_run_without_systemds_socket() -> None:
    with pytest.raises(DevboxError) as error:
        server.listening_socket({"LISTEN_FDS": "1", "LISTEN_PID": "1"})
    assert error.value.code == ExitCode.ENVIRONMENT


def test_a_stalled_request_times_out(broker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "REQUEST_TIMEOUT", 0.3)
    path, thread = broker
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(10)
        conn.connect(str(path))
        conn.sendall(b"GET /healthz HTTP/1.1\r\n")  # and then nothing more
        reply = conn.recv(4096).decode()
    assert reply.startswith("HTTP/1.1 408 ")
    assert thread.is_alive()
