"""`devbox audit` in the real machine: a scripted session (a clone with the broker's token, a refused
repository, a model API call through the key proxy, a connection the fence blocks, an SSH login, a stop
with systemctl and a start with devbox) read back from the real journal by a plain user, exactly those
events in that order, each from the source that can vouch for it.

Network rule: the blocked connection is to the machine's own address (host.containers.internal), which
the fence refuses before a packet leaves the drone; the API call goes to the loopback stand-in upstream."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import Devbox, wait_for
from tests.e2e.keyhost import KEY, PROXY, key_upstream

REPO_ROOT = Path(__file__).resolve().parents[2]
# The test image plus the drone's real init, so sshd runs and logs as in every drone (no network needed).
SSH_IMAGE = "localhost/devbox-audit-ssh:latest"
SSH_CONTAINERFILE = """FROM localhost/devbox-test:latest
COPY --chmod=0755 devbox-drone-init /usr/local/bin/devbox-drone-init
RUN rm -f /etc/ssh/ssh_host_*
CMD ["/usr/local/bin/devbox-drone-init"]
"""
DRONE = "aud"
BLOCKED_PORT = 18933  # nothing listens there: the fence refuses the connection before it leaves
# What the scripted session below must list, in this order.
SESSION = [
    ("drone-started", "systemd"),
    ("token-minted", "devbox"),
    ("token-refused", "devbox"),
    ("api-request", "devbox"),
    ("egress-blocked", "devbox"),
    ("ssh-login", "drone"),
    ("drone-stopped", "systemd"),
    ("drone-started", "systemd"),
]


@pytest.fixture(scope="module")
def box(machine, githost) -> Iterator[Devbox]:
    devbox = Devbox(machine, "pystemd")
    context = "/home/dev/audit-image"
    init = (REPO_ROOT / "templates" / "image" / "devbox-drone-init").read_text()
    machine.user(f"mkdir -p {context} && cat > {context}/devbox-drone-init", input=init)
    machine.user(f"cat > {context}/Containerfile", input=SSH_CONTAINERFILE)
    devbox.sh(f"podman build -q -t {SSH_IMAGE} {context}", timeout=300)
    devbox.sh("test -f ~/.ssh/id_ed25519 || ssh-keygen -q -t ed25519 -N '' -f ~/.ssh/id_ed25519")
    with key_upstream(machine, githost["config"]):
        try:
            yield devbox
        finally:
            devbox.run("destroy", DRONE, "--yes", check=False)


def in_drone(box: Devbox, command: str, check: bool = True):
    return box.sh(f"podman exec drone-{DRONE} sh -c {shlex.quote(command)} </dev/null", check=check, timeout=60)


def ssh(box: Devbox, port: int, command: str, check: bool = True):
    options = (
        f"-p {port} -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
    )
    return box.sh(f"ssh {options} dev@127.0.0.1 {shlex.quote(command)}", check=check, timeout=60)


def audit(box: Devbox, *args: str) -> dict[str, Any]:
    return json.loads(box.run("audit", DRONE, *args, "--json").stdout)


def kinds(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["event"], e["source"]) for e in events]


def minted(box: Devbox) -> list[str]:
    return box.sh("cat ~/githost/state/minted.log 2>/dev/null || true").stdout.split()


def listed(box: Devbox, event: str) -> bool:
    return any(e["event"] == event for e in audit(box)["events"])


def test_a_scripted_session_is_listed_exactly_in_order(box: Devbox, githost) -> None:
    created = box.run("create", DRONE, "--repo", "acme/demo", "--image", SSH_IMAGE, "--key", "anthropic")
    port = int(created.stdout.split("SSH on 127.0.0.1:")[1].split()[0])
    assert box.json("status", DRONE)["egress"] == "fenced"  # the default for new drones
    wait_for(lambda: in_drone(box, "test -d ~/demo/.git", check=False).returncode == 0, 90, "the clone of acme/demo")

    refused = in_drone(box, f"git ls-remote {githost['git_url']}/acme/other.git", check=False)
    assert refused.returncode != 0 and "not one of drone aud's repositories" in refused.stderr

    # Until the forwarder listens the call never reaches the proxy, so only the call that answers is an event.
    call = f'curl -s -o /dev/null -w "%{{http_code}}" {PROXY}/anthropic/v1/messages -d "{{}}"'
    wait_for(lambda: in_drone(box, call, check=False).stdout == "200", 60, "an API call through the key proxy")
    wait_for(lambda: listed(box, "api-request"), 30, "the api-request event")

    blocked = in_drone(box, f"curl -s -m 4 http://host.containers.internal:{BLOCKED_PORT}/", check=False)
    assert blocked.returncode != 0
    wait_for(lambda: listed(box, "egress-blocked"), 30, "the egress-blocked event")

    wait_for(lambda: ssh(box, port, "true", check=False).returncode == 0, 90, "an SSH login")
    box.sh(f"systemctl --user stop drone-{DRONE}.service")  # not through devbox: systemd's own record counts
    box.run("start", DRONE)

    timeline = audit(box)
    events = timeline["events"]
    assert (timeline["drone"], timeline["installed"], timeline["since"]) == (DRONE, True, None)
    assert kinds(events) == SESSION, json.dumps(events, indent=1)
    times = [e["time"] for e in events]
    assert times == sorted(times)

    mint, refusal, api, block, login = (
        next(e for e in events if e["event"] == kind)
        for kind in ("token-minted", "token-refused", "api-request", "egress-blocked", "ssh-login")
    )
    # The broker's events carry journald's word for their sender: the drone's broker unit.
    assert mint["unit"] == refusal["unit"] == f"drone-{DRONE}-creds.service"
    assert mint["details"]["repos"] == "acme/demo"
    assert "contents:" in mint["details"]["permissions"] and mint["details"]["expires"].endswith("Z")
    assert refusal["details"]["asked"] == "acme/other.git" and refusal["details"]["by"] == "broker"
    assert (login["details"]["user"], login["details"]["method"]) == ("dev", "publickey")
    assert login["unit"] == f"drone-{DRONE}.service"
    assert api["unit"] == f"drone-{DRONE}-keys.service"
    assert (api["details"]["upstream"], api["details"]["path"], api["details"]["status"]) == (
        "anthropic",
        "/v1/messages",
        "200",
    )
    # The fence's watcher runs in the drone's service (Podman starts the fence hook there).
    assert block["unit"] == f"drone-{DRONE}.service"
    assert (block["details"]["port"], block["details"]["protocol"]) == (str(BLOCKED_PORT), "tcp")

    # journalctl shows the same events: devbox's are its own entries, found by the same fields.
    plain = box.sh(f"journalctl --user --no-pager -o cat DEVBOX_DRONE={DRONE}").stdout
    assert mint["message"] in plain and refusal["message"] in plain

    # Never the token: not in the audit (JSON or text), not in the journal entries behind it.
    tokens = minted(box)
    assert tokens, "the fake GitHub minted nothing"
    text = box.run("audit", DRONE).stdout
    assert len(text.splitlines()) == len(events)
    everything = (
        json.dumps(timeline) + text + box.sh(f"journalctl --user -o json --no-pager DEVBOX_DRONE={DRONE}").stdout
    )
    assert not [t for t in tokens if t in everything]
    assert KEY not in everything  # nor the model API key


def test_the_drones_output_cannot_forge_a_devbox_or_systemd_event(box: Devbox) -> None:
    before = audit(box)["events"]
    forged = (
        "Started drone-aud.service - devbox drone aud.",
        "DEVBOX_EVENT=token-minted DEVBOX_DRONE=aud",
        '{"DEVBOX_EVENT": "token-minted", "DEVBOX_DRONE": "aud"}',
    )
    for line in forged:
        in_drone(box, f"printf '%s\\n' {shlex.quote(line)} >/proc/1/fd/1")
    in_drone(box, "printf '%s\\n' 'Accepted publickey for mallory from 203.0.113.9 port 1 ssh2' >/proc/1/fd/1")
    wait_for(lambda: len(audit(box)["events"]) > len(before), 30, "the drone's line in the journal")
    after = audit(box)["events"]
    new = after[len(before) :]
    assert [(e["event"], e["source"], e["details"].get("user")) for e in new] == [("ssh-login", "drone", "mallory")]


def test_a_volatile_journal_is_read_by_a_journal_group_member_and_said_when_not(box: Devbox, machine) -> None:
    """Storage=volatile: one shared file, no per-user one. `journalctl --user` then finds nothing new even for
    a member of systemd-journal; devbox's _UID= query does, and without a way to read it devbox says so."""
    box.run("create", "vol")
    machine.root(
        "mkdir -p /etc/systemd/journald.conf.d && printf '[Journal]\\nStorage=volatile\\n' "
        "> /etc/systemd/journald.conf.d/audit-e2e.conf && systemctl restart systemd-journald "
        "&& mv /var/log/journal /var/log/journal.audit-e2e"
    )
    try:
        refused = box.run("audit", "vol", check=False)
        assert refused.returncode == 12, refused.stderr
        assert "the journal is volatile" in refused.stderr and "systemd-journal" in refused.stderr

        machine.root("usermod -aG systemd-journal dev")
        box.sh("systemctl --user restart drone-vol.service")
        events = json.loads(box.run("audit", "vol", "--since", "1m", "--json").stdout)["events"]
        assert [(e["event"], e["source"]) for e in events] == [
            ("drone-stopped", "systemd"),
            ("drone-started", "systemd"),
        ]
        by_user = box.sh("journalctl --user --no-pager -q -o cat --since=-1min USER_UNIT=drone-vol.service").stdout
        assert "Started drone-vol.service" not in by_user  # why devbox does not use --user
    finally:
        machine.root(
            "rm -f /etc/systemd/journald.conf.d/audit-e2e.conf; gpasswd -d dev systemd-journal; "
            "test -d /var/log/journal.audit-e2e && mv /var/log/journal.audit-e2e /var/log/journal; "
            "systemctl restart systemd-journald; journalctl --flush",
            check=False,
        )
        box.run("destroy", "vol", "--yes", check=False)


def test_since_and_a_destroyed_drones_past(box: Devbox) -> None:
    everything = audit(box)["events"]
    box.sh("sleep 2")
    assert audit(box, "--since", "1s")["events"] == []
    box.run("destroy", DRONE, "--yes")
    gone = audit(box)
    assert gone["installed"] is False
    assert kinds(gone["events"])[: len(everything)] == kinds(everything)
    assert kinds(gone["events"])[-1] == ("drone-stopped", "systemd")  # the destroy's stop
    missing = box.run("audit", "never-was", check=False)
    assert missing.returncode == 5 and "no such drone: never-was" in missing.stderr
