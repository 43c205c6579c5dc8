"""The broker's audit events: a mint, a serve from the cache and each refusal, with what the token opens
and until when, never the token. The real GitHub App client against the fake GitHub API on loopback."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devbox.broker.service import DroneBroker, NotAllowed
from devbox.errors import DevboxError
from devbox.host import journal
from tests.fakegithub import FakeGitHub
from tests.unit.test_broker_service import INSTALLATIONS, make_broker

Recorded = list[tuple[str, str, str, dict[str, Any]]]


@pytest.fixture
def gh() -> Iterator[FakeGitHub]:
    with FakeGitHub("12345", installations=INSTALLATIONS) as fake:
        yield fake


def recording(broker: DroneBroker) -> Recorded:
    events: Recorded = []
    broker.record = lambda event, drone, message, **details: events.append((event, drone, message, details))
    return events


def test_a_mint_then_a_serve_from_the_cache(gh: FakeGitHub, runtime_dir: Path) -> None:
    broker = make_broker(gh, runtime_dir)
    events = recording(broker)
    first = broker.token("acme/demo")
    second = broker.token("acme/lib")
    assert first.token == second.token
    assert [e[0] for e in events] == [journal.TOKEN_MINTED, journal.TOKEN_SERVED]
    minted = events[0][3]
    assert minted["repos"] == "acme/demo,acme/lib"
    assert minted["permissions"] == "contents:write,metadata:read"  # what GitHub granted, as it said
    assert minted["expires"] == first.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert minted["asked"] == "acme/demo"
    assert events[1][3]["asked"] == "acme/lib"
    assert events[0][1] == "demo"
    assert (
        events[0][2] == f"minted token for acme/demo,acme/lib (contents:write,metadata:read) until {minted['expires']}"
    )
    assert events[1][2].startswith("served a cached token for acme/demo,acme/lib")
    for event in events:
        assert first.token not in repr(event)


def test_the_git_credential_path_records_the_same_events(gh: FakeGitHub, runtime_dir: Path) -> None:
    broker = make_broker(gh, runtime_dir)
    events = recording(broker)
    answer = broker.git_credential("github.com", "tools/cli.git")
    assert "password=" in answer
    assert [(e[0], e[3]["repos"], e[3]["asked"]) for e in events] == [
        (journal.TOKEN_MINTED, "tools/cli", "tools/cli.git")
    ]


def test_a_repo_outside_the_drone_is_refused_and_recorded(gh: FakeGitHub, runtime_dir: Path) -> None:
    broker = make_broker(gh, runtime_dir)
    events = recording(broker)
    with pytest.raises(NotAllowed):
        broker.token("acme/other")
    assert events == [
        (
            journal.TOKEN_REFUSED,
            "demo",
            "refused a token for acme/other: acme/other is not one of drone demo's repositories",
            {
                "priority": journal.PRIORITY_WARNING,
                "asked": "acme/other",
                "reason": "acme/other is not one of drone demo's repositories",
                "by": "broker",
            },
        )
    ]
    assert not [r for r in gh.requests if r.path.endswith("/access_tokens")]


def test_another_git_host_is_refused_and_recorded(gh: FakeGitHub, runtime_dir: Path) -> None:
    broker = make_broker(gh, runtime_dir)
    events = recording(broker)
    with pytest.raises(NotAllowed):
        broker.git_credential("evil.example", "acme/demo.git")
    assert [(e[0], e[3]["asked"], e[3]["reason"]) for e in events] == [
        (journal.TOKEN_REFUSED, "evil.example/acme/demo.git", "drone demo has no credentials for evil.example")
    ]


def test_a_mint_github_refuses_is_recorded_as_refused_by_github(gh: FakeGitHub, runtime_dir: Path) -> None:
    broker = make_broker(gh, runtime_dir, repos=("acme/ghost",))
    events = recording(broker)
    with pytest.raises(DevboxError):
        broker.token("acme/ghost")
    assert [(e[0], e[3]["by"]) for e in events] == [(journal.TOKEN_REFUSED, "github")]


def test_no_app_configured_is_recorded(runtime_dir: Path) -> None:
    broker = DroneBroker(
        name="demo",
        repos=("acme/demo",),
        permissions={},
        host="github.com",
        app=None,
        store_path=runtime_dir / "store.json",
        activity_path=runtime_dir / "activity",
        clock=lambda: 0.0,
    )
    events = recording(broker)
    with pytest.raises(DevboxError):
        broker.token(None)
    assert [(e[0], e[3]["asked"], e[3]["reason"]) for e in events] == [
        (journal.TOKEN_REFUSED, None, "no GitHub App is configured for drone demo")
    ]


def test_the_events_reach_a_journal_socket_without_the_token(gh: FakeGitHub, runtime_dir: Path) -> None:
    path = str(runtime_dir / "journal.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        broker = make_broker(gh, runtime_dir)
        broker.record = lambda *args, **kwargs: journal.record(*args, socket_path=path, **kwargs)
        token = broker.token("acme/demo")
        data = server.recv(65536)
    lines = data.decode().splitlines()
    assert "DEVBOX_EVENT=token-minted" in lines
    assert "DEVBOX_REPOS=acme/demo,acme/lib" in lines
    assert token.token.encode() not in data
