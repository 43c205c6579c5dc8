"""Model API keys: [keys.NAME] in the config, --key at create, and where the key goes (only the proxy's credential)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devbox.config import load_config
from devbox.errors import DevboxError, ExitCode
from tests.fakes import World
from tests.unit.test_cli import devbox

KEY = "sk-ant-api03-unit-test-secret"


def config(tmp_path: Path, text: str):
    path = tmp_path / "config.toml"
    path.write_text(text)
    return load_config(path)


def test_builtin_defaults_fill_what_the_user_leaves_out(tmp_path: Path) -> None:
    keys = config(
        tmp_path,
        '[keys.anthropic]\nsecret = "op://DevBox/anthropic/credential"\n'
        '[keys.openai]\nsecret = "env:OPENAI_KEY"\n'
        '[keys.mistral]\nsecret = "file:/home/me/mistral.key"\nupstream = "https://api.mistral.ai/v1"\n'
        'prefix = "Bearer "\nbase_url_env = "MISTRAL_BASE_URL"\nca_file = "/etc/ssl/extra.pem"\n',
    ).keys
    anthropic, openai, mistral = keys["anthropic"], keys["openai"], keys["mistral"]
    assert (anthropic.upstream, anthropic.header, anthropic.prefix) == ("https://api.anthropic.com", "x-api-key", "")
    assert (anthropic.base_url_env, anthropic.key_env) == ("ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY")
    assert (openai.upstream, openai.header, openai.prefix, openai.base_path) == (
        "https://api.openai.com",
        "authorization",
        "Bearer ",
        "/v1",
    )
    assert (mistral.header, mistral.prefix, mistral.key_env, mistral.ca_file) == (
        "authorization",
        "Bearer ",
        None,
        "/etc/ssl/extra.pem",
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[keys.anthropic]\n", "keys.anthropic: secret is required"),
        ('[keys.custom]\nsecret = "env:K"\n', "keys.custom: upstream is required"),
        ('[keys.anthropic]\nsecret = "sk-ant-literal"\n', "keys.anthropic.secret: invalid secret reference"),
        (
            '[keys.x]\nsecret = "env:K"\nupstream = "http://plain.example.com"\n',
            "keys.x.upstream: expected an https URL",
        ),
        ('[keys.anthropic]\nsecret = "env:K"\nheader = "Host"\n', "keys.anthropic.header: expected an HTTP header"),
        (
            '[keys.anthropic]\nsecret = "env:K"\nheader = "x-api-key\\r\\nX-Evil: 1"\n',
            "keys.anthropic.header: expected an HTTP header",
        ),
        ('[keys.anthropic]\nsecret = "env:K"\nprefix = "Bearer\\n"\n', "keys.anthropic.prefix: expected up to 64"),
        ('[keys.anthropic]\nsecret = "env:K"\nbase_path = "v1"\n', "keys.anthropic.base_path: expected a URL path"),
        ('[keys.anthropic]\nsecret = "env:K"\nca_file = "rel.pem"\n', "keys.anthropic.ca_file: expected an absolute"),
        ('[keys.anthropic]\nsecret = "env:K"\nkey_env = "DEVBOX_X"\n', "keys.anthropic.key_env: invalid environment"),
        ('[keys.anthropic]\nsecret = "env:K"\ncolour = 1\n', "unknown key keys.anthropic.colour"),
        ('[keys.Bad_Name]\nsecret = "env:K"\n', "keys.Bad_Name: invalid key name"),
        ("keys = 1\n", "keys: expected tables [keys.NAME]"),
        ('[drone]\nkeys = ["anthropic"]\n', "drone.keys: anthropic has no [keys.anthropic] table"),
    ],
)
def test_bad_key_config_is_one_line_with_the_config_exit_code(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(DevboxError) as caught:
        config(tmp_path, text)
    assert caught.value.code == ExitCode.CONFIG
    assert message in caught.value.message and "\n" not in caught.value.message
    assert "sk-ant-literal" not in caught.value.message  # a literal key given by mistake is never echoed


def write_config(world: World, text: str) -> None:
    world.paths.config_file.parent.mkdir(parents=True, exist_ok=True)
    world.paths.config_file.write_text(text)


def everything_written(world: World) -> str:
    root = world.paths.quadlet_dir.parent.parent
    written = [root / name for name in world.files()]
    drone_files = [p for p in world.paths.data_dir.rglob("*") if p.is_file()]  # tools and per-drone files
    return "".join(p.read_text(errors="replace") for p in written + drone_files)


def test_create_with_keys_loads_each_from_a_private_copy(world: World, capsys, monkeypatch) -> None:
    monkeypatch.setenv("ANTHROPIC_KEY", KEY)
    write_config(world, '[keys.anthropic]\nsecret = "env:ANTHROPIC_KEY"\n[keys.openai]\nsecret = "env:OPENAI_KEY"\n')
    code, _, err = devbox(capsys, "create", "demo", "--key", "anthropic", "--no-devcontainer")
    assert code == 0, err
    copy = world.paths.key_copy("anthropic")
    assert copy.read_text() == KEY + "\n" and copy.stat().st_mode & 0o777 == 0o600
    assert copy.parent.stat().st_mode & 0o777 == 0o700
    service = (world.paths.unit_dir / "drone-demo-keys.service").read_text()
    assert f"LoadCredential=key-anthropic:{copy}\n" in service and "key-openai" not in service
    container = (world.paths.quadlet_dir / "drone-demo.container").read_text()
    assert "Label=io.devbox.keys=anthropic\n" in container
    assert "Environment=ANTHROPIC_BASE_URL=http://127.0.0.3:9119/anthropic\n" in container
    assert "Environment=ANTHROPIC_API_KEY=devbox-proxy\n" in container and "OPENAI" not in container
    assert KEY not in everything_written(world)  # the key is in its copy, outside every unit and drone file
    assert not world.paths.key_copy("openai").exists()  # only the drone's own keys are resolved


def test_a_file_key_is_loaded_where_it_is(world: World, capsys) -> None:
    key = world.paths.home / "keys" / "anthropic.key"
    key.parent.mkdir(parents=True)
    key.write_text(KEY)
    key.chmod(0o600)
    write_config(world, f'[drone]\nkeys = ["anthropic"]\n[keys.anthropic]\nsecret = "file:{key}"\n')
    assert devbox(capsys, "create", "demo", "--no-devcontainer")[0] == 0  # [drone] keys: every new drone
    service = (world.paths.unit_dir / "drone-demo-keys.service").read_text()
    assert f"LoadCredential=key-anthropic:{key}\n" in service
    assert not world.paths.key_copy("anthropic").exists()


def test_a_readable_key_file_aborts_create(world: World, capsys) -> None:
    key = world.paths.home / "anthropic.key"
    key.parent.mkdir(parents=True, exist_ok=True)
    key.write_text(KEY)
    key.chmod(0o644)
    write_config(world, f'[keys.anthropic]\nsecret = "file:{key}"\n')
    code, out, err = devbox(capsys, "create", "demo", "--key", "anthropic", "--no-devcontainer")
    assert code == ExitCode.SECRET and "can be read by others" in err and KEY not in err
    assert not (world.paths.quadlet_dir / "drone-demo.container").exists()


def test_an_unconfigured_key_is_refused_before_anything_is_written(world: World, capsys) -> None:
    write_config(world, '[keys.openai]\nsecret = "env:OPENAI_KEY"\n')
    code, out, err = devbox(capsys, "create", "demo", "--key", "anthropic")
    assert code == ExitCode.INVALID_INPUT
    assert err.startswith("devbox: no model API key 'anthropic' in ") and "configured: openai" in err
    assert world.files() == []
    assert devbox(capsys, "create", "demo", "--key", "Not/A/Name")[0] == ExitCode.INVALID_INPUT


def test_an_unresolvable_key_writes_nothing(world: World, capsys) -> None:
    write_config(world, '[keys.anthropic]\nsecret = "env:NO_SUCH_KEY"\n')
    code, _, err = devbox(capsys, "create", "demo", "--key", "anthropic", "--no-devcontainer")
    assert code == ExitCode.SECRET and "NO_SUCH_KEY is not set" in err
    assert not (world.paths.quadlet_dir / "drone-demo.container").exists()


def test_render_and_status_show_the_keys(world: World, capsys, monkeypatch) -> None:
    monkeypatch.setenv("ANTHROPIC_KEY", KEY)
    write_config(world, '[keys.anthropic]\nsecret = "env:ANTHROPIC_KEY"\n')
    code, out, _ = devbox(capsys, "render", "demo", "--key", "anthropic", "--no-devcontainer")
    assert code == 0 and "drone-demo-keys.service" in out and KEY not in out
    assert devbox(capsys, "create", "demo", "--key", "anthropic", "--no-devcontainer")[0] == 0
    code, out, _ = devbox(capsys, "status", "demo", "--json")
    assert json.loads(out)["keys"] == ["anthropic"]
    assert json.loads(devbox(capsys, "list", "--json")[1])[0]["keys"] == ["anthropic"]
    assert "api keys   anthropic" in devbox(capsys, "status", "demo")[1]


def test_destroy_and_stop_take_the_proxy_units_down(world: World, capsys, monkeypatch) -> None:
    monkeypatch.setenv("ANTHROPIC_KEY", KEY)
    write_config(world, '[keys.anthropic]\nsecret = "env:ANTHROPIC_KEY"\n')
    devbox(capsys, "create", "demo", "--key", "anthropic", "--no-devcontainer")
    world.systemd.calls.clear()
    assert devbox(capsys, "stop", "demo")[0] == 0
    assert ("stop", "drone-demo-keys.socket") in world.systemd.calls
    assert ("stop", "drone-demo-keys.service") in world.systemd.calls
    assert devbox(capsys, "destroy", "demo", "--yes")[0] == 0
    assert not (world.paths.unit_dir / "drone-demo-keys.service").exists()
    assert not (world.paths.unit_dir / "drone-demo-keys.socket").exists()
    assert ("reset-failed", "drone-demo-keys.service") in world.systemd.calls


def test_the_keys_variables_are_not_the_users_to_set(world: World, capsys, monkeypatch) -> None:
    monkeypatch.setenv("ANTHROPIC_KEY", KEY)
    write_config(world, '[keys.anthropic]\nsecret = "env:ANTHROPIC_KEY"\n')
    code, _, err = devbox(capsys, "create", "demo", "--key", "anthropic", "--env", "ANTHROPIC_API_KEY=sk-real")
    assert code == ExitCode.INVALID_INPUT and "--env ANTHROPIC_API_KEY is set by the key proxy" in err
    assert "sk-real" not in err


def test_backup_and_restore_carry_the_keys_and_not_their_variables(world: World, capsys, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("ANTHROPIC_KEY", KEY)
    write_config(world, '[keys.anthropic]\nsecret = "env:ANTHROPIC_KEY"\n')
    devbox(capsys, "create", "demo", "--key", "anthropic", "--env", "EDITOR=vim", "--no-devcontainer")
    world.podman.volumes.add("drone-demo-home")
    archive = tmp_path / "demo.tar"
    code, _, err = devbox(capsys, "backup", "demo", "--output", str(archive))
    assert code == 0, err
    devbox(capsys, "destroy", "demo", "--yes")
    code, _, err = devbox(capsys, "restore", str(archive))
    assert code == 0, err
    container = (world.paths.quadlet_dir / "drone-demo.container").read_text()
    assert "Label=io.devbox.keys=anthropic\n" in container
    assert container.count("Environment=ANTHROPIC_BASE_URL=") == 1 and "Environment=EDITOR=vim\n" in container
    assert (world.paths.unit_dir / "drone-demo-keys.service").exists()
