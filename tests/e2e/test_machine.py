"""The e2e machine itself is real: systemd, rootless Podman 5, Quadlet, devbox installed."""

from __future__ import annotations

import time

PROBE = "e2e-probe"
PROBE_UNIT = f"""\
[Unit]
Description=devbox e2e probe container

[Container]
Image=localhost/devbox-test:latest
ContainerName={PROBE}
RunInit=yes

[Service]
Restart=no
# catatonit passes on the SIGTERM, `sleep` dies of it, podman exits 143: without
# this line every clean stop leaves the unit "failed" (Quadlet in Podman 5.4 does
# not add it).
SuccessExitStatus=143
"""


def test_guest_is_systemd_with_podman_5(machine):
    assert machine.root("systemctl is-system-running").stdout.strip() in ("running", "degraded")
    assert machine.root("cat /proc/1/comm").stdout.strip() == "systemd"
    version = machine.user("podman version --format '{{.Client.Version}}'").stdout.strip()
    assert version.startswith("5."), version
    assert machine.user("podman info --format '{{.Host.CgroupsVersion}}'").stdout.strip() == "v2"


def test_user_session_as_set_up(machine):
    r = machine.user('echo "$(id -un) $PWD $HOME $XDG_RUNTIME_DIR"; cat; exit 3', check=False, input="in\n")
    assert r.returncode == 3
    assert r.stdout == "dev /home/dev /home/dev /run/user/1000\nin\n"
    assert machine.user("systemctl --user is-system-running").stdout.strip() in ("running", "degraded")
    assert machine.user("systemctl --user is-active podman.socket").stdout.strip() == "active"
    masked = machine.user("systemctl --user is-enabled podman-user-wait-network-online.service", check=False)
    assert masked.stdout.strip() == "masked"
    assert machine.root("stat -c %a /dev/net/tun").stdout.strip() == "666"
    assert machine.root("loginctl show-user dev -p Linger --value").stdout.strip() == "yes"


def test_devbox_installed_in_venv_with_pystemd(machine):
    machine.user("command -v devbox && /opt/devbox-venv/bin/python -c 'import pystemd, podman, devbox'")


def test_quadlet_generator_present(machine):
    machine.root("test -x /usr/libexec/podman/quadlet")
    machine.root("test -e /usr/lib/systemd/user-generators/podman-user-generator")
    out = machine.user("QUADLET_UNIT_DIRS=$(mktemp -d) /usr/libexec/podman/quadlet -dryrun -user")
    assert out.returncode == 0


def test_quadlet_container_starts_and_stops(machine):
    unit = f"~/.config/containers/systemd/{PROBE}.container"
    machine.user(f"mkdir -p ~/.config/containers/systemd && cat > {unit}", input=PROBE_UNIT)
    try:
        machine.user("systemctl --user daemon-reload")
        generated = machine.user(f"systemctl --user cat {PROBE}.service").stdout
        assert "--init" in generated, generated
        machine.user(f"systemctl --user start {PROBE}.service", timeout=60)
        machine.wait_until(
            f"{PROBE}.service active",
            lambda: machine.user(f"systemctl --user is-active {PROBE}.service", check=False).stdout.strip() == "active",
        )
        names = machine.user("podman ps --format '{{.Names}}'").stdout.split()
        assert PROBE in names, names
        assert machine.user(f"podman exec {PROBE} cat /proc/1/comm").stdout.strip() == "podman-init"

        t0 = time.monotonic()
        machine.user(f"systemctl --user stop {PROBE}.service", timeout=60)
        assert time.monotonic() - t0 < 8, "stop waited for the kill timeout: is the init missing?"
        assert machine.user(f"systemctl --user is-active {PROBE}.service", check=False).stdout.strip() == "inactive"
        machine.wait_until(
            f"{PROBE} container removed",
            lambda: PROBE not in machine.user("podman ps -a --format '{{.Names}}'").stdout.split(),
        )
    finally:
        machine.user(
            f"systemctl --user stop {PROBE}.service; rm -f {unit}; systemctl --user daemon-reload;"
            f" systemctl --user reset-failed {PROBE}.service; podman rm -f -t 0 --ignore {PROBE}",
            check=False,
        )


def test_keep_id_home_and_named_volume(machine):
    """Facts about --userns=keep-id that the drone design relies on (Podman 5.4)."""
    script = r"""
    set -e
    podman volume rm -f e2e-vol >/dev/null 2>&1 || true
    podman volume create e2e-vol >/dev/null
    trap 'podman volume rm -f e2e-vol >/dev/null' EXIT
    run() { podman run --rm --userns=keep-id "$@" localhost/devbox-test:latest sh -c \
      'echo "$(id -u) $HOME"; touch /data/x 2>/dev/null && echo writable || echo read-only'; }
    run -v e2e-vol:/data             # fresh volume at a path the image lacks: owned by the user
    run -v e2e-vol:/home/dev -v e2e-vol:/data  # a mount at the host user's $HOME path sets HOME
    """
    lines = machine.user(script).stdout.splitlines()
    # Without a passwd entry for the uid, keep-id adds one with home "/" unless the
    # host user's home path exists in the container.
    assert lines == ["1000 /", "writable", "1000 /home/dev", "writable"], lines
