"""Every lifecycle command against real systemd 257 and rootless Podman 5 in the e2e machine,
once with each systemd backend (pystemd over D-Bus, and `systemctl --user`)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import pytest

from tests.e2e.helpers import TEST_IMAGE, Devbox, q, wait_for, write_config

BACKENDS = ["pystemd", "systemctl"]


@pytest.fixture(scope="module", autouse=True)
def guest_config(machine) -> None:
    write_config(machine)


@pytest.fixture(params=BACKENDS)
def devbox(machine, request) -> Iterator[Devbox]:
    box = Devbox(machine, request.param)
    before = set(json_names(box))
    yield box
    for name in set(json_names(box)) - before:  # whatever a failed test left behind
        box.run("destroy", name, "--yes", check=False)


def json_names(box: Devbox) -> list[str]:
    return [d["name"] for d in box.json("list")]


def name_for(box: Devbox, stem: str) -> str:
    return f"{stem}-{box.backend[:2]}"


def test_create_is_active_labelled_and_reported_alike(devbox: Devbox) -> None:
    name = name_for(devbox, "create")
    result = devbox.run("create", name, "--repo", "acme/demo")
    assert result.stdout.splitlines()[-1] == f"drone {name} is running: systemctl --user status drone-{name}"
    assert devbox.is_active(f"drone-{name}") == "active"

    (container,) = devbox.podman_json("ps", "--filter", f"name=^drone-{name}$")
    labels = container["Labels"]
    assert labels["io.devbox.drone"] == name and labels["io.devbox.repos"] == "acme/demo"
    assert {"io.devbox.version", "io.devbox.created", "io.devbox.syncthing"} <= set(labels)
    assert container["State"] == "running" and container["Image"] == TEST_IMAGE

    (listed,) = [d for d in devbox.json("list") if d["name"] == name]
    status = devbox.json("status", name)
    assert listed["state"] == status["state"] == "running"
    assert status["unit_state"] == devbox.unit_property(f"drone-{name}.service", "ActiveState")
    assert status["unit_sub_state"] == devbox.unit_property(f"drone-{name}.service", "SubState")
    assert status["restarts"] == int(devbox.unit_property(f"drone-{name}.service", "NRestarts"))
    assert status["container_state"] == container["State"]
    assert status["image"] == listed["image"] == TEST_IMAGE
    assert status["repos"] == listed["repos"] == ["acme/demo"]
    assert status["volume"] == f"drone-{name}-home" and status["volume_exists"] is True


def test_home_volume_survives_stop_and_start(devbox: Devbox) -> None:
    name = name_for(devbox, "home")
    devbox.run("create", name)
    devbox.sh(f"podman exec drone-{name} sh -c 'echo kept-$(id -u) > \"$HOME/keep.txt\"'")
    uid = devbox.sh("id -u").stdout.strip()

    assert devbox.run("stop", name).stdout == f"drone {name} is stopped\n"
    assert devbox.is_active(f"drone-{name}") == "inactive"
    assert not devbox.container_exists(f"drone-{name}")
    assert devbox.volume_exists(f"drone-{name}-home")
    assert devbox.json("status", name)["state"] == "stopped"

    devbox.run("start", name)
    assert devbox.is_active(f"drone-{name}") == "active"
    home_file = devbox.sh(f"podman exec drone-{name} sh -c 'cat \"$HOME/keep.txt\"'").stdout
    assert home_file == f"kept-{uid}\n"


def test_destroy_removes_everything_and_twice_is_a_clear_error(devbox: Devbox) -> None:
    name = name_for(devbox, "gone")
    devbox.run("create", name)
    devbox.run("destroy", name, "--yes")
    files = devbox.sh(
        f"ls ~/.config/containers/systemd ~/.config/systemd/user | grep -c -- 'drone-{name}' || true"
    ).stdout
    assert files.strip() == "0"
    assert devbox.unit_property(f"drone-{name}.service", "LoadState") == "not-found"  # daemon-reload done
    assert not devbox.container_exists(f"drone-{name}")
    assert not devbox.volume_exists(f"drone-{name}-home")

    again = devbox.run("destroy", name, "--yes", check=False)
    assert (again.returncode, again.stdout, again.stderr) == (5, "", f"devbox: no such drone: {name}\n")


def test_destroy_keep_volume_keeps_only_the_volume(devbox: Devbox) -> None:
    name = name_for(devbox, "keepvol")
    devbox.run("create", name)
    devbox.run("destroy", name, "--yes", "--keep-volume")
    assert devbox.unit_property(f"drone-{name}.service", "LoadState") == "not-found"
    assert not devbox.container_exists(f"drone-{name}")
    assert devbox.volume_exists(f"drone-{name}-home")
    devbox.sh(q("podman", "volume", "rm", f"drone-{name}-home"))


def test_user_manager_restart_brings_back_running_drones_only(devbox: Devbox, machine) -> None:
    up, down = name_for(devbox, "up"), name_for(devbox, "down")
    devbox.run("create", up)
    devbox.run("create", down)
    devbox.run("stop", down)
    uid = devbox.sh("id -u").stdout.strip()
    machine.root(f"systemctl restart user@{uid}.service", timeout=180)
    wait_for(
        lambda: devbox.sh("systemctl --user is-system-running", check=False).stdout.strip() in ("running", "degraded"),
        120,
        "the user manager to come back",
    )
    wait_for(lambda: devbox.is_active(f"drone-{up}") == "active", 120, f"drone-{up} to come back by itself")
    assert devbox.is_active(f"drone-{down}") == "inactive"
    assert devbox.json("status", up)["container_state"] == "running"


def test_a_container_that_fails_is_restarted_by_systemd(devbox: Devbox) -> None:
    name = name_for(devbox, "crash")
    devbox.run("create", name)
    service = f"drone-{name}.service"
    devbox.sh(f"podman kill --signal KILL drone-{name}")
    wait_for(lambda: int(devbox.unit_property(service, "NRestarts") or 0) >= 1, 60, f"{service} to be restarted")
    wait_for(lambda: devbox.is_active(service) == "active", 60, f"{service} to be active again")
    status = devbox.json("status", name)
    assert status["restarts"] >= 1 and status["state"] == "running"
    assert "restarts" in devbox.run("status", name).stdout


def test_create_with_a_missing_image_fails_clearly_and_leaves_nothing(devbox: Devbox) -> None:
    name = name_for(devbox, "noimage")
    result = devbox.run("create", name, "--image", "localhost/does-not-exist:1", check=False)
    assert result.returncode == 8
    assert result.stderr.startswith("devbox: image localhost/does-not-exist:1 is not present and could not be pulled")
    assert result.stderr.count("\n") == 1
    files = devbox.sh(
        f"ls ~/.config/containers/systemd ~/.config/systemd/user 2>/dev/null | grep -c -- 'drone-{name}' || true"
    )
    assert files.stdout.strip() == "0"
    assert devbox.unit_property(f"drone-{name}.service", "LoadState") == "not-found"


def test_env_values_reach_the_container_unchanged(devbox: Devbox) -> None:
    name = name_for(devbox, "env")
    hostile = "a \"quoted\" 'word' $HOME ${PATH} 100% %h \\back\\slash --privileged"
    devbox.run("create", name, "--env", f"HOSTILE={hostile}")
    seen = devbox.sh(f"podman exec drone-{name} printenv HOSTILE").stdout
    assert seen == hostile + "\n"
    inspect = devbox.podman_json("inspect", f"drone-{name}")[0]
    assert inspect["HostConfig"]["Privileged"] is False


def test_twenty_drones_one_podman_query(machine, capsys: pytest.CaptureFixture[str]) -> None:
    """Once, with the systemctl backend (every other test runs with both)."""
    devbox = Devbox(machine, "systemctl")
    names = [f"many{i:02d}" for i in range(20)]
    timings: dict[str, float] = {}
    try:
        started = time.monotonic()
        for name in names:
            devbox.run("create", name)
        timings["create x20"] = time.monotonic() - started

        started = time.monotonic()
        listed = devbox.json("list")
        timings["list"] = time.monotonic() - started
        assert {d["name"] for d in listed} >= set(names)
        assert all(d["state"] == "running" for d in listed if d["name"] in names)

        requests = count_podman_api_requests(devbox)
        assert requests.count("GET /containers/json") == 1, requests
        assert len(requests) <= 2, requests  # the list, and at most a ping or version

        started = time.monotonic()
        for name in names:
            devbox.run("destroy", name, "--yes")
        timings["destroy x20"] = time.monotonic() - started
    finally:
        for name in names:
            devbox.run("destroy", name, "--yes", check=False)
    with capsys.disabled():
        print("\n  twenty drones: " + ", ".join(f"{step} {seconds:.1f} s" for step, seconds in timings.items()))


PROXY = r"""
import socket, sys, threading
listen, target, log = sys.argv[1], sys.argv[2], sys.argv[3]
server = socket.socket(socket.AF_UNIX)
server.bind(listen)
server.listen()
METHODS = (b"GET", b"POST", b"PUT", b"DELETE", b"HEAD")
def pump(src, dst, record):
    while data := src.recv(65536):
        if record and data.split(b" ", 1)[0] in METHODS:
            with open(log, "a") as f:
                f.write(data.split(b"\r\n", 1)[0].decode() + "\n")
        dst.sendall(data)
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass
while True:
    client, _ = server.accept()
    upstream = socket.socket(socket.AF_UNIX)
    upstream.connect(target)
    threading.Thread(target=pump, args=(client, upstream, True), daemon=True).start()
    threading.Thread(target=pump, args=(upstream, client, False), daemon=True).start()
"""


def count_podman_api_requests(devbox: Devbox) -> list[str]:
    """Run `devbox list` through a logging proxy in front of the Podman API socket: METHOD PATH per request."""
    devbox.sh(f"cat > ~/api-proxy.py <<'EOF'\n{PROXY}\nEOF\nrm -f ~/api.sock ~/api.log")
    devbox.sh("nohup python3 ~/api-proxy.py ~/api.sock $XDG_RUNTIME_DIR/podman/podman.sock ~/api.log >/dev/null 2>&1 &")
    try:
        wait_for(lambda: devbox.sh("test -S ~/api.sock", check=False).returncode == 0, 20, "the API proxy socket")
        devbox.sh(f"CONTAINER_HOST=unix://$HOME/api.sock DEVBOX_SYSTEMD={devbox.backend} devbox list --json >/dev/null")
        lines = devbox.sh("cat ~/api.log").stdout.splitlines()
    finally:
        devbox.sh("pkill -f api-proxy.py; rm -f ~/api.sock", check=False)
    requests = []
    for line in lines:
        method, path = line.split(" ")[:2]
        requests.append(f"{method} {re.sub(r'^/v[0-9.]+/libpod', '', path.split('?')[0])}")
    return requests


def test_resource_limits_reach_the_podman_run_command(devbox: Devbox) -> None:
    name = name_for(devbox, "limits")
    devbox.run("create", name, "--cpus", "1.5", "--memory", "256m", "--no-start")
    generated = devbox.sh("/usr/libexec/podman/quadlet -dryrun -user 2>/dev/null").stdout
    block = generated.split(f"---drone-{name}.service---", 1)[1].split("\n---", 1)[0]
    exec_start = next(line for line in block.splitlines() if line.startswith("ExecStart="))
    assert "--cpus=1.5" in exec_start.split() and "--memory=256m" in exec_start.split()


def test_resource_limits_are_enforced_where_controllers_are_delegated(devbox: Devbox) -> None:
    uid = devbox.sh("id -u").stdout.strip()
    controllers = devbox.sh(
        f"cat /sys/fs/cgroup/user.slice/user-{uid}.slice/user@{uid}.service/cgroup.controllers", check=False
    ).stdout.split()
    missing = {"cpu", "memory"} - set(controllers)
    if missing:
        pytest.skip(f"cgroup controllers not delegated to the user manager here: {', '.join(sorted(missing))}")
    name = name_for(devbox, "enforced")
    devbox.run("create", name, "--memory", "256m")
    limit = devbox.sh(f"podman exec drone-{name} cat /sys/fs/cgroup/memory.max").stdout.strip()
    assert limit == str(256 * 1024 * 1024)


def test_doctor_inside_the_machine_has_no_failures(devbox: Devbox) -> None:
    result = devbox.run("doctor", "--json", check=False)
    checks = {c["check"]: c for c in json.loads(result.stdout)}
    failed = {k: v for k, v in checks.items() if v["status"] == "fail"}
    assert failed == {} and result.returncode == 0
    assert checks["podman"]["detail"].startswith("Podman 5.")
    assert checks["user manager"]["status"] == "ok"
