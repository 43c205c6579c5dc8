"""Workspaces in the real machine: a host directory as the drone's workspace (keep-id ownership both
ways), the user's git identity, and dotfiles cloned from a repository served to the drone."""

from __future__ import annotations

import shlex
from collections.abc import Iterator

import pytest

from tests.e2e.helpers import PLAIN_CONFIG, Devbox, q, wait_for, write_config

CONFIG = PLAIN_CONFIG + '\n[identity]\nname = "Ada Lovelace"\nemail = "ada@example.com"\n'


@pytest.fixture(scope="module")
def box(machine) -> Iterator[Devbox]:
    devbox = Devbox(machine, "pystemd")
    write_config(machine, CONFIG)
    try:
        yield devbox
    finally:
        for name in ("app", "dots"):
            devbox.run("destroy", name, "--yes", check=False)
        machine.user("test -s ~/served/pid && kill $(cat ~/served/pid)", check=False)
        write_config(machine)
        machine.user("rm -rf ~/code ~/served")


def in_drone(box: Devbox, drone: str, command: str, check: bool = True):
    return box.sh(f"podman exec drone-{drone} sh -c {shlex.quote(command)} </dev/null", check=check)


def wait_running(box: Devbox, name: str) -> None:
    wait_for(lambda: in_drone(box, name, "true", check=False).returncode == 0, 90, f"drone-{name} running")


def test_a_host_directory_is_the_workspace_with_the_right_owner_both_ways(box: Devbox) -> None:
    box.sh("rm -rf ~/code && mkdir -p ~/code/app && echo from-host > ~/code/app/host.txt")
    box.run("create", "--path", "~/code/app")  # the name comes from the directory
    wait_running(box, "app")
    assert in_drone(box, "app", "pwd").stdout.strip() == "/home/dev/code/app"
    seen = in_drone(box, "app", "cat host.txt; stat -c '%U %u' host.txt; id -un").stdout.split("\n")
    assert seen[:3] == ["from-host", "dev 1000", "dev"]
    in_drone(box, "app", "echo appended >> host.txt && echo from-drone > drone.txt")
    on_host = box.sh("cat ~/code/app/drone.txt ~/code/app/host.txt; stat -c '%U %u' ~/code/app/drone.txt").stdout
    assert on_host.split("\n")[:4] == ["from-drone", "from-host", "appended", "dev 1000"]
    status = box.json("status", "app")
    assert status["workspace"] == "/home/dev/code/app"


def test_the_users_git_identity_is_in_every_drone(box: Devbox) -> None:
    wait_running(box, "app")
    assert in_drone(box, "app", "git config user.name; git config user.email").stdout.split("\n")[:2] == [
        "Ada Lovelace",
        "ada@example.com",
    ]


def test_dotfiles_are_cloned_and_their_installer_runs(box: Devbox, machine) -> None:
    install = 'echo "installed by $(id -un) in $PWD" > "$HOME/.dotfiles-installed"\n'
    box.sh(
        "rm -rf ~/served && mkdir -p ~/served/src && cd ~/served/src && git init -q -b main"
        f" && printf %s {q(install)} > install.sh && printf 'set -o vi\\n' > .inputrc"
        " && git add . && git -c user.name=t -c user.email=t@t commit -qm dotfiles"
        " && git clone -q --bare . ../dotfiles.git && git -C ../dotfiles.git update-server-info"
    )
    port = box.sh(
        "python3 -c 'import socket; s=socket.socket(); s.bind((\"\", 0)); print(s.getsockname()[1])'"
    ).stdout.strip()
    machine.user(f"cd ~/served && (nohup python3 -m http.server --bind 0.0.0.0 {port} >/dev/null 2>&1 & echo $! > pid)")
    wait_for(
        lambda: box.sh(f"curl -sf http://127.0.0.1:{port}/dotfiles.git/HEAD", check=False).returncode == 0,
        30,
        "the dotfiles server",
    )
    box.run("create", "dots", "--dotfiles", f"http://host.containers.internal:{port}/dotfiles.git")
    outcome = "cat ~/.local/state/devbox/dotfiles 2>/dev/null"
    wait_for(lambda: "installed" in in_drone(box, "dots", outcome, check=False).stdout, 90, "the dotfiles installer")
    assert in_drone(box, "dots", outcome).stdout == "installed: install.sh ran\n"
    assert in_drone(box, "dots", "cat ~/.dotfiles-installed").stdout == "installed by dev in /home/dev/.dotfiles\n"
    assert in_drone(box, "dots", "cat ~/.dotfiles/.inputrc").stdout == "set -o vi\n"
    status = box.json("status", "dots")
    assert status["dotfiles_outcome"] == "installed: install.sh ran"
    journal = box.sh("journalctl --user -u drone-dots.service --no-pager -o cat").stdout
    assert "devbox: dotfiles: installed: install.sh ran" in journal
