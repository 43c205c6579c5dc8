"""The systemctl backend against a stand-in `systemctl` on PATH that records its argv and answers
like systemd 257 does; the pystemd backend is exercised for real in the e2e machine."""

from __future__ import annotations

import os
import stat
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from devbox.errors import DevboxError, ExitCode
from devbox.host import systemd

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


# What busctl printed in the e2e machine (systemd 257) for a running drone and a missing unit.
BUSCTL_OUTPUT = (
    '{"type":"a(ssssssouso)","data":[[["drone-a.service","devbox drone a","loaded","active","running","",'
    '"/org/freedesktop/systemd1/unit/drone_2da_2eservice",0,"","/"],["drone-b.service","drone-b.service",'
    '"not-found","inactive","dead","","/org/freedesktop/systemd1/unit/drone_2db_2eservice",0,"","/"]]]}\n'
)


@pytest.fixture
def fake_busctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    log = tmp_path / "busctl.log"
    script = tmp_path / "busbin" / "busctl"
    script.parent.mkdir()
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {log}\ncat {tmp_path}/busctl.out\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    (tmp_path / "busctl.out").write_text(BUSCTL_OUTPUT)
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")
    (tmp_path / "bus").touch()  # a user bus socket, as far as devbox looks
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    return log


@pytest.mark.parametrize("backend", [systemd.SystemctlSystemd, systemd.PystemdSystemd])
def test_states_is_one_busctl_call_for_all_units(backend, fake_busctl: Path, tmp_path: Path) -> None:
    states = backend().states(["drone-a.service", "drone-b.service", "drone-c.service"])
    assert fake_busctl.read_text().splitlines() == [
        "--user --json=short call org.freedesktop.systemd1 /org/freedesktop/systemd1 "
        "org.freedesktop.systemd1.Manager ListUnitsByNames as 3 drone-a.service drone-b.service drone-c.service"
    ]
    a, b, c = states["drone-a.service"], states["drone-b.service"], states["drone-c.service"]
    assert (a.exists, a.load_state, a.active_state, a.sub_state) == (True, "loaded", "active", "running")
    assert (b.exists, b.active_state) == (False, "inactive")
    assert (c.exists, c.load_state) == (False, "not-found")  # not in the answer at all
    assert backend().states([]) == {}
    assert len(fake_busctl.read_text().splitlines()) == 1  # no units, no call


def test_pystemd_rows_read_like_busctl_rows() -> None:
    """pystemd answers ListUnitsByNames with bytes and ints where busctl prints JSON strings."""
    row = (b"drone-a.service", b"devbox drone a", b"loaded", b"active", b"running", b"", b"/org/x", 0, b"", b"/")
    states = systemd.states_from_rows([row], ["drone-a.service", "drone-z.service"])
    assert states["drone-a.service"] == systemd.UnitState("drone-a.service", "loaded", "active", "running")
    assert states["drone-z.service"] == systemd.UnitState.missing("drone-z.service")
    assert list(states) == ["drone-a.service", "drone-z.service"]


def test_unreadable_busctl_output_is_a_systemd_error(fake_busctl: Path, tmp_path: Path) -> None:
    (tmp_path / "busctl.out").write_text("Call failed: Access denied\n")
    with pytest.raises(DevboxError) as error:
        systemd.list_units(["drone-a.service"])
    assert error.value.code == ExitCode.SYSTEMD
    assert error.value.message.startswith("systemd could not read the state of drone-a.service: busctl printed")


def test_missing_busctl_is_an_environment_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DevboxError) as error:
        systemd.list_units(["drone-a.service"])
    assert error.value.code == ExitCode.ENVIRONMENT


def test_systemctl_details_read_restarts_start_and_result(fake_systemctl: Path) -> None:
    a = systemd.details(systemd.SystemctlSystemd(), "drone-a.service")
    assert fake_systemctl.read_text().splitlines() == [
        "--user --no-ask-password show --timestamp=unix "
        "--property=Id,LoadState,ActiveState,SubState,NRestarts,ActiveEnterTimestamp,Result -- drone-a.service"
    ]
    assert (a.exists, a.active_state, a.sub_state, a.n_restarts, a.result) == (True, "active", "running", 2, "oom-kill")
    assert a.active_since == datetime(2025, 11, 22, 8, 0, tzinfo=UTC)
    b = systemd.parse_show(SHOW_OUTPUT, ["drone-a.service", "drone-b.service"])["drone-b.service"]
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


def test_systemctl_without_a_user_bus_reads_states_with_systemctl_show(
    fake_systemctl: Path, fake_busctl: Path, tmp_path: Path
) -> None:
    """No dbus-user-session: busctl cannot connect, systemctl can (the manager's private socket)."""
    (tmp_path / "bus").unlink()
    states = systemd.SystemctlSystemd().states(["drone-a.service", "drone-b.service"])
    assert not fake_busctl.exists()
    assert fake_systemctl.read_text().splitlines() == [
        "--user --no-ask-password show --timestamp=unix "
        "--property=Id,LoadState,ActiveState,SubState,NRestarts,ActiveEnterTimestamp,Result -- drone-a.service drone-b.service"
    ]
    assert (states["drone-a.service"].active_state, states["drone-b.service"].exists) == ("active", False)


def test_auto_waits_for_the_first_action_and_falls_back_to_systemctl(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake_systemctl: Path, fake_busctl: Path
) -> None:
    """`list` must not pay for pystemd's import; a pystemd that cannot import must not break actions."""
    package = tmp_path / "site" / "pystemd"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('libsystemd.so.0: cannot open shared object file')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    (tmp_path / "bus").unlink()
    assert systemd.connect("auto").backend == "systemctl"  # no bus socket: no question
    (tmp_path / "bus").touch()
    backend = systemd.connect("auto")
    assert isinstance(backend, systemd.AutoSystemd)
    assert backend.states(["drone-a.service"])["drone-a.service"].active_state == "active"
    assert "pystemd" not in sys.modules and len(fake_busctl.read_text().splitlines()) == 1
    backend.daemon_reload()  # the first action: pystemd does not import, so systemctl does it
    assert backend.backend == "systemctl"
    assert fake_systemctl.read_text().splitlines() == ["--user --no-ask-password daemon-reload"]
    with pytest.raises(DevboxError) as error:
        systemd.connect("pystemd")
    assert error.value.code == ExitCode.ENVIRONMENT and "libsystemd.so.0" in error.value.message


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
