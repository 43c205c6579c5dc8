"""The drone image and how a drone is reached, in the real machine.

The default image is built by `devbox image build` from the project's Containerfile on the
local Debian 13 base (apt reaches the Debian mirror; Tailscale's repository is not reachable
here, so the build must say so). A thin test layer adds stand-ins for `tailscaled` and
`tailscale` that record their arguments (Tailscale's control plane is the one part we cannot
reach). Everything else is real: sshd in the drone, keep-id, the Podman secret, Syncthing.
"""

from __future__ import annotations

import re
import secrets
import shlex
from collections.abc import Iterator

import pytest

from tests.e2e.helpers import Devbox, secret_places, wait_for, write_config

DRONE_IMAGE = "localhost/devbox-drone:latest"
STANDIN_IMAGE = "localhost/devbox-drone-standin:latest"
STATE = "/home/dev/.local/state/devbox-drone"
RECORDS = "/home/dev/.tailscale-standin"
REGISTERED = f"{STATE}/tailscale/devbox-registered"
SECRET = "drone-tailnode-tailscale-authkey"

TAILSCALED_STANDIN = r"""#!/bin/sh
# Stand-in for tailscaled (e2e): records its arguments, keeps a node file in --statedir, stays up.
rec=$HOME/.tailscale-standin
mkdir -p "$rec"
printf '%s\n' "$*" >>"$rec/tailscaled.args"
dir=
for a in "$@"; do case $a in --statedir=*) dir=${a#--statedir=} ;; esac; done
mkdir -p "$dir"
if [ -s "$dir/node" ]; then echo "reused $(cat "$dir/node")" >>"$rec/tailscaled.state"
else echo "node-$$" >"$dir/node"; echo "new $(cat "$dir/node")" >>"$rec/tailscaled.state"; fi
trap 'exit 0' TERM INT
while :; do sleep 3600 & wait $!; done
"""

TAILSCALE_STANDIN = r"""#!/bin/sh
# Stand-in for the tailscale CLI (e2e): records its arguments and the auth key file it is given.
rec=$HOME/.tailscale-standin
mkdir -p "$rec"
printf '%s\n' "$*" >>"$rec/tailscale.args"
for a in "$@"; do
  case $a in --auth-key=file:*) (umask 077; cat "${a#--auth-key=file:}" >"$rec/authkey-read") ;; esac
done
exit 0
"""

STANDIN_CONTAINERFILE = f"""FROM {DRONE_IMAGE}
COPY --chmod=0755 tailscaled tailscale /usr/local/sbin/
"""


def in_drone(box: Devbox, drone: str, command: str, check: bool = True, timeout: float = 60):
    return box.sh(f"podman exec drone-{drone} bash -c {shlex.quote(command)} </dev/null", check=check, timeout=timeout)


def write_guest_file(box: Devbox, path: str, text: str, mode: str = "644") -> None:
    box.machine.user(f"mkdir -p $(dirname {path}) && cat > {path} && chmod {mode} {path}", input=text)


@pytest.fixture(scope="module")
def images(machine) -> dict[str, str]:
    """The real default image, built here, and the stand-in layer on top of it."""
    box = Devbox(machine, "pystemd")
    built = box.run("image", "build", "--base", "localhost/devbox-base:trixie", timeout=1200)
    out = built.stdout + built.stderr
    context = "/home/dev/devbox-e2e-standin"
    for name, text in (
        ("tailscaled", TAILSCALED_STANDIN),
        ("tailscale", TAILSCALE_STANDIN),
        ("Containerfile", STANDIN_CONTAINERFILE),
    ):
        write_guest_file(box, f"{context}/{name}", text)
    box.sh(f"podman build -q -t {STANDIN_IMAGE} {context}", timeout=300)
    return {"build_output": out}


@pytest.fixture(scope="module")
def box(machine, images) -> Iterator[Devbox]:
    devbox = Devbox(machine, "pystemd")
    devbox.sh(
        "test -f ~/.ssh/id_ed25519 || ssh-keygen -q -t ed25519 -N '' -f ~/.ssh/id_ed25519; rm -f ~/.ssh/known_hosts_e2e"
    )
    try:
        yield devbox
    finally:
        for name in ("local", "tailnode"):
            devbox.run("destroy", name, "--yes", check=False)
        devbox.sh("rm -f ~/ts-authkey")
        write_config(machine)


def test_the_image_builds_from_the_local_base_and_says_it_has_no_tailscale(images, machine) -> None:
    out = images["build_output"]
    assert "no tailscale" in out, out[-2000:]
    box = Devbox(machine, "pystemd")
    tools = "sshd ssh-keygen git gh curl syncthing sudo bash devbox-drone-init"
    found = box.sh(f"podman run --rm --entrypoint sh {DRONE_IMAGE} -c 'for t in {tools}; do command -v $t; done'")
    assert len(found.stdout.split()) == len(tools.split()), found.stdout
    assert "/usr/local/bin/gh" not in found.stdout  # devbox mounts its gh wrapper there
    keys = box.sh(f"podman run --rm --entrypoint sh {DRONE_IMAGE} -c 'ls /etc/ssh/ssh_host_* 2>/dev/null; true'")
    assert keys.stdout.strip() == "", "the image must not carry SSH host keys"


def wait_for_sshd(box: Devbox, port: int) -> None:
    probe = f"ssh-keyscan -p {port} -T 2 127.0.0.1 2>/dev/null | grep -q ssh-ed25519"
    wait_for(lambda: box.sh(probe, check=False).returncode == 0, 90, f"sshd on 127.0.0.1:{port}")


def ssh_options(port: int) -> str:
    return (
        f"-p {port} -o BatchMode=yes -o StrictHostKeyChecking=accept-new -o UserKnownHostsFile=~/.ssh/known_hosts_e2e"
    )


def test_ssh_with_the_users_key_on_the_local_port_and_no_passwords(box: Devbox) -> None:
    created = box.run("create", "local", "--image", STANDIN_IMAGE)
    note = re.search(r"no tailnet configured: SSH on 127\.0\.0\.1:(\d+) \(devbox ssh local\)", created.stdout)
    assert note, created.stdout
    port = int(note.group(1))
    wait_for_sshd(box, port)
    out = box.sh(f"ssh {ssh_options(port)} dev@127.0.0.1 'id -un; id -u; git --version'", timeout=60).stdout
    assert out.splitlines()[:2] == ["dev", "1000"] and "git version" in out
    shell = box.sh(
        f"ssh {ssh_options(port)} dev@127.0.0.1 'echo $HOME $0; getent passwd dev | cut -d: -f7'", timeout=60
    ).stdout
    assert shell.split() == ["/home/dev", "bash", "/bin/bash"], shell
    # `devbox ssh` runs the same client with the drone's port and host key alias.
    via_devbox = box.run("ssh", "local", "--", "echo", "hello from $(hostname)", timeout=60)
    assert via_devbox.stdout.strip() == "hello from local"
    refused = box.sh(
        f"ssh {ssh_options(port)} -o PubkeyAuthentication=no -o PreferredAuthentications=password,keyboard-interactive "
        "dev@127.0.0.1 true",
        check=False,
    )
    assert refused.returncode == 255 and "Permission denied (publickey)" in refused.stderr, refused.stderr
    listening = box.sh(f"ss -Htln 'sport = :{port}'").stdout
    local_addresses = [line.split()[3] for line in listening.splitlines()]
    assert local_addresses == [f"127.0.0.1:{port}"], listening
    config = box.run("ssh-config", "local").stdout
    assert f"Host local\n    HostName 127.0.0.1\n    Port {port}\n    User dev\n" in config


def test_tailnet_drone_gets_its_key_from_a_secret_file_and_keeps_its_node_across_restarts(box: Devbox, machine) -> None:
    key = "tskey-auth-" + secrets.token_hex(16)
    write_guest_file(box, "/home/dev/ts-authkey", key + "\n", mode="600")
    write_config(
        machine,
        '[tailscale]\nauth_key = "file:~/ts-authkey"\nlogin_server = "https://headscale.e2e.test"\nssh = true\n'
        'tailnet = "e2e.ts.net"\n',
    )
    box.run("create", "tailnode", "--image", STANDIN_IMAGE, "--with-syncthing")
    wait_for(
        lambda: in_drone(box, "tailnode", f"test -s {RECORDS}/authkey-read", check=False).returncode == 0,
        90,
        "tailscale up with the auth key file",
    )
    tailscaled = in_drone(box, "tailnode", f"cat {RECORDS}/tailscaled.args").stdout.splitlines()
    assert len(tailscaled) == 1
    assert "--tun=userspace-networking" in tailscaled[0].split()
    assert f"--statedir={STATE}/tailscale" in tailscaled[0].split()
    up = in_drone(box, "tailnode", f"cat {RECORDS}/tailscale.args").stdout.split()
    assert "up" in up
    assert "--auth-key=file:/run/secrets/tailscale-authkey" in up
    assert {"--hostname=tailnode", "--login-server=https://headscale.e2e.test", "--ssh"} <= set(up)
    assert in_drone(box, "tailnode", f"cat {RECORDS}/authkey-read").stdout.strip() == key
    mode = in_drone(box, "tailnode", "stat -c '%a %U' /run/secrets/tailscale-authkey").stdout.split()
    assert mode == ["400", "dev"]

    for where, text in secret_places(box, "tailnode").items():
        assert key not in text, f"the Tailscale auth key appears in {where}"

    status = box.json("status", "tailnode")
    assert status["tailscale"] is True and status["tailnet_name"] == "tailnode.e2e.ts.net"
    assert status["ssh"] == "tailnode.e2e.ts.net:2222" and status["local_ssh"].startswith("127.0.0.1:")
    # On the server itself `devbox ssh` takes the local port, whatever the tailnet does.
    wait_for_sshd(box, int(status["local_ssh"].split(":")[1]))
    assert box.run("ssh", "tailnode", "--", "hostname", timeout=60).stdout.strip() == "tailnode"

    # The init marks the node registered once `tailscale up` with the key succeeded ...
    wait_for(lambda: in_drone(box, "tailnode", f"test -f {REGISTERED}", check=False).returncode == 0, 30, "the marker")
    assert SECRET in drone_secrets(box)
    box.run("restart", "tailnode")
    wait_for(
        lambda: len(in_drone(box, "tailnode", f"cat {RECORDS}/tailscaled.args", check=False).stdout.splitlines()) == 2,
        90,
        "tailscaled after the restart",
    )
    again = in_drone(box, "tailnode", f"cat {RECORDS}/tailscaled.args").stdout.splitlines()
    assert f"--statedir={STATE}/tailscale" in again[1].split()
    states = in_drone(box, "tailnode", f"cat {RECORDS}/tailscaled.state").stdout.split("\n")
    assert states[0].startswith("new node-") and states[1] == "reused " + states[0].split()[1]
    # ... so the restart left the key out: not in the drone, no Podman secret, and the node is the same.
    assert in_drone(box, "tailnode", "test -e /run/secrets/tailscale-authkey", check=False).returncode == 1
    assert drone_secrets(box) == []
    wait_for(lambda: len(up_calls(box)) == 2, 60, "tailscale up after the restart")
    assert not any(a.startswith("--auth-key") for a in up_calls(box)[1])
    assert {"--hostname=tailnode", "--login-server=https://headscale.e2e.test", "--ssh"} <= set(up_calls(box)[1])


def drone_secrets(box: Devbox) -> list[str]:
    return [s for s in box.sh("podman secret ls --format '{{.Name}}'").stdout.split() if s.startswith("drone-")]


def up_calls(box: Devbox) -> list[list[str]]:
    """The stand-in tailscale's recorded `up` calls, each as its arguments."""
    lines = in_drone(box, "tailnode", f"cat {RECORDS}/tailscale.args", check=False).stdout.splitlines()
    return [line.split() for line in lines if "up" in line.split()]


def test_tailscale_login_gives_a_registered_drone_its_key_back(box: Devbox) -> None:
    key = box.sh("cat ~/ts-authkey").stdout.strip()
    in_drone(box, "tailnode", f"rm {RECORDS}/authkey-read")
    box.run("tailscale-login", "tailnode")
    assert drone_secrets(box) == [SECRET]
    wait_for(
        lambda: in_drone(box, "tailnode", f"test -s {RECORDS}/authkey-read", check=False).returncode == 0,
        90,
        "tailscale up with the key again",
    )
    assert in_drone(box, "tailnode", f"cat {RECORDS}/authkey-read").stdout.strip() == key
    assert "--auth-key=file:/run/secrets/tailscale-authkey" in up_calls(box)[-1]
    # Registered again: the next restart drops the key once more.
    wait_for(lambda: in_drone(box, "tailnode", f"test -f {REGISTERED}", check=False).returncode == 0, 30, "the marker")
    box.run("restart", "tailnode")
    assert drone_secrets(box) == []
    assert in_drone(box, "tailnode", "test -e /run/secrets/tailscale-authkey", check=False).returncode == 1


def test_syncthing_answers_in_the_drone_and_status_shows_its_device_id(box: Devbox) -> None:
    ping = (
        f"key=$(sed -n 's:.*<apikey>\\(.*\\)</apikey>.*:\\1:p' {STATE}/syncthing/config.xml); "
        'curl -sf -H "X-API-Key: $key" http://127.0.0.1:8384/rest/system/ping'
    )
    wait_for(
        lambda: '"pong"' in in_drone(box, "tailnode", ping, check=False).stdout, 90, "Syncthing's /rest/system/ping"
    )
    # Tailnet peers reach the drone's 127.0.0.1 too: the REST API wants the key, the GUI's log-in the password.
    code = "curl -s -o /dev/null -w '%{http_code}' -H 'Host: localhost' "
    assert in_drone(box, "tailnode", code + "http://127.0.0.1:8384/rest/system/ping").stdout in ("401", "403")
    login = code + "-H 'Content-Type: application/json' -d @- http://127.0.0.1:8384/rest/noauth/auth/password"
    as_dev = """printf '{"username": "dev", "password": "%s"}' """
    assert in_drone(box, "tailnode", as_dev + "guess | " + login).stdout in ("401", "403")
    assert in_drone(box, "tailnode", as_dev + f'"$(cat {STATE}/syncthing/gui-password)" | ' + login).stdout in (
        "200",
        "204",
    )
    assert in_drone(box, "tailnode", f"stat -c %a {STATE}/syncthing/gui-password").stdout.strip() == "600"
    status = box.json("status", "tailnode")
    assert re.fullmatch(r"[A-Z2-7]{7}(-[A-Z2-7]{7}){7}", status["syncthing_device_id"] or ""), status
    assert status["syncthing_device_id"] in box.run("status", "tailnode").stdout
    gui = box.sh("ss -Htln 'sport = :8384'").stdout
    assert gui.strip() == "", "Syncthing's GUI must not be published on the host"
    in_drone_gui = in_drone(box, "tailnode", "cat /proc/net/tcp")
    listen_gui = [f for f in (line.split() for line in in_drone_gui.stdout.splitlines()[1:]) if f[3] == "0A"]
    assert "0100007F:20C0" in [f[1] for f in listen_gui], "the GUI listens on 127.0.0.1:8384 inside the drone"
    assert in_drone(box, "tailnode", "test -d ~/sync", check=False).returncode == 0


def test_a_dead_sshd_makes_systemd_restart_the_drone(box: Devbox) -> None:
    unit = "drone-local.service"
    before = int(box.unit_property(unit, "NRestarts"))
    in_drone(box, "local", "pkill -KILL -x sshd", check=False)  # the drone may be gone before exec returns
    wait_for(lambda: int(box.unit_property(unit, "NRestarts")) > before, 60, "systemd restarting the drone")
    wait_for(lambda: box.is_active(unit) == "active", 60, "the drone active again")
    journal = box.sh(f"journalctl --user -u {unit} --no-pager -o cat").stdout
    assert "devbox-drone-init: sshd" in journal, journal[-2000:]
