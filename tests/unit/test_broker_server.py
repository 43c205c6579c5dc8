"""The broker's socket server on a real Unix socket (systemd's part played by the test)."""

from __future__ import annotations

import errno
import socket
import threading
import time
from pathlib import Path

import pytest

from devbox.broker import server
from devbox.broker.service import DroneBroker
from devbox.errors import DevboxError, ExitCode


def listen(path: Path) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(4096)
    return listener


def start(handler: server.Handler, listener: object, idle_exit: float, limits: server.Limits) -> threading.Thread:
    thread = threading.Thread(target=server.serve, args=(handler, listener, idle_exit, limits), daemon=True)
    thread.start()
    return thread


@pytest.fixture
def broker(runtime_dir: Path):
    path = runtime_dir / "creds.sock"
    listener = listen(path)
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
    thread = start(server.make_handler(broker), listener, 2.0, server.Limits(request_timeout=0.3))
    yield path, thread
    listener.close()


def ask(path: Path, raw: bytes) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(10)
        conn.connect(str(path))
        try:
            conn.sendall(raw)
        except BrokenPipeError:  # answered (503) and closed before the request was sent: the answer is there
            pass
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


def test_a_stalled_request_times_out(broker) -> None:
    path, thread = broker
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(10)
        conn.connect(str(path))
        conn.sendall(b"GET /healthz HTTP/1.1\r\n")  # and then nothing more
        reply = conn.recv(4096).decode()
    assert reply.startswith("HTTP/1.1 408 ")
    assert thread.is_alive()


# -- a drone cannot starve, crash or confuse its broker --------------------------------


class Gate:
    """A handler that holds every request until released, counting those it holds."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.held = threading.Semaphore(0)

    def __call__(self, method: str, target: str) -> server.Response:
        self.held.release()
        assert self.release.wait(10)
        return server.Response(200, "done\n")


@pytest.fixture
def served(runtime_dir: Path):
    """Start a server on a fresh socket with a given handler and limits; stop it afterwards."""
    listeners: list[socket.socket] = []

    def run(handler: server.Handler, idle_exit: float = 30.0, **limits: float) -> tuple[Path, threading.Thread]:
        path = runtime_dir / f"s{len(listeners)}.sock"
        listeners.append(listen(path))
        return path, start(handler, listeners[-1], idle_exit, server.Limits(**limits))  # type: ignore[arg-type]

    yield run
    for listener in listeners:
        listener.close()


def healthz(method: str, target: str) -> server.Response:
    return server.Response(200, "ok\n")


def connect(path: Path) -> socket.socket:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(10)
    conn.connect(str(path))
    return conn


def test_a_trickling_request_is_cut_at_its_whole_request_deadline(served) -> None:
    path, _ = served(healthz, request_timeout=1.0)
    started = time.monotonic()
    with connect(path) as conn:
        reply = b""
        for byte in b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 100:
            try:
                conn.send(bytes([byte]))
                time.sleep(0.1)  # every recv would succeed well within any per-recv timeout
                conn.setblocking(False)
                reply = conn.recv(4096)
                break
            except BlockingIOError:
                conn.settimeout(10)
            except OSError:
                break
        conn.settimeout(10)
        reply = reply or conn.recv(4096)
    held = time.monotonic() - started
    print(f"\na request trickling a byte every 0.1 s was cut after {held:.2f} s (deadline 1.0 s)")
    assert reply.startswith(b"HTTP/1.1 408 ") and held < 1.8


def test_past_the_connection_limit_the_oldest_unread_one_gets_503_at_once(served) -> None:
    path, thread = served(healthz, max_connections=4, request_timeout=10.0)
    stalled = [connect(path) for _ in range(4)]
    for conn in stalled:
        conn.sendall(b"GET /healthz HTTP/1.1\r\n")  # never finished
    started = time.monotonic()
    assert ask(path, b"GET /healthz HTTP/1.1\r\n\r\n").endswith("\r\n\r\nok\n")
    assert stalled[0].recv(4096).startswith(b"HTTP/1.1 503 ")
    assert time.monotonic() - started < 2.0  # at once, not at the 10 s deadline
    for conn in stalled:
        conn.close()
    assert thread.is_alive()


def test_when_every_slot_is_answering_a_newcomer_gets_503_at_once(served) -> None:
    gate = Gate()
    path, thread = served(gate, max_connections=3, workers=3)
    busy = [connect(path) for _ in range(3)]
    for conn in busy:
        conn.sendall(b"GET /token HTTP/1.1\r\n\r\n")
    for _ in busy:
        assert gate.held.acquire(timeout=10)
    # Answered while every slot is still held (the gate opens only below): a server that queued the
    # newcomer for a slot would never answer, and ask() would time out.
    assert ask(path, b"GET /token HTTP/1.1\r\n\r\n").startswith("HTTP/1.1 503 ")
    assert not gate.release.is_set()
    gate.release.set()
    assert all(conn.recv(4096).endswith(b"done\n") for conn in busy)
    for conn in busy:
        conn.close()
    assert thread.is_alive()


class FlakyListener:
    """A listening socket whose accept() first fails as under a descriptor flood."""

    def __init__(self, real: socket.socket, errors: list[int]) -> None:
        self.real, self.errors, self.calls = real, errors, 0

    def fileno(self) -> int:
        return self.real.fileno()

    def setblocking(self, flag: bool) -> None:
        self.real.setblocking(flag)

    def accept(self) -> tuple[socket.socket, object]:
        self.calls += 1
        if self.errors:
            raise OSError(self.errors.pop(0), "injected")
        return self.real.accept()


@pytest.mark.parametrize("error", [errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.ECONNABORTED])
def test_an_accept_error_is_not_taken_for_the_idle_exit(runtime_dir: Path, error: int) -> None:
    real = listen(runtime_dir / "flaky.sock")
    flaky = FlakyListener(real, [error] * 5)
    thread = start(healthz, flaky, 30.0, server.Limits(accept_backoff=0.1))
    try:
        started = time.monotonic()
        assert ask(runtime_dir / "flaky.sock", b"GET /healthz HTTP/1.1\r\n\r\n").endswith("ok\n")
        took = time.monotonic() - started
        assert thread.is_alive()
        if error != errno.ECONNABORTED:  # resource errors pause accepting: no busy loop
            assert took >= 0.4 and flaky.calls <= 8
    finally:
        real.close()


def test_the_idle_exit_never_cuts_a_request_in_flight(served) -> None:
    gate = Gate()
    path, thread = served(gate, idle_exit=0.5)
    with connect(path) as conn:
        conn.sendall(b"GET /token HTTP/1.1\r\n\r\n")
        assert gate.held.acquire(timeout=10)
        time.sleep(1.5)  # three idle periods with the request in flight (a slow mint)
        assert thread.is_alive()
        gate.release.set()
        assert conn.recv(4096).endswith(b"done\n")
    thread.join(timeout=5)
    assert not thread.is_alive()  # and idle once it is answered


def test_an_open_connection_counts_as_activity_until_its_deadline(served) -> None:
    path, thread = served(healthz, idle_exit=0.3, request_timeout=1.0)
    with connect(path) as conn:
        time.sleep(0.7)
        assert thread.is_alive()
        assert conn.recv(4096).startswith(b"HTTP/1.1 408 ")
    thread.join(timeout=5)
    assert not thread.is_alive()
