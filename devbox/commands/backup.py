"""`devbox backup` and `devbox restore`: a drone's home volume and unit files in one tar file.

The archive is an uncompressed GNU tar, members in this order:

    units/quadlet/drone-NAME.container          the Quadlet unit (its labels are the drone's options)
    units/quadlet/drone-NAME.container.d/FILE   its drop-ins
    units/systemd/drone-NAME-creds.{socket,service}
    volume.tar                                  `podman volume export drone-NAME-home`, streamed
    manifest.json                               format, versions, name, labels, sha256 of every member

The volume is streamed from `podman volume export` into the archive a chunk at a
time and never held in memory: its tar header is written with size 0 first and
rewritten once the size is known (the archive is built in a temporary file next
to the target, then renamed). Restore reads the archive twice: once to check
every checksum before anything is created, once to feed `podman volume import`.
It re-renders the units from the archived labels through `lifecycle.create`, so
`--name` works and the units match this devbox version.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from devbox import __version__
from devbox.commands import lifecycle, locks, mosh, web
from devbox.commands.progress import ByteProgress, Progress, no_progress
from devbox.drone.spec import LABEL_KEYS, DroneSpec, declared_fields, label_options
from devbox.errors import DevboxError, ExitCode
from devbox.host.systemd import journal_lines
from devbox.names import names_of
from devbox.paths import Paths
from devbox.units import installed, unitfile
from devbox.values import RESERVED_ENV_PREFIX, validate_name

FORMAT = "devbox-backup"
FORMAT_VERSION = 1
VOLUME_MEMBER = "volume.tar"
MANIFEST_MEMBER = "manifest.json"
QUADLET_PREFIX = "units/quadlet/"
SYSTEMD_PREFIX = "units/systemd/"
MANIFEST_MAX = 1024 * 1024
CHUNK = 1024 * 1024
_BLOCK = 512
_RECORD = 20 * _BLOCK


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- writing -------------------------------------------------------------------------------------


class _TarWriter:
    """Just enough of a tar writer to stream one member of unknown size into a seekable file."""

    def __init__(self, handle: IO[bytes], mtime: int) -> None:
        self._f = handle
        self._mtime = mtime

    def _header(self, name: str, size: int) -> bytes:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode, info.type = size, self._mtime, 0o600, tarfile.REGTYPE
        return info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")  # GNU: sizes over 8 GiB in one header

    def _pad(self, size: int) -> None:
        if size % _BLOCK:
            self._f.write(b"\0" * (_BLOCK - size % _BLOCK))

    def add(self, name: str, data: bytes) -> str:
        self._f.write(self._header(name, len(data)))
        self._f.write(data)
        self._pad(len(data))
        return _sha256(data)

    def add_stream(self, name: str, fill: Callable[[Callable[[bytes], None]], object]) -> tuple[int, str]:
        """`fill(write)` writes the member's data; returns its size and sha256."""
        start = self._f.tell()
        placeholder = self._header(name, 0)
        self._f.write(placeholder)
        digest = hashlib.sha256()
        size = 0

        def write(chunk: bytes) -> None:
            nonlocal size
            self._f.write(chunk)
            digest.update(chunk)
            size += len(chunk)

        fill(write)
        self._pad(size)
        end = self._f.tell()
        header = self._header(name, size)
        if len(header) != len(placeholder):  # cannot happen with GNU format and a fixed name; never corrupt
            raise DevboxError("internal error: the tar header changed length", ExitCode.FAILURE)
        self._f.seek(start)
        self._f.write(header)
        self._f.seek(end)
        return size, digest.hexdigest()

    def close(self) -> None:
        self._f.write(b"\0" * (2 * _BLOCK))
        position = self._f.tell()
        if position % _RECORD:
            self._f.write(b"\0" * (_RECORD - position % _RECORD))


def unit_members(paths: Paths, name: str) -> list[tuple[str, Path]]:
    """The drone's unit files as (member name, path): the .container, its drop-ins, the creds units."""
    members: list[tuple[str, Path]] = []
    container = paths.quadlet_dir / names_of(name).container_file
    members.append((QUADLET_PREFIX + container.name, container))
    dropins = paths.quadlet_dir / names_of(name).dropin_dir
    if dropins.is_dir():
        for path in sorted(dropins.iterdir()):
            if path.is_file():
                members.append((f"{QUADLET_PREFIX}{dropins.name}/{path.name}", path))
    for suffix in ("socket", "service"):
        path = paths.unit_dir / f"drone-{name}-creds.{suffix}"
        if path.is_file():
            members.append((SYSTEMD_PREFIX + path.name, path))
    return members


def default_file_name(name: str, now: datetime) -> str:
    return f"{name}-{now:%Y%m%d-%H%M%S}.devbox.tar"


@dataclass
class BackupResult:
    name: str
    path: Path | None  # None: written to the stream (stdout)
    size: int  # bytes of the whole archive
    volume: str
    volume_size: int
    volume_sha256: str
    running: bool  # was running when the backup began
    stopped: bool  # stopped for the copy and started again
    live: bool  # copied while running (--live)


def _is_running(ctx: lifecycle.Context, service: str) -> bool:
    return ctx.systemd.states([service])[service].active_state in ("active", "activating", "reloading")


def _start_again(ctx: lifecycle.Context, service: str) -> DevboxError | None:
    try:
        ctx.systemd.start(service)
    except DevboxError as exc:
        return DevboxError(exc.message, exc.code, details=journal_lines(service, 20))
    return None


def _publish(tmp: Path, target: Path) -> None:
    """Give the finished archive its name without replacing a file that appeared meanwhile."""
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise DevboxError(f"{target} exists already: choose another name with -o", ExitCode.EXISTS) from None
    except OSError:  # a file system without hard links
        if target.exists():
            raise DevboxError(f"{target} exists already: choose another name with -o", ExitCode.EXISTS) from None
        os.replace(tmp, target)
    else:
        tmp.unlink()
    dir_fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@dataclass
class _Stillness:
    """What `_held_still` did to the drone for the copy."""

    running: bool = False
    stopped: bool = False
    restart_error: DevboxError | None = None


@contextlib.contextmanager
def _held_still(
    ctx: lifecycle.Context, name: str, live: bool, notice: Progress, progress: Progress
) -> Iterator[_Stillness]:
    """Stop a running drone for a consistent copy (unless LIVE) and start it again after the copy,
    whether the copy worked or not. A failed start after a good copy is kept in `restart_error`."""
    service = names_of(name).service
    state = _Stillness(running=_is_running(ctx, service))
    if state.running and not live:
        notice(f"drone {name} is running: stopping it for a consistent copy, starting it again afterwards")
        progress(f"stopping {service}")
        ctx.systemd.stop(service)
        state.stopped = True
    elif state.running:
        notice(f"drone {name} is running and --live copies it as it is: the copy may be inconsistent")
    try:
        yield state
    except BaseException as exc:
        if state.stopped:
            progress(f"starting {service} again")
            failed = _start_again(ctx, service)
            if failed and isinstance(exc, DevboxError):
                exc.details.append(f"and {service} did not start again: {failed.message}")
        raise
    if state.stopped:
        progress(f"starting {service} again")
        state.restart_error = _start_again(ctx, service)


def _exporter(
    ctx: lifecycle.Context, volume: str, progress_bytes: ByteProgress
) -> Callable[[Callable[[bytes], None]], None]:
    """The volume's export as a stream of chunks, counting the bytes for the progress display."""

    def export(write: Callable[[bytes], None]) -> None:
        total = 0

        def counted(chunk: bytes) -> None:
            nonlocal total
            write(chunk)
            total += len(chunk)
            progress_bytes(total)

        ctx.podman.export_volume(volume, counted)

    return export


def _destination(
    ctx: lifecycle.Context, name: str, output: str | None, stream: IO[bytes] | None, now: datetime
) -> tuple[Path | None, Path]:
    """(the archive's path, or None for the stream; the directory the partial file is written in)."""
    if output == "-":
        if stream is None:
            raise DevboxError("-o - needs an output stream", ExitCode.USAGE)
        spool = ctx.paths.state_dir / "tmp"
        spool.mkdir(parents=True, exist_ok=True, mode=0o700)
        return None, spool
    target = Path(os.path.abspath(output or default_file_name(name, now)))
    if target.exists():
        raise DevboxError(f"{target} exists already: choose another name with -o", ExitCode.EXISTS)
    if not target.parent.is_dir():
        raise DevboxError(f"cannot write {target}: {target.parent} is not a directory", ExitCode.INVALID_INPUT)
    return target, target.parent


def backup(
    ctx: lifecycle.Context,
    name: str,
    *,
    output: str | None = None,
    stream: IO[bytes] | None = None,
    live: bool = False,
    progress: Progress = no_progress,
    progress_bytes: ByteProgress = no_progress,
    notice: Progress = no_progress,
) -> BackupResult:
    """Write drone NAME's units and home volume to OUTPUT (default NAME-DATE.devbox.tar here; "-": `stream`).

    A running drone is stopped for the copy and started again (`live` copies it as it runs).
    Nothing half-written remains on failure, and a drone stopped for the copy is started again.
    """
    record = installed.require_drone(ctx.paths, name)
    volume = names_of(name).volume
    if not ctx.podman.volume_exists(volume):
        raise DevboxError(
            f"drone {name} has no home volume yet ({volume}: it has never started): nothing to back up",
            ExitCode.NOT_FOUND,
        )
    if record.declared.containers:
        notice(
            f"the containers' store of drone {name} ({names_of(name).containers_volume}: images and containers "
            "run inside it) is not in the backup: load or build them again after a restore"
        )
    now = ctx.clock()
    target, spool = _destination(ctx, name, output, stream, now)
    members = [(member, path.read_bytes()) for member, path in unit_members(ctx.paths, name)]
    fd, tmp_name = tempfile.mkstemp(prefix=f".{name}-", suffix=".devbox.tar.partial", dir=spool)  # mode 0600
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w+b") as handle:
            writer = _TarWriter(handle, int(now.timestamp()))
            files = {member: writer.add(member, data) for member, data in members}
            with _held_still(ctx, name, live, notice, progress) as copy:
                progress(f"exporting {volume}")
                volume_size, volume_sha = writer.add_stream(VOLUME_MEMBER, _exporter(ctx, volume, progress_bytes))
            manifest = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "devbox_version": __version__,
                "name": name,
                "labels": record.labels,
                "created": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "running": copy.running,
                "live": copy.running and live,
                "volume": {"name": volume, "member": VOLUME_MEMBER, "size": volume_size, "sha256": volume_sha},
                "files": files,
            }
            writer.add(MANIFEST_MEMBER, (json.dumps(manifest, indent=2) + "\n").encode())
            writer.close()
            size = handle.tell()
            handle.flush()
            os.fsync(handle.fileno())
            if target is None:
                assert stream is not None
                handle.seek(0)
                shutil.copyfileobj(handle, stream, CHUNK)
                stream.flush()
        if target is not None:
            _publish(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    if copy.restart_error is not None:
        where = str(target) if target else "stdout"
        service = names_of(name).service
        raise DevboxError(
            f"the backup is written to {where}, but {service} did not start again: {copy.restart_error.message}",
            copy.restart_error.code,
            details=copy.restart_error.details,
        )
    running, stopped = copy.running, copy.stopped
    return BackupResult(name, target, size, volume, volume_size, volume_sha, running, stopped, running and live)


# --- reading and restoring -----------------------------------------------------------------------


def _bad(path: Path, why: str) -> DevboxError:
    return DevboxError(f"{path} is not a usable devbox backup: {why}", ExitCode.INVALID_INPUT)


def _safe_member(name: str) -> bool:
    parts = name.split("/")
    return not name.startswith("/") and ".." not in parts and "" not in parts and "." not in parts


@dataclass
class Archive:
    """An opened backup whose structure, manifest and unit files are checked (the volume: `verify_volume`)."""

    path: Path
    tar: tarfile.TarFile
    manifest: dict[str, Any]
    members: dict[str, tarfile.TarInfo]
    container_text: str

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    def close(self) -> None:
        self.tar.close()

    def volume_chunks(self, progress_bytes: ByteProgress = no_progress) -> Iterator[bytes]:
        """The volume tar, a chunk at a time; raises at the end when it does not match the manifest."""
        handle = self.tar.extractfile(self.members[VOLUME_MEMBER])
        assert handle is not None
        digest, total = hashlib.sha256(), 0
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            total += len(chunk)
            progress_bytes(total)
            yield chunk
        if digest.hexdigest() != self.manifest["volume"]["sha256"]:
            raise _bad(self.path, f"the sha256 of {VOLUME_MEMBER} does not match the manifest")

    def verify_volume(self, progress_bytes: ByteProgress = no_progress) -> None:
        for _ in self.volume_chunks(progress_bytes):
            pass


def _read_member(tar: tarfile.TarFile, info: tarfile.TarInfo) -> bytes:
    handle = tar.extractfile(info)
    assert handle is not None
    return handle.read()


def open_archive(path: Path) -> Archive:
    """Open and check a backup: structure, manifest, names, unit file checksums. Creates nothing."""
    try:
        tar = tarfile.open(path, "r:")  # uncompressed only: restore reads the volume member twice
    except FileNotFoundError:
        raise DevboxError(f"no such file: {path}", ExitCode.INVALID_INPUT) from None
    except IsADirectoryError:
        raise _bad(path, "it is a directory") from None
    except PermissionError:
        raise DevboxError(f"cannot read {path}: permission denied", ExitCode.INVALID_INPUT) from None
    except (tarfile.TarError, OSError) as exc:
        raise _bad(path, f"not an uncompressed tar file ({exc})") from None
    try:
        return _check(path, tar)
    except BaseException:
        tar.close()
        raise


def _check(path: Path, tar: tarfile.TarFile) -> Archive:
    try:
        infos = tar.getmembers()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise _bad(path, f"the tar file is damaged ({exc})") from None
    members: dict[str, tarfile.TarInfo] = {}
    for info in infos:
        if not info.isreg() or not _safe_member(info.name) or info.name in members:
            raise _bad(path, f"unexpected member {info.name!r}")
        members[info.name] = info
    if MANIFEST_MEMBER not in members:
        raise _bad(path, "no manifest.json")
    if members[MANIFEST_MEMBER].size > MANIFEST_MAX:
        raise _bad(path, "manifest.json is too large")
    try:
        manifest = json.loads(_read_member(tar, members[MANIFEST_MEMBER]))
    except (ValueError, tarfile.TarError, OSError) as exc:
        raise _bad(path, f"manifest.json is not JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _bad(path, f'manifest.json has no "format": "{FORMAT}"')
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise _bad(path, "manifest.json has no format_version")
    if version > FORMAT_VERSION:
        raise _bad(path, f"format version {version} is newer than this devbox reads ({FORMAT_VERSION}): upgrade devbox")
    if version != FORMAT_VERSION:
        raise _bad(path, f"format version {version} is not supported (this devbox reads {FORMAT_VERSION})")
    name = manifest.get("name")
    if not isinstance(name, str):
        raise _bad(path, "manifest.json has no drone name")
    try:
        validate_name(name)
    except DevboxError as exc:
        raise _bad(path, exc.message) from None
    volume = manifest.get("volume")
    if not isinstance(volume, dict):
        raise _bad(path, "manifest.json has no sha256 for the volume")
    sha = volume.get("sha256")
    if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise _bad(path, "manifest.json has no sha256 for the volume")
    if VOLUME_MEMBER not in members:
        raise _bad(path, f"no {VOLUME_MEMBER}")
    if volume.get("size") != members[VOLUME_MEMBER].size:
        raise _bad(path, f"{VOLUME_MEMBER} is not the size the manifest says (truncated?)")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise _bad(path, "manifest.json has no file list")
    for member, digest in files.items():
        if member not in members:
            raise _bad(path, f"{member} is missing")
        if _sha256(_read_member(tar, members[member])) != digest:
            raise _bad(path, f"the sha256 of {member} does not match the manifest")
    unlisted = set(members) - set(files) - {VOLUME_MEMBER, MANIFEST_MEMBER}
    if unlisted:
        raise _bad(path, f"{sorted(unlisted)[0]} is not in the manifest")
    container = QUADLET_PREFIX + names_of(name).container_file
    if container not in members:
        raise _bad(path, f"no {container}")
    try:
        text = _read_member(tar, members[container]).decode("utf-8")
    except UnicodeDecodeError:
        raise _bad(path, f"{container} is not text") from None
    try:
        if not unitfile.is_ours(text) or unitfile.labels(text).get("drone") != name:
            raise _bad(path, f"{container} is not the unit devbox wrote for drone {name}")
        request_from_unit(text, name, {})  # every value it holds, read as Quadlet reads it
    except unitfile.UnitFileError as exc:
        raise _bad(path, f"{container} cannot be read as Quadlet reads it ({exc})") from None
    return Archive(path, tar, manifest, members, text)


def request_from_unit(
    text: str, name: str, config_permissions: dict[str, str]
) -> tuple[lifecycle.CreateRequest, list[str]]:
    """The create options a drone's .container unit declares (labels, Image=, PodmanArgs=, Environment=).

    Returns the request for drone NAME and the labels it does not carry over.
    """
    labels = unitfile.labels(text)
    sections = unitfile.parse_sections(text)
    image = unitfile.image(text)
    if not image:
        raise DevboxError("the archived unit has no Image=", ExitCode.INVALID_INPUT)
    cpus = memory = None
    for value in unitfile.values(sections, "Container", "PodmanArgs"):
        for word in unitfile.split_words(value):
            key, _, arg = word.partition("=")
            if key == "--cpus":
                cpus = arg
            elif key == "--memory":
                memory = arg
    declared = declared_fields(labels)
    env = []
    for value in unitfile.values(sections, "Container", "Environment"):
        for word in unitfile.split_words(value):
            key, sep, _ = word.partition("=")
            if sep and not key.startswith(RESERVED_ENV_PREFIX) and key not in declared["devcontainer_env"]:
                env.append(word)
    permissions: list[str] = []
    if declared["repos"]:  # exactly the archived permissions: the config's others dropped
        archived = dict(declared["permissions"])
        permissions = [f"{k}={v}" for k, v in archived.items()]
        permissions += [f"{k}=none" for k in config_permissions if k not in archived]
    request = lifecycle.CreateRequest(
        name=name,
        repos=list(declared["repos"]),
        image=image,
        cpus=cpus,
        memory=memory,
        env=env,
        permissions=permissions,
        **label_options(labels),
    )
    return request, sorted(set(labels) - LABEL_KEYS)


@dataclass
class RestoreResult:
    name: str
    source: Path
    original_name: str
    create: lifecycle.CreateResult
    volume: str
    volume_size: int
    ignored_labels: list[str] = field(default_factory=list)


def restore(
    ctx: lifecycle.Context,
    path: Path,
    *,
    name: str | None = None,
    start: bool = True,
    progress: Progress = no_progress,
    progress_bytes: ByteProgress = no_progress,
) -> RestoreResult:
    """Recreate a drone from a backup: check it all, import the volume, create the drone through
    lifecycle.create (units rendered anew from the archived labels), start it. On any failure
    after the volume was created, the volume and the drone's units are removed again."""
    archive = open_archive(path)
    lock = contextlib.ExitStack()  # drone TARGET's lock, from the exists check to the end of the rollback
    try:
        target = validate_name(name) if name is not None else archive.name
        lock.enter_context(locks.drone_lock(ctx.paths, target, waiting=progress))
        if target in installed.find_drones(ctx.paths):
            raise DevboxError(f"drone {target} exists already: restore with --name NEW", ExitCode.EXISTS)
        volume = names_of(target).volume
        if ctx.podman.volume_exists(volume):
            raise DevboxError(
                f"volume {volume} exists already: remove it (podman volume rm {volume}) or restore with --name NEW",
                ExitCode.EXISTS,
            )
        request, ignored = request_from_unit(archive.container_text, target, dict(ctx.config.github.permissions))
        claimed = {record.declared.ssh_port for record in installed.find_drones(ctx.paths).values()}
        if request.ssh_port in claimed:  # a copy beside its original: a port of its own
            request = replace(request, ssh_port=None)
        if mosh.claimed_elsewhere(ctx.paths, request.mosh_ports):  # and its own UDP ports
            request = replace(request, mosh_ports=None)
        if isinstance(request.web_ports, tuple) and request.web_ports:  # and its own web ports, where taken
            taken = web.taken_by_others(ctx.paths, request.web_ports, target)
            request = replace(request, web_ports=tuple(p for p in request.web_ports if p[1] not in taken))
        progress(f"checking {VOLUME_MEMBER}")
        archive.verify_volume()
        created = False
        imported = 0

        def prepare(spec: DroneSpec) -> None:
            nonlocal created, imported
            progress(f"creating volume {spec.names.volume}")
            ctx.podman.create_volume(spec.names.volume)
            created = True
            progress(f"importing {spec.names.volume}")
            imported = ctx.podman.import_volume(spec.names.volume, archive.volume_chunks(progress_bytes))
            if spec.name != archive.name:  # a copy gets its own SSH host key, tailnet node and Syncthing device
                why = ctx.probe.forget_identity(spec.names.volume)
                if why:
                    raise DevboxError(f"cannot give the copy {spec.name} its own identity: {why}", ExitCode.PODMAN)

        try:
            result = lifecycle.create(ctx, request, start=start, progress=progress, prepare=prepare)
        except BaseException:
            if created:
                _roll_back(ctx, target, progress)
            raise
        return RestoreResult(target, path, archive.name, result, volume, imported, ignored)
    finally:
        lock.close()
        archive.close()


def _roll_back(ctx: lifecycle.Context, name: str, progress: Progress) -> None:
    """Remove what a failed restore made: the drone's units (through destroy) and its volume."""
    progress(f"rolling back: removing drone {name} and its volume")
    try:
        if name in installed.find_drones(ctx.paths):
            lifecycle.destroy(ctx, name)
        else:
            ctx.podman.remove_volume(names_of(name).volume)
    except DevboxError:
        pass  # the original error is the one to report
