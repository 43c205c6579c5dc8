"""The compiled-template cache saves time on every `create` and can never change or fail a render."""

from __future__ import annotations

import os
import pickle
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from jinja2.bccache import bc_magic

from devbox.units import render
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
    assert len(entries) == 7 and all(
        p.stat().st_size > 0 for p in entries
    )  # one per template rendered (the egress blocks are two)
    assert tmpdir_env.stat().st_mode & 0o777 == 0o700
    stamps = [p.stat().st_mtime_ns for p in entries]
    assert _texts() == first
    assert [p.stat().st_mtime_ns for p in sorted(tmpdir_env.iterdir())] == stamps  # read, not written again


@pytest.mark.parametrize(
    "entry",
    [
        b"garbage",  # Jinja itself refuses a wrong magic
        bc_magic + b"\x80\x04garbage",  # the right magic, then a truncated pickle: ours must catch it
        bc_magic + pickle.dumps("x", 2),  # a checksum that does not match: Jinja compiles again
    ],
)
def test_a_corrupt_cache_entry_is_compiled_again(tmpdir_env: Path, entry: bytes) -> None:
    first = _texts()
    for path in tmpdir_env.iterdir():
        path.write_bytes(entry)
    assert _texts() == first


def test_entries_are_named_for_jinja_devbox_and_the_syntax(tmpdir_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Compiled code from another Jinja, devbox or syntax setting is never loaded."""
    _texts()
    before = {p.name for p in tmpdir_env.iterdir()}
    assert all(name.startswith("__devbox_") for name in before)
    monkeypatch.setitem(render._SYNTAX, "trim_blocks", False)
    _texts()
    assert {p.name for p in tmpdir_env.iterdir()} - before  # new entries, beside the old ones


def test_no_safe_cache_directory_means_no_cache(tmpdir_env: Path) -> None:
    tmpdir_env.write_text("not a directory\n")  # Jinja refuses it
    first = _texts()
    assert render._environment().bytecode_cache is None
    assert first == [f.text for f in render.render_drone(cases()["minimal"], HOST)]
