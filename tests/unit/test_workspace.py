"""#9: --path as the workspace, the git identity, dotfiles, and a drone's own SSH key pair."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from devbox.drone.workspace import name_from_path, validate_workspace
from devbox.errors import DevboxError, ExitCode
from tests.fakes import World
from tests.unit.test_cli import _running, devbox
from tests.unit.test_drone_access import write_config


def test_path_validation(tmp_path: Path) -> None:
    home = tmp_path / "home"
    project = home / "code" / "My_App.v2"
    project.mkdir(parents=True)
    (home / "notes.txt").write_text("x")
    (home / "link").symlink_to(project)
    assert validate_workspace(str(project), home) == str(project)
    assert validate_workspace(str(home / "link"), home) == str(project)  # symlinks resolved
    assert name_from_path(str(project)) == "my-app-v2"
    refusals = {
        str(home / "missing"): "no such directory",
        str(home / "notes.txt"): "not a directory",
        "/": "refusing to mount / into a drone",
        str(home): "refusing to mount your whole home",
        str(tmp_path): "refusing to mount your whole home",  # above the home holds the home
    }
    for given, reason in refusals.items():
        with pytest.raises(DevboxError) as error:
            validate_workspace(given, home)
        assert error.value.code == ExitCode.INVALID_INPUT and reason in error.value.message, given
    odd = home / "has space"
    odd.mkdir()
    with pytest.raises(DevboxError, match="use a path of letters"):
        validate_workspace(str(odd), home)
    with pytest.raises(DevboxError, match="cannot derive a drone name"):
        name_from_path(str(home / "_"))


def test_path_refuses_what_would_give_a_drone_the_host(world: World, capsys) -> None:
    home = world.paths.home
    for hidden in (".ssh", ".config/containers", ".local/state/devbox", ".gnupg"):
        (home / hidden).mkdir(parents=True, exist_ok=True)
    world.paths.runtime_dir.mkdir(parents=True, exist_ok=True)
    refused = {
        str(home / ".ssh"): "refusing a hidden directory of your home",
        str(home / ".config/containers"): "refusing a hidden directory of your home",
        str(home / ".local/state/devbox"): "refusing a hidden directory of your home",
        str(world.paths.runtime_dir): f"refusing to mount {world.paths.runtime_dir.resolve()}",
        "/etc": "refusing to mount /etc",
        "/usr/share": "refusing to mount /usr",
        "/var": "refusing to mount /var/lib",
    }
    for given, reason in refused.items():
        code, out, err = devbox(capsys, "create", "x", "--path", given)
        assert (code, out) == (ExitCode.INVALID_INPUT, ""), given
        assert reason in err, (given, err)
    assert world.leftovers() == [] and not world.paths.drones_dir.exists()


def test_create_with_path_mounts_it_at_the_same_place_and_names_the_drone(world: World, capsys) -> None:
    project = world.paths.home / "code" / "widget"
    project.mkdir(parents=True)
    code, out, err = devbox(capsys, "create", "--path", str(project), "--repo", "acme/widget")
    assert (code, err) == (0, ""), err
    container = (world.paths.quadlet_dir / "drone-widget.container").read_text()
    assert f"Volume={project}:{project}\n" in container
    assert f"WorkingDir={project}\n" in container
    assert f"Label=io.devbox.path={project}\n" in container
    assert "clone-repos" not in container  # the checkout is the directory: --repo gives credentials only
    assert "Environment=DEVBOX_REPOS=acme/widget\n" in container
    status = json.loads(devbox(capsys, "status", "widget", "--json")[1])
    assert status["workspace"] == str(project)


def test_create_refuses_the_home_as_path_and_writes_nothing(world: World, capsys) -> None:
    world.paths.home.mkdir(parents=True, exist_ok=True)
    code, out, err = devbox(capsys, "create", "x", "--path", str(world.paths.home))
    assert (code, out) == (ExitCode.INVALID_INPUT, "")
    assert "refusing to mount your whole home" in err and world.leftovers() == []


def git(home: Path, *args: str) -> None:
    subprocess.run(["git", *args], check=True, env={**os.environ, "HOME": str(home)}, capture_output=True)


def test_identity_from_the_hosts_git_config_and_from_the_config(world: World, capsys) -> None:
    world.paths.home.mkdir(parents=True, exist_ok=True)
    git(world.paths.home, "config", "--global", "user.name", 'Ada "the Countess" Lovelace')
    git(world.paths.home, "config", "--global", "user.email", "ada@example.com")
    assert devbox(capsys, "create", "one")[0] == 0
    gitconfig = (world.paths.tools_dir / "gitconfig").read_text()
    assert '\tname = "Ada \\"the Countess\\" Lovelace"\n' in gitconfig
    assert '\temail = "ada@example.com"\n' in gitconfig
    parsed = subprocess.run(
        ["git", "config", "--file", str(world.paths.tools_dir / "gitconfig"), "user.name"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert parsed == 'Ada "the Countess" Lovelace\n'
    write_config(world, '[identity]\nemail = "ada@work.example"\n')
    assert devbox(capsys, "create", "two")[0] == 0
    gitconfig = (world.paths.tools_dir / "gitconfig").read_text()
    assert '\temail = "ada@work.example"\n' in gitconfig and "Lovelace" in gitconfig


def test_bad_identity_values_are_refused(world: World, capsys) -> None:
    write_config(world, '[identity]\nname = "two\\nlines"\n')
    code, _, err = devbox(capsys, "create", "x")
    assert code == ExitCode.CONFIG and "identity.name: a git user name is 1 to 200 characters on one line" in err


def test_dotfiles_reach_the_unit_and_status(world: World, capsys) -> None:
    code, _, err = devbox(
        capsys, "create", "dots", "--dotfiles", "https://git.example.com/me/dotfiles.git", "--dotfiles-branch", "main"
    )
    assert (code, err) == (0, "")
    container = (world.paths.quadlet_dir / "drone-dots.container").read_text()
    assert "Environment=DEVBOX_DOTFILES_URL=https://git.example.com/me/dotfiles.git\n" in container
    assert "Environment=DEVBOX_DOTFILES_BRANCH=main\n" in container
    assert "exec --detach drone-dots /usr/local/lib/devbox/dotfiles\n" in container
    assert (world.paths.tools_dir / "dotfiles").stat().st_mode & 0o111
    world.podman.containers["dots"] = _running("dots")
    world.probe.dotfiles["drone-dots"] = "installed: install.sh ran"
    text = devbox(capsys, "status", "dots")[1]
    assert "dotfiles   https://git.example.com/me/dotfiles.git: installed: install.sh ran\n" in text


def test_dotfiles_from_the_config_and_bad_urls(world: World, capsys) -> None:
    write_config(world, '[dotfiles]\nrepo = "git@github.com:me/dotfiles.git"\n')
    assert devbox(capsys, "create", "a")[0] == 0
    assert (
        "DEVBOX_DOTFILES_URL=git@github.com:me/dotfiles.git"
        in (world.paths.quadlet_dir / "drone-a.container").read_text()
    )
    code, out, err = devbox(capsys, "create", "b", "--dotfiles", "https://me:ghp_secret@github.com/me/dots.git")
    assert (code, out) == (ExitCode.INVALID_INPUT, "")
    assert err == (
        "devbox: the dotfiles URL holds a user name, password, token or query: use a public URL or an SSH URL\n"
    )
    refused = {
        "not a url": "invalid dotfiles URL",
        "https://ghp_abcdef0123@github.com/me/dots.git": "holds a user name, password, token or query",
        "https://git.example.com/dots.git?access_token=abc": "holds a user name, password, token or query",
        "http://git.example.com/dots.git": "plain http only from this machine",
        "git://git.example.com/dots.git": "invalid dotfiles URL",
        "--upload-pack=touch /tmp/x": "invalid dotfiles URL",
        "git@host:x\u0000ExecStartPre=/bin/sh": "invalid dotfiles URL",
        "git@host:x\x1b[31m": "invalid dotfiles URL",
        "ssh://me:pw@host/dots.git": "holds a password or query",
    }
    for url, reason in refused.items():
        code, out, err = devbox(capsys, "create", "b", "--dotfiles", url)
        assert (code, out) == (ExitCode.INVALID_INPUT, ""), url
        assert reason in err and "ghp_abcdef" not in err and "access_token=abc" not in err, (url, err)
    write_config(world, '[dotfiles]\nrepo = "git@h:x\\u0000ExecStartPre=/bin/true"\n')
    code, _, err = devbox(capsys, "create", "b")
    assert code == ExitCode.CONFIG and "dotfiles.repo: invalid dotfiles URL" in err
    write_config(world, "")
    for accepted in ("https://github.com/me/dots.git", "ssh://git@github.com/me/dots.git", "file:///srv/dots.git",
                     "http://host.containers.internal:8080/dots.git"):  # fmt: skip
        assert devbox(capsys, "render", "c", "--dotfiles", accepted)[0] == 0, accepted
    assert not (world.paths.quadlet_dir / "drone-b.container").exists()


def test_new_ssh_key_private_half_stays_on_the_host(world: World, capsys, monkeypatch) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(os, "execvp", lambda file, argv: calls.append(argv))
    assert devbox(capsys, "create", "keyed", "--new-ssh-key", "--ssh-port", "2290")[0] == 0
    key = world.paths.drone_key("keyed")
    private = key.read_text()
    assert private.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    authorized = (world.paths.drones_dir / "keyed" / "authorized_keys").read_text()
    assert "ssh-ed25519 " in authorized and "devbox-keyed" in authorized
    body = "".join(private.splitlines()[1:-1])
    everything = "".join(
        p.read_text() for root in (world.paths.quadlet_dir, world.paths.unit_dir, world.paths.drones_dir)
        for p in root.rglob("*") if p.is_file()
    )  # fmt: skip
    assert body[-60:] not in everything and "PRIVATE KEY" not in everything  # the key's own bytes, not the preamble
    devbox(capsys, "ssh", "keyed")
    assert calls[0][calls[0].index("-i") + 1] == str(key)
    assert f"IdentityFile {key}" in devbox(capsys, "ssh-config", "keyed")[1]
    assert devbox(capsys, "destroy", "keyed", "--yes")[0] == 0
    assert not key.exists()


def test_new_ssh_key_is_removed_when_create_fails(world: World, capsys) -> None:
    world.systemd.fail_start.add("drone-keyed.service")
    assert devbox(capsys, "create", "keyed", "--new-ssh-key")[0] == ExitCode.SYSTEMD
    assert not world.paths.drone_key("keyed").exists() and world.leftovers() == []


DOTFILES_SCRIPT = Path(__file__).resolve().parents[2] / "templates" / "drone" / "dotfiles"


def make_dotfiles_repo(root: Path, files: dict[str, str]) -> str:
    work = root / "dotfiles-src"
    work.mkdir()
    for name, text in files.items():
        (work / name).write_text(text)
    env = {
        **os.environ,
        "HOME": str(root),
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    for args in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-qm", "dotfiles"]):
        subprocess.run(["git", "-C", str(work), *args], check=True, env=env, capture_output=True)
    return f"file://{work}"


def run_dotfiles(home: Path, url: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "DEVBOX_DOTFILES_URL": url, "DEVBOX_LOG": str(home / "log")}
    return subprocess.run(["sh", str(DOTFILES_SCRIPT)], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("files", "outcome", "exit_code", "ran"),
    [
        (
            {"install.sh": "echo ran > $HOME/install-ran\n", "setup.sh": "exit 9\n"},
            "installed: install.sh ran",
            0,
            "install-ran",
        ),
        (
            {"bootstrap.sh": "echo ran > $HOME/bootstrap-ran; exit 3\n"},
            "failed: bootstrap.sh exited 3",
            3,
            "bootstrap-ran",
        ),
        ({"Makefile": "all:\n\techo ran > $$HOME/make-ran\n"}, "installed: make ran", 0, "make-ran"),
        ({"README": "nothing to run\n"}, "cloned: no install.sh, setup.sh, bootstrap.sh or Makefile", 0, None),
    ],
)
def test_the_dotfiles_script_clones_once_and_runs_the_installer(
    tmp_path: Path, files: dict[str, str], outcome: str, exit_code: int, ran: str | None
) -> None:
    if subprocess.run(["sh", "-c", "command -v make"], capture_output=True).returncode != 0 and "Makefile" in files:
        pytest.skip("make is not installed on this host")
    home = tmp_path / "home"
    home.mkdir()
    url = make_dotfiles_repo(tmp_path, files)
    result = run_dotfiles(home, url)
    assert result.returncode == exit_code, (home / "log").read_text()
    assert (home / ".local/state/devbox/dotfiles").read_text() == outcome + "\n"
    assert (home / ".dotfiles/.git").is_dir()
    if ran:
        assert (home / ran).read_text() == "ran\n"
        (home / ran).unlink()
    assert f"devbox: dotfiles: {outcome}" in (home / "log").read_text()
    assert run_dotfiles(home, url).returncode == 0  # a second start leaves them alone
    assert ran is None or not (home / ran).exists()


def test_a_failed_dotfiles_clone_is_tried_again(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    result = run_dotfiles(home, f"file://{tmp_path}/missing")
    assert result.returncode == 1 and not (home / ".dotfiles").exists()
    assert (home / ".local/state/devbox/dotfiles").read_text().startswith("failed: could not clone")
    url = make_dotfiles_repo(tmp_path, {"install.sh": "true\n"})
    assert run_dotfiles(home, url).returncode == 0
    assert (home / ".local/state/devbox/dotfiles").read_text() == "installed: install.sh ran\n"


def test_an_installer_cut_short_runs_again_on_the_next_start(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    url = make_dotfiles_repo(tmp_path, {"install.sh": "echo ran >> $HOME/runs\n"})
    assert run_dotfiles(home, url).returncode == 0
    (home / ".local/state/devbox/dotfiles").write_text("running: install.sh\n")  # the drone stopped mid-way
    assert run_dotfiles(home, url).returncode == 0
    assert (home / "runs").read_text() == "ran\nran\n"
    assert "did not finish on an earlier start" in (home / "log").read_text()
    assert run_dotfiles(home, url).returncode == 0 and (home / "runs").read_text() == "ran\nran\n"
