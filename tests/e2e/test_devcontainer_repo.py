"""A --repo drone from the repository's own devcontainer.json, in the real machine: the fixture of
test_devcontainer.py pushed to the e2e git server as acme/dcdemo, fetched on the host with a read-only
token the fake GitHub App mints, built by the Dev Containers CLI, run as the image's remote user with
its home at that user's home, the repository cloned there by the drone with the broker's token.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator

import pytest

from tests.e2e.helpers import Devbox, wait_for
from tests.e2e.test_devcontainer import DIR, INIT_MARKER, WS, put_fixture

NAME = "dcrepo"
STATE = "/home/dev/githost/state"


@pytest.fixture(scope="module")
def box(machine, githost) -> Iterator[Devbox]:
    devbox = Devbox(machine, "pystemd")
    machine.root(f"rm -f {INIT_MARKER}")
    put_fixture(machine)
    machine.user(
        f"set -e; rm -rf {STATE}/work/dcdemo {STATE}/repos/acme/dcdemo.git; cp -a {WS} {STATE}/work/dcdemo; "
        f"cd {STATE}/work/dcdemo; git init -q -b main; git add -A; "
        "git -c user.name=t -c user.email=t@e commit -qm 'the devcontainer fixture'; "
        f"git clone -q --bare {STATE}/work/dcdemo {STATE}/repos/acme/dcdemo.git"
    )
    try:
        yield devbox
    finally:
        devbox.run("destroy", NAME, "--yes", check=False)
        machine.user(f"rm -rf {DIR}", check=False)


def ssh(box: Devbox, command: str, check: bool = True):
    return box.run("ssh", NAME, "--", "sh", "-c", shlex.quote(command), check=check)


def hooks_log(box: Devbox) -> list[str]:
    return ssh(box, "cat ~/hooks.log 2>/dev/null", check=False).stdout.splitlines()


def test_a_repo_drone_is_its_devcontainer_json(box: Devbox, machine) -> None:
    out = box.run("create", NAME, "--repo", "acme/dcdemo", "--new-ssh-key", timeout=900)
    print(out.stdout, out.stderr)
    wait_for(lambda: hooks_log(box) == ["postCreate", "postStart"], 180, "the hooks after the clone")
    seen = ssh(box, 'id -un; echo "$HOME"; demo-marker; echo "$DEMO_CONTAINER_ENV/$DEMO_REMOTE_ENV"').stdout
    assert seen.splitlines() == [
        "vscode",
        "/home/vscode",
        "demo-marker: from-the-feature",
        "container value/remote value",
    ]
    # cloned by the drone into the remote user's home, owned by that user, with git working through the broker
    assert ssh(box, "stat -c %U ~/dcdemo/.devcontainer/devcontainer.json").stdout.strip() == "vscode"
    assert ssh(box, "bash -lc pwd").stdout.strip() == "/home/vscode/dcdemo"
    assert "refs/heads/main" in ssh(box, "git -C ~/dcdemo ls-remote origin").stdout
    # nothing from the repository ran on the host, and the host's checkout is devbox's alone
    assert machine.root(f"test -e {INIT_MARKER}", check=False).returncode == 1
    mode = machine.user(f"stat -c %a ~/.local/state/devbox/build/{NAME}").stdout.strip()
    assert mode == "700"
    status = box.json("status", NAME)
    assert status["devcontainer"] == ".devcontainer/devcontainer.json"
    assert status["devcontainer_outcome"].startswith("done:")
