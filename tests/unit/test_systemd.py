"""The systemctl backend against a stand-in `systemctl` on PATH that records its argv and answers
like systemd 257 does; the pystemd backend is exercised for real in the e2e machine."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from devbox import systemd
from devbox.errors import DevboxError, ExitCode

SHOW_OUTPUT = """Id=drone-a.service
LoadState=loaded
ActiveState=active
SubState=running
NRestarts=2
ActiveEnterTimestamp=@1763798400
Result=oom-kill

Id=drone-b.service
LoadState=not-found
ActiveState=inactive
SubState=dead
NRestarts=0
ActiveEnterTimestamp=
"""


@pytest.fixture
def fake_systemctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    log = tmp_path / "argv.log"
    script = tmp_path / "bin" / "systemctl"
    script.parent.mkdir()
    script.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$*" >> {log}\n'
        'case "$*" in\n'
        f'  *" show "*) cat {tmp_path}/show.out ;;\n'
        '  *"start -- drone-bad.service"*) echo "Job for drone-bad.service failed because the control process exited with error code." >&2; '
        'echo "See \\"systemctl --user status drone-bad.service\\" for details." >&2; exit 1 ;;\n'
        "esac\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    (tmp_path / "show.out").write_text(SHOW_OUTPUT)
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")
    return log


def test_states_is_one_call_for_all_units(fake_systemctl: Path) -> None:
    states = systemd.SystemctlSystemd().states(["drone-a.service", "drone-b.service"])
    assert fake_systemctl.read_text().splitlines() == [
        "--user --no-ask-password show --timestamp=unix "
        "--property=Id,LoadState,ActiveState,SubState,NRestarts,ActiveEnterTimestamp,Result -- drone-a.service drone-b.service"
    ]
    a, b = states["drone-a.service"], states["drone-b.service"]
    assert (a.exists, a.active_state, a.sub_state, a.n_restarts, a.result) == (True, "active", "running", 2, "oom-kill")
    assert a.active_since == datetime(2025, 11, 22, 8, 0, tzinfo=UTC)
    assert (b.exists, b.active_state, b.active_since) == (False, "inactive", None)


def test_actions_and_their_failures(fake_systemctl: Path) -> None:
    backend = systemd.SystemctlSystemd()
    backend.daemon_reload()
    backend.start("drone-a.service")
    backend.stop("drone-a.service")
    with pytest.raises(DevboxError) as error:
        backend.start("drone-bad.service")
    assert error.value.code == ExitCode.SYSTEMD
    assert error.value.message == (
        "systemd could not start drone-bad.service: "
        "Job for drone-bad.service failed because the control process exited with error code."
    )
    assert fake_systemctl.read_text().splitlines() == [
        "--user --no-ask-password daemon-reload",
        "--user --no-ask-password start -- drone-a.service",
        "--user --no-ask-password stop -- drone-a.service",
        "--user --no-ask-password start -- drone-bad.service",
    ]


def test_missing_systemctl_is_an_environment_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DevboxError) as error:
        systemd.SystemctlSystemd().daemon_reload()
    assert error.value.code == ExitCode.ENVIRONMENT


def test_connect_falls_back_to_systemctl_without_a_user_bus(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", f"unix:path={tmp_path}/no-bus")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert systemd.connect("auto").backend == "systemctl"
    assert systemd.connect("systemctl").backend == "systemctl"
    with pytest.raises(DevboxError) as error:
        systemd.connect("pystemd")
    assert error.value.code == ExitCode.ENVIRONMENT
    with pytest.raises(DevboxError):
        systemd.connect("upstart")


def test_journal_argv() -> None:
    assert systemd.journal_argv("drone-a.service", 5, follow=True) == [
        "journalctl",
        "--user",
        "--no-pager",
        "-o",
        "short-iso",
        "-n",
        "5",
        "-u",
        "drone-a.service",
        "-f",
    ]
