"""The daily idle clean-up in the real machine: the timer, and devbox-cleanup.service acting on real drones.

Windows are made short with per-drone labels (--idle-stop 3s, --idle-destroy 3s); the tests wait on
`devbox cleanup --json` (a dry run) until a drone is due, then start the real service.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.e2e.helpers import Devbox, q, wait_for, write_config

# An established TCP connection to port 2222 inside the drone, as an SSH client's would be: a listener
# and a client, in the test image's perl (the kernel completes the handshake; no accept() needed).
LISTEN = (
    "perl -MIO::Socket::INET -e '$s = IO::Socket::INET->new(LocalPort=>2222,Listen=>5,ReuseAddr=>1) or die; sleep 3600'"
)
CONNECT = "perl -MIO::Socket::INET -e '$c = IO::Socket::INET->new(q(127.0.0.1:2222)) or die; sleep 3600'"


@pytest.fixture(scope="module", autouse=True)
def guest_config(machine) -> None:
    write_config(machine)


@pytest.fixture
def box(machine) -> Iterator[Devbox]:
    devbox = Devbox(machine, "systemctl")
    before = {d["name"] for d in devbox.json("list")}
    yield devbox
    for name in {d["name"] for d in devbox.json("list")} - before:
        devbox.run("destroy", name, "--yes", check=False)


def actions(box: Devbox) -> dict[str, str]:
    return {d["name"]: d["action"] for d in box.json("cleanup")["drones"]}


def run_service(box: Devbox) -> str:
    """Start devbox-cleanup.service (oneshot: returns when it is done) and return its report from the journal."""
    box.sh("journalctl --user --rotate >/dev/null 2>&1; true")
    since = box.sh("date +%s").stdout.strip()
    box.sh("systemctl --user start devbox-cleanup.service", timeout=600)
    result = box.sh(f"journalctl --user -u devbox-cleanup.service --since @{since} -o cat --no-pager")
    return result.stdout


@pytest.mark.parametrize("backend", ["pystemd", "systemctl"])
def test_the_timer_is_installed_and_enabled(machine, backend: str) -> None:
    box = Devbox(machine, backend)
    box.run("cleanup", "--uninstall")
    assert box.is_active("devbox-cleanup.timer") == "inactive"
    out = box.run("cleanup", "--install").stdout
    assert out.splitlines()[-1].startswith("devbox-cleanup.timer is enabled")
    assert box.sh("systemctl --user is-enabled devbox-cleanup.timer").stdout.strip() == "enabled"
    assert box.is_active("devbox-cleanup.timer") == "active"
    timers = json.loads(box.sh("systemctl --user list-timers --all --output=json --no-pager").stdout)
    (timer,) = [t for t in timers if t["unit"] == "devbox-cleanup.timer"]
    assert timer["activates"] == "devbox-cleanup.service"
    assert box.unit_property("devbox-cleanup.timer", "Persistent") == "yes"


def timer_enabled_and_active(box: Devbox) -> tuple[str, str]:
    enabled = box.sh("systemctl --user is-enabled devbox-cleanup.timer", check=False).stdout.strip()
    return enabled, box.is_active("devbox-cleanup.timer")


@pytest.mark.parametrize("start", [True, False])
@pytest.mark.parametrize("backend", ["pystemd", "systemctl"])
def test_first_drone_brings_the_timer_and_the_last_takes_it(machine, backend: str, start: bool) -> None:
    """The timer's files ride on the drone's daemon-reload; it must still end up enabled and running."""
    box = Devbox(machine, backend)
    assert box.json("list") == [], "another test left a drone behind"
    box.run("cleanup", "--uninstall")
    assert timer_enabled_and_active(box)[1] == "inactive"
    try:
        box.run("create", "timer-first", *([] if start else ["--no-start"]))
        assert timer_enabled_and_active(box) == ("enabled", "active")
        listed = box.sh("systemctl --user list-timers --no-pager devbox-cleanup.timer").stdout
        assert "devbox-cleanup.timer" in listed and "devbox-cleanup.service" in listed
    finally:
        box.run("destroy", "timer-first", "--yes", check=False)
    enabled, active = timer_enabled_and_active(box)
    assert active == "inactive" and enabled != "enabled"


def test_service_stops_the_idle_drone_and_leaves_an_ssh_session_running(box: Devbox) -> None:
    box.run("create", "idle-run", "--idle-stop", "3s")
    box.run("create", "ssh-run", "--idle-stop", "3s")
    box.sh(f"podman exec -d drone-ssh-run {LISTEN}")
    listening = q("podman", "exec", "drone-ssh-run", "grep", "-q", ":08AE 00000000:0000 0A", "/proc/net/tcp")
    wait_for(lambda: box.sh(listening, check=False).returncode == 0, 30, "the listener on port 2222")
    box.sh(f"podman exec -d drone-ssh-run {CONNECT}")
    wait_for(lambda: actions(box).get("idle-run") == "stop", 60, "idle-run to be due for a stop")
    assert actions(box)["ssh-run"] == "keep"

    report = run_service(box)
    assert box.is_active("drone-idle-run") == "inactive"
    assert box.is_active("drone-ssh-run") == "active"
    assert "idle-run (running): stop: idle" in report and "over idle_stop 3s" in report
    assert "ssh-run (running): keep: active: ssh: 1 open session" in report
    assert box.json("status", "idle-run")["autostart"] is False  # stays stopped across a reboot


def test_service_destroys_clean_work_and_exports_unpushed_work(box: Devbox) -> None:
    box.run("create", "clean-stop", "--idle-destroy", "3s")
    box.run("create", "dirty-stop", "--idle-destroy", "3s")
    box.sh(
        "podman exec drone-dirty-stop sh -c 'mkdir -p ~/ws && cd ~/ws && git init -q && echo work > notes.txt"
        " && git add notes.txt && git -c user.name=t -c user.email=t@example.org commit -qm wip'"
    )
    box.run("stop", "clean-stop")
    box.run("stop", "dirty-stop")
    wait_for(lambda: actions(box).get("clean-stop") == "destroy", 60, "clean-stop to be due")
    planned = {d["name"]: d for d in box.json("cleanup")["drones"]}
    assert planned["dirty-stop"]["action"] == "export-and-keep"
    assert planned["dirty-stop"]["work"]["repos"] == [
        {"path": "ws", "changes": 0, "stashes": 0, "unpushed": 1, "error": "", "has_remote": False}
    ]

    report = run_service(box)
    assert "clean-stop (stopped): destroy: idle" in report and "  done: destroyed" in report
    assert "dirty-stop (stopped): export-and-keep: idle" in report
    assert "  ~/ws: 1 unpushed commits" in report
    names = {d["name"] for d in box.json("list")}
    assert "clean-stop" not in names and not box.volume_exists("drone-clean-stop-home")
    assert "dirty-stop" in names and box.volume_exists("drone-dirty-stop-home")
    tarballs = box.sh("ls ~/.local/state/devbox/rescue/").stdout.split()
    (tarball,) = [t for t in tarballs if t.startswith("dirty-stop-")]
    assert f"home volume exported to /home/dev/.local/state/devbox/rescue/{tarball}" in report
    members = box.sh(f"tar -tf ~/.local/state/devbox/rescue/{tarball}").stdout.split()
    assert any(m.endswith("ws/notes.txt") for m in members)
