"""A compose-based devcontainer.json as a drone, in the real machine (issue 19, part 2).

The fixture is tests/e2e/devcontainer/compose: the main service `app` is built from a Dockerfile
(FROM the machine's base image, a user `vscode`) and becomes the drone, with devbox's contract
layer and Podman (`--with containers` comes with it); `cache`, a git daemon, runs inside the drone
with its Podman and is reached by the name `cache`; `unused` is left out by runServices.

No registry is reachable here: the inner service's image is the machine's base image, loaded into
the drone over SSH (as tests/e2e/test_containers.py does). So the first start's `docker compose
up` fails (no image) and says so in `devbox status`; after the image is loaded, a restart brings
the service up, and every restart after that too.
"""

from __future__ import annotations

import base64
import io
import shlex
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import PLAIN_CONFIG, Devbox, wait_for, write_config

FIXTURE = Path(__file__).resolve().parent / "devcontainer" / "compose"
DIR = "/home/dev/dcc-e2e"
WS = f"{DIR}/compose"
DRONE = "dcc"
INNER_IMAGE = "localhost/devbox-base:trixie"
# nspawn blocks keyctl for everything in this machine: the inner containers too (test_containers.py).
E2E_CONF = "[containers]\nkeyring = false\n"


def put_fixture(machine, source: Path, name: str) -> None:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as tar:
        tar.add(source, arcname=name)
    machine.user(
        f"mkdir -p {DIR} && rm -rf {DIR}/{name} && base64 -d | tar -xz -C {DIR}",
        input=base64.b64encode(data.getvalue()).decode(),
    )


@pytest.fixture(scope="module")
def box(machine) -> Iterator[Devbox]:
    devbox = Devbox(machine, "pystemd")
    write_config(machine, PLAIN_CONFIG)
    put_fixture(machine, FIXTURE, "compose")
    try:
        yield devbox
    finally:
        devbox.run("destroy", DRONE, "--yes", check=False)
        machine.user(f"rm -rf {DIR}", check=False)


def ssh(box: Devbox, command: str, check: bool = True, timeout: float = 120, input: str | None = None):
    return box.run("ssh", DRONE, "--", "sh", "-c", shlex.quote(command), check=check, timeout=timeout, input=input)


def compose_outcome(box: Devbox) -> str:
    return ssh(box, "devbox-drone-init status | sed -n 's/^compose=//p'", check=False).stdout.strip()


def reaches_cache(box: Devbox) -> bool:
    return (
        ssh(box, 'git ls-remote "$CACHE_URL" >/dev/null 2>&1 && echo reached', check=False).stdout.strip() == "reached"
    )


def restart(box: Devbox) -> None:
    box.sh(f"systemctl --user restart drone-{DRONE}.service", timeout=300)
    wait_for(lambda: box.run("ssh", DRONE, "--", "true", check=False, timeout=30).returncode == 0, 120, "SSH")


def test_the_main_service_is_the_drone_and_reaches_the_inner_one_by_name(box: Devbox, machine) -> None:
    created = box.run("create", DRONE, "--path", WS, "--new-ssh-key", timeout=1500)
    assert "--with containers" in created.stdout + created.stderr, created
    wait_for(lambda: box.run("ssh", DRONE, "--", "true", check=False, timeout=30).returncode == 0, 120, "SSH")
    status = box.json("status", DRONE)
    assert status["with"] == ["containers"] and status["devcontainer"] == ".devcontainer/devcontainer.json"
    unit = box.sh(f"cat ~/.config/containers/systemd/drone-{DRONE}.container").stdout
    assert "AddHost=cache:127.0.0.1" in unit and "unused" not in unit, unit
    derived = box.sh(f"cat ~/.local/share/devbox/drones/{DRONE}/compose.yaml").stdout
    assert '"network_mode": "host"' in derived and '"cache"' in derived and "unused" not in derived

    # The main service's settings: its user, its environment (both files, interpolation), its volume.
    seen = ssh(
        box, 'id -un; echo "$CACHE_URL|$DEMO_DEFAULT|$FROM_OVERRIDE|$DEMO_CONTAINER_ENV"; ls -A /workspaces/compose'
    )
    lines = seen.stdout.splitlines()
    assert lines[:2] == ["vscode", "git://cache:9418/repo.git|from-the-default|yes|container value"], seen.stdout
    assert ".devcontainer" in lines[2:], seen.stdout
    assert ssh(box, "getent hosts cache").stdout.split()[0] == "127.0.0.1"

    # No registry here: the first `up` cannot get the inner image, and says so.
    wait_for(lambda: compose_outcome(box).startswith("failed:"), 180, "the first compose up to fail")
    assert box.json("status", DRONE)["compose_outcome"].startswith("failed: docker compose up exited")
    ssh(
        box,
        "mkdir -p ~/.config/containers/containers.conf.d && cat > ~/.config/containers/containers.conf.d/90-e2e.conf",
        input=E2E_CONF,
    )
    box.sh(f"podman save -q {INNER_IMAGE} | DEVBOX_SYSTEMD=pystemd devbox ssh {DRONE} -- podman load -q", timeout=300)

    restart(box)
    wait_for(lambda: compose_outcome(box) == "up: cache", 240, "compose up of the inner service")
    wait_for(lambda: reaches_cache(box), 60, "the main service to reach `cache` by name")
    assert box.json("status", DRONE)["compose_outcome"] == "up: cache"
    assert "compose       up: cache" in box.run("status", DRONE).stdout
    running = ssh(box, "podman ps --format '{{.Names}}'").stdout.split()
    assert running == ["devbox-cache-1"], running

    restart(box)  # it comes back with the drone
    wait_for(lambda: compose_outcome(box) == "up: cache", 240, "compose up after a restart")
    wait_for(lambda: reaches_cache(box), 60, "`cache` after the restart")
    hooks = ["postStart"] * 3
    wait_for(lambda: ssh(box, "cat ~/hooks.log").stdout.splitlines() == hooks, 60, "postStart at every start")

    # A changed inner service: rebuild writes the new compose file and restarts the drone. (The compose
    # files are in the main service's build context here, so its image is built again too.)
    override = f"{WS}/.devcontainer/compose.override.yaml"
    machine.user(f"cat >> {override}", input="  cache:\n    environment:\n      MARK: rebuilt\n")
    rebuilt = box.json("rebuild", DRONE)
    assert rebuilt["restarted"] is True, rebuilt
    wait_for(lambda: compose_outcome(box) == "up: cache", 240, "compose up after the rebuild")
    env = ssh(box, "podman inspect devbox-cache-1 --format '{{range .Config.Env}}{{println .}}{{end}}'").stdout
    assert "MARK=rebuilt" in env.split(), env
    wait_for(lambda: reaches_cache(box), 60, "`cache` after the rebuild")

    destroyed = box.run("destroy", DRONE, "--yes").stdout
    assert "its containers' store" in destroyed, destroyed
    assert not box.volume_exists(f"drone-{DRONE}-containers")
    assert not box.container_exists(f"drone-{DRONE}")


HOSTILE = {
    ".devcontainer/devcontainer.json": '{\n  "dockerComposeFile": "compose.yaml",\n  "service": "app"\n}\n',
    ".devcontainer/compose.yaml": "services:\n  app:\n    image: localhost/devbox-base:trixie\n"
    "  db:\n    image: localhost/devbox-base:trixie\n    volumes:\n      - /etc:/host-etc\n",
}


def test_a_hostile_compose_file_is_refused_in_one_line(box: Devbox, machine) -> None:
    for path, text in HOSTILE.items():
        machine.user(f"mkdir -p $(dirname {DIR}/hostile/{path}) && cat > {DIR}/hostile/{path}", input=text)
    refused = box.run("create", "dcc-hostile", "--path", f"{DIR}/hostile", check=False)
    assert refused.returncode == 3, refused
    [line] = refused.stderr.strip().splitlines()
    assert f"{DIR}/hostile/.devcontainer/compose.yaml:7:" in line and "only named volumes" in line, line
    assert not box.container_exists("drone-dcc-hostile")
    assert box.run("status", "dcc-hostile", check=False).returncode != 0
