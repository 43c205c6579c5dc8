"""`devbox backup` and `devbox restore` against real systemd 257 and rootless Podman 5 in the e2e machine:
a home volume goes out through `podman volume export` and comes back byte for byte through `podman volume import`."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.e2e.helpers import Devbox, q, wait_for, write_config

BACKUPS = "~/backups"


@pytest.fixture(scope="module", autouse=True)
def guest_config(machine) -> None:
    write_config(machine)


@pytest.fixture
def devbox(machine) -> Iterator[Devbox]:
    box = Devbox(machine, "pystemd")
    before = {d["name"] for d in box.json("list")}
    box.sh(f"rm -rf {BACKUPS} && mkdir -p {BACKUPS}")
    yield box
    for name in {d["name"] for d in box.json("list")} - before:  # whatever a failed test left behind
        box.run("destroy", name, "--yes", check=False)
    for volume in ("drone-bk-home", "drone-bk2-home"):
        box.sh(q("podman", "volume", "rm", "--force", volume), check=False)
    box.sh(f"rm -rf {BACKUPS}")


# What the home holds and how: content hashes, and owner and mode as the drone user sees them.
FINGERPRINT = (
    'cd "$HOME" && sha256sum data.bin work/notes.txt && stat -c "%n %u %a" . data.bin work work/secret'
    " && readlink work/link"
)


def fingerprint(box: Devbox, name: str) -> str:
    return box.sh(f"podman exec drone-{name} sh -c {q(FINGERPRINT)}").stdout


def wait_active(box: Devbox, name: str) -> None:
    wait_for(lambda: box.is_active(f"drone-{name}") == "active", 60, f"drone-{name} to be active")
    wait_for(lambda: box.container_exists(f"drone-{name}"), 60, f"container drone-{name}")


def test_backup_destroy_restore_brings_the_home_back_byte_for_byte(devbox: Devbox) -> None:
    devbox.run("create", "bk")
    wait_active(devbox, "bk")
    devbox.sh(
        "podman exec drone-bk sh -c "
        + q(
            'cd "$HOME" && head -c 4000000 /dev/urandom > data.bin && mkdir -p work && echo hello > work/notes.txt'
            " && echo s > work/secret && chmod 600 work/secret && chmod 750 work && ln -s notes.txt work/link"
            # what the image's init keeps as the drone's identities (host key, tailnet node, Syncthing device)
            " && mkdir -p .local/state/devbox-drone/ssh .local/state/devbox-drone/tailscale"
            " && echo node > .local/state/devbox-drone/tailscale/node && echo key > .local/state/devbox-drone/ssh/key"
        )
    )
    before = fingerprint(devbox, "bk")
    assert len(before.splitlines()) == 7
    uid = devbox.sh("id -u").stdout.strip()
    assert f"data.bin {uid} 644" in before and f"work/secret {uid} 600" in before  # the drone user's, not root's

    result = devbox.run("backup", "bk", "-o", "backups/bk.tar", "--json")
    assert result.stderr == "drone bk is running: stopping it for a consistent copy, starting it again afterwards\n"
    saved = json.loads(result.stdout)
    assert saved["running"] is True and saved["stopped"] is True and saved["live"] is False
    assert saved["file"] == "/home/dev/backups/bk.tar" and saved["volume"]["size"] > 4000000
    assert devbox.is_active("drone-bk") == "active"  # started again before backup returned
    listing = devbox.sh(f"tar tf {BACKUPS}/bk.tar").stdout.split()
    assert listing[-2:] == ["volume.tar", "manifest.json"]
    assert devbox.sh(f"stat -c %a {BACKUPS}/bk.tar").stdout.strip() == "600"
    volume_sha = devbox.sh(f"tar xOf {BACKUPS}/bk.tar volume.tar | sha256sum").stdout.split()[0]
    assert volume_sha == saved["volume"]["sha256"]
    assert devbox.sh(f"ls -A {BACKUPS}").stdout.split() == ["bk.tar"]  # no partial file left

    devbox.run("destroy", "bk", "--yes")
    assert not devbox.volume_exists("drone-bk-home")

    restored = devbox.run("restore", "backups/bk.tar")
    assert restored.stdout == "drone bk is restored from backups/bk.tar and running\n"
    wait_active(devbox, "bk")
    assert fingerprint(devbox, "bk") == before
    assert devbox.json("status", "bk")["state"] == "running"

    other = json.loads(devbox.run("restore", "backups/bk.tar", "--name", "bk2", "--json").stdout)
    assert other["name"] == "bk2" and other["original_name"] == "bk" and other["started"] is True
    wait_active(devbox, "bk2")
    assert fingerprint(devbox, "bk2") == before
    identity = "ls -A ~/.local/state/devbox-drone"
    assert devbox.sh(f"podman exec drone-bk sh -c {q(identity)}").stdout.split() == ["ssh", "tailscale"]
    assert devbox.sh(f"podman exec drone-bk2 sh -c {q(identity)}").stdout.split() == []  # a copy is a new node
    (container,) = devbox.podman_json("ps", "--filter", "name=^drone-bk2$")
    assert container["Labels"]["io.devbox.drone"] == "bk2"
    mounts = devbox.podman_json("inspect", "drone-bk2")[0]["Mounts"]
    assert any(m.get("Name") == "drone-bk2-home" for m in mounts)


def test_restore_refuses_and_creates_nothing(devbox: Devbox) -> None:
    devbox.run("create", "bk", "--no-start")
    devbox.sh("podman volume create drone-bk-home >/dev/null")  # what a first start makes
    devbox.run("backup", "bk", "-o", "backups/bk.tar")
    assert devbox.is_active("drone-bk") == "inactive"  # a stopped drone stays stopped

    taken = devbox.run("restore", "backups/bk.tar", check=False)
    assert (taken.returncode, taken.stdout) == (6, "")
    assert taken.stderr == "devbox: drone bk exists already: restore with --name NEW\n"

    devbox.sh(f"head -c 3000 {BACKUPS}/bk.tar > {BACKUPS}/cut.tar")
    bad = devbox.run("restore", "backups/cut.tar", "--name", "bk2", check=False)
    assert bad.returncode == 3 and bad.stderr.count("\n") == 1
    assert bad.stderr.startswith("devbox: backups/cut.tar is not a usable devbox backup: ")
    assert not devbox.volume_exists("drone-bk2-home")
    assert devbox.unit_property("drone-bk2.service", "LoadState") == "not-found"

    live = devbox.sh(f"devbox backup bk -o - > {BACKUPS}/stdout.tar && tar tf {BACKUPS}/stdout.tar").stdout.split()
    assert live[-1] == "manifest.json"
