"""The broker end to end on this machine: a real Unix socket, the real GitHub App client, and the
fake GitHub API on loopback that verifies the JWT. Only the drone's own repos can be had."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devbox.broker import pending, server, store
from devbox.broker.github import AppConfig, GitHubApp
from devbox.broker.service import DroneBroker, revoke_stored
from tests.fakegithub import FakeGitHub, rsa_keypair

INSTALLATIONS = {
    "acme": (7, {"demo", "other", "lib"}, {"contents": "write", "pull_requests": "write"}),
    "tools": (8, {"cli"}, {"contents": "write"}),
}
PERMISSIONS = {"contents": "write"}


@pytest.fixture
def gh() -> Iterator[FakeGitHub]:
    with FakeGitHub("12345", installations=INSTALLATIONS) as fake:
        yield fake


def make_broker(
    gh: FakeGitHub, runtime_dir: Path, repos: tuple[str, ...] = ("acme/demo", "acme/lib", "tools/cli")
) -> DroneBroker:
    app = GitHubApp(AppConfig("12345", rsa_keypair()[0], gh.url), sleep=lambda _: None)
    return DroneBroker(
        name="demo",
        repos=repos,
        permissions=PERMISSIONS,
        host="github.com",
        app=app,
        store_path=runtime_dir / "tokens" / "demo.json",
        activity_path=runtime_dir / "activity" / "demo",
        clock=time.time,
        pending_path=pending_path(runtime_dir),
    )


def pending_path(runtime_dir: Path) -> Path:
    return pending.pending_file(runtime_dir / "state")


@pytest.fixture
def socket_path(runtime_dir: Path, gh: FakeGitHub) -> Iterator[Path]:
    path = runtime_dir / "creds.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    handler = server.make_handler(make_broker(gh, runtime_dir))
    thread = threading.Thread(target=server.serve, args=(handler, listener, 30.0), daemon=True)
    thread.start()
    yield path
    listener.close()


def get(path: Path, target: str, method: str = "GET") -> tuple[int, str]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(20)
        conn.connect(str(path))
        conn.sendall(f"{method} {target} HTTP/1.1\r\nHost: broker\r\n\r\n".encode())
        data = b""
        while chunk := conn.recv(4096):
            data += chunk
    head, _, body = data.decode().partition("\r\n\r\n")
    return int(head.split(" ")[1]), body


def minted_for(gh: FakeGitHub) -> list[tuple[str, ...]]:
    return [tuple(sorted(r.body["repositories"])) for r in gh.requests if r.path.endswith("/access_tokens")]


def test_token_is_scoped_to_the_drones_repos_of_that_owner(socket_path: Path, gh: FakeGitHub) -> None:
    status, body = get(socket_path, "/token")
    token = body.strip()
    assert status == 200 and token.startswith("ghs_")
    assert gh.token_allows(token, "acme/demo", "contents", "write") and gh.token_allows(token, "acme/lib")
    assert not gh.token_allows(token, "acme/other")
    assert minted_for(gh) == [("demo", "lib")]
    status, body = get(socket_path, "/token?repo=tools/cli")
    assert (
        status == 200 and gh.token_allows(body.strip(), "tools/cli") and not gh.token_allows(body.strip(), "acme/demo")
    )


def test_git_credential_lines(socket_path: Path, gh: FakeGitHub) -> None:
    status, body = get(socket_path, "/git-credential?host=github.com&path=acme/demo.git")
    assert status == 200
    lines = dict(line.split("=", 1) for line in body.splitlines())
    assert lines["username"] == "x-access-token" and gh.token_allows(lines["password"], "acme/demo")
    assert abs(int(lines["password_expiry_utc"]) - (gh.now() + 3600)) < 120


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("/git-credential?host=github.com&path=acme/other.git", "acme/other is not one of drone demo's repositories"),
        ("/token?repo=evil/demo", "evil/demo is not one of drone demo's repositories"),
        ("/git-credential?host=gitlab.com&path=acme/demo.git", "drone demo has no credentials for gitlab.com"),
    ],
)
def test_nothing_outside_the_drone_is_minted(socket_path: Path, gh: FakeGitHub, target: str, reason: str) -> None:
    assert get(socket_path, target) == (403, reason + "\n")
    assert minted_for(gh) == []


def test_five_concurrent_requests_mint_once(socket_path: Path, gh: FakeGitHub) -> None:
    results: list[tuple[int, str]] = []
    threads = [threading.Thread(target=lambda: results.append(get(socket_path, "/token"))) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(results) == 5 and len({body for _, body in results}) == 1
    assert minted_for(gh) == [("demo", "lib")]


def test_tokens_outlive_the_broker_process_and_destroy_revokes_them(gh: FakeGitHub, runtime_dir: Path) -> None:
    first = make_broker(gh, runtime_dir)
    token = first.token().token
    assert (runtime_dir / "tokens" / "demo.json").stat().st_mode & 0o777 == 0o600
    again = make_broker(gh, runtime_dir)  # the next socket activation
    assert again.token().token == token
    assert minted_for(gh) == [("demo", "lib")]
    assert revoke_stored(runtime_dir / "tokens" / "demo.json", again.app) == 1
    assert not gh.token_allows(token, "acme/demo")
    assert store.load(runtime_dir / "tokens" / "demo.json") == []


def test_github_failures_are_a_502_without_secrets(socket_path: Path, gh: FakeGitHub) -> None:
    for _ in range(4):
        gh.queue(502, {"message": "Server Error"})
    status, body = get(socket_path, "/token")
    assert status == 502 and "ghs_" not in body and "eyJ" not in body
    assert get(socket_path, "/healthz") == (200, "ok\n")


def test_requests_are_recorded_as_activity(socket_path: Path, runtime_dir: Path) -> None:
    get(socket_path, "/token")
    assert (runtime_dir / "activity" / "demo").exists()


# -- revocation -------------------------------------------------------------------------


def test_revoke_clears_every_cache_so_the_next_request_gets_a_live_token(
    socket_path: Path, gh: FakeGitHub, runtime_dir: Path
) -> None:
    first = get(socket_path, "/token")[1].strip()
    assert get(socket_path, "/token", method="DELETE") == (200, "revoked 1\n")
    assert not gh.token_allows(first, "acme/demo")
    assert store.load(runtime_dir / "tokens" / "demo.json") == []
    status, body = get(socket_path, "/token")
    assert status == 200 and body.strip() != first and gh.token_allows(body.strip(), "acme/demo")
    kept = [held.token.token for _, held in store.load(runtime_dir / "tokens" / "demo.json")]
    assert kept == [body.strip()]


def fail_revocations(gh: FakeGitHub) -> None:
    for _ in range(4):  # the first try and every retry
        gh.queue(502, {"message": "Server Error"})


def test_a_revocation_github_refuses_is_remembered_outside_the_broker_and_retried(
    socket_path: Path, gh: FakeGitHub, runtime_dir: Path
) -> None:
    token = get(socket_path, "/token")[1].strip()
    fail_revocations(gh)
    status, body = get(socket_path, "/token", method="DELETE")
    assert (
        status == 502 and body == "revoked 0; 1 could not be revoked yet and will be retried\n" and "ghs_" not in body
    )
    remembered = pending_path(runtime_dir)
    assert remembered.stat().st_mode & 0o777 == 0o600
    assert gh.token_allows(token, "acme/demo")
    assert get(socket_path, "/token")[1].strip() != token  # never served again, even so

    fail_revocations(gh)
    app = GitHubApp(AppConfig("12345", b"", gh.url), sleep=lambda _: None)  # revoking needs no key
    assert pending.revoke_pending(remembered, app) == 1  # still live, still remembered
    assert pending.revoke_pending(remembered, app) == 0
    assert not gh.token_allows(token, "acme/demo") and not remembered.exists()


def test_the_next_broker_start_retries_what_an_earlier_one_could_not_revoke(gh: FakeGitHub, runtime_dir: Path) -> None:
    first = make_broker(gh, runtime_dir)
    token = first.token().token
    fail_revocations(gh)
    assert first.revoke_all() == (0, 1)
    assert make_broker(gh, runtime_dir).retry_pending() == 0
    assert not gh.token_allows(token, "acme/demo")


def test_a_failed_destroy_leaves_the_token_remembered_as_live(gh: FakeGitHub, runtime_dir: Path) -> None:
    token = make_broker(gh, runtime_dir).token().token
    fail_revocations(gh)
    app = GitHubApp(AppConfig("12345", b"", gh.url), sleep=lambda _: None)
    assert revoke_stored(runtime_dir / "tokens" / "demo.json", app, pending_path(runtime_dir)) == 0
    assert not (runtime_dir / "tokens" / "demo.json").exists()
    assert pending.revoke_pending(pending_path(runtime_dir), None) == 1  # no App to revoke with: still live
    assert pending.revoke_pending(pending_path(runtime_dir), app) == 0
    assert not gh.token_allows(token, "acme/demo")


def test_expired_tokens_are_forgotten_not_retried(gh: FakeGitHub, runtime_dir: Path) -> None:
    token = make_broker(gh, runtime_dir).token()
    path = pending_path(runtime_dir)
    pending.remember(path, [token], "demo")
    later = token.expires_at.timestamp() + pending.EXPIRY_GRACE + 1
    assert pending.revoke_pending(path, None, clock=lambda: later) == 0 and not path.exists()


def test_a_store_from_another_boot_is_not_trusted_for_freshness(
    gh: FakeGitHub, runtime_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = make_broker(gh, runtime_dir).token().token
    monkeypatch.setattr(store, "boot_id", lambda: "another-boot")
    assert make_broker(gh, runtime_dir).token().token != token
