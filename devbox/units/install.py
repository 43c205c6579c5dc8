"""Writing unit files: a plan first (new / changed / unchanged), then atomic writes.

A file is written to a temporary file in the same directory, fsynced and renamed
over the target, so systemd never reads half a unit. A file devbox did not write
is never replaced unless the caller says so (`--force`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from devbox.errors import DevboxError, ExitCode
from devbox.paths import Paths
from devbox.units.render import Place, RenderedFile
from devbox.units.unitfile import is_ours


class Change(Enum):
    NEW = "new"
    CHANGED = "changed"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class PlannedFile:
    path: Path
    text: str
    change: Change
    previous: str | None
    mode: int = 0o644


def place_dir(paths: Paths, place: Place) -> Path:
    return {
        Place.QUADLET: paths.quadlet_dir,
        Place.UNITS: paths.unit_dir,
        Place.TOOLS: paths.tools_dir,
        Place.DRONES: paths.drones_dir,
    }[place]


def target_path(paths: Paths, place: Place, relative_path: str) -> Path:
    return place_dir(paths, place) / relative_path


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (UnicodeDecodeError, IsADirectoryError):
        return ""  # not ours, whatever it is


def plan(files: Iterable[RenderedFile], paths: Paths, force: bool = False) -> list[PlannedFile]:
    planned: list[PlannedFile] = []
    for rendered in files:
        path = target_path(paths, rendered.place, rendered.relative_path)
        previous = _read(path)
        if previous is None:
            change = Change.NEW
        elif previous == rendered.text:
            change = Change.UNCHANGED
        else:
            if not is_ours(previous) and not force:
                raise DevboxError(
                    f"{path} exists and was not written by devbox: move it away or use --force",
                    ExitCode.CONFLICT,
                )
            change = Change.CHANGED
        planned.append(PlannedFile(path, rendered.text, change, previous, rendered.mode))
    return planned


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def remove_stale_temps(path: Path) -> None:
    """Remove what a writer of PATH killed half-way (`kill -9`, a crash) left: its temporary files.

    A temporary file's name holds its writer's PID; one whose writer still runs is left alone."""
    prefix = _temp_prefix(path)
    try:
        candidates = [p for p in path.parent.iterdir() if p.name.startswith(prefix) and p.name.endswith(".tmp")]
    except OSError:
        return
    for tmp in candidates:
        pid = tmp.name[len(prefix) :].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def atomic_write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f"{_temp_prefix(path)}{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def apply(planned: list[PlannedFile]) -> list[PlannedFile]:
    """Write every new or changed file; on failure undo what was written, then re-raise."""
    done: list[PlannedFile] = []
    try:
        for item in planned:
            if item.change is not Change.UNCHANGED:
                try:
                    atomic_write(item.path, item.text, item.mode)
                except OSError:
                    if _read(item.path) == item.text:  # renamed, then the directory's fsync failed: undo it too
                        done.append(item)
                    raise
                done.append(item)
    except OSError as exc:
        rollback(done)
        raise DevboxError(f"cannot write {exc.filename or 'a unit file'}: {exc.strerror}", ExitCode.FAILURE) from None
    return done


def rollback(written: list[PlannedFile]) -> None:
    """Put back what was there before each written file (or remove it if it was new)."""
    for item in reversed(written):
        if item.previous is None:
            remove_file(item.path)
        else:
            atomic_write(item.path, item.previous, item.mode)


def remove_file(path: Path) -> bool:
    """Remove a file (and what an interrupted write of it left) and, if it leaves one empty, its drop-in directory."""
    remove_stale_temps(path)
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    if path.parent.name.endswith(".d") or path.parent.parent.name == "drones":
        try:
            path.parent.rmdir()
        except OSError:
            pass
    return True
