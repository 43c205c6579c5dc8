"""A repository's devcontainer.json as a drone, in the real machine: the Dev Containers CLI 0.89 on
rootless Podman (machine.sh copies a host-side npm install in; node is the guest's nodejs), devbox's
contract layer, the init's lifecycle hooks, and the cache (a second build never calls the CLI).

The fixture is tests/e2e/devcontainer/demo: a Dockerfile FROM the machine's base image with a user
`vscode` (uid 1500: not the host user's name or uid), a local feature that installs `demo-marker`,
containerEnv, remoteEnv, hooks that record themselves, forwardPorts, and an initializeCommand that
would leave a file on the host if anything ran it.

Two parts: the builder and the init, which run today (CliBuilder.build from the guest's venv, the
image run the way Quadlet runs a drone), and `devbox create --path` end to end, which needs the
configuration side (discover, read, mapping) and switches itself on when `devbox create --help`
knows about devcontainers.
"""

from __future__ import annotations

import base64
import io
import json
import shlex
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import PLAIN_CONFIG, Devbox, wait_for, write_config

FIXTURE = Path(__file__).resolve().parent / "devcontainer" / "demo"
DIR = "/home/dev/dc-e2e"
WS = f"{DIR}/demo"
CALLS = f"{DIR}/cli-calls"
INIT_MARKER = "/var/tmp/devbox-e2e-initialize-ran"
DRONE = "dcb-e2e"
PORT = 2298
SSH = "ssh -F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=error -o BatchMode=yes"
# The builder from the guest's venv, on the fixture, with a stand-in CLI on the way that records calls.
BUILD = """
import dataclasses, json, sys
from pathlib import Path
from devbox.devcontainer.build import CliBuilder
from devbox.devcontainer.model import DevcontainerSource
ws = Path(sys.argv[1])
source = DevcontainerSource(ws, ws / ".devcontainer" / "devcontainer.json", ws / ".devcontainer")
builder = CliBuilder(Path.home() / ".local/state/devbox/builds", cli=sys.argv[2])
built = builder.build(source, lambda step: print("progress:", step, file=sys.stderr))
print(json.dumps(dataclasses.asdict(built)))
"""
RECORDING_CLI = f"""#!/bin/sh
echo "$*" >>{CALLS}
exec /usr/local/bin/devcontainer "$@"
"""


def put_fixture(machine: Any) -> None:
    """The fixture into ~dev/dc-e2e/demo, modes kept, with the recording CLI beside it."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as tar:
        tar.add(FIXTURE, arcname="demo")
    machine.user(
        f"rm -rf {DIR} && mkdir -p {DIR}/bin && base64 -d | tar -xz -C {DIR}",
        input=base64.b64encode(data.getvalue()).decode(),
    )
    machine.user(f"cat > {DIR}/bin/devcontainer && chmod 0755 {DIR}/bin/devcontainer", input=RECORDING_CLI)


def build(machine: Any) -> dict[str, Any]:
    r = machine.user(f"/opt/devbox-venv/bin/python - {WS} {DIR}/bin/devcontainer", input=BUILD, timeout=900)
    return json.loads(r.stdout.strip().splitlines()[-1])


def cli_calls(machine: Any) -> list[str]:
    return machine.user(f"cat {CALLS} 2>/dev/null", check=False).stdout.splitlines()


# --- the builder and the init (run today) ---------------------------------------------------------


@pytest.fixture(scope="module")
def built(machine) -> Iterator[dict[str, Any]]:
    machine.root(f"rm -f {INIT_MARKER}")
    put_fixture(machine)
    yield build(machine)
    machine.user(f"podman rm -f -t 0 {DRONE}; podman volume rm -f {DRONE}-home; rm -rf {DIR}", check=False)


def test_the_builder_runs_the_cli_and_reads_the_remote_user(machine, built):
    assert built["tag"].startswith("localhost/devbox-dc-demo:")
    assert (built["remote_user"], built["remote_uid"], built["remote_gid"], built["remote_home"]) == (
        "vscode",
        1500,
        1500,
        "/home/vscode",
    )
    assert any(entry.get("remoteUser") == "vscode" for entry in built["metadata"])
    assert any("marker" in str(entry.get("id", "")) for entry in built["metadata"])
    [call] = cli_calls(machine)
    assert call.startswith(f"build --docker-path podman --workspace-folder {WS} --config {WS}/.devcontainer/")
    # Nothing from the repository ran on the host: the CLI's build does not run initializeCommand.
    assert machine.root(f"test -e {INIT_MARKER}", check=False).returncode == 1


def test_the_image_has_the_feature_and_devbox_s_contract(machine, built):
    r = machine.user(
        f"podman run --rm --pull=never --entrypoint sh {built['tag']} -c "
        + shlex.quote("demo-marker; for c in sshd jq git curl sudo devbox-drone-init; do command -v $c; done")
    )
    lines = r.stdout.splitlines()
    assert lines[0] == "demo-marker: from-the-feature"
    assert [line.rsplit("/", 1)[1] for line in lines[1:]] == ["sshd", "jq", "git", "curl", "sudo", "devbox-drone-init"]
    inspect = json.loads(machine.user(f"podman image inspect --format json {built['tag']}").stdout)[0]["Config"]
    assert inspect["Cmd"] == ["/usr/local/bin/devbox-drone-init"] and not inspect.get("Entrypoint")
    assert inspect["User"] == "1500:1500"


def run_drone(machine: Any, tag: str) -> None:
    """The image the way Quadlet runs a drone built from it: keep-id onto the remote user, an init,
    the home volume, the hooks file and the authorized keys read-only."""
    machine.user(
        f"""set -e
        podman rm -f -t 0 {DRONE} >/dev/null 2>&1 || true
        podman run -d --name {DRONE} --init --userns=keep-id:uid=1500,gid=1500 -v {DRONE}-home:/home/vscode \
          -v {WS}:{WS} -w {WS} -e DEVBOX_DRONE={DRONE} -p 127.0.0.1:{PORT}:2222 \
          -v {DIR}/hooks.json:/etc/devbox/devcontainer.json:ro -v {DIR}/key.pub:/etc/devbox/authorized_keys:ro \
          {tag} >/dev/null"""
    )

    def settled() -> bool:
        logs = machine.user(f"podman logs {DRONE} 2>&1", check=False).stdout
        running = machine.user(f"podman container inspect -f '{{{{.State.Running}}}}' {DRONE}", check=False)
        assert running.stdout.strip() == "true", f"the drone exited:\n{logs}"
        return "devcontainer: done:" in logs

    wait_for(settled, 60, "the hooks' outcome")


def test_the_drone_runs_the_hooks_as_the_remote_user_and_ssh_works(machine, built):
    hooks = {
        "remoteUser": "vscode",
        "workspaceFolder": WS,
        "remoteEnv": {"DEMO_REMOTE_ENV": "remote value"},
        "onCreateCommand": None,
        "updateContentCommand": None,
        "postCreateCommand": 'echo "postCreate $(id -un) $PWD $DEMO_REMOTE_ENV" >> ~/hooks.log',
        "postStartCommand": ["sh", "-c", "echo postStart >> ~/hooks.log"],
    }
    machine.user(f"cat > {DIR}/hooks.json", input=json.dumps(hooks))
    machine.user(f"rm -f {DIR}/key* && ssh-keygen -q -t ed25519 -N '' -f {DIR}/key")
    machine.user(f"podman volume rm -f {DRONE}-home", check=False)
    for _ in range(3):  # postCreate once across restarts, postStart every time
        run_drone(machine, built["tag"])
    r = machine.user(f"{SSH} -i {DIR}/key -p {PORT} vscode@127.0.0.1 'id -un; id -u; cat ~/hooks.log; demo-marker'")
    assert r.stdout.splitlines() == [
        "vscode",
        "1500",
        f"postCreate vscode {WS} remote value",
        "postStart",
        "postStart",
        "postStart",
        "demo-marker: from-the-feature",
    ]
    # The workspace both ways: the drone's user is the host user (keep-id).
    machine.user(f"{SSH} -i {DIR}/key -p {PORT} vscode@127.0.0.1 'echo from-drone > {WS}/drone.txt'")
    assert machine.user(f"stat -c '%U %u' {WS}/drone.txt").stdout.split() == ["dev", "1000"]
    outcome = machine.user(f"podman exec {DRONE} cat /home/vscode/.local/state/devbox-drone/devcontainer/outcome")
    assert outcome.stdout == "done: postStartCommand\n"


def test_a_second_build_from_the_same_config_does_not_call_the_cli(machine, built):
    again = build(machine)
    assert again == built
    assert len(cli_calls(machine)) == 1


# --- devbox create --path end to end (needs the configuration side) -------------------------------


class RecordingDevbox(Devbox):
    """devbox with the recording CLI first on PATH, so a test can tell whether a create built anything."""

    def run(self, *args: str, check: bool = True, timeout: float = 300, input: str | None = None):
        command = f"PATH={DIR}/bin:$PATH DEVBOX_SYSTEMD={self.backend} devbox {shlex.join(args)}"
        return self.machine.user(command, check=check, timeout=timeout, input=input)


@pytest.fixture(scope="module")
def box(machine) -> Iterator[Devbox]:
    devbox = RecordingDevbox(machine, "pystemd")
    if "devcontainer" not in devbox.run("create", "--help").stdout:
        pytest.skip("devbox create does not read devcontainer.json yet (the configuration helper's part)")
    write_config(machine, PLAIN_CONFIG + '\n[identity]\nname = "Ada Lovelace"\nemail = "ada@example.com"\n')
    machine.root(f"rm -f {INIT_MARKER}")
    put_fixture(machine)
    try:
        yield devbox
    finally:
        for name in ("demo", "demo2"):
            devbox.run("destroy", name, "--yes", check=False)
        write_config(machine)
        machine.user(f"rm -rf {DIR}", check=False)


def ssh(box: Devbox, name: str, command: str, check: bool = True):
    return box.run("ssh", name, "--", "sh", "-c", shlex.quote(command), check=check)


def hooks_log(box: Devbox, name: str) -> list[str]:
    return ssh(box, name, "cat ~/hooks.log 2>/dev/null", check=False).stdout.splitlines()


def test_create_from_a_devcontainer_json(box: Devbox, machine) -> None:
    box.run("create", "demo", "--path", WS, "--new-ssh-key", timeout=900)  # devbox ssh uses its own key
    wait_for(lambda: hooks_log(box, "demo") == ["postCreate", "postStart"], 120, "the hooks")
    seen = ssh(box, "demo", 'id -un; id -u; demo-marker; echo "$DEMO_CONTAINER_ENV/$DEMO_REMOTE_ENV"').stdout
    assert seen.splitlines() == ["vscode", "1500", "demo-marker: from-the-feature", "container value/remote value"]
    assert ssh(box, "demo", "bash -lc pwd").stdout.strip() == WS  # a login shell starts in the workspace
    # The workspace both ways, with the right owner on each side.
    machine.user(f"echo from-host > {WS}/host.txt")
    ssh(box, "demo", f"cat {WS}/host.txt >/dev/null && echo from-drone > {WS}/drone.txt")
    assert machine.user(f"stat -c '%U %u' {WS}/drone.txt").stdout.split() == ["dev", "1000"]
    assert ssh(box, "demo", f"stat -c %u {WS}/host.txt").stdout.strip() == "1500"
    # git through devbox's identity; nothing from the repository ran on the host.
    assert ssh(box, "demo", "git config user.name").stdout.strip() == "Ada Lovelace"
    assert machine.root(f"test -e {INIT_MARKER}", check=False).returncode == 1
    status = box.json("status", "demo")
    assert "8080" in json.dumps(status["ports"]) or "8080" in json.dumps(status)


def test_post_create_once_post_start_every_start(box: Devbox) -> None:
    for _ in range(2):
        before = len(hooks_log(box, "demo"))  # counted before the restart: postStart may beat the next ssh
        box.run("restart", "demo")
        wait_for(lambda before=before: len(hooks_log(box, "demo")) > before, 120, "postStart")
    assert hooks_log(box, "demo") == ["postCreate", "postStart", "postStart", "postStart"]


def test_a_second_drone_from_the_same_config_builds_nothing(box: Devbox, machine) -> None:
    machine.user(f"rm -f {CALLS}")
    box.run("create", "demo2", "--path", WS, timeout=300)
    assert cli_calls(machine) == []
    assert box.json("status", "demo2")["image"] == box.json("status", "demo")["image"]


def test_status_says_when_the_configuration_changed_since_the_build(box: Devbox, machine) -> None:
    assert box.json("status", "demo").get("devcontainer_changed") is False
    machine.user(f"sed -i 's/from-the-feature/changed/' {WS}/.devcontainer/devcontainer.json")
    assert box.json("status", "demo").get("devcontainer_changed") is True
    assert "changed since its image was built" in box.run("status", "demo").stdout


def test_rebuild_takes_the_changed_configuration_and_keeps_the_home(box: Devbox, machine) -> None:
    """After the previous test changed the feature's greeting: rebuild builds it, the home stays."""
    ssh(box, "demo", "echo kept > ~/keep.txt")
    before = box.json("status", "demo")["image"]
    count = len(hooks_log(box, "demo"))
    machine.user(f"rm -f {CALLS}")
    result = json.loads(box.run("rebuild", "demo", "--json", timeout=900).stdout)
    print("rebuild:", result)
    assert result["restarted"] is True and result["image"] != before
    assert cli_calls(machine) != []  # the changed configuration was built
    wait_for(lambda: len(hooks_log(box, "demo")) >= count + 2, 120, "the hooks after the rebuild")
    assert hooks_log(box, "demo")[count:] == ["postCreate", "postStart"]  # a new build: postCreate once more
    assert ssh(box, "demo", "demo-marker; cat ~/keep.txt").stdout.splitlines() == ["demo-marker: changed", "kept"]
    assert box.json("status", "demo").get("devcontainer_changed") is False
    assert box.json("status", "demo2")["image"] == before  # the other drone from the old config is untouched
