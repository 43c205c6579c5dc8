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


@dataclass(frozen=True)
class DroneRecord:
    """A drone as its unit file declares it."""

    name: str
    path: Path  # the .container file
    labels: dict[str, str]  # as written, prefix removed
    image: str
    autostart: bool
    declared: DroneSpec  # the labels read back, typed (fields no label carries keep their defaults)

    @property
    def repos(self) -> list[str]:
        return list(self.declared.repos)


def _declared(name: str, image: str, labels: dict[str, str], written: datetime) -> DroneSpec:
    fields = declared_fields(labels)
    fields.update(name=name, image=image, created=fields["created"] or written)
    return DroneSpec(**fields)


def read_record(paths: Paths, path: Path) -> DroneRecord | None:
    """The drone PATH declares, or None when it is not a drone unit devbox wrote."""
    try:
        text = path.read_text(encoding="utf-8")
        written = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except (OSError, UnicodeDecodeError):
        return None
    labels = unitfile.labels(text) if unitfile.is_ours(text) else {}
    name = labels.get("drone")
    if not name or path.name != names_of(name).container_file:
        return None
    image = unitfile.image(text) or ""
    return DroneRecord(
        name=name,
        path=path,
        labels=labels,
        image=image,
        autostart=(paths.quadlet_dir / names_of(name).autostart_dropin).is_file(),
        declared=_declared(name, image, labels, written),
    )


def find_drones(paths: Paths) -> dict[str, DroneRecord]:
    """Every drone devbox wrote, from the Quadlet directory alone (one directory read)."""
    if not paths.quadlet_dir.is_dir():
        return {}
    records = (read_record(paths, path) for path in sorted(paths.quadlet_dir.glob("drone-*.container")))
    return {record.name: record for record in records if record is not None}


def require_drone(paths: Paths, name: str) -> DroneRecord:
    record = find_drones(paths).get(name)
    if record is None:
        raise DevboxError(f"no such drone: {name}", ExitCode.NOT_FOUND)
    return record
