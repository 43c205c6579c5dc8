"""The drone lock, crash safety and reboots in the real machine: two concurrent creates of one name,
NeedDaemonReload after create/stop/start, `kill -9` of a create half-way, and a reboot of the machine
with a running, a stopped and a never-started drone."""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import _sh
from tests.e2e.helpers import PLAIN_CONFIG, TEST_IMAGE, Devbox, wait_for, write_config


@pytest.fixture(scope="module")
def box(machine) -> Iterator[Devbox]:
    write_config(machine)
    yield Devbox(machine, "pystemd")


def nothing_of(box: Devbox, name: str) -> dict[str, str]:
    """Whatever of drone NAME is still there (empty: nothing)."""
    left = {
        "files": box.sh(
            f"find ~/.config/containers/systemd ~/.config/systemd/user ~/.local/share/devbox/drones "
            f"~/.local/state/devbox/ssh -name '*{name}*' 2>/dev/null; "
            "find ~/.config ~/.local -name '*.tmp' 2>/dev/null",
            check=False,
        ).stdout.strip(),
        "units": box.sh(f"systemctl --user list-units --all --no-legend 'drone-{name}*'").stdout.strip(),
        "container": box.sh(f"podman ps -a --format '{{{{.Names}}}}' --filter name=drone-{name}").stdout.strip(),
        "volume": box.sh(f"podman volume ls -q --filter name=drone-{name}-home").stdout.strip(),
    }
    return {k: v for k, v in left.items() if v}


def test_two_concurrent_creates_of_one_name_make_one_drone(box: Devbox) -> None:
    out = box.sh(
        "for i in 1 2; do (DEVBOX_SYSTEMD=pystemd devbox create twin >/dev/null 2>~/twin.$i.err; echo $? >~/twin.$i.rc) & done; "
        "wait; cat ~/twin.1.rc ~/twin.2.rc; cat ~/twin.1.err ~/twin.2.err",
        timeout=300,
    ).stdout.split("\n")
    try:
        assert sorted(out[:2]) == ["0", "6"], out
        assert "devbox: drone twin exists already" in "\n".join(out[2:])
        assert box.is_active("drone-twin.service") == "active"
        assert box.sh("ls ~/.config/containers/systemd | grep -c '^drone-twin'").stdout.strip() == "2"  # file + .d
    finally:
        box.run("destroy", "twin", "--yes", check=False)
    assert nothing_of(box, "twin") == {}


def need_reload(box: Devbox, name: str) -> dict[str, str]:
    units = (f"drone-{name}.service", f"drone-{name}-creds.socket", f"drone-{name}-creds.service")
    return {unit: box.unit_property(unit, "NeedDaemonReload") for unit in units}


def test_create_stop_and_start_leave_no_daemon_reload_pending(box: Devbox) -> None:
    box.run("cleanup", "--uninstall", check=False)  # so that create enables the timer, as a first drone's does
    box.run("create", "fresh")
    try:
        no = {u: "no" for u in need_reload(box, "fresh")}
        assert need_reload(box, "fresh") == no, "after create"
        assert "changed on disk" not in box.sh("systemctl --user status drone-fresh.service", check=False).stdout
        box.run("stop", "fresh")
        assert need_reload(box, "fresh") == no, "after stop"
        box.run("start", "fresh")
        assert need_reload(box, "fresh") == no, "after start"
    finally:
        box.run("destroy", "fresh", "--yes", check=False)


KILL_WHEN = {
    "the unit files are written": "test -e ~/.config/containers/systemd/drone-k9.container",
    "the first start runs": "systemctl --user show -p ActiveState --value drone-k9.service | grep -qx 'activating\\|active'",
}


@pytest.mark.parametrize("when", list(KILL_WHEN))
def test_a_create_killed_half_way_is_cleaned_up_by_one_destroy(box: Devbox, when: str) -> None:
    condition = KILL_WHEN[when]
    script = (
        "DEVBOX_SYSTEMD=pystemd devbox create k9 --new-ssh-key >/dev/null 2>&1 & pid=$!; "
        f"for i in $(seq 3000); do if {condition}; then kill -9 $pid; echo killed; break; fi; sleep 0.01; done; "
        "wait $pid; echo rc=$?"
    )
    began = time.monotonic()
    out = box.sh(script, timeout=120).stdout
    print(f"create killed when {when} after {time.monotonic() - began:.1f} s: {out.split()}")
    assert out.split() == ["killed", "rc=137"], out
    destroyed = box.run("destroy", "k9", "--yes", check=False)
    assert destroyed.returncode == 0, destroyed.stderr
    assert nothing_of(box, "k9") == {}
    box.run("create", "k9", "--no-start")  # the name is free again
    box.run("destroy", "k9", "--yes")


# -- a reboot ---------------------------------------------------------------------------------------------------


def in_volume(box: Devbox, name: str, command: str, check: bool = True):
    """COMMAND with drone NAME's home volume at /h, in a throwaway container (the drone may be stopped)."""
    return box.sh(
        f"podman run --rm --pull=never -v drone-{name}-home:/h {TEST_IMAGE} sh -c {shlex.quote(command)}", check=check
    )


def start_githost(box: Devbox, git_port: str = "0") -> dict[str, str]:
    box.sh("rm -f ~/githost/state/ports.json")
    box.sh(
        f"GITHOST_GIT_PORT={git_port} nohup /opt/devbox-venv/bin/python ~/githost/githost.py ~/githost/state "
        "> ~/githost/log 2>&1 &"
    )
    wait_for(lambda: box.sh("test -s ~/githost/state/ports.json", check=False).returncode == 0, 60, "the fake GitHub")
    ports = json.loads(box.sh("cat ~/githost/state/ports.json").stdout)
    git_url = f"http://host.containers.internal:{ports['git_port']}"
    write_config(
        box.machine,
        PLAIN_CONFIG + f'\n[github]\napp_id = "12345"\nprivate_key = "file:/home/dev/githost/state/app.pem"\n'
        f'api_url = "{ports["api"]}"\ngit_url = "{git_url}"\n',
    )
    return {"git_url": git_url, "git_port": str(ports["git_port"])}


REBOOT_DRONES = ("rb-run", "rb-stop", "rb-new")


def test_after_a_reboot_running_drones_come_back_stopped_ones_stay_stopped_and_homes_are_whole(
    machine, githost, box: Devbox
) -> None:
    times: dict[str, float] = {}
    try:
        box.run("create", "rb-run", "--repo", "acme/demo")
        box.run("create", "rb-stop")
        box.run("create", "rb-new", "--no-start")
        for name in ("rb-run", "rb-stop"):
            box.sh(f"podman exec drone-{name} sh -c 'echo kept-{name} > ~/kept.txt && sync'")
        box.run("stop", "rb-stop")
        in_volume(box, "rb-new", "echo kept-rb-new > /h/kept.txt && sync")
        git_port = githost["git_url"].rsplit(":", 1)[1]

        began = time.monotonic()
        rebooted = _sh("reboot", timeout=600)
        times["reboot"] = time.monotonic() - began
        print(rebooted.stderr)
        assert rebooted.returncode == 0, rebooted.stderr

        began = time.monotonic()
        wait_for(lambda: box.is_active("drone-rb-run.service") == "active", 180, "drone rb-run back after the reboot")
        wait_for(lambda: box.sh("podman exec drone-rb-run true", check=False).returncode == 0, 60, "rb-run's container")
        times["running drone back"] = time.monotonic() - began
        states = {d["name"]: d["state"] for d in box.json("list")}
        assert {name: states.get(name) for name in REBOOT_DRONES} == {
            "rb-run": "running",
            "rb-stop": "stopped",
            "rb-new": "stopped",
        }
        assert box.is_active("drone-rb-stop.service") == "inactive"
        assert box.is_active("drone-rb-new.service") == "inactive"
        assert box.sh("podman exec drone-rb-run cat ~/kept.txt").stdout.strip() == "kept-rb-run"
        for name in ("rb-stop", "rb-new"):
            assert in_volume(box, name, "cat /h/kept.txt").stdout.strip() == f"kept-{name}"

        began = time.monotonic()
        host = start_githost(box, git_port)  # its process did not survive the reboot: the same git port again
        listed = box.sh(
            f"podman exec drone-rb-run git ls-remote {host['git_url']}/acme/demo.git </dev/null", timeout=60
        )
        assert "refs/heads/main" in listed.stdout
        times["git through the broker"] = time.monotonic() - began
    finally:
        print("timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()))
        for name in REBOOT_DRONES:
            box.run("destroy", name, "--yes", check=False)
