from __future__ import annotations

import os
from pathlib import Path

import pytest

from devbox.errors import DevboxError, ExitCode
from devbox.paths import Paths
from devbox.units import install
from devbox.units.render import HEADER, Place, RenderedFile


def paths(tmp_path: Path) -> Paths:
    return Paths(tmp_path / "cfg", tmp_path / "quadlet", tmp_path / "units", tmp_path / "run")


def ours(body: str) -> str:
    return f"{HEADER}\n{body}"


def test_plan_sorts_files_into_new_changed_unchanged(tmp_path: Path) -> None:
    p = paths(tmp_path)
    (p.quadlet_dir).mkdir(parents=True)
    (p.quadlet_dir / "same.container").write_text(ours("same"))
    (p.quadlet_dir / "old.container").write_text(ours("old"))
    files = [
        RenderedFile(Place.QUADLET, "same.container", ours("same")),
        RenderedFile(Place.QUADLET, "old.container", ours("new")),
        RenderedFile(Place.UNITS, "fresh.socket", ours("fresh")),
    ]
    planned = install.plan(files, p)
    assert [(f.path.name, f.change) for f in planned] == [
        ("same.container", install.Change.UNCHANGED),
        ("old.container", install.Change.CHANGED),
        ("fresh.socket", install.Change.NEW),
    ]
    written = install.apply(planned)
    assert [f.path.name for f in written] == ["old.container", "fresh.socket"]
    assert (p.unit_dir / "fresh.socket").read_text() == ours("fresh")
    assert oct((p.unit_dir / "fresh.socket").stat().st_mode & 0o777) == "0o644"
    install.rollback(written)
    assert (p.quadlet_dir / "old.container").read_text() == ours("old")
    assert not (p.unit_dir / "fresh.socket").exists()


def test_a_foreign_file_is_never_replaced_without_force(tmp_path: Path) -> None:
    p = paths(tmp_path)
    p.unit_dir.mkdir(parents=True)
    (p.unit_dir / "x.socket").write_text("[Socket]\n")
    files = [RenderedFile(Place.UNITS, "x.socket", ours("x"))]
    with pytest.raises(DevboxError) as error:
        install.plan(files, p)
    assert error.value.code == ExitCode.CONFLICT
    assert install.plan(files, p, force=True)[0].change is install.Change.CHANGED


def test_atomic_write_leaves_no_temporary_file_when_it_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "d" / "unit.service"

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device", str(dst))

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        install.atomic_write(target, "text")
    assert list((tmp_path / "d").iterdir()) == []


def test_apply_undoes_earlier_writes_when_a_later_one_fails(tmp_path: Path) -> None:
    p = paths(tmp_path)
    p.unit_dir.mkdir(parents=True)
    (p.unit_dir / "blocked").mkdir()  # a directory where a file must go: os.replace fails
    files = [RenderedFile(Place.QUADLET, "a.container", ours("a")), RenderedFile(Place.UNITS, "blocked", ours("b"))]
    with pytest.raises(DevboxError):
        install.apply(install.plan(files, p, force=True))
    assert not (p.quadlet_dir / "a.container").exists()


def test_remove_file_removes_an_emptied_dropin_directory(tmp_path: Path) -> None:
    dropin = tmp_path / "drone-x.container.d" / "autostart.conf"
    install.atomic_write(dropin, "x")
    assert install.remove_file(dropin) is True
    assert not dropin.parent.exists()
    assert install.remove_file(dropin) is False
