"""mosh and sessions that outlive the connection, in the real machine.

The drone runs the default image, built here by `devbox image build` (tmux and mosh from Debian).
The machine's own mosh client and tmux (installed from Debian's mirror by the fixture) play the
user: each client runs in a detached tmux session of the machine, whose screen the test reads.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator

import pytest

from tests.e2e.helpers import Devbox, wait_for, write_config

DRONE_IMAGE = "localhost/devbox-drone:latest"
DRONE = "sess"
# Busy on one CPU, a line of progress now and then, until ~/stop-now appears.
BUSY = (
    "i=0; while [ ! -e ~/stop-now ]; do i=$((i+1)); [ $((i % 100000)) -eq 0 ] && echo progress-$i; done; "
    "echo finished-$i"
)


def in_drone(box: Devbox, command: str, check: bool = True):
    return box.sh(f"podman exec drone-{DRONE} bash -c {shlex.quote(command)} </dev/null", check=check, timeout=60)


def screen(box: Devbox, client: str) -> str:
    """What the machine's tmux session CLIENT shows (a devbox client runs in it)."""
    return box.sh(f"tmux capture-pane -p -t {client} 2>/dev/null; true").stdout


def open_client(box: Devbox, client: str, command: str) -> None:
    box.sh(f"tmux kill-session -t {client} 2>/dev/null; true")
    box.sh(f"tmux new-session -d -s {client} -x 160 -y 40 {shlex.quote('TERM=screen ' + command + '; sleep 600')}")


def client_pid(box: Devbox, pattern: str) -> str:
    """The pid of the machine's process whose command line starts with PATTERN (one, or fail)."""
    pids = box.sh(f"pgrep -u dev -f -- {shlex.quote('^' + pattern)}", check=False).stdout.split()
    assert len(pids) == 1, pids
    return pids[0]


def session(box: Devbox, name: str) -> dict | None:
    return next((s for s in box.json("sessions", DRONE) if s["name"] == name), None)


def cleanup_entry(box: Devbox) -> dict:
    (drone,) = [d for d in box.json("cleanup")["drones"] if d["name"] == DRONE]
    return drone


def session_signal(drone: dict) -> dict:
    (signal,) = [s for s in drone["signals"] if s["kind"] == "session"]
    return signal


# The machine's mosh client and tmux: installed here, not in machine.sh's package list, so that the
# cached machine root file system stays the one every other test uses.
CLIENTS = (
    "command -v mosh >/dev/null && command -v tmux >/dev/null || "
    "{ apt-get -q -o Acquire::Retries=3 update && DEBIAN_FRONTEND=noninteractive "
    "apt-get -q -o Acquire::Retries=3 install -y --no-install-recommends mosh tmux; }"
)


@pytest.fixture(scope="module")
def box(machine) -> Iterator[Devbox]:
    machine.root(CLIENTS, timeout=600)
    devbox = Devbox(machine, "systemctl")
    devbox.run("image", "build", "--base", "localhost/devbox-base:trixie", timeout=1200)
    devbox.sh("test -f ~/.ssh/id_ed25519 || ssh-keygen -q -t ed25519 -N '' -f ~/.ssh/id_ed25519")
    write_config(machine, f'[drone]\nimage = "{DRONE_IMAGE}"\n')
    try:
        devbox.run("create", DRONE, "--with", "mosh", "--idle-stop", "3s")
        port = devbox.json("status", DRONE)["local_ssh"].split(":")[1]
        probe = f"ssh-keyscan -p {port} -T 2 127.0.0.1 2>/dev/null | grep -q ssh-ed25519"
        wait_for(lambda: devbox.sh(probe, check=False).returncode == 0, 90, "the drone's sshd")
        yield devbox
    finally:
        devbox.sh("tmux kill-server 2>/dev/null; true")
        devbox.run("destroy", DRONE, "--yes", check=False)
        write_config(machine)


def test_a_real_mosh_client_runs_a_command_in_the_drone(box: Devbox) -> None:
    status = box.json("status", DRONE)
    assert status["with"] == ["mosh"]
    listening = box.sh("ss -Hunl 'sport >= :60001 and sport <= :60004'").stdout.split("\n")
    assert sorted(line.split()[3] for line in listening if line) == [f"127.0.0.1:{p}" for p in range(60001, 60005)]
    assert in_drone(box, "devbox-drone-init status").stdout.splitlines()[-1] == "mosh=available"

    marker = "MOSH-OK-$(cat /etc/hostname)-$(id -un)"
    open_client(box, "moshc", f"devbox mosh {DRONE} -- sh -c {shlex.quote(f'echo {marker}; sleep 60')}")
    try:
        wait_for(lambda: f"MOSH-OK-{DRONE}-dev" in screen(box, "moshc"), 60, "the command's output on mosh's screen")
    except AssertionError:
        print(screen(box, "moshc"))
        raise
    # mosh-server was started over SSH, as the drone user, and serves from the drone's own range
    servers = in_drone(box, "ps -o user=,args= -C mosh-server").stdout
    assert servers.split()[0] == "dev" and "-p 60001:60004" in servers, servers
    box.sh("tmux kill-session -t moshc")

    # attach --mosh: the tmux session through mosh, its client the one mosh-server runs
    open_client(box, "moshatt", f"devbox attach {DRONE} viamosh --mosh")
    wait_for(lambda: (session(box, "viamosh") or {}).get("attached") == 1, 60, "a client in session viamosh")
    servers = in_drone(box, "ps -o args= -C mosh-server").stdout
    assert "-- tmux new-session -A -s viamosh" in servers, servers
    box.sh("tmux kill-session -t moshatt")
    in_drone(box, "tmux kill-session -t viamosh")


def test_a_session_outlives_its_ssh_client_and_the_cleanup_sees_it(box: Devbox) -> None:
    open_client(box, "att1", f"devbox attach {DRONE} work")
    wait_for(lambda: in_drone(box, "tmux has-session -t work", check=False).returncode == 0, 60, "tmux session work")
    in_drone(box, f"tmux send-keys -t work {shlex.quote(BUSY)} Enter")
    pane = "tmux capture-pane -p -t work"
    wait_for(lambda: "progress-" in in_drone(box, pane).stdout, 60, "the command's progress in the session")
    work = session(box, "work")
    assert work and work["attached"] == 1 and work["busy"] is True, work

    # The SSH client dies; the command runs on in the drone.
    ssh = client_pid(box, "ssh -t .* -- tmux new-session -A -s work")
    box.sh(f"kill -KILL {ssh}")
    wait_for(lambda: (session(box, "work") or {}).get("attached") == 0, 30, "the client to be gone")
    before = in_drone(box, "tmux capture-pane -p -S - -t work | grep -c progress-").stdout
    drone = cleanup_entry(box)
    assert drone["action"] == "keep" and session_signal(drone)["live"] is True, drone
    assert "work: busy" in session_signal(drone)["detail"]
    after = in_drone(box, "tmux capture-pane -p -S - -t work | grep -c progress-").stdout
    assert int(after) > int(before), "the command stopped with its client"

    # attach again: the same session, its output on the new client's screen
    open_client(box, "att2", f"devbox attach {DRONE} work")
    wait_for(lambda: "progress-" in screen(box, "att2"), 60, "the session's output on the second client")
    assert (session(box, "work") or {}).get("attached") == 1

    # The command ends, the client goes: an empty, quiet session keeps nothing.
    in_drone(box, "touch ~/stop-now")
    wait_for(lambda: "finished-" in in_drone(box, pane).stdout, 30, "the command to finish")
    box.sh(f"kill -KILL {client_pid(box, 'ssh -t .* -- tmux new-session -A -s work')}")
    wait_for(lambda: (session(box, "work") or {}).get("attached") == 0, 30, "the second client to be gone")
    quiet = session(box, "work")
    assert quiet and quiet["busy"] is False and quiet["windows"][0]["commands"] == ["bash"], quiet
    wait_for(lambda: cleanup_entry(box)["action"] == "stop", 60, "the drone to be due for a stop")
    signal = session_signal(cleanup_entry(box))
    assert signal["live"] is False and signal["detail"] == "1 quiet session, none attached", signal


def test_bench_measures_the_footprint_of_mosh(box: Devbox, capsys) -> None:
    """bench/bench.py's mosh part on the real image: the drone's RSS without and with a mosh client."""
    from pathlib import Path

    bench = Path(__file__).resolve().parents[2] / "bench" / "bench.py"
    box.machine.user("mkdir -p ~/bench && cat > ~/bench/bench.py", input=bench.read_text())
    out = box.sh(
        f"cd ~/bench && /opt/devbox-venv/bin/python bench.py --parts mosh --image {DRONE_IMAGE} --out ~/bench/mosh.json",
        timeout=600,
    )
    with capsys.disabled():
        print("\n" + out.stdout)
    figures = json.loads(box.sh("cat ~/bench/mosh.json").stdout)["mosh"]
    assert figures["mosh-server RSS KiB"] > 0, figures
    assert figures["drone RSS, a mosh client attached KiB"] > figures["drone RSS, no mosh client KiB"] > 0
    assert figures["with / without mosh"] > 1
    assert box.sh("podman ps -a --format '{{.Names}}' | grep -c bench- || true").stdout.strip() == "0"


def test_bench_measures_idle_drones_against_bare_containers(box: Devbox, capsys) -> None:
    """bench/bench.py's idle part on the real image, small: two bare containers, two drones, two with services."""
    from pathlib import Path

    bench = Path(__file__).resolve().parents[2] / "bench"
    for part in ("bench.py", "idlebench.py"):
        box.machine.user(f"mkdir -p ~/bench && cat > ~/bench/{part}", input=(bench / part).read_text())
    out = box.sh(
        f"cd ~/bench && /opt/devbox-venv/bin/python bench.py --parts idle --idle-count 2 --idle-with mosh "
        f"--image {DRONE_IMAGE} --out ~/bench/idle.json",
        timeout=900,
    )
    with capsys.disabled():
        print("\n" + out.stdout)
    idle = json.loads(box.sh("cat ~/bench/idle.json").stdout)["idle"]
    assert idle["count"] == 2 and idle["services"] == ["mosh"]
    bare, drone = idle["bare podman run"], idle["drone"]
    assert "sshd" in drone["RSS by command, per container KiB"]  # the drones' own processes were found
    assert "sshd" not in bare["RSS by command, per container KiB"]
    assert bare["RSS by command, per container KiB"]["conmon"] > 0 < drone["RSS by command, per container KiB"]["conmon"]
    assert drone["RSS per container KiB"] > bare["RSS per container KiB"] > 0
    assert idle["drone / bare RSS"] > 1
    assert box.sh("podman ps -a --format '{{.Names}}' | grep -c bench- || true").stdout.strip() == "0"
