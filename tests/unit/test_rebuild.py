"""devbox rebuild: the drone's current devcontainer.json built again, its units rendered anew with the
same options, the drone restarted on the new image; on failure the old units stay.

A fake builder at the ImageBuilder seam whose tag follows the configuration's bytes, as the real one's does.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from devbox.commands import lifecycle, rebuild
from devbox.devcontainer.model import BuiltImage, DevcontainerSource
from devbox.errors import DevboxError, ExitCode
from tests.fakes import World
from tests.unit.test_cli import devbox
from tests.unit.test_devcontainer_create import CONFIG, workspace

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBmz0b1mF0R1e8ZzFjJKmJrPq0C2bXKz7m7cQy8u6l2J me@laptop"


@dataclass
class HashingBuilder:
    world: World
    fresh: list[bool] = field(default_factory=list)
    fail: str = ""

    def build(
        self, source: DevcontainerSource, progress: object, *, fresh: bool = False, build_args: tuple[str, ...] = ()
    ) -> BuiltImage:
        self.fresh.append(fresh)
        if self.fail:
            raise DevboxError(self.fail, ExitCode.IMAGE)
        digest = hashlib.sha256(source.config_file.read_bytes()).hexdigest()
        tag = f"localhost/devbox-dc-app:{digest[:12]}"
        self.world.podman.images.add(tag)
        return BuiltImage(tag, (), digest, 1000, 1000, "vscode", "/home/vscode")


@pytest.fixture
def builder(world: World) -> HashingBuilder:
    world.builder = HashingBuilder(world)
    return world.builder  # type: ignore[return-value]


def unit(world: World) -> str:
    return (world.paths.quadlet_dir / "drone-app.container").read_text()


def created(world: World, tmp_path: Path, capsys) -> Path:
    root = workspace(world)
    key = tmp_path / "laptop.pub"
    key.write_text(KEY + "\n")
    code, _, err = devbox(capsys, "create", "app", "--path", str(root), "--env", "MINE=1", "--ssh-key", str(key))
    assert code == 0, err
    return root


def test_rebuild_takes_the_new_configuration_and_keeps_the_drones_own_options(
    world: World, builder: HashingBuilder, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = created(world, tmp_path, capsys)
    before = unit(world)
    (world.paths.home / ".ssh").mkdir(exist_ok=True)
    (world.paths.home / ".ssh" / "other.pub").write_text(KEY.replace("me@laptop", "other") + "\n")
    config = root / ".devcontainer/devcontainer.json"
    config.write_text(CONFIG.replace('"APP_ENV": "dev", "FROM_FILE": "file"', '"APP_ENV": "prod"'))
    # the drone's own published port is in use by the drone itself: it keeps it
    monkeypatch.setattr(lifecycle, "port_free", lambda port: port != 3000)
    code, out, err = devbox(capsys, "rebuild", "app", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["image_changed"] is True and result["restarted"] is True
    after = unit(world)
    assert "Environment=APP_ENV=prod\n" in after and "FROM_FILE" not in after  # the configuration's, anew
    assert "Environment=MINE=1\n" in after  # the user's own --env stays
    assert f"Image={result['image']}\n" in after and result["image"] != result["previous_image"]
    assert "PublishPort=127.0.0.1:3000:3000\n" in after
    for label in ("created", "ssh-port"):
        [line] = [x for x in before.splitlines() if x.startswith(f"Label=io.devbox.{label}=")]
        assert line in after.splitlines()
    keys = (world.paths.drones_dir / "app/authorized_keys").read_text()
    assert KEY in keys and "other" not in keys  # no key is added by a rebuild
    hooks = json.loads((world.paths.drones_dir / "app/devcontainer.json").read_text())
    assert hooks["configHash"] == hashlib.sha256(config.read_bytes()).hexdigest()
    assert ("restart", "drone-app.service") in world.systemd.calls
    assert builder.fresh == [False, False]


def test_no_cache_builds_fresh(world: World, builder: HashingBuilder, tmp_path: Path, capsys) -> None:
    created(world, tmp_path, capsys)
    code, out, err = devbox(capsys, "rebuild", "app", "--no-cache")
    assert code == 0, err
    assert builder.fresh == [False, True]
    assert "on the same image" in out


def test_a_stopped_drone_stays_stopped_and_off_at_boot(world: World, builder: HashingBuilder, tmp_path, capsys) -> None:
    created(world, tmp_path, capsys)
    assert devbox(capsys, "stop", "app")[0] == 0
    world.systemd.calls.clear()
    code, out, err = devbox(capsys, "rebuild", "app")
    assert code == 0, err
    assert "stopped: it runs the new image at its next start" in out
    assert not any(call[0] in ("start", "restart") for call in world.systemd.calls)
    assert not (world.paths.quadlet_dir / "drone-app.container.d" / "autostart.conf").exists()


def test_a_failed_build_changes_nothing(world: World, builder: HashingBuilder, tmp_path: Path, capsys) -> None:
    root = created(world, tmp_path, capsys)
    before = world.files()
    texts = {path: Path(path).read_text() for path in before if Path(path).is_file()}
    (root / ".devcontainer/devcontainer.json").write_text(CONFIG.replace("dev", "prod"))
    builder.fail = "devcontainer build failed (exit 1): boom"
    world.systemd.calls.clear()
    code, _, err = devbox(capsys, "rebuild", "app")
    assert code == ExitCode.IMAGE and "boom" in err
    assert world.files() == before
    assert all(Path(path).read_text() == text for path, text in texts.items())
    assert not any(call[0] in ("stop", "restart", "daemon-reload") for call in world.systemd.calls)


def test_a_failed_restart_puts_the_old_units_back(
    world: World, builder: HashingBuilder, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = created(world, tmp_path, capsys)
    before = unit(world)
    (root / ".devcontainer/devcontainer.json").write_text(CONFIG.replace("dev", "prod"))
    restarts: list[str] = []

    def restart(service: str) -> None:
        restarts.append(service)
        if len(restarts) == 1:
            raise DevboxError(f"systemd could not restart {service}", ExitCode.SYSTEMD)

    monkeypatch.setattr(world.systemd, "restart", restart)
    code, _, err = devbox(capsys, "rebuild", "app")
    assert code == ExitCode.SYSTEMD and "could not restart" in err
    assert unit(world) == before
    assert restarts == ["drone-app.service", "drone-app.service"]  # the new image, then the old one again


def test_a_drone_not_made_from_a_devcontainer_has_nothing_to_rebuild(world: World, capsys) -> None:
    assert devbox(capsys, "create", "plain")[0] == 0
    code, _, err = devbox(capsys, "rebuild", "plain")
    assert code == ExitCode.INVALID_INPUT
    assert err.strip() == "devbox: drone plain was not made from a devcontainer.json: there is nothing to rebuild"


def test_a_missing_drone(world: World, capsys) -> None:
    assert devbox(capsys, "rebuild", "nope")[0] == ExitCode.NOT_FOUND


def test_a_port_another_drone_claimed_meanwhile_is_refused_and_nothing_changes(
    world: World, builder: HashingBuilder, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = created(world, tmp_path, capsys)
    before = unit(world)
    other = world.paths.home / "code" / "other"
    (other / ".devcontainer").mkdir(parents=True)
    (other / ".devcontainer/devcontainer.json").write_text(CONFIG.replace('"forwardPorts": [3000]', '"forwardPorts": [4000]'))
    (root / ".devcontainer/devcontainer.json").write_text(CONFIG.replace('"forwardPorts": [3000]', '"forwardPorts": [4000]'))
    chosen = rebuild.new_spec

    def create_meanwhile(*args, **kwargs):  # another create claims 4000 after this rebuild chose it
        spec = chosen(*args, **kwargs)
        assert devbox(capsys, "create", "other", "--path", str(other))[0] == 0
        return spec

    monkeypatch.setattr(rebuild, "new_spec", create_meanwhile)
    code, _, err = devbox(capsys, "rebuild", "app")
    assert code == ExitCode.LIMIT
    assert err.strip().splitlines()[-1] == "devbox: port 4000 was just claimed by drone other: rebuild again"
    assert unit(world) == before
