"""--with containers in the real machine: rootless Podman inside a rootless Podman drone (issue 19).

The drone image is the real one (`devbox image build` on the local Debian 13 base: Podman, docker
and docker compose from Debian). No registry is reachable here: the inner image is the machine's
own base image, saved on the host and loaded into the drone over SSH (`podman save | podman load`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from tests.e2e.helpers import Devbox, q, wait_for

DRONE_IMAGE = "localhost/devbox-drone:latest"
INNER_IMAGE = "localhost/devbox-base:trixie"
LAN_PORT = 8080  # a server in tests/e2e/testnets.py's private network, which a fenced drone may not reach

# nspawn blocks keyctl for everything in this machine (tests/e2e/machine.sh): the inner containers
# too. A later file than the init's own, as a user would override it.
E2E_CONF = "[containers]\nkeyring = false\n"

# A server and a client that reaches it by its service name; both come back with the drone.
COMPOSE = f"""services:
  server:
    image: {INNER_IMAGE}
    command: ["bash", "-c", "git init -q --bare /srv/repo.git && exec git daemon --export-all --base-path=/srv --reuseaddr --listen=0.0.0.0 --port=9418"]
    stop_signal: SIGKILL
    restart: always
  client:
    image: {INNER_IMAGE}
    command: ["bash", "-c", "while :; do git ls-remote git://server:9418/repo.git >/dev/null && echo reached-server; sleep 1; done"]
    stop_signal: SIGKILL
    restart: always
    depends_on: [server]
"""

CONTAINERFILE = f"""FROM {INNER_IMAGE}
RUN echo built-in-the-drone > /built
CMD ["cat", "/built"]
"""


@pytest.fixture(scope="module")
def box(machine) -> Iterator[Devbox]:
    devbox = Devbox(machine, "pystemd")
    if devbox.sh(q("podman", "image", "exists", DRONE_IMAGE), check=False).returncode != 0:
        devbox.run("image", "build", "--base", INNER_IMAGE, timeout=1200)
    devbox.sh("test -f ~/.ssh/id_ed25519 || ssh-keygen -q -t ed25519 -N '' -f ~/.ssh/id_ed25519")
    try:
        yield devbox
    finally:
        for name in ("inner", "plain"):
            devbox.run("destroy", name, "--yes", check=False)


def create(box: Devbox, name: str, *options: str) -> None:
    created = box.run("create", name, "--image", DRONE_IMAGE, *options)
    port = re.search(r"SSH on 127\.0\.0\.1:(\d+)", created.stdout)
    assert port, created.stdout
    wait_for_ssh(box, name)


def wait_for_ssh(box: Devbox, name: str) -> None:
    def answers() -> bool:
        return box.run("ssh", name, "--", "true", check=False, timeout=30).returncode == 0

    wait_for(answers, 120, f"SSH into {name}")


def ssh(box: Devbox, name: str, command: str, check: bool = True, timeout: float = 180, input: str | None = None):
    """COMMAND in an SSH session of drone NAME (the session's environment: DOCKER_HOST and the store)."""
    return box.run("ssh", name, "--", command, check=check, timeout=timeout, input=input)


def put(box: Devbox, name: str, path: str, text: str) -> None:
    ssh(box, name, f"mkdir -p $(dirname {path}) && cat > {path}", input=text)


def restart(box: Devbox, name: str) -> None:
    box.run("restart", name, timeout=300)
    wait_for_ssh(box, name)


def compose_states(box: Devbox) -> dict[str, str]:
    out = ssh(box, "inner", "cd ~/proj && docker compose ps --all --format json").stdout
    text = out.strip()  # one object a line (compose 2.21 on), or one array before
    rows = json.loads(text) if text.startswith("[") else [json.loads(line) for line in text.splitlines() if line]
    return {row["Service"]: row["State"] for row in rows}


def client_reached_the_server(box: Devbox) -> bool:
    logs = ssh(box, "inner", "cd ~/proj && docker compose logs --no-log-prefix --tail 3 client", check=False)
    return "reached-server" in logs.stdout


def test_podman_docker_compose_and_builds_run_in_the_drone_and_stay_across_a_restart(box: Devbox, nets) -> None:
    create(box, "inner", "--with", "containers")
    put(box, "inner", "~/.config/containers/containers.conf.d/90-e2e.conf", E2E_CONF)
    restart(box, "inner")  # the API socket's service reads the configuration when it starts
    env = ssh(box, "inner", "echo $DOCKER_HOST; devbox-drone-init status").stdout
    assert "unix:///tmp/devbox-run-1000/podman/podman.sock" in env and "containers=running" in env, env
    box.sh(f"podman save -q {INNER_IMAGE} | DEVBOX_SYSTEMD=pystemd devbox ssh inner -- podman load -q", timeout=300)

    ran = ssh(box, "inner", f"podman run --rm {INNER_IMAGE} bash -c 'echo podman-run; id -u'").stdout
    assert ran.split() == ["podman-run", "0"], ran
    ran = ssh(box, "inner", f"docker run --rm {INNER_IMAGE} echo docker-run").stdout  # through the socket
    assert ran.strip() == "docker-run", ran

    put(box, "inner", "~/build/Containerfile", CONTAINERFILE)
    ssh(
        box,
        "inner",
        "podman build -q -t localhost/built-podman ~/build && docker build -q -f ~/build/Containerfile -t localhost/built-docker ~/build",
    )
    for image in ("localhost/built-podman", "localhost/built-docker"):
        assert ssh(box, "inner", f"docker run --rm {image}").stdout.strip() == "built-in-the-drone"

    put(box, "inner", "~/proj/compose.yaml", COMPOSE)
    ssh(box, "inner", "cd ~/proj && docker compose up -d", timeout=300)
    wait_for(lambda: client_reached_the_server(box), 90, "the client to reach the server by its service name")

    # The idle clean-up sees the running inner containers as activity.
    report = box.json("cleanup")
    [drone] = [d for d in report["drones"] if d["name"] == "inner"]
    [signal] = [s for s in drone["signals"] if s["kind"] == "containers"]
    assert signal["live"] and signal["detail"] == "2 containers running inside", signal
    assert box.json("status", "inner")["with"] == ["containers"]

    restart(box, "inner")
    images = ssh(box, "inner", "podman images --format '{{.Repository}}:{{.Tag}}'").stdout.split()
    assert {f"{INNER_IMAGE}", "localhost/built-podman:latest", "localhost/built-docker:latest"} <= set(images)
    wait_for(lambda: compose_states(box) == {"server": "running", "client": "running"}, 90, "compose back up")
    wait_for(lambda: client_reached_the_server(box), 90, "the client to reach the server after the restart")

    # The drone's fence holds for its inner containers: their traffic leaves through the drone's network.
    # The address is a server in a network namespace of tests/e2e/testnets.py (a private range).
    assert box.json("status", "inner")["egress"] == "fenced"
    lan = f"{nets['lan']}/{LAN_PORT}"
    tried = ssh(box, "inner", f"podman run --rm {INNER_IMAGE} timeout 5 bash -c 'exec 3<>/dev/tcp/{lan}'", check=False)
    assert tried.returncode != 0

    def blocked() -> bool:
        out = box.sh("journalctl --user -o json --no-pager DEVBOX_EVENT=egress-blocked DEVBOX_DRONE=inner").stdout
        events = [json.loads(line) for line in out.splitlines() if line.strip()]
        return any((e.get("DEVBOX_DESTINATION"), e.get("DEVBOX_PORT")) == (nets["lan"], str(LAN_PORT)) for e in events)

    wait_for(blocked, 30, "the fence's egress-blocked event for the inner container's connection")

    assert box.volume_exists("drone-inner-containers")
    destroyed = box.run("destroy", "inner", "--yes").stdout
    assert "its containers' store" in destroyed, destroyed
    assert not box.volume_exists("drone-inner-containers")


def test_a_drone_without_containers_says_why_it_runs_none(box: Devbox) -> None:
    create(box, "plain")
    for client in ("podman", "docker"):
        refused = ssh(box, "plain", f"{client} run --rm {INNER_IMAGE} true", check=False)
        assert refused.returncode == 125, refused
        assert "made without --with containers" in refused.stderr and "--with containers" in refused.stderr
    assert not box.volume_exists("drone-plain-containers")
