"""Model API keys that never enter the drone, in the real machine: the drone's plain-HTTP request to its
local proxy address goes through the drone's forwarder to the host's socket-activated key proxy, which
sets the key and speaks TLS to a loopback fake upstream (its own test CA) that checks the key and
streams server-sent events chunk by chunk. The key is then looked for everywhere it must not be.

Every server here listens on the machine's loopback (which the drone cannot reach directly)."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import PLAIN_CONFIG, Devbox, secret_places, wait_for
from tests.e2e.keyhost import KEY, OPENAI_KEY, PROXY, key_upstream

HERE = Path(__file__).resolve().parent


def in_drone(box: Devbox, drone: str, command: str, check: bool = True, timeout: float = 60):
    return box.sh(f"podman exec drone-{drone} sh -c {shlex.quote(command)} </dev/null", check=check, timeout=timeout)


@pytest.fixture(scope="module")
def upstream(machine) -> Iterator[str]:
    with key_upstream(machine, PLAIN_CONFIG + "\n[broker]\nidle_exit = 3\n") as port:
        yield port


@pytest.fixture(scope="module")
def box(machine, upstream) -> Iterator[Devbox]:
    devbox = Devbox(machine, "pystemd")
    devbox.run("create", "agent", "--key", "anthropic")
    devbox.run("create", "other", "--key", "openai")
    try:
        for name in ("agent", "other"):
            forwarding = lambda: in_drone(devbox, name, f"curl -so /dev/null {PROXY}/", check=False).returncode == 0  # noqa: B023, E731
            wait_for(forwarding, 60, f"the key forwarder in drone {name}")
        yield devbox
    finally:
        for name in ("agent", "other"):
            devbox.run("destroy", name, "--yes", check=False)


def seen(machine) -> list[dict]:
    text = machine.user("cat ~/keyhost/state/seen.jsonl 2>/dev/null || true").stdout
    return [json.loads(line) for line in text.splitlines()]


def events(box: Devbox, event: str, drone: str) -> list[dict]:
    text = box.sh(f"journalctl --user -o json --no-pager DEVBOX_EVENT={event} DEVBOX_DRONE={drone}").stdout
    return [json.loads(line) for line in text.splitlines()]


def test_the_drone_reaches_its_upstream_through_the_proxy_which_sets_the_key(box: Devbox, machine) -> None:
    env = in_drone(box, "agent", "echo $ANTHROPIC_BASE_URL $ANTHROPIC_API_KEY").stdout.split()
    assert env == [f"{PROXY}/anthropic", "devbox-proxy"]
    before = len(seen(machine))
    answer = in_drone(
        box,
        "agent",
        'curl -sS -w "\\n%{http_code}" -H "x-api-key: $ANTHROPIC_API_KEY" -H "content-type: application/json" '
        '"$ANTHROPIC_BASE_URL/v1/messages" -d "{}"',
    ).stdout
    assert answer.endswith("\n200"), answer
    (request,) = seen(machine)[before:]
    assert request["method"] == "POST" and request["path"] == "/base/v1/messages"
    assert [v for k, v in request["headers"] if k.lower() == "x-api-key"] == ["<the key>"]  # the real one
    assert box.is_active("drone-agent-keys.socket") == "active"
    (event,) = [e for e in events(box, "api-request", "agent") if e.get("DEVBOX_STATUS") == "200"][-1:]
    assert event["DEVBOX_UPSTREAM"] == "anthropic" and event["DEVBOX_PATH"] == "/v1/messages"
    assert event["DEVBOX_METHOD"] == "POST" and int(event["DEVBOX_BYTES"]) > 0 and "DEVBOX_DURATION_MS" in event
    # devbox audit lists it from the key proxy's own unit, never the key.
    listed = [e for e in box.json("audit", "agent")["events"] if e["event"] == "api-request"]
    assert listed and listed[-1]["unit"] == "drone-agent-keys.service" and listed[-1]["source"] == "devbox"
    assert listed[-1]["details"]["path"] == "/v1/messages" and listed[-1]["details"]["status"] == "200"


def test_server_sent_events_reach_the_drone_chunk_by_chunk(box: Devbox, machine) -> None:
    machine.user("rm -f ~/keyhost/state/release ~/keyhost/state/sent-last")
    stream = 'curl -sSN "$ANTHROPIC_BASE_URL/v1/messages" -d \'{"stream": true}\' > /tmp/sse 2>&1'
    in_drone(box, "agent", "rm -f /tmp/sse")
    box.sh(f"podman exec --detach drone-agent sh -c {shlex.quote(stream)}")
    first = lambda: '"n": 0' in in_drone(box, "agent", "cat /tmp/sse", check=False).stdout  # noqa: E731
    wait_for(first, 30, "the first event in the drone")
    # The first event is in the drone while the upstream has not sent the last one.
    assert machine.user("test -e ~/keyhost/state/sent-last", check=False).returncode != 0
    machine.user("touch ~/keyhost/state/release")
    last = lambda: '"n": 2' in in_drone(box, "agent", "cat /tmp/sse", check=False).stdout  # noqa: E731
    wait_for(last, 30, "the last event in the drone")
    text = in_drone(box, "agent", "cat /tmp/sse").stdout
    assert text.index('"n": 0') < text.index('"n": 1') < text.index('"n": 2')
    assert "event: delta" in text


def test_a_drone_without_the_key_gets_403(box: Devbox, machine) -> None:
    before = len(seen(machine))
    answer = in_drone(
        box, "other", f'curl -sS -w "\\n%{{http_code}}" {PROXY}/anthropic/v1/messages -d "{{}}"', timeout=30
    ).stdout
    assert answer.endswith("\n403") and "key 'anthropic' not given" in answer
    assert seen(machine)[before:] == []  # nothing went upstream
    refused = events(box, "api-refused", "other")
    assert refused and refused[-1]["DEVBOX_UPSTREAM"] == "anthropic" and refused[-1]["DEVBOX_STATUS"] == "403"
    # Nor can the drone reach the other drone's socket, or the upstream directly.
    assert in_drone(box, "other", "ls /run/devbox").stdout.split() == ["creds.sock", "keys.sock"]
    port = machine.user("cat ~/keyhost/state/port").stdout.strip()
    direct = in_drone(box, "other", f"curl -sk --max-time 5 https://host.containers.internal:{port}/", check=False)
    assert direct.returncode != 0  # the upstream listens on the machine's loopback only


def test_the_proxy_is_socket_activated_and_exits_when_idle(box: Devbox) -> None:
    in_drone(box, "agent", 'curl -s -o /dev/null "$ANTHROPIC_BASE_URL/v1/messages" -d "{}"')
    wait_for(lambda: box.is_active("drone-agent-keys.service") != "active", 30, "the idle key proxy to exit")
    assert box.is_active("drone-agent-keys.socket") == "active"
    answer = in_drone(box, "agent", 'curl -s -w "%{http_code}" -o /dev/null "$ANTHROPIC_BASE_URL/v1/messages" -d "{}"')
    assert answer.stdout == "200"


def test_the_key_is_nowhere_but_its_file(box: Devbox, machine) -> None:
    for drone in ("agent", "other"):
        for place, text in secret_places(box, drone).items():
            assert KEY not in text and OPENAI_KEY not in text, f"a key is in {place} ({drone})"


def test_the_key_is_not_in_the_drones_files_given_on_stdin(box: Devbox, machine) -> None:
    for drone in ("agent", "other"):
        found = machine.user(
            f"podman exec -i drone-{drone} sh -c 'grep -rlF -f /dev/stdin / --exclude-dir=proc --exclude-dir=sys"
            " --exclude-dir=dev 2>/dev/null; true'",
            input=f"{KEY}\n{OPENAI_KEY}\n",
            timeout=180,
        )
        assert found.stdout.strip() == "", f"a key is in drone {drone}'s files: {found.stdout}"


def test_bench_figures_of_the_key_proxy(machine, capsys) -> None:
    """bench/bench.py's key proxy part alone, in this machine (test_bench.py runs the whole bench)."""
    bench = HERE.parents[1] / "bench" / "bench.py"
    machine.user("mkdir -p ~/bench && cat > ~/bench/bench.py", input=bench.read_text())
    machine.user("cat > ~/bench/fakeupstream.py", input=(HERE.parent / "fakeupstream.py").read_text())
    out = machine.user(
        "cd ~/bench && /opt/devbox-venv/bin/python -c 'import json, bench; print(json.dumps(bench.bench_key_proxy(7)))'",
        timeout=600,
    ).stdout
    figures = json.loads(out.strip().splitlines()[-1])
    with capsys.disabled():
        print("\n" + "\n".join(f"key proxy: {k:<45} {v:8.2f}" for k, v in figures.items()))
    assert figures["100 MB streamed: proxy/direct throughput"] > 0
