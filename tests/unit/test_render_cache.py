"""The compiled-template cache saves time on every `create` and can never change or fail a render."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from devbox import render
from tests.unit.cases import HOST, cases


@pytest.fixture
def tmpdir_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    render._environment.cache_clear()
    yield tmp_path / f"_jinja2-cache-{os.getuid()}"
    render._environment.cache_clear()


def _texts() -> list[str]:
    render._environment.cache_clear()  # a new process, as far as Jinja can tell
    return [f.text for f in render.render_drone(cases()["minimal"], HOST)]


def test_templates_are_compiled_once_and_render_the_same(tmpdir_env: Path) -> None:
    first = _texts()
    entries = sorted(tmpdir_env.iterdir())
    assert len(entries) == 5 and all(p.stat().st_size > 0 for p in entries)  # one per template rendered
    assert tmpdir_env.stat().st_mode & 0o777 == 0o700
    stamps = [p.stat().st_mtime_ns for p in entries]
    assert _texts() == first
    assert [p.stat().st_mtime_ns for p in sorted(tmpdir_env.iterdir())] == stamps  # read, not written again


def test_a_corrupt_cache_entry_is_compiled_again(tmpdir_env: Path) -> None:
    first = _texts()
    for entry in tmpdir_env.iterdir():
        entry.write_bytes(b"garbage")
    assert _texts() == first


def test_no_safe_cache_directory_means_no_cache(tmpdir_env: Path) -> None:
    tmpdir_env.write_text("not a directory\n")  # Jinja refuses it
    first = _texts()
    assert render._environment().bytecode_cache is None
    assert first == [f.text for f in render.render_drone(cases()["minimal"], HOST)]
