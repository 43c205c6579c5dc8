"""--with containers: rootless Podman in the drone (README "Containers in a drone"; e2e: tests/e2e/test_containers.py)."""

from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import signal
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from devbox.cleanup.activity import DroneView, gather
from devbox.drone import containers
from devbox.errors import ExitCode
from devbox.host.probe import count_inner_containers
from tests.conftest import Generator
from tests.fakes import FakeProbe, World, fake_paths
from tests.unit import test_backup, test_drone_init
from tests.unit.cases import cases
from tests.unit.test_backup import make_drone
from tests.unit.test_cli import devbox
from tests.unit.test_drone_init import INIT, RECORD, Drone, exit_code, wait_for
from tests.unit.test_quadlet_generator import generate, option_values, podman_run_argv

here = test_backup.here  # fixtures shared with those tests
drone = test_drone_init.drone
ROOT = Path(__file__).resolve().parents[2]
NO_CONTAINERS = ROOT / "templates" / "drone" / "no-containers"


def test_create_with_containers_writes_what_the_inner_podman_needs_and_reads_it_back(world: World, capsys) -> None:
    assert devbox(capsys, "create", "a", "--with", "containers")[0] == 0
    unit = (world.paths.quadlet_dir / "drone-a.container").read_text()
    for line in (
        "Environment=DEVBOX_WITH=containers",
        "Label=io.devbox.with=containers",
        "AddDevice=/dev/net/tun",
        "PodmanArgs=--security-opt=unmask=/proc/*",
        "Volume=drone-a-containers:/var/lib/devbox-containers",
    ):
        assert line + "\n" in unit
    assert "no-containers" not in unit
    assert json.loads(devbox(capsys, "status", "a", "--json")[1])["with"] == ["containers"]
    assert devbox(capsys, "create", "b")[0] == 0
    plain = (world.paths.quadlet_dir / "drone-b.container").read_text()
    assert "AddDevice" not in plain and "unmask" not in plain and "drone-b-containers" not in plain
    assert "/no-containers:/usr/local/bin/podman:ro\n" in plain and "/no-containers:/usr/local/bin/docker:ro\n" in plain


def test_a_host_that_cannot_carry_them_is_refused_in_one_line_and_nothing_is_written(
    world: World, capsys, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(containers, "TUN", tmp_path / "no-tun")
    code, _, err = devbox(capsys, "create", "a", "--with", "containers")
    assert code == ExitCode.ENVIRONMENT
    assert (
        err
        == f"devbox: --with containers cannot work on this host: {tmp_path}/no-tun is missing, which the inner containers' network (pasta) needs\n"
    )
    assert not (world.paths.quadlet_dir / "drone-a.container").exists()
    assert devbox(capsys, "create", "a")[0] == 0  # a drone without it is fine


def test_the_kernel_must_mount_overlay_in_a_user_namespace() -> None:
    assert containers.host_problem(True, "6.12.48+deb13-amd64") is None
    assert containers.host_problem(True, "5.13.0") is None
    assert "Linux 5.10.0-30-amd64 cannot mount overlay" in (containers.host_problem(True, "5.10.0-30-amd64") or "")
    assert containers.host_problem(True, "odd") is None  # unknown: not refused on a guess


def test_the_generated_podman_run_adds_no_privilege_beyond_the_documented_ones(
    generator: Generator, tmp_path: Path
) -> None:
    """Through the real Quadlet generator: a tun device and an unmasked /proc, nothing else."""
    spec = cases()["containers"]
    units, stderr = generate(generator, spec, tmp_path)
    assert "unsupported key" not in stderr, stderr
    argv = podman_run_argv(units["drone-inner.service"])
    assert "--privileged" not in argv and not [a for a in argv if a.startswith("--privileged")]
    assert option_values(argv, "--cap-add") == [] and option_values(argv, "--cap-drop") == []
    assert option_values(argv, "--device") == ["/dev/net/tun"]
    assert option_values(argv, "--security-opt") == ["unmask=/proc/*"]  # no seccomp=unconfined, no label=disable
    assert option_values(argv, "--userns") == ["keep-id"]
    assert "drone-inner-containers:/var/lib/devbox-containers" in option_values(argv, "-v")


def test_destroy_removes_the_containers_store(world: World, capsys) -> None:
    assert devbox(capsys, "create", "a", "--with", "containers")[0] == 0
    world.podman.volumes |= {"drone-a-home", "drone-a-containers"}
    code, out, _ = devbox(capsys, "destroy", "a", "--yes")
    assert code == 0 and "and its containers' store" in out
    assert not world.podman.volumes
    assert devbox(capsys, "create", "b")[0] == 0
    world.podman.volumes |= {"drone-b-home"}
    data = json.loads(devbox(capsys, "destroy", "b", "--yes", "--json")[1])
    assert data["containers_store_removed"] is False


def test_backup_says_the_containers_store_is_left_out(world: World, capsys, here: Path) -> None:
    make_drone(world, capsys, "a", "--with", "containers", "--no-start")
    code, _, err = devbox(capsys, "backup", "a", "-o", "x.tar")
    assert code == 0
    assert err == (
        "the containers' store of drone a (drone-a-containers: images and containers run inside it) "
        "is not in the backup: load or build them again after a restore\n"
    )
    make_drone(world, capsys, "b", "--no-start")
    assert devbox(capsys, "backup", "b", "-o", "y.tar")[2] == ""


def test_restore_brings_containers_back(world: World, capsys, here: Path) -> None:
    make_drone(world, capsys, "a", "--with", "containers")
    assert devbox(capsys, "backup", "a", "-o", "a.tar")[0] == 0
    before = (world.paths.quadlet_dir / "drone-a.container").read_text()
    assert devbox(capsys, "destroy", "a", "--yes")[0] == 0
    assert devbox(capsys, "restore", str(here / "a.tar"))[0] == 0
    after = (world.paths.quadlet_dir / "drone-a.container").read_text()
    for line in ("Environment=DEVBOX_WITH=containers\n", "Volume=drone-a-containers:/var/lib/devbox-containers\n"):
        assert line in before and line in after


def view(running: bool, with_containers: bool) -> DroneView:
    return DroneView("a", running, "drone-a", "drone-a-home", None, None, None, containers=with_containers)


def test_running_inner_containers_are_activity_now(tmp_path: Path) -> None:
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    paths = fake_paths(tmp_path, tmp_path / "run")
    probe = FakeProbe()

    def signal(v: DroneView):
        return {s.kind: s for s in gather(v, paths, probe, now, False, lambda p, t: None)}.get("containers")

    probe.inner["drone-a"] = 2
    live = signal(view(True, True))
    assert live is not None and live.at == now and live.live and live.detail == "2 containers running inside"
    probe.inner["drone-a"] = 0
    idle = signal(view(True, True))
    assert idle is not None and idle.at is None and idle.detail == "none running inside"
    assert signal(view(False, True)).detail == "not running"  # type: ignore[union-attr]
    probe.calls.clear()
    assert signal(view(True, False)) is None and "inner_containers drone-a" not in probe.calls


def test_each_inner_container_has_one_conmon() -> None:
    assert count_inner_containers("catatonit\nbash\nconmon\nsleep\nconmon\npodman\n") == 2
    assert count_inner_containers("") == 0


def run_no_containers(tmp_path: Path, name: str, *args: str, env: dict[str, str] | None = None):
    """The wrapper as /usr/local/bin/NAME, with a real NAME further on PATH that says it ran."""
    wrapper_dir, real_dir = tmp_path / "local", tmp_path / "real"
    for d in (wrapper_dir, real_dir):
        d.mkdir(exist_ok=True)
    (wrapper_dir / name).symlink_to(NO_CONTAINERS)
    (real_dir / name).write_text(f'#!/bin/sh\necho "real {name} $*"\n')
    (real_dir / name).chmod(0o755)
    path = f"{wrapper_dir}:{real_dir}:/usr/bin:/bin"
    return subprocess.run(
        [str(wrapper_dir / name), *args], env={"PATH": path, **(env or {})}, capture_output=True, text=True, timeout=10
    )


@pytest.mark.parametrize("name", ["podman", "docker"])
def test_without_containers_podman_and_docker_say_why(tmp_path: Path, name: str) -> None:
    refused = run_no_containers(tmp_path, name, "run", "--rm", "debian", "true")
    assert refused.returncode == 125 and refused.stdout == ""
    assert "this drone runs no containers: it was made without --with containers" in refused.stderr
    assert "devbox create NAME --with containers" in refused.stderr


@pytest.mark.parametrize(
    ("args", "env"),
    [(("--remote", "ps"), {}), (("-H", "ssh://build", "ps"), {}), (("ps",), {"DOCKER_HOST": "tcp://build:2375"})],
)
def test_a_client_of_an_engine_elsewhere_runs_the_real_command(tmp_path: Path, args, env) -> None:
    ran = run_no_containers(tmp_path, "docker", *args, env=env)
    assert ran.returncode == 0 and ran.stdout == f"real docker {' '.join(args)}\n", ran.stderr


# --- the drone's init with containers (templates/image/devbox-drone-init) ---

PODMAN_STANDIN = RECORD + 'case "$1 $2" in "system service") exec sleep 1000 ;; esac\nexit 0\n'
# sudo -n tee /etc/subuid: the file goes to the records instead.
SUDO_STANDIN = RECORD + '[ "$1 $2" = "-n tee" ] && exec cat >"$DEVBOX_TEST_RECORDS/$(basename "$3")"\nexit 1\n'


def test_with_containers_the_init_serves_the_docker_api_and_tells_ssh_sessions(drone: Drone, tmp_path: Path) -> None:
    for name, text in (("podman", PODMAN_STANDIN), ("sudo", SUDO_STANDIN)):
        (drone.bin / name).write_text(text)
        (drone.bin / name).chmod(0o755)
    store, runtime = tmp_path / "store", tmp_path / "xdg"
    store.mkdir()
    drone.env |= {"DEVBOX_WITH": "containers", "DEVBOX_CONTAINERS_STORE": str(store), "XDG_RUNTIME_DIR": str(runtime)}
    proc = drone.start()
    drone.ready(proc, "sshd")
    sock = f"unix://{runtime}/podman/podman.sock"

    def podman(*argv: str) -> list:
        return [c for c in drone.calls("podman") if c.argv[: len(argv)] == list(argv)]

    wait_for(lambda: podman("system", "service") and podman("start"), 15, "the Podman service and the restarts")
    [service] = podman("system", "service")
    assert service.argv == ["system", "service", "--time=0", sock]
    storage_conf = drone.state / "containers" / "storage.conf"
    assert service.env["CONTAINERS_STORAGE_CONF"] == str(storage_conf)
    assert f'rootless_storage_path = "{store}/storage"\n' in storage_conf.read_text()
    conf = (drone.home / ".config/containers/containers.conf.d/10-devbox-drone.conf").read_text()
    assert 'utsns = "host"\n' in conf and 'cgroups = "disabled"\n' in conf and 'cgroup_manager = "cgroupfs"\n' in conf
    [restart] = podman("start")
    assert restart.argv == [
        "start",
        "--all",
        "--filter",
        "restart-policy=always",
        "--filter",
        "restart-policy=unless-stopped",
    ]
    sessions = (drone.home / ".ssh" / "environment").read_text().splitlines()
    assert f"DOCKER_HOST={sock}" in sessions and f"CONTAINERS_STORAGE_CONF={storage_conf}" in sessions
    for name in ("subuid", "subgid"):
        assert (drone.records / name).read_text().startswith(f"{getpass.getuser()}:1:")
    assert "containers=running" in drone.run("status").stdout.splitlines()
    assert f"containers (DOCKER_HOST={sock})" in drone.output()
    os.kill(service.pid, signal.SIGKILL)  # supervised: the drone restarts
    assert exit_code(proc) == 1 and "podman exited with status 137" in drone.output()


@pytest.mark.skipif(shutil.which("podman") is not None, reason="podman is installed here: the init would find it")
def test_with_containers_but_no_podman_in_the_image_the_drone_runs_without_them(drone: Drone) -> None:
    drone.env["DEVBOX_WITH"] = "containers"
    proc = drone.start()
    drone.ready(proc, "sshd")
    assert "devbox-drone-init: containers: this image has no podman" in drone.output()
    assert "DOCKER_HOST" not in (drone.home / ".ssh" / "environment").read_text()
    assert "containers=stopped" in drone.run("status").stdout.splitlines()
    proc.send_signal(signal.SIGTERM)
    assert exit_code(proc) == 143


def subids(tmp_path: Path, uid_map: str, own: int) -> list[str]:
    """The init's own subids function on a given map."""
    function = re.search(r"^subids\(\) \{\n.*?^\}\n", INIT.read_text(), re.S | re.M)
    assert function
    map_file = tmp_path / "uid_map"
    map_file.write_text(uid_map)
    script = function.group(0) + 'user=dev; subids "$1" "$2"'
    out = subprocess.run(
        ["bash", "-c", script, "_", str(map_file), str(own)], capture_output=True, text=True, check=True
    )
    return out.stdout.split()


def test_subordinate_ids_are_the_drones_own_ids_but_root_and_the_user(tmp_path: Path) -> None:
    keep_id = "         0          1       1000\n      1000          0          1\n      1001       1001      64536\n"
    assert subids(tmp_path, keep_id, 1000) == ["dev:1:999", "dev:1001:64536"]
    high_uid = "0 1 65536\n70000 0 1\n"  # keep-id for a user above the mapped range
    assert subids(tmp_path, high_uid, 70000) == ["dev:1:65535"]
    assert subids(tmp_path, "0 0 1\n", 0) == []  # nothing to hand out
