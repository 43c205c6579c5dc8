"""The user's systemd manager behind one small interface, with two backends.

- `PystemdSystemd` talks D-Bus on the user bus through pystemd, connecting on its
  first action.
- `SystemctlSystemd` runs `systemctl --user`; used when pystemd is missing or the
  bus cannot be reached, or when `DEVBOX_SYSTEMD=systemctl`.
- `AutoSystemd` (the default when pystemd is installed and there is a user bus)
  picks one of the two at the first action.

Both answer `states()` for many units with one D-Bus call, ListUnitsByNames, made by
`busctl`: one short process, where importing pystemd alone (it loads lxml) takes
longer and `systemctl show` asks once per unit (figures in the README). That keeps
`devbox list` from importing pystemd at all. Without a user bus (no dbus-user-session) the systemctl
backend falls back to `systemctl show`, which reaches the manager on its private socket.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from devbox.errors import DevboxError, ExitCode, cannot_run

START_TIMEOUT = 900.0  # a first start may pull an image
STOP_TIMEOUT = 120.0


@dataclass(frozen=True)
class UnitState:
    name: str
    load_state: str  # loaded, not-found, masked, bad-setting, error
    active_state: str  # active, inactive, failed, activating, deactivating, reloading
    sub_state: str
    n_restarts: int | None = None
    active_since: datetime | None = None
    result: str | None = None  # the service's last Result: success, exit-code, oom-kill, ...

    @property
    def exists(self) -> bool:
        return self.load_state not in ("not-found", "")

    @classmethod
    def missing(cls, name: str) -> UnitState:
        return cls(name, "not-found", "inactive", "dead")


class Systemd(Protocol):
    @property
    def backend(self) -> str: ...  # "pystemd" or "systemctl": which one acts

    def daemon_reload(self) -> None: ...
    def start(self, unit: str) -> None: ...
    def stop(self, unit: str) -> None: ...
    def restart(self, unit: str) -> None: ...
    def reset_failed(self, unit: str) -> None: ...
    def states(self, units: Sequence[str]) -> dict[str, UnitState]: ...
    def enable(self, unit: str) -> None: ...  # enable and start a loaded unit (`enable --no-reload --now`)
    def disable(self, unit: str) -> None: ...  # disable and stop (`disable --no-reload --now`)
    def inactive_since(self, unit: str) -> datetime | None: ...  # when it last stopped, if it did


def _failed(action: str, unit: str, detail: str) -> DevboxError:
    detail = detail.strip().splitlines()[0] if detail.strip() else "no details"
    return DevboxError(f"systemd could not {action} {unit}: {detail}", ExitCode.SYSTEMD)


class SystemctlSystemd:
    """`systemctl --user`, one process per call."""

    backend = "systemctl"
    PROPERTIES = "Id,LoadState,ActiveState,SubState,NRestarts,ActiveEnterTimestamp,Result"

    def _run(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                ["systemctl", "--user", "--no-ask-password", *args],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except FileNotFoundError:
            raise DevboxError("systemctl is not installed: devbox needs systemd", ExitCode.ENVIRONMENT) from None
        except OSError as exc:
            raise cannot_run("systemctl", exc) from None
        except subprocess.TimeoutExpired:
            raise DevboxError(
                f"systemctl --user {' '.join(args)} did not finish in {timeout:.0f} s", ExitCode.SYSTEMD
            ) from None

    def _act(self, action: str, unit: str, timeout: float) -> None:
        result = self._run(action, "--", unit, timeout=timeout)
        if result.returncode != 0:
            raise _failed(action, unit, result.stderr)

    def daemon_reload(self) -> None:
        result = self._run("daemon-reload")
        if result.returncode != 0:
            raise _failed("reload", "the user manager", result.stderr)

    def start(self, unit: str) -> None:
        self._act("start", unit, START_TIMEOUT)

    def stop(self, unit: str) -> None:
        self._act("stop", unit, STOP_TIMEOUT)

    def restart(self, unit: str) -> None:
        self._act("restart", unit, START_TIMEOUT + STOP_TIMEOUT)

    def reset_failed(self, unit: str) -> None:
        self._run("reset-failed", "--", unit)  # nothing to reset is not an error

    def enable(self, unit: str) -> None:
        result = self._run("enable", "--no-reload", "--now", "--", unit, timeout=START_TIMEOUT)
        if result.returncode != 0:
            raise _failed("enable", unit, result.stderr)

    def disable(self, unit: str) -> None:
        result = self._run("disable", "--no-reload", "--now", "--", unit, timeout=STOP_TIMEOUT)
        if result.returncode != 0:
            raise _failed("disable", unit, result.stderr)

    def inactive_since(self, unit: str) -> datetime | None:
        result = self._run("show", "--timestamp=unix", "--property=InactiveEnterTimestamp", "--value", "--", unit)
        value = result.stdout.strip()
        return _from_unix(value[1:]) if result.returncode == 0 and value.startswith("@") else None

    def states(self, units: Sequence[str]) -> dict[str, UnitState]:
        """busctl when there is a user bus; without one (no dbus-user-session) systemctl still
        reaches the manager on its private socket, asking once per unit."""
        if not units or _user_bus_reachable():
            return list_units(units)
        result = self._run("show", "--timestamp=unix", f"--property={self.PROPERTIES}", "--", *units)
        if result.returncode != 0:
            raise _failed("read the state of", ", ".join(units), result.stderr)
        return parse_show(result.stdout, units)

    def details(self, unit: str) -> UnitState:
        """One unit with restarts, start time and last result (for `status`)."""
        result = self._run("show", "--timestamp=unix", f"--property={self.PROPERTIES}", "--", unit)
        if result.returncode != 0:
            raise _failed("read the state of", unit, result.stderr)
        return parse_show(result.stdout, [unit]).get(unit) or UnitState.missing(unit)


BUSCTL_LIST_UNITS = [
    "busctl", "--user", "--json=short", "call", "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
    "org.freedesktop.systemd1.Manager", "ListUnitsByNames", "as",
]  # fmt: skip


def list_units(units: Sequence[str], timeout: float = 30.0) -> dict[str, UnitState]:
    """Load, active and sub state of UNITS in one D-Bus call. ListUnitsByNames loads a unit that
    systemd had let go of, so a stopped drone reads as loaded and inactive, not as missing."""
    if not units:
        return {}
    try:
        result = subprocess.run(
            [*BUSCTL_LIST_UNITS, str(len(units)), *units], capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError:
        raise DevboxError("busctl is not installed: devbox needs systemd", ExitCode.ENVIRONMENT) from None
    except OSError as exc:
        raise cannot_run("busctl", exc) from None
    except subprocess.TimeoutExpired:
        raise _failed("read the state of", ", ".join(units), f"busctl did not answer in {timeout:.0f} s") from None
    if result.returncode != 0:
        raise _failed("read the state of", ", ".join(units), result.stderr)
    return parse_list_units(result.stdout, units)


def parse_list_units(output: str, units: Sequence[str]) -> dict[str, UnitState]:
    """busctl's JSON for ListUnitsByNames: {"type": "a(ssssssouso)", "data": [[[name, description,
    load, active, sub, ...], ...]]}. A unit it does not name is reported as not found."""
    try:
        return states_from_rows(json.loads(output)["data"][0], units)
    except (ValueError, KeyError, IndexError, TypeError):
        raise _failed("read the state of", ", ".join(units), f"busctl printed {output[:80]!r}") from None


def states_from_rows(rows: Iterable[Sequence[Any]], units: Sequence[str]) -> dict[str, UnitState]:
    """ListUnitsByNames' rows (name, description, load, active, sub, ...), from busctl or pystemd,
    for exactly UNITS: one that is not in the answer is reported as not found."""
    states: dict[str, UnitState] = {}
    for row in rows:
        name, _description, load, active, sub = (_text(value) for value in row[:5])
        states[name] = UnitState(name, load, active, sub)
    return {unit: states.get(unit) or UnitState.missing(unit) for unit in units}


def parse_show(output: str, units: Sequence[str]) -> dict[str, UnitState]:
    """`systemctl show` prints one block per unit, in the order asked, separated by blank lines."""
    blocks = [b for b in output.strip().split("\n\n")] if output.strip() else []
    states: dict[str, UnitState] = {}
    for unit, block in zip(units, blocks, strict=False):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        restarts = props.get("NRestarts", "")
        since = props.get("ActiveEnterTimestamp", "")
        states[unit] = UnitState(
            name=unit,
            load_state=props.get("LoadState", ""),
            active_state=props.get("ActiveState", ""),
            sub_state=props.get("SubState", ""),
            n_restarts=int(restarts) if restarts.isdigit() else None,
            active_since=_from_unix(since[1:]) if since.startswith("@") else None,
            result=props.get("Result") or None,
        )
    return states


def _from_unix(seconds: str | int | float) -> datetime | None:
    try:
        value = float(seconds)
    except ValueError:
        return None
    return datetime.fromtimestamp(value, tz=UTC) if value > 0 else None


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class PystemdSystemd:
    """The user manager over D-Bus (pystemd). Jobs are waited for like systemctl does."""

    backend = "pystemd"
    _POLL = 0.02

    def __init__(self) -> None:
        self._connection: tuple[Any, Any] | None = None  # (bus, manager), made by open()

    def open(self) -> None:
        """Import pystemd and connect to the user bus; every action does this on first use."""
        if self._connection is None:
            from pystemd.dbuslib import DBus
            from pystemd.systemd1 import Manager

            bus = DBus(user_mode=True)
            bus.open()
            self._connection = (bus, Manager(bus=bus, _autoload=True))

    @property
    def _bus(self) -> Any:
        self.open()
        assert self._connection is not None
        return self._connection[0]

    @property
    def _manager(self) -> Any:
        self.open()
        assert self._connection is not None
        return self._connection[1]

    def _unit(self, unit: str):  # -> pystemd.systemd1.Unit
        from pystemd.systemd1 import Unit

        return Unit(unit.encode(), bus=self._bus, _autoload=True)

    def daemon_reload(self) -> None:
        try:
            self._manager.Manager.Reload()
        except Exception as exc:  # pystemd raises its own DBus error types
            raise _failed("reload", "the user manager", str(exc)) from None

    def _job(self, action: str, method: str, unit: str, timeout: float, want: tuple[str, ...]) -> None:
        try:
            getattr(self._manager.Manager, method)(unit.encode(), b"replace")
            proxy = self._unit(unit)
            deadline = time.monotonic() + timeout
            while proxy.Unit.Job[0] != 0:
                if time.monotonic() > deadline:
                    raise _failed(action, unit, f"the job did not finish in {timeout:.0f} s")
                time.sleep(self._POLL)
            state = _text(proxy.Unit.ActiveState)
        except DevboxError:
            raise
        except Exception as exc:
            raise _failed(action, unit, getattr(exc, "err_message", "") or str(exc)) from None
        if state not in want:
            raise _failed(action, unit, f"it is {state}; see `journalctl --user -u {unit}`")

    def start(self, unit: str) -> None:
        self._job("start", "StartUnit", unit, START_TIMEOUT, ("active", "reloading"))

    def stop(self, unit: str) -> None:
        self._job("stop", "StopUnit", unit, STOP_TIMEOUT, ("inactive", "failed"))

    def restart(self, unit: str) -> None:
        self._job("restart", "RestartUnit", unit, START_TIMEOUT + STOP_TIMEOUT, ("active", "reloading"))

    def reset_failed(self, unit: str) -> None:
        try:
            self._manager.Manager.ResetFailedUnit(unit.encode())
        except Exception:  # not loaded or not failed: nothing to reset
            pass

    def enable(self, unit: str) -> None:
        try:
            self._manager.Manager.EnableUnitFiles([unit.encode()], False, True)
        except Exception as exc:
            raise _failed("enable", unit, getattr(exc, "err_message", "") or str(exc)) from None
        self.start(unit)

    def disable(self, unit: str) -> None:
        self.stop(unit)
        try:
            self._manager.Manager.DisableUnitFiles([unit.encode()], False)
        except Exception as exc:
            raise _failed("disable", unit, getattr(exc, "err_message", "") or str(exc)) from None

    def inactive_since(self, unit: str) -> datetime | None:
        try:
            return _from_unix(int(self._unit(unit).Unit.InactiveEnterTimestamp) / 1_000_000)
        except Exception:
            return None

    def states(self, units: Sequence[str]) -> dict[str, UnitState]:
        """Through busctl until this process has connected for an action; then on its own connection."""
        if self._connection is None or not units:
            return list_units(units)
        try:
            rows = self._manager.Manager.ListUnitsByNames([u.encode() for u in units])
        except Exception as exc:
            raise _failed("read the state of", ", ".join(units), str(exc)) from None
        return states_from_rows(rows, units)

    def details(self, unit: str) -> UnitState:
        """One unit with restarts and start time (for `status`)."""
        base = self.states([unit])[unit]
        if not base.exists:
            return base
        try:
            proxy = self._unit(unit)
            service = unit.endswith(".service")
            restarts = proxy.Service.NRestarts if service else None
            # A socket has its own Result (service-start-limit-hit when its service hit the start limit).
            result = proxy.Service.Result if service else proxy.Socket.Result if unit.endswith(".socket") else None
            since = int(proxy.Unit.ActiveEnterTimestamp)
        except Exception as exc:
            raise _failed("read the state of", unit, getattr(exc, "err_message", "") or str(exc)) from None
        return UnitState(
            unit,
            base.load_state,
            base.active_state,
            base.sub_state,
            n_restarts=int(restarts) if restarts is not None else None,
            active_since=_from_unix(since / 1_000_000),
            result=result.decode() if isinstance(result, bytes) else result,
        )


def details(systemd: Systemd, unit: str) -> UnitState:
    """A unit's state with restarts and start time, from whichever backend."""
    if isinstance(systemd, (PystemdSystemd, SystemctlSystemd, AutoSystemd)):
        return systemd.details(unit)
    return systemd.states([unit])[unit]


def _user_bus_reachable() -> bool:
    """The user bus socket sd_bus_open_user would use is there (an abstract or TCP address is trusted)."""
    address = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
    if address:
        for part in address.split(";")[0].removeprefix("unix:").split(","):
            if part.startswith("path="):
                return os.path.exists(part[len("path=") :])
        return True
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return runtime is not None and os.path.exists(os.path.join(runtime, "bus"))


class AutoSystemd:
    """DEVBOX_SYSTEMD=auto: pystemd if it imports and connects at the first action, else systemctl.
    States are read with busctl until then, so `list` neither chooses nor imports anything."""

    def __init__(self) -> None:
        self._chosen: PystemdSystemd | SystemctlSystemd | None = None

    def _choose(self) -> PystemdSystemd | SystemctlSystemd:
        if self._chosen is None:
            pystemd = PystemdSystemd()
            try:
                pystemd.open()
                self._chosen = pystemd
            except Exception:  # not importable (no libsystemd), or the bus refused us
                self._chosen = SystemctlSystemd()
        return self._chosen

    @property
    def backend(self) -> str:
        return self._choose().backend

    def states(self, units: Sequence[str]) -> dict[str, UnitState]:
        return list_units(units) if self._chosen is None else self._chosen.states(units)

    def details(self, unit: str) -> UnitState:
        return self._choose().details(unit)

    def daemon_reload(self) -> None:
        self._choose().daemon_reload()

    def start(self, unit: str) -> None:
        self._choose().start(unit)

    def stop(self, unit: str) -> None:
        self._choose().stop(unit)

    def restart(self, unit: str) -> None:
        self._choose().restart(unit)

    def reset_failed(self, unit: str) -> None:
        self._choose().reset_failed(unit)

    def enable(self, unit: str) -> None:
        self._choose().enable(unit)

    def disable(self, unit: str) -> None:
        self._choose().disable(unit)

    def inactive_since(self, unit: str) -> datetime | None:
        return self._choose().inactive_since(unit)


def connect(preference: str | None = None) -> Systemd:
    """DEVBOX_SYSTEMD (auto, pystemd or systemctl). auto without a user bus or without pystemd
    installed is systemctl; otherwise the choice waits for the first action (AutoSystemd)."""
    choice = preference or os.environ.get("DEVBOX_SYSTEMD", "auto")
    if choice not in ("auto", "pystemd", "systemctl"):
        raise DevboxError(f"DEVBOX_SYSTEMD={choice!r}: use auto, pystemd or systemctl", ExitCode.INVALID_INPUT)
    if choice == "pystemd":
        backend = PystemdSystemd()
        try:
            backend.open()
        except Exception as exc:
            raise DevboxError(f"pystemd cannot reach the user manager: {exc}", ExitCode.ENVIRONMENT) from None
        return backend
    if choice == "auto" and _user_bus_reachable():
        from importlib.util import find_spec

        if find_spec("pystemd") is not None:
            return AutoSystemd()
    return SystemctlSystemd()


def journal_argv(unit: str, lines: int, follow: bool = False) -> list[str]:
    argv = ["journalctl", "--user", "--no-pager", "-o", "short-iso", "-n", str(lines), "-u", unit]
    return argv + ["-f"] if follow else argv


def journal_lines(unit: str, lines: int = 20) -> list[str]:
    try:
        result = subprocess.run(journal_argv(unit, lines), capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line for line in result.stdout.splitlines() if line.strip()]
