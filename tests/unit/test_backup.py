"""`devbox backup` and `devbox restore` with systemd and Podman faked: the archive, its checks, refusals, rollback."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
from pathlib import Path

import pytest

from devbox.cli import app as cli
from devbox.commands import backup
from devbox.errors import DevboxError, ExitCode
from tests.fakes import World

VOLUME_BYTES = os.urandom(20000) + b"end"  # a tar in real life; bytes are bytes to the archive
OPTIONS = [
    "--repo", "acme/widgets", "--env", "EDITOR=vim", "--env", "ODD=a \"b\" 100% $x", "--cpus", "1.5",
    "--memory", "512m", "--ssh-port", "2201", "--with-syncthing", "--idle-stop", "4h", "--keep",
    "--permission", "pull_requests=none",
]  # fmt: skip


def devbox(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        cli.run(list(args))
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


def make_drone(world: World, capsys, name: str = "demo", *options: str, data: bytes = VOLUME_BYTES) -> None:
    assert devbox(capsys, "create", name, *options)[0] == 0
    world.podman.volumes.add(f"drone-{name}-home")  # the first start made it
    world.podman.volume_data[f"drone-{name}-home"] = data
    world.systemd.calls.clear()
    world.podman.calls.clear()


def unit_text(world: World, name: str) -> str:
    return (world.paths.quadlet_dir / f"drone-{name}.container").read_text()


def without_created(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if "io.devbox.created=" not in line)


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {info.name: tar.extractfile(info).read() for info in tar.getmembers()}  # type: ignore[union-attr]


def rewrite(path: Path, changed: dict[str, bytes | None]) -> None:
    """Write the archive again with members replaced (None: dropped), in the same order."""
    items = members(path)
    items.update({k: v for k, v in changed.items() if v is not None})
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in items.items():
            if name in changed and changed[name] is None:
                continue
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def nothing_created(world: World, name: str) -> None:
    assert not (world.paths.quadlet_dir / f"drone-{name}.container").exists()
    assert not any(c.startswith(("create_volume", "import_volume")) for c in world.podman.calls)
    assert f"drone-{name}-home" not in world.podman.volumes


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.chdir(out)
    return out


# --- backup ---------------------------------------------------------------------------------------


def test_backup_stops_a_running_drone_exports_and_starts_it_again(world: World, capsys, here: Path) -> None:
    make_drone(world, capsys, "demo", *OPTIONS)
    active_during_export: list[bool] = []
    real_export = world.podman.export_volume

    def watching(name, write):
        active_during_export.append("drone-demo.service" in world.systemd.active)
        return real_export(name, write)

    world.podman.export_volume = watching  # type: ignore[method-assign]
    code, out, err = devbox(capsys, "backup", "demo")
    assert code == 0
    assert active_during_export == [False]
    (archive,) = here.iterdir()
    assert archive.name == "demo-20261122-080000.devbox.tar"
    assert out == f"drone demo is saved to {archive} ({archive.stat().st_size / 1048576:.1f} MiB)\n"
    assert err == "drone demo is running: stopping it for a consistent copy, starting it again afterwards\n"
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600  # the home holds keys
    steps = [c for c in world.systemd.calls if c[0] in ("stop", "start")]
    assert steps == [("stop", "drone-demo.service"), ("start", "drone-demo.service")]
    assert "drone-demo.service" in world.systemd.active

    items = members(archive)
    assert list(items) == [
        "units/quadlet/drone-demo.container",
        "units/quadlet/drone-demo.container.d/autostart.conf",
        "units/systemd/drone-demo-creds.socket",
        "units/systemd/drone-demo-creds.service",
        "volume.tar",
        "manifest.json",
    ]
    assert items["volume.tar"] == VOLUME_BYTES
    assert items["units/quadlet/drone-demo.container"] == unit_text(world, "demo").encode()
    manifest = json.loads(items["manifest.json"])
    assert manifest["format"] == "devbox-backup" and manifest["format_version"] == 1
    assert manifest["name"] == "demo" and manifest["running"] is True and manifest["live"] is False
    assert manifest["created"] == "2026-11-22T08:00:00Z" and manifest["devbox_version"]
    assert manifest["labels"]["repos"] == "acme/widgets" and manifest["labels"]["keep"] == "true"
    assert manifest["volume"] == {
        "name": "drone-demo-home",
        "member": "volume.tar",
        "size": len(VOLUME_BYTES),
        "sha256": hashlib.sha256(VOLUME_BYTES).hexdigest(),
    }
    assert (
        manifest["files"]["units/systemd/drone-demo-creds.socket"]
        == hashlib.sha256(items["units/systemd/drone-demo-creds.socket"]).hexdigest()
    )


def test_backup_of_a_stopped_drone_leaves_it_stopped(world: World, capsys, here: Path) -> None:
    make_drone(world, capsys, "demo", "--no-start")
    code, _, err = devbox(capsys, "backup", "demo", "-o", "x.tar")
    assert (code, err) == (0, "")
    assert not [c for c in world.systemd.calls if c[0] in ("stop", "start")]
    assert json.loads(members(here / "x.tar")["manifest.json"])["running"] is False


def test_backup_live_copies_a_running_drone_without_stopping_it(world: World, capsys, here: Path) -> None:
    make_drone(world, capsys)
    code, out, err = devbox(capsys, "backup", "demo", "-o", "live.tar", "--live", "--json")
    assert code == 0
    assert err == "drone demo is running and --live copies it as it is: the copy may be inconsistent\n"
    assert not [c for c in world.systemd.calls if c[0] in ("stop", "start")]
    result = json.loads(out)
    assert result == {
        "name": "demo",
        "file": str(here / "live.tar"),
        "size": (here / "live.tar").stat().st_size,
        "volume": {
            "name": "drone-demo-home",
            "size": len(VOLUME_BYTES),
            "sha256": hashlib.sha256(VOLUME_BYTES).hexdigest(),
        },
        "running": True,
        "stopped": False,
        "live": True,
    }
    assert json.loads(members(here / "live.tar")["manifest.json"])["live"] is True


def test_a_failed_export_leaves_no_file_and_starts_the_drone_again(world: World, capsys, here: Path) -> None:
    make_drone(world, capsys)
    world.podman.export_fails_after = 5000
    code, out, err = devbox(capsys, "backup", "demo")
    assert (code, out) == (ExitCode.PODMAN, "")
    assert err.splitlines()[-1] == "devbox: podman could not export volume drone-demo-home: disk on fire"
    assert list(here.iterdir()) == []  # not even the .partial
    assert world.systemd.calls[-1] == ("start", "drone-demo.service")
    assert "drone-demo.service" in world.systemd.active


def test_a_drone_that_does_not_start_again_keeps_its_complete_backup(world: World, capsys, here: Path) -> None:
    make_drone(world, capsys)
    world.systemd.fail_start.add("drone-demo.service")
    code, _, err = devbox(capsys, "backup", "demo", "-o", "b.tar")
    assert code == ExitCode.SYSTEMD
    assert f"devbox: the backup is written to {here / 'b.tar'}, but drone-demo.service did not start again" in err
    backup.open_archive(here / "b.tar").verify_volume()


def test_backup_refusals(world: World, capsys, here: Path) -> None:
    assert devbox(capsys, "backup", "ghost")[:2] == (ExitCode.NOT_FOUND, "")
    make_drone(world, capsys)
    (here / "taken.tar").write_text("mine")
    code, _, err = devbox(capsys, "backup", "demo", "-o", "taken.tar")
    assert (code, err) == (
        ExitCode.EXISTS,
        f"devbox: {here / 'taken.tar'} exists already: choose another name with -o\n",
    )
    assert (here / "taken.tar").read_text() == "mine"
    code, _, err = devbox(capsys, "backup", "demo", "-o", "-", "--json")
    assert (code, err) == (ExitCode.USAGE, "devbox: --json and -o - both write to stdout: choose one\n")
    code, _, err = devbox(capsys, "backup", "demo", "-o", str(here / "no" / "dir.tar"))
    assert code == ExitCode.INVALID_INPUT
    world.podman.volumes.discard("drone-demo-home")
    code, _, err = devbox(capsys, "backup", "demo")
    assert code == ExitCode.NOT_FOUND and "has no home volume yet" in err
    assert [p.name for p in here.iterdir()] == ["taken.tar"]
    assert not [c for c in world.systemd.calls if c[0] == "stop"]


def test_backup_to_a_stream_spools_then_leaves_nothing(world: World, capsys) -> None:
    make_drone(world, capsys)
    sink = io.BytesIO()
    result = backup.backup(world.context(), "demo", output="-", stream=sink)
    assert result.path is None and result.size == len(sink.getvalue())
    with tarfile.open(fileobj=io.BytesIO(sink.getvalue())) as tar:
        assert tar.extractfile("volume.tar").read() == VOLUME_BYTES  # type: ignore[union-attr]
    assert list((world.paths.state_dir / "tmp").iterdir()) == []


def test_the_volume_member_is_streamed_not_held(world: World, capsys, here: Path) -> None:
    """The export writes into the archive file as it comes: the file grows while export runs."""
    make_drone(world, capsys)
    sizes: list[int] = []
    real_export = world.podman.export_volume

    def watching(name, write):
        def spy(chunk):
            write(chunk)
            partial = [p for p in here.iterdir() if p.name.endswith(".partial")]
            sizes.append(partial[0].stat().st_size)  # written through, not buffered in a list

        return real_export(name, spy)

    world.podman.export_volume = watching  # type: ignore[method-assign]
    backup.backup(world.context(), "demo", output="s.tar")
    assert len(sizes) > 2 and sizes == sorted(sizes) and sizes[0] < sizes[-1]


# --- restore --------------------------------------------------------------------------------------


@pytest.fixture
def saved(world: World, capsys, here: Path) -> Path:
    make_drone(world, capsys, "demo", *OPTIONS)
    assert devbox(capsys, "backup", "demo", "-o", "demo.tar")[0] == 0
    world.original = unit_text(world, "demo")  # type: ignore[attr-defined]
    assert devbox(capsys, "destroy", "demo", "--yes")[0] == 0
    world.systemd.calls.clear()
    world.podman.calls.clear()
    return here / "demo.tar"


def test_restore_recreates_the_drone_with_its_options_and_volume(world: World, capsys, saved: Path) -> None:
    unit_during_import: list[bool] = []
    real_import = world.podman.import_volume

    def watching(name, chunks):
        unit_during_import.append((world.paths.quadlet_dir / "drone-demo.container").exists())
        return real_import(name, chunks)

    world.podman.import_volume = watching  # type: ignore[method-assign]
    code, out, err = devbox(capsys, "restore", str(saved))
    assert (code, err) == (0, "")
    assert out == f"drone demo is restored from {saved} and running\n"
    assert unit_during_import == [False]  # the volume is full before any unit exists
    assert without_created(unit_text(world, "demo")) == without_created(world.original)  # type: ignore[attr-defined]
    assert "Label=io.devbox.created=2026-11-22T08:00:00Z" in unit_text(world, "demo")
    assert world.podman.volume_data["drone-demo-home"] == VOLUME_BYTES
    order = [c.split()[0] for c in world.podman.calls if c.split()[0] in ("create_volume", "import_volume")]
    assert order == ["create_volume", "import_volume"]
    assert "drone-demo.service" in world.systemd.active


def test_restore_under_another_name(world: World, capsys, saved: Path) -> None:
    code, out, _ = devbox(capsys, "restore", str(saved), "--name", "other", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["name"] == "other" and result["original_name"] == "demo" and result["started"] is True
    assert result["volume"] == {"name": "drone-other-home", "size": len(VOLUME_BYTES)}
    assert result["unit"] == "drone-other.service" and result["ignored_labels"] == []
    assert {f["change"] for f in result["files"]} == {"new"}
    text = unit_text(world, "other")
    assert "Label=io.devbox.drone=other" in text and "Volume=drone-other-home:%h" in text
    assert "Label=io.devbox.repos=acme/widgets" in text
    assert world.podman.volume_data["drone-other-home"] == VOLUME_BYTES
    assert not (world.paths.quadlet_dir / "drone-demo.container").exists()


def test_restore_no_start(world: World, capsys, saved: Path) -> None:
    code, out, _ = devbox(capsys, "restore", str(saved), "--no-start")
    assert code == 0 and out.endswith("and created, not started: devbox start demo\n")
    assert "drone-demo.service" not in world.systemd.active
    assert world.podman.volume_data["drone-demo-home"] == VOLUME_BYTES


def test_restore_refuses_an_existing_drone_or_volume(world: World, capsys, saved: Path) -> None:
    make_drone(world, capsys, "demo")
    code, out, err = devbox(capsys, "restore", str(saved))
    assert (code, out, err) == (ExitCode.EXISTS, "", "devbox: drone demo exists already: restore with --name NEW\n")
    world.podman.volumes.add("drone-other-home")
    code, _, err = devbox(capsys, "restore", str(saved), "--name", "other")
    assert code == ExitCode.EXISTS
    assert err == (
        "devbox: volume drone-other-home exists already: remove it (podman volume rm drone-other-home)"
        " or restore with --name NEW\n"
    )
    assert not any(c.startswith(("create_volume", "import_volume", "remove_volume")) for c in world.podman.calls)
    assert not (world.paths.quadlet_dir / "drone-other.container").exists()


def test_restore_refuses_a_bad_name(world: World, capsys, saved: Path) -> None:
    code, _, err = devbox(capsys, "restore", str(saved), "--name", "Bad_Name")
    assert code == ExitCode.INVALID_INPUT and err.startswith("devbox: invalid drone name 'Bad_Name'")
    nothing_created(world, "demo")


def _manifest(path: Path) -> dict:
    return json.loads(members(path)["manifest.json"])


def _with_manifest(path: Path, **changes: object) -> None:
    manifest = _manifest(path)
    manifest.update(changes)
    rewrite(path, {"manifest.json": json.dumps(manifest).encode()})


TAMPERING = {
    "not a tar": lambda p: p.write_bytes(b"hello, not a tar at all" * 100),
    "compressed": lambda p: p.write_bytes(__import__("gzip").compress(p.read_bytes())),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[:15000]),
    "no manifest": lambda p: rewrite(p, {"manifest.json": None}),
    "manifest not json": lambda p: rewrite(p, {"manifest.json": b"{nope"}),
    "wrong format": lambda p: _with_manifest(p, format="something-else"),
    "newer format": lambda p: _with_manifest(p, format_version=2),
    "bad name": lambda p: _with_manifest(p, name="../../etc"),
    "volume changed": lambda p: rewrite(p, {"volume.tar": VOLUME_BYTES[:-3] + b"END"}),
    "volume sha missing": lambda p: _with_manifest(p, volume={"size": len(VOLUME_BYTES)}),
    "unit changed": lambda p: rewrite(p, {"units/systemd/drone-demo-creds.socket": b"# Managed by devbox.\n"}),
    "extra member": lambda p: rewrite(p, {"units/quadlet/evil.container": b"x"}),
    "unit of another drone": lambda p: _with_manifest(p, name="someone"),
}
WHY = {
    "not a tar": "not an uncompressed tar file",
    "compressed": "not an uncompressed tar file",
    "truncated": "the tar file is damaged (unexpected end of data)",
    "no manifest": "no manifest.json",
    "manifest not json": "manifest.json is not JSON",
    "wrong format": 'manifest.json has no "format": "devbox-backup"',
    "newer format": "format version 2 is newer than this devbox reads (1): upgrade devbox",
    "bad name": "invalid drone name '../../etc'",
    "volume changed": "the sha256 of volume.tar does not match the manifest",
    "volume sha missing": "manifest.json has no sha256 for the volume",
    "unit changed": "the sha256 of units/systemd/drone-demo-creds.socket does not match the manifest",
    "extra member": "units/quadlet/evil.container is not in the manifest",
    "unit of another drone": "no units/quadlet/drone-someone.container",
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_a_bad_archive_is_one_clear_line_and_creates_nothing(world: World, capsys, saved: Path, case: str) -> None:
    TAMPERING[case](saved)
    code, out, err = devbox(capsys, "restore", str(saved))
    assert (code, out) == (ExitCode.INVALID_INPUT, "")
    assert err.count("\n") == 1 and err.startswith(f"devbox: {saved} is not a usable devbox backup: ")
    assert WHY[case] in err
    nothing_created(world, "demo")
    assert world.files() == []


def test_restore_of_a_missing_file(world: World, capsys, here: Path) -> None:
    code, _, err = devbox(capsys, "restore", "nope.tar")
    assert (code, err) == (ExitCode.INVALID_INPUT, "devbox: no such file: nope.tar\n")


def test_a_failed_import_rolls_back_the_volume(world: World, capsys, saved: Path) -> None:
    world.podman.import_fails = True
    code, _, err = devbox(capsys, "restore", str(saved))
    assert code == ExitCode.PODMAN and "no space left on device" in err
    assert "remove_volume drone-demo-home" in world.podman.calls
    assert "drone-demo-home" not in world.podman.volumes
    assert world.files() == []


def test_a_failed_start_rolls_back_units_and_volume(world: World, capsys, saved: Path) -> None:
    world.systemd.fail_start.add("drone-demo.service")
    code, _, err = devbox(capsys, "restore", str(saved))
    assert code == ExitCode.SYSTEMD
    assert err.startswith("devbox: systemd could not start drone-demo.service")
    assert "drone-demo-home" not in world.podman.volumes
    assert world.files() == []
    assert world.systemd.calls[-1] == ("daemon-reload", "")


def test_a_failure_after_create_still_rolls_back(world: World, capsys, saved: Path, monkeypatch) -> None:
    """Anything that fails once the units are written (here the clean-up timer) removes the drone again."""
    from devbox.cleanup import timer

    def broken(ctx, changed):
        raise DevboxError("timer trouble", ExitCode.SYSTEMD)

    monkeypatch.setattr(timer, "enable_timer", broken)
    code, _, err = devbox(capsys, "restore", str(saved))
    assert (code, err) == (ExitCode.SYSTEMD, "devbox: timer trouble\n")
    assert "drone-demo-home" not in world.podman.volumes
    assert not (world.paths.quadlet_dir / "drone-demo.container").exists()


def test_a_missing_image_fails_before_the_volume_is_made(world: World, capsys, saved: Path) -> None:
    world.podman.images.clear()
    code, _, err = devbox(capsys, "restore", str(saved))
    assert code == ExitCode.IMAGE
    nothing_created(world, "demo")


def test_unknown_labels_are_reported_not_silently_dropped(world: World, capsys, saved: Path) -> None:
    text = members(saved)["units/quadlet/drone-demo.container"].decode()
    text = text.replace(
        "Label=io.devbox.drone=demo\n", "Label=io.devbox.drone=demo\nLabel=io.devbox.future-option=on\n"
    )
    manifest = _manifest(saved)
    manifest["files"]["units/quadlet/drone-demo.container"] = hashlib.sha256(text.encode()).hexdigest()
    rewrite(
        saved, {"units/quadlet/drone-demo.container": text.encode(), "manifest.json": json.dumps(manifest).encode()}
    )
    code, _, err = devbox(capsys, "restore", str(saved))
    assert code == 0
    assert err == "devbox: warning: label io.devbox.future-option is not known to this devbox and was not restored\n"


def test_request_from_unit_drops_config_permissions_the_drone_did_not_have(world: World, capsys) -> None:
    make_drone(world, capsys, "demo", *OPTIONS)
    request, ignored = backup.request_from_unit(
        unit_text(world, "demo"), "demo", {"contents": "write", "pull_requests": "write", "issues": "read"}
    )
    assert ignored == []
    assert sorted(request.permissions) == ["contents=write", "issues=none", "pull_requests=none"]
    assert (request.cpus, request.memory, request.ssh_port) == ("1.5", "512m", 2201)
    assert request.env == ["EDITOR=vim", 'ODD=a "b" 100% $x'] and request.keep and request.syncthing
    assert (request.idle_stop, request.idle_destroy) == ("4h", None)


# --- the podman command behind export and import --------------------------------------------------

FAKE_PODMAN = """#!/bin/sh
case "$1 $2 $3" in
  "volume export bad") echo "Error: no such volume bad" >&2; exit 125 ;;
  "volume export "*) head -c 3000000 /dev/zero ;;
  "volume import early") echo "Error: volume early is in use" >&2; exit 125 ;;
  "volume import "*) cat > "$FAKE_PODMAN_OUT" ;;
esac
"""


@pytest.fixture
def podman_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from devbox.host.podman import PodmanPy

    script = tmp_path / "podman"
    script.write_text(FAKE_PODMAN)
    script.chmod(0o755)
    monkeypatch.setenv("FAKE_PODMAN_OUT", str(tmp_path / "imported"))
    return PodmanPy("unix:///nonexistent.sock", podman_command=str(script)), tmp_path / "imported"


def test_podman_export_streams_in_chunks_and_reports_failure(podman_cli) -> None:
    podman, _ = podman_cli
    chunks: list[int] = []
    assert podman.export_volume("v", lambda c: chunks.append(len(c))) == 3000000
    assert sum(chunks) == 3000000 and len(chunks) >= 3 and max(chunks) <= 1024 * 1024
    with pytest.raises(DevboxError) as failed:
        podman.export_volume("bad", lambda c: None)
    assert (failed.value.code, failed.value.message) == (
        ExitCode.PODMAN,
        "podman could not export volume bad: Error: no such volume bad",
    )


def test_podman_import_feeds_stdin_and_survives_a_podman_that_stops_reading(podman_cli) -> None:
    podman, imported = podman_cli
    data = [os.urandom(100000) for _ in range(5)]
    assert podman.import_volume("v", iter(data)) == 500000
    assert imported.read_bytes() == b"".join(data)
    with pytest.raises(DevboxError) as failed:
        podman.import_volume("early", (b"x" * 1024 * 1024 for _ in range(50)))
    assert failed.value.message == "podman could not import volume early: Error: volume early is in use"


def test_an_interrupted_backup_leaves_no_file_and_starts_the_drone_again(world: World, capsys, here: Path) -> None:
    make_drone(world, capsys)
    real_export = world.podman.export_volume

    def interrupted(name, write):
        def then_stop(chunk):
            write(chunk)
            raise SystemExit(143)  # what the CLI's SIGTERM handler raises

        return real_export(name, then_stop)

    world.podman.export_volume = interrupted  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        backup.backup(world.context(), "demo")
    assert list(here.iterdir()) == []
    assert world.systemd.calls[-1] == ("start", "drone-demo.service")


def test_a_copy_beside_its_original_gets_its_own_port_and_keeps_workspace_and_dotfiles(
    world: World, capsys, here: Path
) -> None:
    project = world.paths.home / "code" / "app"
    project.mkdir(parents=True)
    dots = "https://git.example.com/me/dotfiles.git"
    make_drone(world, capsys, "app", "--path", str(project), "--dotfiles", dots, "--ssh-port", "2250")
    assert devbox(capsys, "backup", "app", "-o", "app.tar")[0] == 0
    code, _, err = devbox(capsys, "restore", str(here / "app.tar"), "--name", "copy")
    assert code == 0, err
    copy = unit_text(world, "copy")
    assert f"Label=io.devbox.path={project}\n" in copy and f"Label=io.devbox.dotfiles={dots}\n" in copy
    assert "PublishPort=127.0.0.1:2250:2222" in unit_text(world, "app")
    assert "PublishPort=127.0.0.1:2250:" not in copy and "PublishPort=127.0.0.1:" in copy


def test_a_copy_under_another_name_gets_its_own_identity_and_the_original_keeps_it(
    world: World, capsys, saved: Path
) -> None:
    assert devbox(capsys, "restore", str(saved))[0] == 0
    assert "forget_identity drone-demo-home" not in world.probe.calls
    assert devbox(capsys, "restore", str(saved), "--name", "copy")[0] == 0
    assert "forget_identity drone-copy-home" in world.probe.calls
