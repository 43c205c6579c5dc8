"""create and the secret files in the config: never a workspace, and a GitHub App key checked before any write."""

from __future__ import annotations

from pathlib import Path

import pytest

from devbox.errors import ExitCode
from tests.fakegithub import rsa_keypair
from tests.fakes import World
from tests.unit.test_cli import devbox


def _app_key(world: World, tmp_path: Path, data: bytes | None, mode: int = 0o600) -> Path:
    key = tmp_path / "secrets" / "keys" / "app.pem"
    key.parent.mkdir(parents=True)
    if data is not None:
        key.write_bytes(data)
        key.chmod(mode)
    world.paths.config_file.parent.mkdir(parents=True, exist_ok=True)
    world.paths.config_file.write_text(f'[github]\napp_id = "123"\nprivate_key = "file:{key}"\n')
    return key


@pytest.mark.parametrize("where", ["the-directory", "inside-it", "above-it"])
def test_path_refuses_the_directory_of_the_github_app_key(world: World, capsys, tmp_path: Path, where: str) -> None:
    key = _app_key(world, tmp_path, rsa_keypair()[0])
    (key.parent / "sub").mkdir()
    path = {"the-directory": key.parent, "inside-it": key.parent / "sub", "above-it": key.parent.parent}[where]
    code, _, err = devbox(capsys, "create", "demo", "--path", str(path))
    assert code == ExitCode.INVALID_INPUT and "refusing to mount" in err
    assert world.leftovers() == []


def test_path_refuses_the_directory_of_a_tailscale_key_file(world: World, capsys, tmp_path: Path) -> None:
    keys = tmp_path / "ts"
    keys.mkdir()
    world.paths.config_file.parent.mkdir(parents=True)
    world.paths.config_file.write_text(f'[tailscale]\nauth_key = "file:{keys}/authkey"\n')
    code, _, err = devbox(capsys, "create", "demo", "--path", str(keys))
    assert code == ExitCode.INVALID_INPUT and "refusing to mount" in err


def test_path_refuses_gnupg_through_a_symlink(world: World, capsys, tmp_path: Path) -> None:
    gnupg = world.paths.home / ".gnupg"
    gnupg.mkdir(parents=True)
    (tmp_path / "innocent").symlink_to(gnupg)
    code, _, err = devbox(capsys, "create", "demo", "--path", str(tmp_path / "innocent"))
    assert code == ExitCode.INVALID_INPUT and "refusing" in err


BAD_KEYS = {
    "missing": (None, 0o600, "does not exist"),
    "readable-by-others": (b"", 0o644, "can be read by others"),
    "not-a-key": (b"-----BEGIN RSA PRIVATE KEY-----\nnot-a-key\n-----END RSA PRIVATE KEY-----\n", 0o600, "not a PEM"),
}


@pytest.mark.parametrize("dry_run", [False, True])
@pytest.mark.parametrize("case", sorted(BAD_KEYS))
def test_create_checks_a_file_github_app_key_before_writing(
    world: World, capsys, tmp_path: Path, case: str, dry_run: bool
) -> None:
    data, mode, reason = BAD_KEYS[case]
    if case == "readable-by-others":
        data = rsa_keypair()[0]
    _app_key(world, tmp_path, data, mode)
    code, out, err = devbox(capsys, "create", "demo", "--repo", "acme/demo", *(["--dry-run"] if dry_run else []))
    assert code == ExitCode.SECRET and reason in err and len(err.strip().splitlines()) == 1
    assert "PRIVATE KEY" not in err and world.leftovers() == [] and world.systemd.calls == []


def test_an_ec_key_is_not_a_github_app_key(world: World, capsys, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _app_key(world, tmp_path, pem)
    code, _, err = devbox(capsys, "create", "demo", "--dry-run")
    assert code == ExitCode.SECRET and "not an RSA private key" in err


def test_a_good_key_passes(world: World, capsys, tmp_path: Path) -> None:
    _app_key(world, tmp_path, rsa_keypair()[0])
    assert devbox(capsys, "create", "demo", "--repo", "acme/demo", "--no-devcontainer", "--dry-run")[0] == 0
