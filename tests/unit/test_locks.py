"""The per-drone lock (commands/locks.py): the idle clean-up re-checks a drone under it before it acts,
and two commands changing one drone never interleave. Fakes, plus real processes for the races."""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import os
import threading
import time
from dataclasses import replace
from datetime import timedelta

import pytest

from devbox.commands import lifecycle, locks
from devbox.errors import DevboxError, ExitCode
from devbox.host.podman import ContainerInfo
from devbox.host.probe import Mounts, RepoWork, WorkCheck
from tests.fakes import FIXED_NOW, World
from tests.unit.test_cli import devbox
from tests.unit.test_cli_cleanup import make, running, stopped_long_ago


def running_container(world: World, name: str) -> ContainerInfo:
    running(world, name)
    return world.podman.containers[name]


def test_the_clean_up_does_not_destroy_a_drone_started_during_its_work_check(world: World, capsys) -> None:
    stopped_long_ago(world, capsys, "late")
    world.now = FIXED_NOW + timedelta(days=2)
    check_work = world.probe.check_work

    def user_starts_it(image: str, mounts: Mounts) -> WorkCheck:
        lifecycle.start(world.context(), "late")  # while the clean-up looks at its home
        world.podman.containers["late"] = replace(running_container(world, "late"), started_at=world.now)
        return check_work(image, mounts)

    world.probe.check_work = user_starts_it  # type: ignore[method-assign]
    code, out, _ = devbox(capsys, "cleanup", "--apply")
    assert code == 0
    lines = out.splitlines()
    assert lines[1] == "late (stopped): keep: idle 2d (last: stopped), over idle_destroy 1d"
    assert (
        "  changed since it was checked: running now, idle 0s (last: started), within idle_stop 12h: skipped" in lines
    )
    assert (
        "  done: skipped: changed since it was checked: running now, idle 0s (last: started), within idle_stop 12h"
        in lines
    )
    assert (world.paths.quadlet_dir / "drone-late.container").exists()
    assert "drone-late.service" in world.systemd.active
    assert "remove_volume drone-late-home" not in world.podman.calls


def test_the_clean_up_does_not_stop_a_drone_touched_while_it_was_measured(world: World, capsys) -> None:
    make(world, capsys, "busy", "--idle-stop", "1h")
    world.now = FIXED_NOW + timedelta(hours=5)
    newest_file = world.probe.newest_file

    def touched_meanwhile(volume: str):  # after the touch signal was read
        assert devbox(capsys, "touch", "busy")[0] == 0
        return newest_file(volume)

    world.probe.newest_file = touched_meanwhile  # type: ignore[method-assign]
    code, out, _ = devbox(capsys, "cleanup", "--apply", "--json")
    assert code == 0
    drone = json.loads(out)["drones"][0]
    assert drone["action"] == "keep"
    assert (
        drone["done"]
        == "skipped: changed since it was checked: running now, idle 0s (last: touch), within idle_stop 1h"
    )
    assert "drone-busy.service" in world.systemd.active


def test_the_clean_up_does_not_destroy_a_drone_made_anew_while_it_was_checked(world: World, capsys) -> None:
    stopped_long_ago(world, capsys, "again")
    world.now = FIXED_NOW + timedelta(days=2)
    check_work = world.probe.check_work

    def remade(image: str, mounts: Mounts) -> WorkCheck:
        result = check_work(image, mounts)
        world.now += timedelta(seconds=5)
        assert devbox(capsys, "destroy", "again", "--yes")[0] == 0
        assert devbox(capsys, "create", "again", "--no-start")[0] == 0
        return result

    world.probe.check_work = remade  # type: ignore[method-assign]
    out = devbox(capsys, "cleanup", "--apply")[1]
    assert "  done: skipped: destroyed or made anew since it was checked" in out.splitlines()
    assert (world.paths.quadlet_dir / "drone-again.container").exists()


def hold_lock_elsewhere(world: World, name: str) -> int:
    """What another process holding the lock looks like: a flock on a descriptor of its own, and its PID."""
    path = world.paths.lock_file(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.pwrite(fd, b"4242\n", 0)
    return fd


def test_the_clean_up_skips_a_drone_another_command_is_changing(world: World, capsys) -> None:
    stopped_long_ago(world, capsys, "held")
    world.probe.work["drone-held-home"] = WorkCheck((RepoWork("ws"),))
    world.now = FIXED_NOW + timedelta(days=2)
    fd = hold_lock_elsewhere(world, "held")
    try:
        out = devbox(capsys, "cleanup", "--apply")[1]
    finally:
        os.close(fd)
    assert "  done: skipped: another devbox command is changing it" in out.splitlines()
    assert (world.paths.quadlet_dir / "drone-held.container").exists()
    out = devbox(capsys, "cleanup", "--apply")[1]  # once it is free, the clean-up acts
    assert "  done: destroyed" in out.splitlines()


def test_a_command_waits_for_the_lock_and_says_so(world: World, capsys) -> None:
    make(world, capsys, "wait")
    fd = hold_lock_elsewhere(world, "wait")
    heard: list[str] = []
    threading.Timer(0.3, os.close, [fd]).start()
    began = time.monotonic()
    lifecycle.stop(world.context(), "wait", progress=heard.append)
    assert time.monotonic() - began >= 0.25
    assert heard[0] == "waiting for another devbox command (PID 4242) working on drone wait"
    assert "drone-wait.service" not in world.systemd.active


def test_a_lock_held_too_long_is_a_busy_error(world: World) -> None:
    fd = hold_lock_elsewhere(world, "slow")
    try:
        with pytest.raises(DevboxError) as raised, locks.drone_lock(world.paths, "slow", wait=0.2):
            pass
    finally:
        os.close(fd)
    assert raised.value.code is ExitCode.BUSY
    assert (
        raised.value.message == "drone slow is busy: another devbox command (PID 4242) is changing it; try again later"
    )


def test_the_lock_is_reentrant_in_one_process_and_released_after(world: World) -> None:
    with locks.drone_lock(world.paths, "x", wait=0), locks.drone_lock(world.paths, "x", wait=0):
        fd = os.open(world.paths.lock_file("x"), os.O_RDWR)
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free again
    os.close(fd)


def _create_in_a_process(world: World, name: str, go, results) -> None:
    """A whole `devbox create NAME` in its own process; its fakes are its own copy, its files the shared disk."""
    ensure_image = lifecycle._ensure_image

    def slow_image(ctx, image, progress):  # both processes are past their checks before either writes
        time.sleep(0.3)
        ensure_image(ctx, image, progress)

    lifecycle._ensure_image = slow_image
    go.wait()
    try:
        lifecycle.create(world.context(), lifecycle.CreateRequest(name))
        results.put(0)
    except DevboxError as exc:
        results.put((int(exc.code), exc.message))
    except BaseException as exc:  # pragma: no cover - reported to the parent
        results.put(repr(exc))


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_two_processes_creating_one_name_make_one_drone_and_one_exists_error(world: World) -> None:
    fork = multiprocessing.get_context("fork")
    go, results = fork.Event(), fork.Queue()
    procs = [fork.Process(target=_create_in_a_process, args=(world, "twin", go, results)) for _ in range(2)]
    for proc in procs:
        proc.start()
    go.set()
    outcomes = [results.get(timeout=30) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    assert sorted(outcomes, key=repr) == [(int(ExitCode.EXISTS), "drone twin exists already"), 0]
    assert sorted(p.name for p in world.paths.quadlet_dir.glob("drone-twin*")) == [
        "drone-twin.container",
        "drone-twin.container.d",
    ]
