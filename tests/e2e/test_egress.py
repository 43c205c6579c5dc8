"""The network fence in the real machine: what fenced, allow: and open drones reach, that root in a
drone cannot lift the fence, that the broker and the key proxy keep working, and that `devbox egress`
keeps the home.

Network rule: every address a drone is sent to here is a server a test started, on the machine's
own address (through host.containers.internal) or inside the network namespaces of
tests/e2e/testnets.py (the `nets` fixture).
"""

from __future__ import annotations

import contextlib
import json
import shlex
from collections.abc import Iterator

import pytest

from tests.e2e.helpers import Devbox, wait_for
from tests.e2e.keyhost import PROXY, key_upstream
from tests.e2e.testnets import HOST_PORT


@pytest.fixture(scope="module")
def box(machine, githost, nets) -> Iterator[Devbox]:
    devbox = Devbox(machine, "systemctl")
    made = []
    with key_upstream(machine, githost["config"]):
        try:
            for name, egress in (("fen", None), ("opn", "open"), ("alw", f"allow:{nets['inet']}:8080")):
                args = ["create", name, "--repo", "acme/demo", "--key", "anthropic"]
                devbox.run(*args, *([] if egress is None else ["--egress", egress]))
                made.append(name)
            yield devbox
        finally:
            for name in made:
                devbox.run("destroy", name, "--yes", check=False)


def reaches(box: Devbox, drone: str, url: str) -> bool:
    command = f"curl -s -o /dev/null -m 4 {shlex.quote(url)}"
    return box.sh(f"podman exec drone-{drone} sh -c {shlex.quote(command)} </dev/null", check=False).returncode == 0


def in_drone(box: Devbox, drone: str, command: str, user: str = "", check: bool = True):
    who = f"--user {user} " if user else ""
    return box.sh(f"podman exec {who}drone-{drone} sh -c {shlex.quote(command)} </dev/null", check=check)


HOST = f"http://host.containers.internal:{HOST_PORT}/"


def test_policies_are_kept_in_the_unit_and_shown(box: Devbox, nets) -> None:
    policies = {d["name"]: d["egress"] for d in box.json("list")}
    assert policies == {"fen": "fenced", "opn": "open", "alw": f"allow:{nets['inet']}:8080"}
    assert box.json("status", "fen")["egress"] == "fenced"


def test_open_reaches_everything_the_test_serves(box: Devbox, nets) -> None:
    """The control: every server the other tests cannot reach is there."""
    for url in (f"http://{nets['inet']}:8080/", f"http://{nets['lan']}:8080/", HOST):
        assert reaches(box, "opn", url), url


def test_fenced_reaches_the_internet_but_not_the_host_nor_a_private_range(box: Devbox, nets) -> None:
    assert reaches(box, "fen", f"http://{nets['inet']}:8080/")
    assert reaches(box, "fen", f"http://{nets['inet']}:8081/")
    assert not reaches(box, "fen", HOST)
    assert not reaches(box, "fen", f"http://{nets['lan']}:8080/")


def test_allow_reaches_exactly_its_listed_server_and_port(box: Devbox, nets) -> None:
    assert reaches(box, "alw", f"http://{nets['inet']}:8080/")
    assert not reaches(box, "alw", f"http://{nets['inet']}:8081/")
    assert not reaches(box, "alw", f"http://{nets['lan']}:8080/")
    assert not reaches(box, "alw", HOST)


def test_the_broker_and_the_git_remote_work_under_every_policy(box: Devbox, githost) -> None:
    for drone in ("fen", "opn", "alw"):
        wait_for(lambda d=drone: in_drone(box, d, "test -d ~/demo/.git", check=False).returncode == 0, 60, "clone")
        assert "refs/heads/main" in in_drone(box, drone, f"git ls-remote {githost['git_url']}/acme/demo.git").stdout


def netns_of(box: Devbox, drone: str) -> str:
    return box.sh(f"podman inspect -f '{{{{.NetworkSettings.SandboxKey}}}}' drone-{drone}").stdout.strip()


def test_the_key_proxy_works_under_every_policy(box: Devbox) -> None:
    """The proxy is on the host, reached through the mounted socket: no policy touches it."""
    call = f'curl -s -o /dev/null -w "%{{http_code}}" {PROXY}/anthropic/v1/messages -d "{{}}"'
    for name in ("fen", "opn", "alw"):
        answered = lambda n=name: in_drone(box, n, call, check=False).stdout == "200"  # noqa: E731
        wait_for(answered, 60, f"an API call through the key proxy from drone {name}")


def test_root_in_the_drone_cannot_lift_the_fence(box: Devbox, nets) -> None:
    in_drone(box, "fen", "echo 'ALL ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/t && chmod 0440 /etc/sudoers.d/t", "root")
    flush = in_drone(box, "fen", "sudo -n nft flush ruleset", check=False)
    assert flush.returncode != 0 and "Operation not permitted" in flush.stderr, flush
    table = in_drone(box, "fen", "sudo -n nft delete table inet devbox_fence", check=False)
    assert table.returncode != 0
    # A user namespace of its own gives root in the drone capabilities only below the network namespace's owner.
    nested = in_drone(box, "fen", "sudo -n unshare -U -r nft flush ruleset", check=False)
    assert nested.returncode != 0, nested
    route = in_drone(box, "fen", f"sudo -n ip route add {nets['lan']}/32 dev eth0", check=False)
    assert route.returncode != 0 and "Operation not permitted" in route.stderr, route
    # resolv.conf is the drone's to change, but DNS goes only to the resolvers the fence found at start.
    in_drone(box, "fen", f"echo 'nameserver {nets['lan']}' | sudo -n tee /etc/resolv.conf")
    assert not reaches(box, "fen", f"http://{nets['lan']}:53/")
    assert not reaches(box, "fen", f"http://{nets['lan']}:8080/")
    assert not reaches(box, "fen", HOST)
    # Who owns the drone's network namespace (NS_GET_USERNS): the drone's own user namespace, a child
    # of Podman's. So what keeps its root out is the capability it lacks, checked next.
    pid = box.sh("podman inspect -f '{{.State.Pid}}' drone-fen").stdout.strip()
    script = (
        "import fcntl, os, sys; p = sys.argv[1]; owner = fcntl.ioctl(os.open(f'/proc/{p}/ns/net', os.O_RDONLY), 0xB701); "
        "print(os.fstat(owner).st_ino, os.stat(f'/proc/{p}/ns/user').st_ino, os.stat('/proc/self/ns/user').st_ino)"
    )
    owner, drone_userns, podman_userns = box.sh(f"podman unshare python3 -c {shlex.quote(script)} {pid}").stdout.split()
    assert owner == drone_userns != podman_userns
    # No NET_ADMIN in the drone's bounding set, while devbox (the user, through Podman's user namespace) holds it.
    assert int(in_drone(box, "fen", "grep CapBnd /proc/self/status").stdout.split()[1], 16) & (1 << 12) == 0
    listed = box.sh(f"podman unshare nsenter --net={netns_of(box, 'fen')} /usr/sbin/nft list table inet devbox_fence")
    assert "10.0.0.0/8" in listed.stdout


def test_dns_goes_to_the_resolvers_podman_gives_the_drone(box: Devbox) -> None:
    """Checked in the rules only: a query would leave for the host's real resolver (network rule)."""
    listed = box.sh(
        f"podman unshare nsenter --net={netns_of(box, 'fen')} /usr/sbin/nft list set inet devbox_fence dns4"
    )
    assert "169.254.1.1" in listed.stdout  # pasta's forwarder, the drone's first nameserver
    first = in_drone(box, "opn", "grep -m1 ^nameserver /etc/resolv.conf").stdout.split()[1]
    assert first == "169.254.1.1"


def blocked_events(box: Devbox, drone: str) -> list[dict[str, str]]:
    out = box.sh(f"journalctl --user DEVBOX_EVENT=egress-blocked DEVBOX_DRONE={drone} -o json --no-pager").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_blocked_attempts_are_counted_and_recorded(box: Devbox, nets) -> None:
    assert not reaches(box, "alw", f"http://{nets['lan']}:8081/")
    listed = box.sh(
        f"podman unshare nsenter --net={netns_of(box, 'alw')} /usr/sbin/nft list chain inet devbox_fence blocked"
    )
    assert "counter packets 0 " not in listed.stdout, listed.stdout

    def recorded() -> bool:
        return any(
            e.get("DEVBOX_DESTINATION") == nets["lan"]
            and e.get("DEVBOX_PORT") == "8081"
            and e.get("DEVBOX_PROTOCOL") == "tcp"
            for e in blocked_events(box, "alw")
        )

    wait_for(recorded, 20, "the egress-blocked event in the journal")
    assert not any(e.get("DEVBOX_DESTINATION", "").startswith("ff02:") for e in blocked_events(box, "alw"))
    # devbox audit lists it: the watcher runs in the drone's service (Podman starts the hook there),
    # and from that unit the audit takes only the watcher's events.
    timeline = box.json("audit", "alw")["events"]
    seen = [
        e
        for e in timeline
        if e["event"] == "egress-blocked"
        and (e["details"].get("destination"), e["details"].get("port")) == (nets["lan"], "8081")
    ]
    assert seen and seen[0]["source"] == "devbox" and seen[0]["unit"] == "drone-alw.service", timeline


def test_changing_the_policy_keeps_the_home(box: Devbox, nets) -> None:
    in_drone(box, "opn", "echo kept > ~/egress-kept")
    changed = box.json("egress", "opn", f"allow:host.containers.internal:{HOST_PORT}")
    assert changed == {
        "name": "opn",
        "before": "open",
        "egress": f"allow:host.containers.internal:{HOST_PORT}",
        "restarted": True,
    }
    wait_for(lambda: box.is_active("drone-opn.service") == "active", 60, "drone opn again")
    assert in_drone(box, "opn", "cat ~/egress-kept").stdout == "kept\n"
    assert box.json("status", "opn")["egress"] == f"allow:host.containers.internal:{HOST_PORT}"
    assert reaches(box, "opn", HOST)  # a name, from the drone's hosts
    assert not reaches(box, "opn", f"http://{nets['inet']}:8080/")


def test_a_drone_without_its_hook_file_does_not_start(box: Devbox) -> None:
    hook = "~/.local/share/devbox/drones/fen/hooks.d/devbox-fence.json"
    box.sh(f"mv {hook} {hook}.away")
    try:
        with contextlib.suppress(Exception):
            box.run("restart", "fen", check=False)
        assert box.is_active("drone-fen.service") != "active"
        assert not box.container_exists("drone-fen")
    finally:
        box.sh(f"mv {hook}.away {hook}")
