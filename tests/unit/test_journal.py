"""Audit events reach the journal as native-protocol datagrams with their own fields."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import pytest

from devbox.host import journal


def _receive(tmp_path: Path, **details: object) -> bytes:
    path = str(tmp_path / "journal.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        journal.record(journal.TOKEN_MINTED, "myproj", "minted a token", socket_path=path, **details)
        return server.recv(65536)


def test_event_carries_its_fields(tmp_path: Path) -> None:
    data = _receive(tmp_path, repo="acme/x", permissions="contents:read", absent=None)
    lines = data.decode().splitlines()
    assert "DEVBOX_EVENT=token-minted" in lines
    assert "DEVBOX_DRONE=myproj" in lines
    assert "DEVBOX_REPO=acme/x" in lines
    assert "DEVBOX_PERMISSIONS=contents:read" in lines
    assert "SYSLOG_IDENTIFIER=devbox" in lines
    assert not any(line.startswith("DEVBOX_ABSENT") for line in lines)


def test_value_with_newline_uses_the_binary_form(tmp_path: Path) -> None:
    data = _receive(tmp_path, path="/a\nDEVBOX_EVENT=forged")
    value = b"/a\nDEVBOX_EVENT=forged"
    assert b"DEVBOX_PATH\n" + struct.pack("<Q", len(value)) + value + b"\n" in data
    assert data.count(b"DEVBOX_EVENT=") == 2  # the real one, and the forged text inside the length-prefixed value


def test_field_names_are_journald_names() -> None:
    assert journal.field_name("status-code") == "DEVBOX_STATUS_CODE"
    assert journal.field_name("a.b c") == "DEVBOX_A_B_C"


def test_without_a_journal_the_event_goes_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    journal.record(journal.SSH_LOGIN, "d1", "login", socket_path=str(tmp_path / "none"))
    assert "ssh-login d1: login" in capsys.readouterr().err
