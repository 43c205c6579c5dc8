"""create against what can go wrong: a create killed at any step (`kill -9`), a full disk at any file,
and what it leaves systemd (no reload pending) and the next boot (a drone made stopped stays stopped)."""

from __future__ import annotations

import errno
import os
import pickle
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from devbox.commands import lifecycle
from devbox.errors import DevboxError, ExitCode
from devbox.units import install, installed
from tests.fakes import World
from tests.unit.test_cli import devbox

KILLED = 137


def test_create_stop_and_start_leave_no_reload_pending(world: World, capsys) -> None:
    assert devbox(capsys, "create", "demo")[0] == 0
    assert not world.systemd.need_daemon_reload()
    assert devbox(capsys, "stop", "demo")[0] == 0
    assert not world.systemd.need_daemon_reload()
    assert devbox(capsys, "start", "demo")[0] == 0
    assert not world.systemd.need_daemon_reload()


def test_a_drone_created_with_no_start_has_no_autostart_until_started(world: World, capsys) -> None:
    dropin = world.paths.quadlet_dir / "drone-idle.container.d" / "autostart.conf"
    assert devbox(capsys, "create", "idle", "--no-start")[0] == 0
    assert not dropin.exists()  # the user manager (a reboot) does not start it
    assert installed.find_drones(world.paths)["idle"].autostart is False
    assert ("start", "drone-idle.service") not in world.systemd.calls
    assert devbox(capsys, "start", "idle")[0] == 0
    assert dropin.is_file()
    assert not world.systemd.need_daemon_reload()


# -- kill -9 at every step: a forked create dies there; what the host holds then is what the fakes held ----------


def _host_state(world: World) -> tuple[object, ...]:
    s, p = world.systemd, world.podman
    return (s.active, s.loaded, s.enabled, s.seen_files, p.secrets, p.volumes, p.containers)


def _set_host_state(world: World, state: tuple[object, ...]) -> None:
    s, p = world.systemd, world.podman
    s.active, s.loaded, s.enabled, s.seen_files, p.secrets, p.volumes, p.containers = state  # type: ignore[assignment]


def _steps(world: World, at: Callable[[str], None]) -> None:
    """Make every call into systemd and Podman, and every rename of a written file, a step that calls AT first."""
    for fake in (world.systemd, world.podman):
        for method in [m for m in dir(fake) if not m.startswith("_") and callable(getattr(fake, m))]:
            real = getattr(fake, method)
            setattr(fake, method, lambda *a, _real=real, _name=method, **k: (at(_name), _real(*a, **k))[1])
    replace = os.replace
    os.replace = lambda src, dst: (at(f"rename {Path(dst).name}"), replace(src, dst))[1]  # type: ignore[assignment]


def create_killed_at(world: World, step: int, tmp: Path, **options: object) -> bool:
    """Run create in a child process that dies (no handler runs, like kill -9) at step STEP.
    True when it died there (the fakes then hold what the host held); False when create finished first."""
    state_file = tmp / "host-state.pickle"
    state_file.unlink(missing_ok=True)
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            count = 0

            def at(_: str) -> None:
                nonlocal count
                count += 1
                if count == step:
                    state_file.write_bytes(pickle.dumps(_host_state(world)))
                    os._exit(KILLED)

            _steps(world, at)
            lifecycle.create(world.context(), lifecycle.CreateRequest("crash", new_ssh_key=True), **options)  # type: ignore[arg-type]
            state_file.write_bytes(pickle.dumps(_host_state(world)))
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    assert code in (0, KILLED), f"create failed in the child (exit {code})"
    _set_host_state(world, pickle.loads(state_file.read_bytes()))
    return code == KILLED


def _temp_files(world: World) -> list[str]:
    return sorted(str(p) for p in world.paths.home.rglob("*.tmp"))


def assert_nothing_left(world: World) -> None:
    assert world.leftovers() == []
    assert _temp_files(world) == []
    assert world.podman.secrets == {} and world.podman.volumes == set()
    assert world.systemd.active == set()
    assert not world.systemd.need_daemon_reload()


@pytest.mark.parametrize("start", [True, False])
def test_a_create_killed_at_any_step_is_finished_off_by_one_destroy(world: World, tmp_path: Path, start: bool) -> None:
    step = 0
    while True:
        step += 1
        killed = create_killed_at(world, step, tmp_path, start=start)
        ctx = world.context()
        if "crash" in installed.find_drones(world.paths):
            lifecycle.destroy(ctx, "crash")  # one command cleans up
        else:  # killed before its unit existed: create works again, and destroy then leaves nothing
            assert killed
            lifecycle.create(ctx, lifecycle.CreateRequest("crash", new_ssh_key=True), start=start)
            lifecycle.destroy(ctx, "crash")
        assert_nothing_left(world), f"after a kill at step {step}"
        if not killed:
            break
    assert step > 10  # every write, every systemd and Podman call was a place to die


@pytest.mark.parametrize("failing", range(1, 40))
def test_a_full_disk_at_any_write_leaves_nothing_half_written(
    world: World, monkeypatch: pytest.MonkeyPatch, failing: int
) -> None:
    """ENOSPC from each fsync in turn (a file's, then its directory's after the rename)."""
    calls = 0
    fsync = os.fsync

    def full(fd: int) -> None:
        nonlocal calls
        calls += 1
        if calls == failing:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", full)
    try:
        lifecycle.create(world.context(), lifecycle.CreateRequest("full", new_ssh_key=True))
    except DevboxError as exc:
        assert "No space left on device" in exc.message
        assert world.leftovers() == [] and _temp_files(world) == []
        assert world.systemd.active == set()
        return
    assert calls < failing, "create succeeded although a write failed"
    monkeypatch.setattr(os, "fsync", fsync)
    lifecycle.destroy(world.context(), "full")
    assert_nothing_left(world)


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)], capture_output=True
    )
    return result.returncode == 0


@pytest.mark.parametrize(("directory", "size"), [("containers", "4k"), ("systemd", "4k"), ("systemd", "8k")])
def test_a_really_full_config_directory_leaves_nothing(world: World, directory: str, size: str) -> None:
    """A small tmpfs over ~/.config/containers or ~/.config/systemd: create fails cleanly, writes nothing."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where = world.paths.home / ".config" / directory
    if not _mount_tmpfs(where, size):
        pytest.skip("cannot mount a tmpfs here (no CAP_SYS_ADMIN?)")
    try:
        with pytest.raises(DevboxError) as raised:
            lifecycle.create(world.context(), lifecycle.CreateRequest("full"))
        assert raised.value.code is ExitCode.FAILURE
        assert "No space left on device" in raised.value.message
        assert sorted(str(p) for p in where.rglob("*") if p.is_file()) == []
        assert world.leftovers() == []
        assert world.systemd.active == set()
    finally:
        subprocess.run(["umount", str(where)], check=True)


def test_stale_temporary_files_of_dead_writers_are_removed_live_ones_kept(tmp_path: Path) -> None:
    target = tmp_path / "drone-x.container"
    child = subprocess.Popen(["true"])  # its PID is a writer that is gone
    child.wait()
    stale = tmp_path / f".drone-x.container.{child.pid}.abcd.tmp"
    live = tmp_path / f".drone-x.container.{os.getpid()}.efgh.tmp"
    other = tmp_path / f".drone-xy.container.{child.pid}.ijkl.tmp"
    for path in (stale, live, other):
        path.write_text("half")
    install.atomic_write(target, "whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, live.name, other.name])


def test_a_port_another_create_took_meanwhile_is_chosen_again(world: World, capsys, monkeypatch) -> None:
    """Two creates of different drones at once: each chose its SSH port before either wrote its unit."""
    from devbox.commands import lifecycle

    chosen = lifecycle.free_ssh_port(world.paths)
    real_install_shared = lifecycle._install_shared

    def meanwhile(ctx) -> None:  # the other create writes its unit with the same port first
        monkeypatch.setattr(lifecycle, "_install_shared", real_install_shared)
        real_install_shared(ctx)
        assert devbox(capsys, "create", "other", "--ssh-port", str(chosen), "--no-start")[0] == 0

    monkeypatch.setattr(lifecycle, "_install_shared", meanwhile)
    code, out, err = devbox(capsys, "create", "first", "--json")
    assert code == 0, err
    first = (world.paths.quadlet_dir / "drone-first.container").read_text()
    other = (world.paths.quadlet_dir / "drone-other.container").read_text()
    assert f"Label=io.devbox.ssh-port={chosen}\n" in other
    assert f"Label=io.devbox.ssh-port={chosen}\n" not in first and "Label=io.devbox.ssh-port=" in first


def test_the_last_slot_taken_meanwhile_is_refused_and_nothing_written(world: World, capsys, monkeypatch) -> None:
    from devbox.commands import lifecycle

    world.paths.config_file.parent.mkdir(parents=True, exist_ok=True)
    world.paths.config_file.write_text("max_drones = 1\n")
    real_install_shared = lifecycle._install_shared

    def meanwhile(ctx) -> None:
        monkeypatch.setattr(lifecycle, "_install_shared", real_install_shared)
        real_install_shared(ctx)
        assert devbox(capsys, "create", "other", "--no-start")[0] == 0

    monkeypatch.setattr(lifecycle, "_install_shared", meanwhile)
    code, _, err = devbox(capsys, "create", "first")
    assert code == ExitCode.LIMIT and "drone limit is reached" in err
    assert not (world.paths.quadlet_dir / "drone-first.container").exists()
