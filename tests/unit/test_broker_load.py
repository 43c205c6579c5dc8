"""Floods against the broker's server on a Unix socket, with the real GitHub App client and the fake
GitHub on loopback: 2,000 connections held open at once, 2,000 that send their request a byte at a
time, and a burst of 2,000 complete requests. Every flooding connection must get an answer (none held
past the whole-request deadline), a healthy client must be answered within its deadline, and threads
and memory must stay bounded. The figures are printed."""

from __future__ import annotations

import resource
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from devbox.broker import server
from tests.fakegithub import FakeGitHub
from tests.unit.test_broker_service import INSTALLATIONS, make_broker

FLOOD = 2000
HEALTHY_DEADLINE = 5.0  # seconds a healthy client waits: git's credential helper gives up about then
LIMITS = server.Limits()  # the broker's own limits, as deployed
MEMORY_BOUND = 64 * 1024 * 1024  # bytes of RSS growth allowed for the whole flood, client side included


@pytest.fixture(autouse=True)
def enough_descriptors() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = FLOOD + LIMITS.max_connections + 256
    if hard != resource.RLIM_INFINITY and hard < need:
        print(f"\nskipped: the hard descriptor limit {hard} is below the {need} this flood needs")
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {need}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need) if hard == resource.RLIM_INFINITY else hard, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@dataclass
class Peaks:
    """The process's thread count and resident memory, sampled while the flood runs."""

    threads: int = 0
    rss: int = 0
    workers: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def sample(self) -> None:
        while not self.stop.wait(0.01):
            status = dict(
                line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line
            )
            self.threads = max(self.threads, int(status["Threads"]))
            self.rss = max(self.rss, int(status["VmRSS"].split()[0]) * 1024)
            self.workers = max(self.workers, sum(t.name == "broker-worker" for t in threading.enumerate()))


def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def socket_path(runtime_dir: Path) -> Iterator[tuple[Path, threading.Thread]]:
    with FakeGitHub("12345", installations=INSTALLATIONS) as gh:
        path = runtime_dir / "load.sock"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        listener.listen(4096)
        handler = server.make_handler(make_broker(gh, runtime_dir))
        thread = threading.Thread(target=server.serve, args=(handler, listener, 60.0, LIMITS), daemon=True)
        thread.start()
        yield path, thread
        listener.close()
        thread.join(5)
        ending = [t for t in threading.enumerate() if t.name == "broker-worker"]
        for worker in ending:  # so the next flood counts only its own server's workers
            worker.join(5)


def ask(path: Path, target: str) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(HEALTHY_DEADLINE)
        conn.connect(str(path))
        try:
            conn.sendall(f"GET {target} HTTP/1.1\r\n\r\n".encode())
        except BrokenPipeError:  # refused (503) before the request went out: the answer is there
            pass
        data = b""
        while chunk := conn.recv(4096):
            data += chunk
    return data.decode()


def healthy(path: Path, target: str, retry_busy: bool = False) -> tuple[str, float, int]:
    """The answer, how long it took, and how many 503s came first (retried only with `retry_busy`)."""
    started, refusals = time.monotonic(), 0
    while True:
        reply = ask(path, target)
        if not (retry_busy and reply.startswith("HTTP/1.1 503 ")) or time.monotonic() - started > HEALTHY_DEADLINE:
            return reply, time.monotonic() - started, refusals
        refusals += 1
        time.sleep(0.05)


def open_flood(path: Path, first_bytes: bytes) -> list[socket.socket]:
    conns = []
    for _ in range(FLOOD):
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(10)
        conn.connect(str(path))
        try:
            conn.sendall(first_bytes)
        except OSError:  # answered 503 and closed already
            pass
        conn.setblocking(False)
        conns.append(conn)
    return conns


def collect(conns: list[socket.socket], trickle: bytes, started: float, limit: float) -> tuple[dict[str, int], float]:
    """Read every connection's answer (status counts) while sending `trickle` a byte a second to those
    still waiting; the longest any connection waited (since `started`, the flood's start) for its answer."""
    statuses: dict[str, int] = {}
    longest = 0.0
    with selectors.DefaultSelector() as sel:
        for conn in conns:
            sel.register(conn, selectors.EVENT_READ)
        position, next_byte = 0, started + 1.0
        while sel.get_map() and time.monotonic() - started < limit:
            for key, _ in sel.select(0.1):
                conn = key.fileobj
                assert isinstance(conn, socket.socket)
                try:
                    head = conn.recv(64)
                except OSError:
                    head = b""
                status = head.split(b" ")[1].decode() if head.startswith(b"HTTP/1.1 ") else "closed"
                statuses[status] = statuses.get(status, 0) + 1
                longest = max(longest, time.monotonic() - started)
                sel.unregister(conn)
                conn.close()
            if trickle and time.monotonic() >= next_byte and position < len(trickle):
                for key in list(sel.get_map().values()):
                    try:
                        key.fileobj.send(trickle[position : position + 1])  # type: ignore[union-attr]
                    except OSError:
                        pass
                position, next_byte = position + 1, next_byte + 1.0
        unanswered = len(sel.get_map())
        for key in list(sel.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
    assert unanswered == 0, f"{unanswered} connections got no answer within {limit} s"
    return statuses, longest


def run_flood(
    path: Path, first_bytes: bytes, trickle: bytes, capsys: pytest.CaptureFixture[str], what: str, retry: bool = False
) -> None:
    before = rss()
    peaks = Peaks()
    sampler = threading.Thread(target=peaks.sample, daemon=True)
    sampler.start()
    try:
        started = time.monotonic()
        conns = open_flood(path, first_bytes)
        opened = time.monotonic() - started
        reply, took, refusals = healthy(path, "/token", retry)
        health, health_took, _ = healthy(path, "/healthz", retry)
        statuses, longest = collect(conns, trickle, started, LIMITS.request_timeout + 10)
    finally:
        peaks.stop.set()
        sampler.join(5)
    with capsys.disabled():
        print(
            f"\n{what}: {FLOOD} connections opened in {opened:.2f} s; healthy /token answered in {took * 1000:.0f} ms"
            f"{f' after {refusals} busy answers' if retry else ''}, "
            f"/healthz in {health_took * 1000:.0f} ms; flood answers {dict(sorted(statuses.items()))}, "
            f"the last {longest:.2f} s after the flood began; peak threads {peaks.threads} (broker workers {peaks.workers}, "
            f"limit {LIMITS.workers}); RSS growth {(peaks.rss - before) / 1e6:.1f} MB"
        )
    assert reply.startswith("HTTP/1.1 200 ") and reply.split("\r\n\r\n", 1)[1].startswith("ghs_")
    assert took < HEALTHY_DEADLINE and health.endswith("ok\n")
    assert peaks.workers <= LIMITS.workers
    assert peaks.threads < 40  # the server's loop and workers, the fake GitHub's few, pytest's
    assert peaks.rss - before < MEMORY_BOUND
    assert longest < LIMITS.request_timeout + 2  # nobody held past the whole-request deadline


def test_2000_connections_held_open(socket_path, capsys: pytest.CaptureFixture[str]) -> None:
    path, thread = socket_path
    run_flood(path, b"", b"", capsys, "2,000 connections held open without a request")
    assert thread.is_alive()


def test_a_burst_of_2000_requests(socket_path, capsys: pytest.CaptureFixture[str]) -> None:
    """Complete requests faster than they can be answered: past the bound they are refused at once
    (503), and a client that takes a 503 as "try again" is served within its deadline."""
    path, thread = socket_path
    run_flood(path, b"GET /token HTTP/1.1\r\n\r\n", b"", capsys, "a burst of 2,000 /token requests", retry=True)
    assert thread.is_alive()


def test_2000_slow_requests(socket_path, capsys: pytest.CaptureFixture[str]) -> None:
    path, thread = socket_path
    run_flood(
        path, b"GET /healthz HTTP/1.1\r\n", b"X-Slow: 1\r\n" * 3, capsys, "2,000 requests trickled a byte a second"
    )
    assert thread.is_alive()
