"""`devbox cleanup`, `devbox touch` and the clean-up timer, by exact output, with fakes and a movable clock."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import pytest

from devbox.config import load_config
from devbox.errors import ExitCode
from devbox.host.podman import ContainerInfo
from devbox.host.probe import RepoWork, WorkCheck
from devbox.units import unitfile
from devbox.units.render import render_cleanup
from tests.fakes import FIXED_NOW, World
from tests.unit.cases import HOST
from tests.unit.test_cli import devbox

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "cleanup"


def running(world: World, name: str) -> None:
    world.podman.containers[name] = ContainerInfo(
        f"drone-{name}", name, "running", "localhost/devbox-drone:latest", FIXED_NOW, labels={"drone": name}
    )


def make(world: World, capsys, name: str, *args: str) -> None:
    assert devbox(capsys, "create", name, *args)[0] == 0
    running(world, name)
    world.podman.volumes.add(f"drone-{name}-home")


def stop(world: World, capsys, name: str) -> None:
    assert devbox(capsys, "stop", name)[0] == 0
    world.podman.containers.pop(name)


def test_the_timer_comes_with_the_first_drone_and_goes_with_the_last(world: World, capsys) -> None:
    make(world, capsys, "one")
    timer = world.paths.unit_dir / "devbox-cleanup.timer"
    assert timer.is_file() and "devbox-cleanup.timer" in world.systemd.enabled
    make(world, capsys, "two")
    assert world.systemd.calls.count(("enable", "devbox-cleanup.timer")) == 2  # idempotent; no link in a fake
    devbox(capsys, "destroy", "one", "--yes")
    assert timer.is_file()
    devbox(capsys, "destroy", "two", "--yes")
    assert not timer.exists() and not (world.paths.unit_dir / "devbox-cleanup.service").exists()
    assert ("disable", "devbox-cleanup.timer") in world.systemd.calls


def test_keep_timer_keeps_it_after_the_last_drone(world: World, capsys) -> None:
    world.paths.config_file.parent.mkdir(parents=True)
    world.paths.config_file.write_text("[cleanup]\nkeep_timer = true\n")
    make(world, capsys, "one")
    devbox(capsys, "destroy", "one", "--yes")
    assert (world.paths.unit_dir / "devbox-cleanup.timer").is_file()


def test_install_and_uninstall(world: World, capsys) -> None:
    code, out, _ = devbox(capsys, "cleanup", "--install")
    assert code == 0
    assert out.splitlines()[-1] == "devbox-cleanup.timer is enabled: systemctl --user list-timers devbox-cleanup.timer"
    assert world.files() == ["systemd/user/devbox-cleanup.service", "systemd/user/devbox-cleanup.timer"]
    assert devbox(capsys, "cleanup", "--uninstall") == (0, "devbox-cleanup.timer is removed (2 files)\n", "")
    assert world.files() == []


def test_cleanup_units_match_golden_files() -> None:
    for rendered in render_cleanup(HOST):
        path = GOLDEN / rendered.relative_path
        if os.environ.get("DEVBOX_UPDATE_GOLDEN") == "1":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(rendered.text)
        assert rendered.text == path.read_text(), f"{path} differs"
    timer, service = (unitfile.parse_sections(r.text) for r in render_cleanup(HOST))
    assert unitfile.values(timer, "Timer", "OnCalendar") == ["daily"]
    assert unitfile.values(timer, "Timer", "Persistent") == ["true"]
    assert unitfile.values(timer, "Install", "WantedBy") == ["timers.target"]
    assert unitfile.values(service, "Service", "Type") == ["oneshot"]
    (exec_start,) = unitfile.values(service, "Service", "ExecStart")
    assert unitfile.split_words(exec_start)[-2:] == ["cleanup", "--apply"]


def test_per_drone_overrides_are_labels(world: World, capsys) -> None:
    make(world, capsys, "demo", "--idle-stop", "30m", "--idle-destroy", "2d", "--keep")
    labels = unitfile.labels((world.paths.quadlet_dir / "drone-demo.container").read_text())
    assert (labels["idle-stop"], labels["idle-destroy"], labels["keep"]) == ("30m", "2d", "true")
    code, _, err = devbox(capsys, "create", "bad", "--idle-stop", "12 hours")
    assert code == ExitCode.INVALID_INPUT
    assert "invalid duration '12 hours'" in err


def test_cleanup_config_is_checked(world: World) -> None:
    world.paths.config_file.parent.mkdir(parents=True)
    world.paths.config_file.write_text('[cleanup]\nidle_stop = "6h"\nidle_destroy = "3d"\n')
    assert load_config(world.paths.config_file).cleanup.idle_stop == 6 * 3600
    world.paths.config_file.write_text('[cleanup]\nidle_stopp = "6h"\n')
    with pytest.raises(Exception, match=r"unknown key cleanup.idle_stopp \(allowed: idle_destroy, idle_stop"):
        load_config(world.paths.config_file)
    world.paths.config_file.write_text('[cleanup]\nidle_stop = "soon"\n')
    with pytest.raises(Exception, match=r"cleanup.idle_stop: invalid duration 'soon'"):
        load_config(world.paths.config_file)


def test_dry_run_reports_and_does_nothing(world: World, capsys) -> None:
    make(world, capsys, "idle", "--idle-stop", "1h")
    make(world, capsys, "ssh", "--idle-stop", "1h")
    make(world, capsys, "kept", "--idle-stop", "1h", "--keep")
    world.probe.ssh["drone-ssh"] = 2
    world.now = FIXED_NOW + timedelta(hours=1, seconds=1)
    calls = len(world.systemd.calls)
    code, out, err = devbox(capsys, "cleanup")
    assert (code, err) == (0, "")
    assert out == (
        "devbox cleanup at 2026-11-22 09:00:01 UTC: dry run, nothing done (devbox cleanup --apply acts)\n"
        "idle (running): would stop: idle 1h (last: started), over idle_stop 1h\n"
        "  signals: ssh: no open session; session: no tmux session; broker: never; touch: never; cpu: not measured; files: no files;"
        " started: 1h ago; created: 1h ago\n"
        "kept (running): keep: exempt (keep)\n"
        "  signals: ssh: no open session; session: no tmux session; broker: never; touch: never; cpu: not measured; files: no files;"
        " started: 1h ago; created: 1h ago\n"
        "ssh (running): keep: active: ssh: 2 open sessions\n"
        "  signals: ssh: 2 open sessions; session: no tmux session; broker: never; touch: never; cpu: not measured; files: no files;"
        " started: 1h ago; created: 1h ago\n"
    )
    assert [c for c in world.systemd.calls[calls:] if c[0] != "states"] == []
    data = json.loads(devbox(capsys, "cleanup", "--json")[1])
    assert (data["applied"], [d["action"] for d in data["drones"]]) == (False, ["stop", "keep", "keep"])
    idle = data["drones"][0]
    assert idle["idle_seconds"] == 3601 and idle["policy"] == {"idle_stop": "1h", "idle_destroy": "14d", "keep": False}
    assert {"kind": "started", "at": "2026-11-22T08:00:00Z", "age_seconds": 3601, "live": False, "detail": ""} in idle[
        "signals"
    ]


def test_apply_stops_the_idle_and_leaves_the_active(world: World, capsys) -> None:
    make(world, capsys, "idle", "--idle-stop", "1h")
    make(world, capsys, "broker", "--idle-stop", "1h")
    world.now = FIXED_NOW + timedelta(hours=2)
    broker_file = world.paths.activity_file("broker", "broker")
    broker_file.parent.mkdir(parents=True, exist_ok=True)
    broker_file.touch()
    recent = (world.now - timedelta(minutes=5)).timestamp()
    os.utime(broker_file, (recent, recent))
    code, out, _ = devbox(capsys, "cleanup", "--apply")
    assert code == 0
    assert "broker (running): keep: idle 5m (last: broker), within idle_stop 1h\n" in out
    assert "idle (running): stop: idle 2h (last: started), over idle_stop 1h\n" in out
    assert "  done: stopped\n" in out
    assert ("stop", "drone-idle.service") in world.systemd.calls
    assert ("stop", "drone-broker.service") not in world.systemd.calls


def test_touch_marks_a_drone_active(world: World, capsys) -> None:
    make(world, capsys, "demo", "--idle-stop", "1h")
    world.now = FIXED_NOW + timedelta(hours=5)
    assert devbox(capsys, "touch", "demo") == (0, "drone demo is marked active\n", "")
    out = devbox(capsys, "cleanup")[1]
    assert "demo (running): keep: idle 0s (last: touch), within idle_stop 1h\n" in out
    assert devbox(capsys, "touch", "nope")[0] == ExitCode.NOT_FOUND


def stopped_long_ago(world: World, capsys, name: str) -> None:
    make(world, capsys, name, "--idle-destroy", "1d")
    stop(world, capsys, name)
    world.systemd.stopped_at[f"drone-{name}.service"] = FIXED_NOW


def test_apply_destroys_a_clean_stopped_drone(world: World, capsys) -> None:
    stopped_long_ago(world, capsys, "clean")
    world.probe.work["drone-clean-home"] = WorkCheck((RepoWork("ws"),))
    world.now = FIXED_NOW + timedelta(days=2)
    code, out, _ = devbox(capsys, "cleanup", "--apply")
    assert code == 0
    assert out.splitlines()[1:3] == [
        "clean (stopped): destroy: idle 2d (last: stopped), over idle_destroy 1d",
        "  no uncommitted changes, stashes or unpushed commits",
    ]
    assert "  done: destroyed" in out.splitlines()
    assert "remove_volume drone-clean-home" in world.podman.calls


def test_apply_rescues_dirty_work_before_destroying(world: World, capsys) -> None:
    stopped_long_ago(world, capsys, "dirty")
    world.probe.work["drone-dirty-home"] = WorkCheck((RepoWork("ws", unpushed=2),))
    world.now = FIXED_NOW + timedelta(days=2)
    code, out, _ = devbox(capsys, "cleanup", "--apply")
    assert code == 0
    assert world.probe.calls[-1] == "push_rescue drone-dirty-home devbox/rescue/dirty/20261124 ws"
    assert "  pushed ~/ws -> devbox/rescue/dirty/20261124" in out.splitlines()
    assert "  done: work pushed to rescue branches, then destroyed" in out.splitlines()
    assert ("start", "drone-dirty-creds.socket") in world.systemd.calls  # the push uses the drone's credentials
    assert not (world.paths.quadlet_dir / "drone-dirty.container").exists()


def test_apply_exports_and_keeps_when_the_push_fails(world: World, capsys) -> None:
    stopped_long_ago(world, capsys, "dirty")
    world.probe.work["drone-dirty-home"] = WorkCheck((RepoWork("ws", changes=1),))
    world.probe.push_fails["ws"] = "rejected"
    world.now = FIXED_NOW + timedelta(days=2)
    code, out, _ = devbox(capsys, "cleanup", "--apply", "--json")
    assert code == 0
    (drone,) = json.loads(out)["drones"]
    tarball = world.paths.rescue_dir / "dirty-20261124.tar"
    assert drone["action"] == "export-and-keep"
    assert drone["reasons"][-2:] == [
        "could not push to a rescue branch: ~/ws: rejected",
        f"home volume exported to {tarball}",
    ]
    assert drone["done"] == f"kept; home volume exported to {tarball}"
    assert tarball.is_file()
    assert (world.paths.quadlet_dir / "drone-dirty.container").exists()
    assert "remove_volume drone-dirty-home" not in world.podman.calls


def test_apply_fails_loudly_when_work_can_be_neither_pushed_nor_exported(world: World, capsys) -> None:
    stopped_long_ago(world, capsys, "dirty")
    world.probe.work["drone-dirty-home"] = WorkCheck((RepoWork("ws", stashes=1, has_remote=False),))
    world.probe.push_fails["ws"] = "no remote to push to"
    world.probe.export_error = "disk full"
    world.now = FIXED_NOW + timedelta(days=2)
    code, out, err = devbox(capsys, "cleanup", "--apply")
    assert code == ExitCode.FAILURE
    assert "  error: could neither push nor export its work: disk full" in out.splitlines()
    assert err == "devbox: the clean-up could not finish for dirty\n"
    assert (world.paths.quadlet_dir / "drone-dirty.container").exists()
