"""The devcontainer.json lifecycle hooks in templates/image/devbox-drone-init, run for real with bash and jq.

The same stand-ins as test_drone_init.py (sshd, ssh-keygen...); the hooks themselves are real shell
commands that record their working directory, user, environment and arguments in files.
"""

from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path

import pytest

from tests.unit import test_drone_init
from tests.unit.test_drone_init import Drone, exit_code, wait_for

drone = test_drone_init.drone  # the fixture: an init with stand-ins on PATH and a temporary home

pytestmark = pytest.mark.skipif(shutil.which("jq") is None, reason="jq is not installed (the contract layer has it)")

SUDO = """#!/bin/bash
printf '%s\\n' "$@" >"$DEVBOX_TEST_RECORDS/sudo.args"
while [ "$1" != -- ]; do shift; done
shift
exec "$@"
"""


def hooks(drone: Drone, **config: object) -> Path:
    workspace = drone.tmp / "work space"
    workspace.mkdir(exist_ok=True)
    path = drone.tmp / "devcontainer.json"
    path.write_text(json.dumps({"remoteUser": None, "workspaceFolder": str(workspace), "remoteEnv": {}, **config}))
    drone.env["DEVBOX_DEVCONTAINER_FILE"] = str(path)
    return workspace


def outcome(drone: Drone) -> str:
    path = drone.state / "devcontainer" / "outcome"
    return path.read_text().strip() if path.exists() else ""


def run_once(drone: Drone) -> str:
    """Start the init, wait for the hooks' final outcome, stop it cleanly."""
    (drone.state / "devcontainer" / "outcome").unlink(missing_ok=True)
    proc = drone.start()
    drone.ready(proc, "sshd")
    wait_for(lambda: outcome(drone).startswith(("done:", "failed:")), what="the hooks' outcome")
    proc.send_signal(signal.SIGTERM)
    assert exit_code(proc) == 143
    return outcome(drone)


def test_once_hooks_run_once_post_start_every_start_in_the_workspace_with_remote_env(drone):
    log = drone.tmp / "hooks.log"
    workspace = hooks(
        drone,
        remoteEnv={"GREETING": "hello 'world' $HOME", "DROPPED": None},
        onCreateCommand=f"echo onCreate >>'{log}'",
        updateContentCommand=["sh", "-c", f'echo "updateContent $1" >>"{log}"', "sh", "arg with space"],
        postCreateCommand={
            "first": f'echo "postCreate first $PWD $GREETING ${{DROPPED-unset}}" >>"{log}"',
            "second": ["sh", "-c", f"echo postCreate second >>'{log}'; echo to-the-journal; echo err >&2"],
        },
        postStartCommand=f"echo postStart >>'{log}'",
    )
    assert run_once(drone) == "done: onCreateCommand updateContentCommand first second postStartCommand"
    assert run_once(drone) == "done: postStartCommand"
    assert run_once(drone) == "done: postStartCommand"
    assert log.read_text().splitlines() == [
        "onCreate",
        "updateContent arg with space",
        f"postCreate first {workspace} hello 'world' $HOME unset",
        "postCreate second",
        "postStart",
        "postStart",
        "postStart",
    ]
    out = drone.output()
    assert "devcontainer second: to-the-journal" in out and "devcontainer second: err" in out
    assert sorted(p.name for p in (drone.state / "devcontainer").iterdir()) == [
        "onCreateCommand.done",
        "outcome",
        "postCreateCommand.done",
        "updateContentCommand.done",
    ]


def test_a_failing_hook_is_reported_stops_the_later_ones_and_sshd_stays_up(drone):
    log = drone.tmp / "hooks.log"
    hooks(
        drone,
        onCreateCommand="echo broken >&2; exit 3",
        postCreateCommand=f"echo postCreate >>'{log}'",
        postStartCommand=f"echo postStart >>'{log}'",
    )
    proc = drone.start()
    drone.ready(proc, "sshd")
    wait_for(lambda: outcome(drone).startswith("failed:"), what="the failure")
    assert outcome(drone) == "failed: onCreateCommand exited 3 (its output is in the drone's journal)"
    assert "devcontainer onCreateCommand: broken" in drone.output()
    assert proc.poll() is None and drone.run("status").stdout.startswith("sshd=running")
    proc.send_signal(signal.SIGTERM)
    assert exit_code(proc) == 143
    # onCreate is not run again; the hooks after it run on the next start.
    assert run_once(drone) == "done: postCreateCommand postStartCommand"
    assert log.read_text().splitlines() == ["postCreate", "postStart"]


def test_another_remote_user_runs_through_sudo(drone):
    (drone.bin / "sudo").write_text(SUDO)
    (drone.bin / "sudo").chmod(0o755)
    hooks(drone, remoteUser="vscode", postStartCommand=["true"])
    assert run_once(drone) == "done: postStartCommand"
    assert (drone.records / "sudo.args").read_text().splitlines() == ["-n", "-H", "-u", "vscode", "--", "env", "true"]


def test_the_hooks_wait_for_the_clone(drone, monkeypatch):
    monkeypatch.chdir(drone.home)  # a drone with --repo and no --path starts in its home
    done = drone.tmp / "clone.done"
    hooks(drone, postStartCommand="true")
    drone.env.update(DEVBOX_REPOS="acme/app", DEVBOX_CLONE_DONE=str(done))
    proc = drone.start()
    drone.ready(proc, "sshd")
    wait_for(lambda: outcome(drone) == "starting", what="the hooks to begin")
    time.sleep(0.5)
    assert outcome(drone) == "starting"
    done.touch()
    wait_for(lambda: outcome(drone) == "done: postStartCommand", what="the hooks after the clone")
    proc.send_signal(signal.SIGTERM)
    assert exit_code(proc) == 143
    # With --path the drone starts in the workspace and there is no clone to wait for.
    monkeypatch.chdir(drone.tmp)
    done.unlink()
    assert run_once(drone) == "done: postStartCommand"


def test_no_hooks_file_no_hooks_and_a_bad_file_is_one_line(drone):
    proc = drone.start()
    drone.ready(proc, "sshd")
    proc.send_signal(signal.SIGTERM)
    assert exit_code(proc) == 143
    assert not (drone.state / "devcontainer").exists()
    bad = drone.tmp / "bad.json"
    bad.write_text("[1, 2]")
    drone.env["DEVBOX_DEVCONTAINER_FILE"] = str(bad)
    assert run_once(drone) == f"failed: {bad} is not a JSON object"


def test_sigterm_during_a_long_hook_stops_the_init_cleanly(drone):
    hooks(drone, postStartCommand="sleep 100")
    proc = drone.start()
    drone.ready(proc, "sshd")
    wait_for(lambda: outcome(drone) == "running: postStartCommand", what="the hook to run")
    proc.send_signal(signal.SIGTERM)
    assert exit_code(proc, timeout=20) == 143


def test_a_new_build_runs_the_once_hooks_again_once(drone):
    """devbox rebuild writes the new build's hash into the hooks file: onCreate/postCreate run again, once."""
    log = drone.tmp / "hooks.log"
    config = {"onCreateCommand": f"echo onCreate >>'{log}'", "postStartCommand": f"echo postStart >>'{log}'"}
    hooks(drone, configHash="build-1", **config)
    assert run_once(drone) == "done: onCreateCommand postStartCommand"
    assert run_once(drone) == "done: postStartCommand"
    hooks(drone, configHash="build-2", **config)
    assert run_once(drone) == "done: onCreateCommand postStartCommand"
    assert run_once(drone) == "done: postStartCommand"
    assert log.read_text().splitlines() == ["onCreate", "postStart", "postStart", "onCreate", "postStart", "postStart"]
    assert (drone.state / "devcontainer" / "onCreateCommand.done").read_text() == "build-2"
