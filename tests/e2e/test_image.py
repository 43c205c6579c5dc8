"""The default drone image, built with `devbox image build` and run the way Quadlet runs a drone:
SSH by key (not by password) to the non-root sshd, the kept host key, Syncthing's REST API, and
the init's supervision. Tailscale's repository is not reachable here: the build's warning path."""

from __future__ import annotations

import pytest

from tests.e2e.helpers import wait_for

IMAGE = "localhost/devbox-drone:e2e"
DRONE = "img-e2e"
PORT = 2299
SSH = f"ssh -F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=error -p {PORT}"


@pytest.fixture(scope="module")
def built(machine):
    r = machine.user(f"devbox image build --base localhost/devbox-base:trixie --no-pull --tag {IMAGE}", timeout=900)
    return r


@pytest.fixture
def drone(machine, built):
    machine.user(
        f"""set -e
        rm -rf ~/img-e2e && mkdir ~/img-e2e && cd ~/img-e2e
        ssh-keygen -q -t ed25519 -N '' -f key && cp key.pub authorized_keys
        podman rm -f {DRONE} >/dev/null 2>&1; podman volume rm -f {DRONE}-home >/dev/null 2>&1 || true
        podman run -d --name {DRONE} --hostname {DRONE} --userns=keep-id --init -v {DRONE}-home:$HOME -w $HOME \
          -e DEVBOX_DRONE={DRONE} -e DEVBOX_SYNCTHING=1 -p 127.0.0.1:{PORT}:2222 \
          -v ./authorized_keys:/etc/devbox/authorized_keys:ro {IMAGE} >/dev/null"""
    )
    yield
    machine.user(f"podman rm -f -t 0 {DRONE}; podman volume rm -f {DRONE}-home; rm -rf ~/img-e2e", check=False)


def ready(machine) -> None:
    wait_for(
        lambda: "devbox-drone-init: ready" in machine.user(f"podman logs {DRONE} 2>&1", check=False).stdout,
        30,
        "the init's ready line",
    )


def test_the_build_says_there_is_no_tailscale(built):
    assert built.stdout.startswith(f"built {IMAGE} (image ")
    assert built.stdout.rstrip().endswith("tailscale: missing)")
    assert f"devbox: warning: {IMAGE} has no tailscale" in built.stderr
    warnings = [line for line in built.stderr.splitlines() if line.startswith("devbox-image: WARNING")]
    assert len(warnings) <= 1  # none when the build step came from the layer cache


def test_ssh_by_key_only_syncthing_and_a_kept_host_key(machine, drone):
    ready(machine)
    r = machine.user(f"cd ~/img-e2e && {SSH} -i key -o BatchMode=yes dev@127.0.0.1 'id -un; sudo -n id -u'")
    assert r.stdout.split() == ["dev", "0"]
    refused = machine.user(
        f"{SSH} -o BatchMode=yes -o PubkeyAuthentication=no -o PreferredAuthentications=password,keyboard-interactive "
        "dev@127.0.0.1 true",
        check=False,
    )
    assert refused.returncode == 255 and "Permission denied (publickey)" in refused.stderr
    config = ".local/state/devbox-drone/syncthing/config.xml"
    wait_for(lambda: machine.user(f"podman exec {DRONE} test -s {config}", check=False).returncode == 0, 30, "config")
    key = machine.user(f"podman exec {DRONE} sed -n 's:.*<apikey>\\(.*\\)</apikey>.*:\\1:p' {config}").stdout.strip()
    ping = f"podman exec {DRONE} curl -sf -H 'X-API-Key: {key}' http://127.0.0.1:8384/rest/system/ping"
    wait_for(lambda: '"pong"' in machine.user(ping, check=False).stdout, 30, "Syncthing's REST API")
    device = machine.user(f"podman exec {DRONE} devbox-drone-init syncthing-id").stdout.strip()
    assert len(device) == 63 and device.count("-") == 7
    status = machine.user(f"podman exec {DRONE} devbox-drone-init status").stdout.splitlines()
    assert status == ["sshd=running port=2222", "tailscale=off", f"syncthing=running id={device}"]

    hostkey = f"podman exec {DRONE} cat .local/state/devbox-drone/ssh/ssh_host_ed25519_key.pub"
    before = machine.user(hostkey).stdout
    machine.user(f"podman stop -t 10 {DRONE} >/dev/null")
    assert machine.user(f"podman inspect {DRONE} --format '{{{{.State.ExitCode}}}}'").stdout.strip() == "143"
    machine.user(f"podman start {DRONE} >/dev/null")
    wait_for(lambda: machine.user(hostkey, check=False).stdout == before, 30, "the same host key after a restart")


def test_a_dead_sshd_stops_the_drone_with_1(machine, drone):
    ready(machine)
    machine.user(f"podman exec {DRONE} sh -c 'kill $(cat ~/.local/state/devbox-drone/pids/sshd)'")
    wait_for(
        lambda: machine.user(f"podman inspect {DRONE} --format '{{{{.State.Status}}}}'").stdout.strip() == "exited",
        30,
        "the drone to exit",
    )
    assert machine.user(f"podman inspect {DRONE} --format '{{{{.State.ExitCode}}}}'").stdout.strip() == "1"
    assert "devbox-drone-init: sshd exited with status" in machine.user(f"podman logs {DRONE} 2>&1").stdout


def test_a_key_secret_mounted_as_root_s_is_said_and_ssh_goes_on(machine, built):
    """Podman mounts a secret as uid 0 unless told uid=: under keep-id the drone user cannot read it."""
    r = machine.user(
        f"""printf 'tskey-auth-e2e\\n' | podman secret create --replace {DRONE}-ts - >/dev/null
        podman run -d --name {DRONE}-ts --userns=keep-id --init -v {DRONE}-ts-home:$HOME -w $HOME \
          --secret {DRONE}-ts,type=mount,target=/run/secrets/tailscale-authkey,mode=0400 {IMAGE} >/dev/null"""
    )
    try:
        wait_for(lambda: "ready" in machine.user(f"podman logs {DRONE}-ts 2>&1", check=False).stdout, 30, "ready")
        logs = machine.user(f"podman logs {DRONE}-ts 2>&1").stdout
        assert "/run/secrets/tailscale-authkey is not readable by dev (uid 1000): no tailnet" in logs
        assert "tskey-auth-e2e" not in logs
    finally:
        machine.user(
            f"podman rm -f -t 0 {DRONE}-ts; podman volume rm -f {DRONE}-ts-home; podman secret rm {DRONE}-ts",
            check=False,
        )
    assert r.returncode == 0
