from __future__ import annotations

from pathlib import Path

import pytest

from devbox.config import DEFAULT_IMAGE, Config, load_config
from devbox.errors import DevboxError, ExitCode
from devbox.paths import Paths


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_missing_and_empty_files_give_defaults(tmp_path: Path) -> None:
    assert load_config(tmp_path / "absent.toml") == Config()
    config = load_config(write(tmp_path, ""))
    assert config.drone.image == DEFAULT_IMAGE and config.max_drones == 0


def test_every_key(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            'max_drones = 5\n[drone]\nimage = "quay.io/me/dev:1"\ncpus = 2\nmemory = "8G"\nsyncthing = true\n'
            'env = { EDITOR = "hx" }\n',
        )
    )
    assert (config.max_drones, config.drone.image, config.drone.cpus, config.drone.memory) == (
        5,
        "quay.io/me/dev:1",
        2.0,
        "8g",
    )
    assert config.drone.syncthing is True and config.drone.env == {"EDITOR": "hx"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[drone]\nimgae = 'x'\n",
            "unknown key drone.imgae (allowed: cpus, egress, env, image, keys, memory, syncthing, with)",
        ),
        (
            "colour = 1\n",
            "unknown key colour (allowed: [broker], [cleanup], [dotfiles], [drone], [github], [identity], [keys], [ssh], [tailscale], flavor, max_drones)",
        ),
        (
            "[drone]\nmemory = 'lots'\n",
            "drone.memory: invalid memory size 'lots': use a number with b, k, m or g, for example 512m or 4g",
        ),
        ("[drone]\ncpus = '2'\n", "drone.cpus: expected a number"),
        ("[drone]\ncpus = 0\n", "drone.cpus: invalid cpu count 0: use a number greater than 0, for example 2 or 0.5"),
        ("[drone]\nsyncthing = 'yes'\n", "drone.syncthing: expected true or false"),
        ("max_drones = -1\n", "max_drones: expected a whole number, 0 or more"),
        (
            '[drone]\nenv = { A = "x\\ny" }\n',
            "drone.env: invalid value for environment variable A: newlines, control characters, invisible characters and non-ASCII spaces are not allowed",
        ),
        ("drone = 3\n", "drone: expected a table [drone]"),
    ],
)
def test_bad_values_name_the_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(DevboxError) as error:
        load_config(path)
    assert error.value.code == ExitCode.CONFIG
    assert error.value.message == f"{path}: {message}"


def test_not_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "[drone\n")
    with pytest.raises(DevboxError) as error:
        load_config(path)
    assert error.value.code == ExitCode.CONFIG and error.value.message.startswith(f"{path}: not valid TOML")


def test_paths_follow_xdg() -> None:
    paths = Paths.from_env({"HOME": "/home/u", "XDG_RUNTIME_DIR": "/run/user/7"})
    assert paths.config_file == Path("/home/u/.config/devbox/config.toml")
    assert paths.quadlet_dir == Path("/home/u/.config/containers/systemd")
    assert paths.unit_dir == Path("/home/u/.config/systemd/user")
    assert paths.creds_socket("x") == Path("/run/user/7/devbox/drones/x/creds.sock")
    custom = Paths.from_env(
        {"HOME": "/h", "XDG_CONFIG_HOME": "/c", "DEVBOX_CONFIG": "/etc/d.toml", "XDG_RUNTIME_DIR": "/r"}
    )
    assert (custom.config_file, custom.quadlet_dir) == (Path("/etc/d.toml"), Path("/c/containers/systemd"))


def test_github_section(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            '[github]\napp_id = "123456"\nprivate_key = "op://DevBox/github-app/private key"\n'
            'api_url = "https://ghe.example.com/api/v3"\nhost = "ghe.example.com"\ninstallation_id = 42\n'
            'permissions = { contents = "read" }\n[broker]\nidle_exit = 30\n',
        )
    )
    assert config.github.enabled and config.github.installation_id == 42
    assert config.github.repo_base_url == "https://ghe.example.com"
    assert config.github.permissions == {"contents": "read"} and config.broker.idle_exit == 30.0
    assert not Config().github.enabled and Config().github.permissions == {
        "contents": "write",
        "pull_requests": "write",
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[github]\napp_id = "123"\n', "github: set both app_id and private_key, or neither"),
        (
            '[github]\napp_id = "1 2"\nprivate_key = "file:/k"\n',
            "github.app_id: expected the App's numeric id or its client id (Iv...)",
        ),
        (
            '[github]\napp_id = "1"\nprivate_key = "/k.pem"\n',
            "github.private_key: invalid secret reference (not shown: it may be the secret itself): use op://VAULT/ITEM/FIELD, env:NAME or file:PATH",
        ),
        (
            '[github]\npermissions = { contents = "all" }\n',
            "github.permissions: invalid level 'all' for contents: use read, write or admin",
        ),
        ('[github]\napi_url = "ftp://x"\n', "github.api_url: expected an http(s) URL such as https://api.github.com"),
        ("[broker]\nidle_exit = 0\n", "broker.idle_exit: expected a number of seconds from 1 to 86400"),
    ],
)
def test_bad_github_and_broker_values(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(DevboxError) as error:
        load_config(path)
    assert error.value.message == f"{path}: {message}"
