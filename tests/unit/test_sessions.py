"""Sessions that outlive the connection (attach, sessions, the clean-up's `session` signal) and mosh.

tests/data/tmux-sessions.txt is templates/cleanup/sessions.sh's real output (tmux 3.3a, trimmed to
the sessions' processes): `agent` runs a busy loop in its window 1, `main` has a client attached
and runs `sleep`, `quiet` is a shell at its prompt.
"""

from __future__ import annotations

import getpass
import json
import shlex
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from devbox.cleanup.activity import session_signal
from devbox.drone import mosh
from devbox.drone.sessions import attach_command, parse_report, validate_session
from devbox.errors import DevboxError, ExitCode
from tests.fakes import FIXED_NOW, World
from tests.unit.test_cli import devbox

RECORDED = (Path(__file__).parent.parent / "data" / "tmux-sessions.txt").read_text()
RECORDED_AT = datetime.fromtimestamp(1796070136, tz=UTC)  # just after the recording
QUIET = "\n".join(
    line for line in RECORDED.splitlines() if line.startswith(("S\t$2", "P\t$2", "sample")) or line[:4] == "2469"
)


@pytest.fixture
def execs(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    import os

    calls: list[list[str]] = []
    monkeypatch.setattr(os, "execvp", lambda file, argv: calls.append(argv))
    return calls


# --- names ---


@pytest.mark.parametrize("name", ["main", "agent-1", "A_b", "0", "x" * 40])
def test_session_names_that_pass(name: str) -> None:
    assert validate_session(name) == name
    assert attach_command(name) == ["tmux", "new-session", "-A", "-s", name]


@pytest.mark.parametrize(
    "name", ["", "-x", "_x", "a.b", "a:b", "a b", "a;rm -rf ~", "$(id)", "x" * 41, "a\u2028b", "é"]
)
def test_session_names_refused(name: str) -> None:
    with pytest.raises(DevboxError) as refused:
        validate_session(name)
    assert refused.value.code == ExitCode.INVALID_INPUT and "\u2028" not in refused.value.message


def test_attach_refuses_a_bad_session_name_before_running_anything(world: World, capsys, execs) -> None:
    devbox(capsys, "create", "demo", "--ssh-port", "2299")
    code, out, err = devbox(capsys, "attach", "demo", "a;reboot")
    assert (code, out, execs) == (ExitCode.INVALID_INPUT, "", [])
    assert err.startswith("devbox: invalid session name 'a;reboot': use 1 to 40 of") and err.count("\n") == 1


# --- what sessions.sh reports ---


def test_the_recorded_sessions_parse() -> None:
    report = parse_report(RECORDED, sample_seconds=1.0, clock_ticks=100)
    by_name = {s.name: s for s in report.sessions}
    assert list(by_name) == ["agent", "main", "quiet"]  # created at the same second: by name
    agent, main, quiet = by_name["agent"], by_name["main"], by_name["quiet"]
    assert agent.busy and agent.attached == 0 and agent.cpu_seconds == pytest.approx(0.58)
    assert [(w.index, w.commands) for w in agent.windows] == [(0, ("bash",)), (1, ("bash",))]
    assert main.attached == 1 and not main.busy and main.windows[0].commands == ("sleep",)
    assert main.activity == datetime.fromtimestamp(1796070135, tz=UTC)  # the client's attach
    assert not quiet.busy and quiet.attached == 0 and quiet.cpu_seconds == 0
    assert quiet.created == datetime.fromtimestamp(1796070133, tz=UTC)


def test_cpu_is_counted_per_process_and_a_reused_pid_is_another_process() -> None:
    def stat(pid: int, ppid: int, ticks: int, start: int) -> str:
        fields = ["S", str(ppid)] + ["0"] * 9 + [str(ticks), "0", "0", "0"] + ["0"] * 4 + [str(start)] + ["0"] * 5
        return f"{pid} (odd ) name) " + " ".join(fields)

    head = "S\t$0\t100\t0\t100\ts\nP\t$0\t0\t10\t100\tbash\nsample\n"
    # pane 10 and its child 11 idle; 12 (not in the tree) busy; then 11 is a new process with the same pid
    text = head + "\n".join(
        [stat(10, 1, 5, 1), stat(11, 10, 7, 2), stat(12, 1, 0, 3), "sample"]
        + [stat(10, 1, 5, 1), stat(11, 10, 3, 9), stat(12, 1, 500, 3)]
    )
    (session,) = parse_report(text, 1.0, clock_ticks=100).sessions
    assert session.cpu_seconds == pytest.approx(0.03) and session.busy  # the new 11's own 3 ticks
    idle = text.replace(stat(11, 10, 3, 9), stat(11, 10, 7, 2))
    assert not parse_report(idle, 1.0, clock_ticks=100).sessions[0].busy


def test_no_server_and_no_tmux() -> None:
    assert parse_report("").sessions == () and parse_report("").tmux
    assert parse_report("no-tmux\n").tmux is False


# --- the clean-up's signal ---


def test_a_client_attached_or_a_busy_session_is_activity_now() -> None:
    signal = session_signal(RECORDED, RECORDED_AT)
    assert signal.live and signal.at == RECORDED_AT
    assert signal.detail.startswith("main: 1 attached; agent: busy (0.")


def test_an_empty_quiet_session_counts_from_its_last_output_only() -> None:
    signal = session_signal(QUIET, RECORDED_AT + timedelta(hours=13))
    assert not signal.live
    assert signal.at == datetime.fromtimestamp(1796070133, tz=UTC)
    assert signal.detail == "1 quiet session, none attached"


def test_when_the_drone_cannot_say() -> None:
    assert session_signal(None, FIXED_NOW).detail == "could not look"
    assert session_signal("no-tmux", FIXED_NOW).detail == "no tmux in the image"
    assert session_signal("", FIXED_NOW).at is None


def test_cleanup_keeps_a_drone_with_a_busy_session_and_stops_a_quiet_one(world: World, capsys) -> None:
    for name in ("busy", "quiet"):
        assert devbox(capsys, "create", name, "--idle-stop", "1h")[0] == 0
    world.probe.tmux["drone-busy"] = RECORDED
    world.probe.tmux["drone-quiet"] = QUIET
    world.now = max(FIXED_NOW, RECORDED_AT) + timedelta(hours=2)
    data = json.loads(devbox(capsys, "cleanup", "--json")[1])
    drones = {d["name"]: d for d in data["drones"]}
    assert drones["busy"]["action"] == "keep" and drones["quiet"]["action"] == "stop"
    (busy,) = [s for s in drones["busy"]["signals"] if s["kind"] == "session"]
    assert busy["live"] is True and busy["detail"].startswith("main: 1 attached; agent: busy")
    text = devbox(capsys, "cleanup")[1]
    assert "keep: active: session: main: 1 attached; agent: busy (0." in text
    assert "session: 2h ago (1 quiet session, none attached)" in text
    code, _, _ = devbox(capsys, "cleanup", "--apply")
    assert (
        code == 0 and "drone-quiet.service" not in world.systemd.active and "drone-busy.service" in world.systemd.active
    )


# --- devbox sessions, devbox attach ---


def test_sessions_lists_what_runs_and_json(world: World, capsys, monkeypatch) -> None:
    from devbox.cli import app as cli

    devbox(capsys, "create", "demo")
    world.probe.tmux["drone-demo"] = RECORDED
    monkeypatch.setattr(cli, "_now", lambda: RECORDED_AT)
    code, out, _ = devbox(capsys, "sessions", "demo")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["SESSION", "CREATED", "ATTACHED", "BUSY", "LAST", "ACTIVITY", "WINDOWS"]
    assert lines[1].split()[:1] + lines[1].split()[3:] == ["agent", "0", "yes", "2s", "ago", "0:bash", "1:bash"]
    data = json.loads(devbox(capsys, "sessions", "demo", "--json")[1])
    assert data[1] == {
        "name": "main",
        "created": "2026-11-30T20:22:13Z",
        "attached": 1,
        "last_activity": "2026-11-30T20:22:15Z",
        "idle_seconds": 1,
        "busy": False,
        "cpu_seconds": 0.0,
        "sample_seconds": 1.0,
        "windows": [{"index": 0, "commands": ["sleep"]}],
    }
    world.probe.tmux["drone-demo"] = None
    assert devbox(capsys, "sessions", "demo") == (
        ExitCode.PODMAN,
        "",
        "devbox: cannot look into drone demo: is it running? (devbox status demo)\n",
    )
    world.probe.tmux["drone-demo"] = ""
    assert "no tmux session in drone demo: devbox attach demo [SESSION]" in devbox(capsys, "sessions", "demo")[1]


def test_attach_over_ssh_and_over_mosh(world: World, capsys, execs) -> None:
    user = getpass.getuser()
    devbox(capsys, "create", "demo", "--ssh-port", "2299", "--with", "mosh")
    assert devbox(capsys, "attach", "demo")[0] == 0
    assert devbox(capsys, "attach", "demo", "agent", "--mosh")[0] == 0
    ssh = ["ssh", "-p", "2299", "-o", "HostKeyAlias=devbox-demo", f"{user}@127.0.0.1"]
    assert execs[0] == [ssh[0], "-t", *ssh[1:], "--", "tmux", "new-session", "-A", "-s", "main"]
    assert execs[1] == [
        "mosh",
        "--ssh=ssh -p 2299 -o HostKeyAlias=devbox-demo",
        "--bind-server=any",
        "--port=60001:60004",
        f"{user}@127.0.0.1",
        "--",
        *["tmux", "new-session", "-A", "-s", "agent"],
    ]


# --- mosh ---


def test_mosh_drones_claim_ranges_of_their_own(world: World, capsys, monkeypatch) -> None:
    from devbox.commands import mosh as ports

    busy = {60006}  # something on this host holds a port of the second range
    monkeypatch.setattr(ports, "udp_free", lambda port: port not in busy)
    for name in ("a", "b", "c"):
        assert devbox(capsys, "create", name, "--with", "mosh")[0] == 0
    assert devbox(capsys, "create", "plain")[0] == 0
    assert devbox(capsys, "create", "mine", "--with", "mosh", "--mosh-ports", "61000-61001")[0] == 0
    units = {
        n: (world.paths.quadlet_dir / f"drone-{n}.container").read_text() for n in ("a", "b", "c", "plain", "mine")
    }
    assert "PublishPort=127.0.0.1:60001-60004:60001-60004/udp\n" in units["a"]
    assert "PublishPort=127.0.0.1:60009-60012:60009-60012/udp\n" in units["b"]
    assert "PublishPort=127.0.0.1:60013-60016:60013-60016/udp\n" in units["c"]
    assert "Label=io.devbox.mosh-ports=60013-60016\n" in units["c"] and "Environment=DEVBOX_WITH=mosh\n" in units["c"]
    assert "/udp" not in units["plain"] and "mosh-ports" not in units["plain"]
    assert "Label=io.devbox.mosh-ports=61000-61001\n" in units["mine"]
    status = json.loads(devbox(capsys, "status", "a", "--json")[1])
    assert status["with"] == ["mosh"] and status["mosh_ports"] == "60001-60004"
    assert "mosh       UDP 127.0.0.1:60001-60004 (devbox mosh a)\n" in devbox(capsys, "status", "a")[1]
    assert json.loads(devbox(capsys, "status", "plain", "--json")[1])["mosh_ports"] is None
    code, _, err = devbox(capsys, "create", "bad", "--with", "mosh", "--mosh-ports", "70000-70001")
    assert code == ExitCode.INVALID_INPUT and "invalid mosh port range" in err


def test_every_range_is_taken(world: World, capsys, monkeypatch) -> None:
    from devbox.commands import mosh as ports

    monkeypatch.setattr(ports, "udp_free", lambda port: False)
    code, _, err = devbox(capsys, "create", "a", "--with", "mosh")
    assert code == ExitCode.LIMIT and "no free UDP ports for mosh" in err
    assert not (world.paths.quadlet_dir / "drone-a.container").exists()


def test_mosh_runs_the_client_with_the_drone_s_ssh_and_ports(world: World, capsys, execs, monkeypatch) -> None:
    import os

    user = getpass.getuser()
    monkeypatch.setenv("LANG", "C")
    monkeypatch.delenv("LC_ALL", raising=False)
    monkeypatch.delenv("LC_CTYPE", raising=False)
    devbox(capsys, "create", "demo", "--ssh-port", "2299", "--with", "mosh", "--new-ssh-key")
    assert devbox(capsys, "mosh", "demo", "--", "uname", "-a")[0] == 0
    (argv,) = execs
    assert argv[0] == "mosh" and argv[-4:] == [f"{user}@127.0.0.1", "--", "uname", "-a"]
    # mosh splits --ssh with Perl's shellwords: the same words `devbox ssh` runs
    ssh = shlex.split(argv[1].removeprefix("--ssh="))
    key = str(world.paths.drone_key("demo"))
    assert ssh == ["ssh", "-p", "2299", "-o", "HostKeyAlias=devbox-demo", "-i", key, "-o", "IdentitiesOnly=yes"]
    assert argv[2:4] == ["--bind-server=any", "--port=60001:60004"]
    assert os.environ["LC_ALL"] == "C.UTF-8"  # mosh refuses a locale without UTF-8


def test_mosh_into_a_drone_made_without_it(world: World, capsys, execs) -> None:
    devbox(capsys, "create", "demo", "--ssh-port", "2299")
    code, _, err = devbox(capsys, "mosh", "demo")
    assert code == ExitCode.CONFLICT and "was not made --with mosh" in err and execs == []


def test_a_missing_mosh_client_is_one_line(world: World, capsys, monkeypatch) -> None:
    import os

    def missing(file: str, argv: list[str]) -> None:
        raise FileNotFoundError(file)

    monkeypatch.setattr(os, "execvp", missing)
    devbox(capsys, "create", "demo", "--with", "mosh")
    assert devbox(capsys, "mosh", "demo") == (
        ExitCode.ENVIRONMENT,
        "",
        "devbox: mosh is not installed (the mosh client: apt-get install mosh)\n",
    )


def test_ranges_and_their_label() -> None:
    assert mosh.parse_ports("60001-60004") == (60001, 60004)
    for bad in ("60004-60001", "1-70000", "x", "60001", "-1-2", ""):
        assert mosh.parse_ports(bad) is None
    ranges = mosh.candidate_ranges()
    assert ranges[0] == (60001, 60004) and ranges[-1][1] <= 65535
    assert all(not mosh.overlaps(a, b) for a, b in zip(ranges, ranges[1:], strict=False))
    assert mosh.overlaps((60001, 60004), (60004, 60010)) and not mosh.overlaps((60001, 60004), (60005, 60008))


def test_a_restored_copy_beside_its_original_gets_its_own_ports() -> None:
    from devbox.commands.backup import request_from_unit
    from devbox.units.render import render_drone
    from tests.unit.cases import HOST, cases

    spec = cases()["all-options"]
    [unit] = [f.text for f in render_drone(spec, HOST) if f.relative_path.endswith(".container")]
    request, ignored = request_from_unit(unit, "copy", {})
    assert request.mosh_ports == (60005, 60008) and list(request.services) == ["mosh"] and ignored == []


def test_ssh_config_says_mosh_works_with_its_blocks(world: World, capsys) -> None:
    devbox(capsys, "create", "a", "--ssh-port", "2299", "--with", "mosh")
    devbox(capsys, "create", "b", "--ssh-port", "2298")
    out = devbox(capsys, "ssh-config")[1]
    assert "# mosh NAME works with these blocks too for a (UDP 60000-61000 on the drone).\n" in out
    assert "mosh" not in devbox(capsys, "ssh-config", "b")[1]


def test_restore_keeps_the_range_and_a_copy_beside_the_original_gets_another(world: World, capsys, tmp_path) -> None:
    from tests.unit.test_backup import make_drone, unit_text

    make_drone(world, capsys, "app", "--with", "mosh", "--mosh-ports", "60101-60104")
    assert devbox(capsys, "backup", "app", "-o", str(tmp_path / "app.tar"))[0] == 0
    code, _, err = devbox(capsys, "restore", str(tmp_path / "app.tar"), "--name", "copy")
    assert code == 0, err
    assert "Label=io.devbox.mosh-ports=60001-60004\n" in unit_text(world, "copy")
    assert devbox(capsys, "destroy", "app", "--yes")[0] == 0
    assert devbox(capsys, "restore", str(tmp_path / "app.tar"))[0] == 0
    assert "PublishPort=127.0.0.1:60101-60104:60101-60104/udp\n" in unit_text(world, "app")
