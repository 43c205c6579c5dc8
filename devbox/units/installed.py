"""The drones whose units are installed, as their unit files declare them: read, never changed.

One directory read of the Quadlet directory; each drone's labels are read back through the
one table in drone/spec.py, so what devbox reads is what it wrote.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from devbox.drone.spec import DroneSpec, declared_fields
from devbox.errors import DevboxError, ExitCode
from devbox.names import names_of
from devbox.paths import Paths
from devbox.units import unitfile
from devbox.values import is_name


@dataclass(frozen=True)
class DroneRecord:
    """A drone as its unit file declares it."""

    name: str
    path: Path  # the .container file
    labels: dict[str, str]  # as written, prefix removed
    image: str
    autostart: bool
    declared: DroneSpec  # the labels read back, typed (fields no label carries keep their defaults)
    damaged: str | None = None  # why its unit cannot be read as Quadlet reads it: no label is trusted

    @property
    def repos(self) -> list[str]:
        return list(self.declared.repos)


def _declared(name: str, image: str, labels: dict[str, str], written: datetime) -> DroneSpec:
    fields = declared_fields(labels)
    fields.update(name=name, image=image, created=fields["created"] or written)
    return DroneSpec(**fields)


def read_record(paths: Paths, path: Path) -> DroneRecord | None:
    """The drone PATH declares; None for a file devbox did not write. One drone's damaged unit
    is reported as that drone, damaged (with nothing declared), never as an error for all."""
    name = path.name.removeprefix("drone-").removesuffix(".container")
    if not is_name(name):
        return None
    autostart = (paths.quadlet_dir / names_of(name).autostart_dropin).is_file()
    try:
        data = path.read_bytes()
        written = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except OSError:
        return None
    if not data.startswith(unitfile.MARKER.encode()):
        return None

    def damaged(reason: str) -> DroneRecord:
        return DroneRecord(name, path, {}, "", autostart, _declared(name, "", {}, written), damaged=reason)

    try:
        text = data.decode("utf-8")
        labels, image = unitfile.labels(text), unitfile.image(text) or ""
    except UnicodeDecodeError:
        return damaged("not UTF-8")
    except unitfile.UnitFileError as exc:
        return damaged(str(exc))
    if labels.get("drone") != name:
        return damaged("its io.devbox.drone label is not its name")
    return DroneRecord(name, path, labels, image, autostart, _declared(name, image, labels, written))


def find_drones(paths: Paths) -> dict[str, DroneRecord]:
    """Every drone devbox wrote, from the Quadlet directory alone (one directory read)."""
    if not paths.quadlet_dir.is_dir():
        return {}
    records = (read_record(paths, path) for path in sorted(paths.quadlet_dir.glob("drone-*.container")))
    return {record.name: record for record in records if record is not None}


def damaged_error(record: DroneRecord) -> DevboxError:
    return DevboxError(
        f"drone {record.name} is damaged: {record.path}: {record.damaged}; devbox destroy {record.name} removes it",
        ExitCode.DAMAGED,
    )


def require_drone(paths: Paths, name: str, *, damaged_ok: bool = False) -> DroneRecord:
    """Drone NAME, readable (a damaged one only with DAMAGED_OK: destroy removes it by name)."""
    record = find_drones(paths).get(name)
    if record is None:
        raise DevboxError(f"no such drone: {name}", ExitCode.NOT_FOUND)
    if record.damaged is not None and not damaged_ok:
        raise damaged_error(record)
    return record
