"""The idle clean-up's policy (devbox.cleanup.policy) with a fixed clock and signals as data, and its parsers."""

from __future__ import annotations

from datetime import timedelta

import pytest

from devbox.cleanup.activity import cpu_signal
from devbox.cleanup.policy import Action, Policy, Rescue, Signal, age, decide, settle
from devbox.drone.spec import format_duration, parse_duration
from devbox.host.probe import (
    RepoWork,
    WorkCheck,
    count_ssh_sessions,
    parse_cpu_stat,
    parse_newest,
    parse_push,
    parse_work,
)
from tests.fakes import FIXED_NOW

NOW = FIXED_NOW
POLICY = Policy(idle_stop=timedelta(hours=12), idle_destroy=timedelta(days=14))


def ago(**kwargs: float) -> Signal:
    return Signal("files", NOW - timedelta(**kwargs))


@pytest.mark.parametrize(
    ("idle", "action"),
    [
        (timedelta(hours=12) - timedelta(seconds=1), Action.KEEP),
        (timedelta(hours=12), Action.KEEP),  # the boundary itself is inside the window
        (timedelta(hours=12) + timedelta(seconds=1), Action.STOP),
    ],
)
def test_idle_stop_window_boundaries(idle: timedelta, action: Action) -> None:
    decision = decide(True, [Signal("broker", NOW - idle)], POLICY, NOW)
    assert decision.action is action
    assert decision.idle == idle
    assert decision.last is not None and decision.last.kind == "broker"


@pytest.mark.parametrize(
    ("idle", "action"),
    [
        (timedelta(days=14), Action.KEEP),
        (timedelta(days=14, seconds=1), Action.DESTROY),
    ],
)
def test_idle_destroy_window_boundaries(idle: timedelta, action: Action) -> None:
    assert decide(False, [Signal("stopped", NOW - idle)], POLICY, NOW).action is action


def test_a_stopped_drone_is_measured_against_idle_destroy_not_idle_stop() -> None:
    decision = decide(False, [ago(days=2)], POLICY, NOW)
    assert decision.action is Action.KEEP
    assert decision.reasons == ("idle 2d (last: files), within idle_destroy 14d",)


def test_the_newest_signal_counts() -> None:
    signals = [Signal("created", NOW - timedelta(days=30)), Signal("touch", NOW - timedelta(hours=1)), ago(days=3)]
    decision = decide(True, signals, POLICY, NOW)
    assert decision.action is Action.KEEP
    assert decision.reasons == ("idle 1h (last: touch), within idle_stop 12h",)


def test_stop_reason_names_the_signal_and_its_age() -> None:
    decision = decide(True, [ago(hours=13, minutes=5), Signal("broker", None)], POLICY, NOW)
    assert decision.action is Action.STOP
    assert decision.reasons == ("idle 13h5m (last: files), over idle_stop 12h",)


def test_an_open_ssh_session_always_wins() -> None:
    ancient = [Signal("created", NOW - timedelta(days=365)), ago(days=300)]
    ssh = Signal("ssh", NOW, "1 open session", live=True)
    short = Policy(timedelta(seconds=1), timedelta(seconds=1))
    decision = decide(True, [*ancient, ssh], short, NOW)
    assert decision.action is Action.KEEP
    assert decision.reasons == ("active: ssh: 1 open session",)


@pytest.mark.parametrize("running", [True, False])
def test_keep_is_never_touched(running: bool) -> None:
    policy = Policy(timedelta(seconds=1), timedelta(seconds=1), keep=True)
    decision = decide(running, [Signal("created", NOW - timedelta(days=999))], policy, NOW)
    assert decision.action is Action.KEEP
    assert decision.reasons == ("exempt (keep)",)
    dirty = WorkCheck((RepoWork("ws", changes=1),))
    assert settle(decision, dirty).action is Action.KEEP


def test_no_signal_at_all_keeps_the_drone() -> None:
    decision = decide(False, [Signal("broker", None), Signal("stopped", None)], POLICY, NOW)
    assert decision.action is Action.KEEP


OLD = [Signal("stopped", NOW - timedelta(days=20))]


def test_clean_work_is_destroyed() -> None:
    decision = settle(decide(False, OLD, POLICY, NOW), WorkCheck((RepoWork("ws"),)))
    assert decision.action is Action.DESTROY
    assert decision.reasons[-1] == "no uncommitted changes, stashes or unpushed commits"


@pytest.mark.parametrize(
    "repo",
    [
        RepoWork("ws", changes=1),
        RepoWork("ws", stashes=1),
        RepoWork("ws", unpushed=1),
        RepoWork("ws", error="git failed: not a git repository"),
    ],
)
def test_dirty_work_is_never_destroyed_without_a_rescue(repo: RepoWork) -> None:
    candidate = decide(False, OLD, POLICY, NOW)
    work = WorkCheck((RepoWork("clean"), repo))
    assert settle(candidate, work).action is not Action.DESTROY
    failed = Rescue(error="~/ws: rejected", export_path="/x/ws.tar")
    assert settle(candidate, work, failed).action is Action.EXPORT_AND_KEEP
    none_pushed = Rescue()
    assert settle(candidate, work, none_pushed).action is Action.EXPORT_AND_KEEP


def test_a_failed_work_check_destroys_nothing() -> None:
    decision = settle(decide(False, OLD, POLICY, NOW), WorkCheck(error="podman run failed"))
    assert decision.action is Action.KEEP
    assert decision.reasons[-1] == "work check failed: podman run failed; nothing destroyed"


def test_dirty_work_with_a_remote_is_rescued_then_destroyed() -> None:
    candidate = decide(False, OLD, POLICY, NOW)
    work = WorkCheck((RepoWork("ws", changes=2, unpushed=1),))
    planned = settle(candidate, work)
    assert planned.action is Action.RESCUE_THEN_DESTROY
    assert "~/ws: 2 uncommitted changes, 1 unpushed commits" in planned.reasons
    done = settle(candidate, work, Rescue(pushed=("~/ws -> devbox/rescue/x/20261122",)))
    assert done.action is Action.RESCUE_THEN_DESTROY
    assert done.reasons[-1] == "pushed ~/ws -> devbox/rescue/x/20261122"


def test_dirty_work_without_a_remote_is_exported_and_kept() -> None:
    work = WorkCheck((RepoWork("ws", unpushed=1, has_remote=False),))
    planned = settle(decide(False, OLD, POLICY, NOW), work)
    assert planned.action is Action.EXPORT_AND_KEEP
    exported = settle(
        decide(False, OLD, POLICY, NOW), work, Rescue(error="~/ws: no remote", export_path="/r/x-20261122.tar")
    )
    assert exported.reasons[-2:] == (
        "could not push to a rescue branch: ~/ws: no remote",
        "home volume exported to /r/x-20261122.tar",
    )


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (59, "59s"), (3600, "1h"), (3660, "1h1m"), (90061, "1d1h"), (86400 * 15, "15d")]
)
def test_age(seconds: int, text: str) -> None:
    assert age(NOW, NOW - timedelta(seconds=seconds)) == text


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("30m", 1800), ("12h", 43200), ("14d", 1209600)])
def test_durations_round_trip(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("text", ["", "12", "0h", "1w", "h", "-1h", "1.5h", "12 h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(Exception, match="invalid duration"):
        parse_duration(text)


def test_cpu_signal_threshold() -> None:
    state = {"usage_usec": 1_000_000, "checked": (NOW - timedelta(hours=1)).isoformat(), "active": None}
    idle, recorded = cpu_signal(1_000_000 + 35_000_000, state, NOW)  # 35 s in an hour: under 1%
    assert idle.at is None and recorded is not None and recorded["usage_usec"] == 36_000_000
    busy, _ = cpu_signal(1_000_000 + 36_000_000, state, NOW)  # 1% of an hour
    assert busy.at == NOW
    first, _ = cpu_signal(5, {}, NOW)
    assert first.at is None and first.detail == "first measurement"
    restarted, _ = cpu_signal(5, state, NOW)
    assert restarted.detail == "restarted since the last check"


PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:08AE 00000000:0000 0A 00000000:00000001 00:00000000 00000000  1000        0 638793
   1: 0100007F:08AE 0100007F:942E 01 00000000:00000000 00:00000000 00000000  1000        0 0 1
   2: 0100007F:942E 0100007F:08AE 01 00000000:00000000 00:00000000 00000000  1000        0 638814
   3: 0100007F:08AE 0100007F:942F 06 00000000:00000000 00:00000000 00000000  1000        0 0 1
  sl  local_address                         remote_address                        st
   0: 00000000000000000000000001000000:08AE 00000000000000000000000001000000:A000 01 0
"""


def test_ssh_sessions_are_established_connections_to_local_port_2222() -> None:
    # listening (0A), the client's own end (local port 942E) and TIME_WAIT (06) do not count
    assert count_ssh_sessions(PROC_NET_TCP) == 2
    assert count_ssh_sessions("") == 0


def test_parsers() -> None:
    assert parse_cpu_stat("usage_usec 32906\nuser_usec 0\n") == 32906
    assert parse_cpu_stat("nothing") is None
    assert parse_newest("1795337070.63\n") is not None and parse_newest("") is None
    work = parse_work("repo\tws\t0\t0\t0\t1\nrepo\tb/c\t2\t1\t3\t0\nerror\td\tfatal: bad\n")
    assert work.repos == (
        RepoWork("ws"),
        RepoWork("b/c", 2, 1, 3, has_remote=False),
        RepoWork("d", error="git failed: fatal: bad"),
    )
    assert [r.path for r in work.dirty] == ["b/c", "d"]
    assert parse_work("repo\tws\tx\t0\t0\t1").error.startswith("unreadable work check output")
    pushed = parse_push("pushed\tws\torigin\nfailed\tb\trejected\n")
    assert pushed.pushed == ("ws",) and pushed.failed == (("b", "rejected"),)
