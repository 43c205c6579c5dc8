"""devbox audit: journal entries (recorded from the real journalctl in the e2e machine, tests/data/journal/)
become one drone's timeline, believed only as far as journald's own fields vouch for the sender."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from devbox.cli import app as cli
from devbox.cli import output
from devbox.commands import audit
from devbox.errors import DevboxError, ExitCode
from devbox.host import journal
from tests.fakes import World

DATA = Path(__file__).resolve().parents[1] / "data" / "journal"
# The recording of an earlier version of tests/e2e/test_audit.py's session (before it made an API call
# and a blocked connection): create and clone, a refused repository, an SSH login, systemctl stop,
# devbox start; then the drone printed an sshd line itself (only ever an ssh-login, marked as the
# drone's) and was destroyed (a stop).
RECORDED_SESSION = [
    ("drone-started", "systemd"),
    ("token-minted", "devbox"),
    ("token-refused", "devbox"),
    ("ssh-login", "drone"),
    ("drone-stopped", "systemd"),
    ("drone-started", "systemd"),
    ("ssh-login", "drone"),
    ("drone-stopped", "systemd"),
]
UID = 1000


def recorded(name: str) -> list[journal.Entry]:
    return journal.parse_entries((DATA / name).read_text(encoding="utf-8"))


def at(entries: list[journal.Entry], text: str) -> journal.Entry:
    """The recorded entry whose message contains TEXT (a copy, to change)."""
    return dict(next(e for e in entries if text in journal.text_of(e.get("MESSAGE"))))


def devbox_entry(event: str, drone: str, message: str, micros: int, unit: str, **details: object) -> journal.Entry:
    """An entry as journald stores what journal.record sends, with the fields journald adds itself."""
    entry: journal.Entry = dict(journal.event_fields(event, drone, message, details, journal.PRIORITY_INFO))
    entry.update(
        __REALTIME_TIMESTAMP=str(micros),
        __CURSOR=f"s=1;i={micros}",
        _TRANSPORT="journal",
        _UID=str(UID),
        _COMM="python3",
        _SYSTEMD_USER_UNIT=unit,
        _SYSTEMD_UNIT=f"user@{UID}.service",
    )
    return entry


def kinds(events: list[audit.AuditEvent]) -> list[tuple[str, str]]:
    return [(e.event, e.source) for e in events]


# --- what the recorded journal says ----------------------------------------------------------------


def test_recorded_restart_and_ssh_login_make_the_timeline() -> None:
    events = audit.timeline_of(recorded("ssh-and-restart.json"), "aud")
    # The recording: a drone restarted with systemctl, then one SSH session (and sshd's other lines).
    assert kinds(events) == [("drone-stopped", "systemd"), ("drone-started", "systemd"), ("ssh-login", "drone")]
    assert events[0].details == {"result": "done"}
    login = events[-1]
    # conmon stored this line as a byte array (it ends in \r\n): decoded, then parsed.
    assert login.details["user"] == "dev"
    assert login.details["address"] == "192.0.2.2"
    assert login.details["port"] == "42866"
    assert login.details["method"] == "publickey"
    assert login.details["key"].startswith("ED25519 SHA256:koMwJ/")
    assert login.message == "SSH login as dev from 192.0.2.2 port 42866 (publickey)"
    assert login.unit == "drone-aud.service"
    assert all(e.unit == "drone-aud.service" and e.cursor.startswith("s=") for e in events)


def test_recorded_scripted_session_with_the_drones_forgeries() -> None:
    """tests/e2e/test_audit.py's session: create and clone, a refused repo, an SSH login, systemctl stop,
    devbox start; then the drone printed a systemd line, DEVBOX_ fields as text and an sshd line; destroy."""
    events = audit.timeline_of(recorded("scripted-session.json"), "aud")
    assert kinds(events) == RECORDED_SESSION
    mint, refusal = events[1], events[2]
    assert mint.unit == refusal.unit == "drone-aud-creds.service"
    assert mint.details["repos"] == "acme/demo" and mint.details["asked"] == "acme/demo.git"
    assert mint.details["permissions"] == "contents:write,metadata:read,pull_requests:write"
    assert refusal.details == {
        "asked": "acme/other.git",
        "reason": "acme/other is not one of drone aud's repositories",
        "by": "broker",
    }
    assert events[6].details["user"] == "mallory"


def test_another_drones_name_finds_nothing_in_the_recording() -> None:
    assert audit.timeline_of(recorded("ssh-and-restart.json"), "au") == []
    assert audit.timeline_of(recorded("ssh-and-restart.json"), "other") == []


def test_starting_and_stopping_messages_are_not_events() -> None:
    entries = recorded("ssh-and-restart.json")
    stopping = at(entries, "Stopping drone-aud.service")
    assert audit.event_of(stopping, "aud") is None


# --- who may say what --------------------------------------------------------------------------------


def test_the_drones_output_cannot_carry_a_devbox_event() -> None:
    line = at(recorded("ssh-and-restart.json"), "Accepted publickey")
    forged = dict(line, DEVBOX_EVENT=journal.TOKEN_MINTED, DEVBOX_DRONE="aud", MESSAGE="minted a token")
    assert audit.event_of(forged, "aud") is None


def test_a_drone_printing_systemds_words_is_not_a_start() -> None:
    line = at(recorded("ssh-and-restart.json"), "Accepted publickey")
    line["MESSAGE"] = "Started drone-aud.service - devbox drone aud."
    assert audit.event_of(line, "aud") is None


def test_a_job_message_not_sent_by_the_user_manager_is_ignored() -> None:
    started = at(recorded("ssh-and-restart.json"), "Started drone-aud.service")
    assert audit.event_of(started, "aud") is not None
    for unit in ("session-3.scope", "drone-aud.service", ""):
        assert audit.event_of(dict(started, _SYSTEMD_USER_UNIT=unit), "aud") is None


def test_an_accepted_line_from_the_drone_is_only_ever_an_ssh_login_marked_as_from_the_drone() -> None:
    line = at(recorded("ssh-and-restart.json"), "Accepted publickey")
    line["MESSAGE"] = "Accepted publickey for root from 10.9.8.7 port 1 ssh2"
    event = audit.event_of(line, "aud")
    assert event is not None
    assert (event.event, event.source, event.details["user"]) == ("ssh-login", "drone", "root")


def test_ssh_lines_count_only_from_the_drones_own_container() -> None:
    line = at(recorded("ssh-and-restart.json"), "Accepted publickey")
    assert audit.event_of(dict(line, CONTAINER_NAME="drone-other"), "aud") is None
    assert audit.event_of(dict(line, _SYSTEMD_USER_UNIT="drone-other.service"), "aud") is None


def test_devbox_events_come_by_the_native_protocol_from_outside_the_drone() -> None:
    entry = devbox_entry(
        journal.TOKEN_REFUSED, "aud", "refused", 1, "drone-aud-creds.service", asked="acme/x", reason="no"
    )
    event = audit.event_of(entry, "aud")
    assert event is not None and (event.source, event.unit) == ("devbox", "drone-aud-creds.service")
    assert event.details == {"asked": "acme/x", "reason": "no"}
    assert audit.event_of(dict(entry, _TRANSPORT="stdout"), "aud") is None
    assert audit.event_of(dict(entry, _SYSTEMD_USER_UNIT="drone-aud.service"), "aud") is None
    assert audit.event_of(dict(entry, DEVBOX_DRONE="other"), "aud") is None

    assert audit.event_of(dict(entry, DEVBOX_EVENT="Not An Event"), "aud") is None


def test_from_the_drones_own_service_only_the_fence_watchers_events_count() -> None:
    """Podman runs the fence hook, and so its watcher, in drone-NAME.service's cgroup."""
    blocked = devbox_entry(journal.EGRESS_BLOCKED, "aud", "blocked", 1, "drone-aud.service", daddr="192.0.2.1")
    event = audit.event_of(blocked, "aud")
    assert event is not None and (event.event, event.source, event.unit) == (
        journal.EGRESS_BLOCKED,
        "devbox",
        "drone-aud.service",
    )
    minted = devbox_entry(journal.TOKEN_MINTED, "aud", "minted", 1, "drone-aud.service", repos="acme/x")
    assert audit.event_of(minted, "aud") is None
    assert audit.event_of(dict(blocked, _TRANSPORT="stdout"), "aud") is None


def test_devbox_events_from_the_users_shell_name_their_session() -> None:
    entry = devbox_entry(journal.API_REQUEST, "aud", "POST /v1/messages", 1, "")
    entry.pop("_SYSTEMD_USER_UNIT")
    entry["_SYSTEMD_UNIT"] = "session-2.scope"
    event = audit.event_of(entry, "aud")
    assert event is not None and event.unit == "session-2.scope"


# --- order and --since -----------------------------------------------------------------------------------


def test_the_timeline_is_oldest_first_and_ties_keep_the_journals_order() -> None:
    base = 1_796_068_837_000_000
    entries = [
        devbox_entry(journal.TOKEN_MINTED, "aud", f"e{i}", base + (i // 2) * 1000, "drone-aud-creds.service")
        for i in range(10)
    ]
    shuffled = entries[:]
    random.Random(7).shuffle(shuffled)
    events = audit.timeline_of(shuffled, "aud")
    times = [e.time for e in events]
    assert times == sorted(times)
    for earlier, later in zip(events, events[1:], strict=False):
        if earlier.time == later.time:
            assert shuffled.index(entries[int(earlier.message[1:])]) < shuffled.index(entries[int(later.message[1:])])


def test_since_keeps_the_events_from_that_moment_on() -> None:
    events = audit.timeline_of(recorded("ssh-and-restart.json"), "aud")
    cut = events[1].time
    assert audit.timeline_of(recorded("ssh-and-restart.json"), "aud", since=cut) == events[1:]
    assert audit.timeline_of(recorded("ssh-and-restart.json"), "aud", since=cut + timedelta(microseconds=1)) == [
        events[2]
    ]


def test_entries_without_a_time_are_skipped() -> None:
    entry = devbox_entry(journal.TOKEN_MINTED, "aud", "m", 1, "drone-aud-creds.service")
    entry["__REALTIME_TIMESTAMP"] = "soon"
    assert audit.event_of(entry, "aud") is None


# --- reading the journal -------------------------------------------------------------------------------------


def test_the_queries_match_the_users_own_entries_of_this_drone() -> None:
    (devbox_groups, all_fields), (other_groups, fields) = audit.queries("aud", UID)
    assert journal.query_argv(devbox_groups, 1_796_068_837.9, all_fields) == [
        "journalctl",
        "--no-pager",
        "--quiet",
        "-o",
        "json",
        "--since=@1796068837",
        "_UID=1000",
        "DEVBOX_DRONE=aud",
    ]
    argv = journal.query_argv(other_groups, None, fields)
    assert argv == [
        "journalctl",
        "--no-pager",
        "--quiet",
        "-o",
        "json",
        "--output-fields=" + ",".join(audit.READ_FIELDS),
        "_UID=1000",
        "USER_UNIT=drone-aud.service",
        "_SYSTEMD_USER_UNIT=init.scope",
        "+",
        "_UID=1000",
        "CONTAINER_NAME=drone-aud",
        "_SYSTEMD_USER_UNIT=drone-aud.service",
    ]
    assert "--user" not in argv


def journalctl(entries: list[journal.Entry], argv: list[str]) -> list[journal.Entry]:
    """What journalctl answers to ARGV (query_argv's options, matches and `+`) from the recorded ENTRIES."""
    since, fields, groups = 0, [], [[]]  # type: ignore[var-annotated]
    for arg in argv[1:]:
        if arg.startswith("--since=@"):
            since = int(arg.removeprefix("--since=@")) * 1_000_000
        elif arg.startswith("--output-fields="):
            fields = arg.removeprefix("--output-fields=").split(",")
        elif arg == "+":
            groups.append([])
        elif "=" in arg and not arg.startswith("-"):
            groups[-1].append(tuple(arg.split("=", 1)))
    kept = ["__CURSOR", "__REALTIME_TIMESTAMP", "__MONOTONIC_TIMESTAMP", "_BOOT_ID", *fields]
    return [
        {k: v for k, v in entry.items() if not fields or k in kept}
        for entry in entries
        if int(str(entry["__REALTIME_TIMESTAMP"])) >= since
        and any(all(journal.text_of(entry.get(k)) == v for k, v in group) for group in groups)
    ]


def test_the_queries_find_the_recorded_session_and_nothing_else() -> None:
    entries = recorded("scripted-session.json")
    found = [
        e
        for groups, fields in audit.queries("aud", UID)
        for e in journalctl(entries, journal.query_argv(groups, None, fields))
    ]
    assert kinds(audit.timeline_of(found, "aud")) == kinds(audit.timeline_of(entries, "aud"))
    assert all("_CMDLINE" not in e for e in found if "DEVBOX_EVENT" not in e)
    assert [
        e
        for groups, fields in audit.queries("aud", 1001)
        for e in journalctl(entries, journal.query_argv(groups, None, fields))
    ] == []


def test_field_values_as_journalctl_writes_them() -> None:
    assert journal.text_of("plain") == "plain"
    assert journal.text_of([104, 105, 13, 10]) == "hi\r\n"
    assert journal.text_of(None) == ""
    assert journal.text_of(["first", "second"]) == "second"
    assert journal.text_of([[97], [98]]) == "b"
    assert journal.text_of([300]) == ""


def test_lines_that_are_not_objects_are_skipped() -> None:
    assert journal.parse_entries('{"A": "1"}\nnot json\n[1]\n\n{"B": "2"}\n') == [{"A": "1"}, {"B": "2"}]


def test_a_value_with_a_unicode_line_separator_stays_in_its_entry() -> None:
    line = json.dumps({"MESSAGE": "a\u2028b\x85c\x1cd", "X": "1"}, ensure_ascii=False)
    assert journal.parse_entries(line + "\n") == [{"MESSAGE": "a\u2028b\x85c\x1cd", "X": "1"}]


def _script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "journalctl"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def test_reading_runs_journalctl_and_parses_its_lines(tmp_path: Path) -> None:
    fake = _script(tmp_path, "printf '%s\\n' '{\"MESSAGE\": \"x\"}'\n")
    assert journal.read_entries([fake, "-o", "json"]) == [{"MESSAGE": "x"}]


def test_a_failing_or_missing_journalctl_is_an_environment_error(tmp_path: Path) -> None:
    fake = _script(tmp_path, "echo 'Failed to open files: Permission denied' >&2; exit 1\n")
    with pytest.raises(DevboxError) as failed:
        journal.read_entries([fake])
    assert failed.value.code == ExitCode.ENVIRONMENT
    assert failed.value.message == "journalctl failed: Failed to open files: Permission denied"
    with pytest.raises(DevboxError) as missing:
        journal.read_entries([str(tmp_path / "absent")])
    assert missing.value.code == ExitCode.ENVIRONMENT and "cannot run journalctl" in missing.value.message


def test_a_volatile_journal_needs_a_journal_group() -> None:
    audit.check_readable(["dev"], persistent=True, uid=UID)
    audit.check_readable(["dev", "systemd-journal"], persistent=False, uid=UID)
    audit.check_readable(["adm"], persistent=False, uid=UID)
    audit.check_readable(["root"], persistent=False, uid=0)
    with pytest.raises(DevboxError) as refused:
        audit.check_readable(["dev", "sudo"], persistent=False, uid=UID)
    assert refused.value.code == ExitCode.ENVIRONMENT
    assert "usermod -aG systemd-journal" in refused.value.message


# --- output shapes ---------------------------------------------------------------------------------------------


def _timeline(installed: bool = True) -> audit.Timeline:
    events = audit.timeline_of(recorded("ssh-and-restart.json"), "aud")
    refused = audit.event_of(
        devbox_entry(
            journal.TOKEN_REFUSED,
            "aud",
            "refused a token for acme/x\nDEVBOX_EVENT=token-minted: not one of drone aud's repositories",
            1_796_068_841_600_000,
            "drone-aud-creds.service",
            asked="acme/x\nDEVBOX_EVENT=token-minted",
            reason="not one of drone aud's repositories",
        ),
        "aud",
    )
    assert refused is not None
    return audit.Timeline("aud", None, installed, [*events, refused])


def test_the_json_shape() -> None:
    data = output.audit_dict(_timeline())
    assert list(data) == ["drone", "since", "installed", "events"]
    assert (data["drone"], data["since"], data["installed"]) == ("aud", None, True)
    first, login, refused = data["events"][0], data["events"][2], data["events"][3]
    assert list(first) == ["time", "event", "source", "unit", "message", "details", "cursor"]
    assert first["time"] == "2026-11-30T20:00:37.400553Z"
    assert (first["event"], first["source"], first["unit"]) == ("drone-stopped", "systemd", "drone-aud.service")
    assert (login["event"], login["source"], login["details"]["address"]) == ("ssh-login", "drone", "192.0.2.2")
    assert refused["details"]["asked"] == "acme/x\nDEVBOX_EVENT=token-minted"  # kept exactly, as a value
    json.dumps(data)


def test_the_text_is_one_line_per_event_whatever_a_value_holds() -> None:
    lines = output.audit_text(_timeline()).splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("2026-11-30 20:00:37  drone-stopped  systemd  Stopped drone-aud.service")
    assert lines[2].endswith("ssh-login      drone    SSH login as dev from 192.0.2.2 port 42866 (publickey)")
    assert "acme/x\\nDEVBOX_EVENT=token-minted" in lines[3]


def test_the_text_says_when_the_drone_is_gone_or_nothing_happened() -> None:
    gone = output.audit_text(_timeline(installed=False)).splitlines()
    assert gone[0] == "drone aud is not installed (destroyed?): its past events"
    since = datetime(2026, 11, 30, 20, 0, tzinfo=UTC)
    assert (
        output.audit_text(audit.Timeline("aud", since, True, [])) == "no events of drone aud since 2026-11-30T20:00:00Z"
    )


# --- the command ------------------------------------------------------------------------------------------------


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        cli.run(list(args))
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


SESSION = [event for event, _ in RECORDED_SESSION]


@pytest.fixture
def journal_reads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[list[str]]:
    """Every journalctl argv the command runs; each is answered from the recorded session."""
    calls: list[list[str]] = []

    def read(argv: list[str], timeout: float = 0) -> list[journal.Entry]:
        calls.append(argv)
        return journalctl(recorded("scripted-session.json"), argv)

    monkeypatch.setattr(journal, "read_entries", read)
    monkeypatch.setattr(audit, "PERSISTENT_JOURNAL", tmp_path)
    monkeypatch.setattr(audit, "current_uid", lambda: UID)
    return calls


def test_audit_json_of_an_installed_drone(world: World, capsys, journal_reads: list[list[str]]) -> None:
    assert run_cli(capsys, "create", "aud", "--no-start")[0] == 0
    code, out, err = run_cli(capsys, "audit", "aud", "--json")
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert data["installed"] is True
    assert [e["event"] for e in data["events"]] == SESSION
    assert [argv[-1] for argv in journal_reads] == ["DEVBOX_DRONE=aud", "_SYSTEMD_USER_UNIT=drone-aud.service"]


def test_since_is_a_duration_counted_back_from_now(world: World, capsys, journal_reads: list[list[str]]) -> None:
    world.now = datetime(2026, 11, 30, 20, 9, 12, 500000, tzinfo=UTC)
    code, out, _ = run_cli(capsys, "audit", "aud", "--since", "3s", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["since"] == "2026-11-30T20:09:09.500000Z"
    # journalctl is asked from the whole second (it returns the refusal at 20:09:09.28 too); devbox cuts exactly.
    assert f"--since=@{int(world.now.timestamp()) - 3}" in journal_reads[0]
    assert [e["event"] for e in data["events"]] == SESSION[4:]
    assert data["events"][0]["time"] == "2026-11-30T20:09:09.914288Z"


@pytest.mark.parametrize("value", ["2", "1w", "-5m", "0s", ""])
def test_since_refuses_what_durations_refuse(world: World, capsys, journal_reads, value: str) -> None:
    code, out, err = run_cli(capsys, "audit", "aud", "--since", value)
    assert (code, out) == (ExitCode.INVALID_INPUT, "")
    assert "invalid duration" in err
    assert journal_reads == []


def test_a_destroyed_drones_past_is_still_shown(world: World, capsys, journal_reads) -> None:
    code, out, _ = run_cli(capsys, "audit", "aud")
    assert code == 0
    assert out.splitlines()[0] == "drone aud is not installed (destroyed?): its past events"
    assert len(out.splitlines()) == 1 + len(SESSION)


def test_a_drone_with_no_unit_and_no_events_is_not_found(world: World, capsys, journal_reads) -> None:
    code, out, err = run_cli(capsys, "audit", "ghost")
    assert (code, out) == (ExitCode.NOT_FOUND, "")
    assert err == "devbox: no such drone: ghost (and no events of it in the journal)\n"


def test_a_bad_name_is_refused_before_reading(world: World, capsys, journal_reads) -> None:
    code, _, err = run_cli(capsys, "audit", "Bad_Name")
    assert code == ExitCode.INVALID_INPUT and "invalid drone name" in err
    assert journal_reads == []
