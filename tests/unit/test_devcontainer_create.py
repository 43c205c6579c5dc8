"""create, render and destroy with a workspace's devcontainer.json: discover -> read -> judge -> build -> units.

The builder is a fake at the ImageBuilder seam (devcontainer/model.py); systemd and Podman are the usual fakes.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from devbox.commands import devcontainer as dc_command
from devbox.devcontainer import fetch
from devbox.devcontainer.model import BuiltImage, DevcontainerSource
from devbox.errors import DevboxError, ExitCode
from tests.fakes import World
from tests.unit.test_cli import devbox

CONFIG = """{
  // the app's drone
  "image": "mcr.microsoft.com/devcontainers/base:bookworm",
  "containerEnv": {"APP_ENV": "dev", "FROM_FILE": "file"},
  "remoteUser": "vscode",
  "forwardPorts": [3000],
  "capAdd": ["SYS_PTRACE"],
  "hostRequirements": {"cpus": 3, "memory": "6gb"},
  "postCreateCommand": "make setup",
  "initializeCommand": "rm -rf ~",
}
"""
TAG = "localhost/devbox-devcontainer-app:abc"


@dataclass
class FakeBuilder:
    metadata: tuple[dict[str, object], ...] = ({"containerEnv": {"FROM_FEATURE": "1"}, "onCreateCommand": "f"},)
    built: list[DevcontainerSource] = field(default_factory=list)
    fresh: list[bool] = field(default_factory=list)
    build_args: list[tuple[str, ...]] = field(default_factory=list)
    fail: str = ""

    def build(
        self, source: DevcontainerSource, progress: object, *, fresh: bool = False, build_args: tuple[str, ...] = ()
    ) -> BuiltImage:
        self.built.append(source)
        self.fresh.append(fresh)
        self.build_args.append(build_args)
        if self.fail:
            raise DevboxError(self.fail, ExitCode.IMAGE)
        return BuiltImage(TAG, self.metadata, "hash123", 1000, 1000, "vscode", "/home/vscode")


@pytest.fixture
def builder(world: World) -> FakeBuilder:
    world.builder = FakeBuilder()
    world.podman.images.add(TAG)
    return world.builder  # type: ignore[return-value]


def workspace(world: World, files: dict[str, str] | None = None) -> Path:
    root = world.paths.home / "code" / "app"
    for relative, text in (files or {".devcontainer/devcontainer.json": CONFIG}).items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    return root


def test_create_with_path_builds_and_maps_the_devcontainer(world: World, builder: FakeBuilder, capsys) -> None:
    root = workspace(world)
    code, out, err = devbox(capsys, "create", "--path", str(root), "--env", "FROM_FILE=user")
    assert code == 0, err
    assert builder.built == [DevcontainerSource(root, root / ".devcontainer/devcontainer.json", root / ".devcontainer")]
    assert "initializeCommand is never run" in out
    unit = (world.paths.quadlet_dir / "drone-app.container").read_text()
    for line in (
        f"Image={TAG}",
        "Environment=APP_ENV=dev",
        "Environment=FROM_FEATURE=1",
        "Environment=FROM_FILE=user",  # the user's --env wins over the repository's
        "UserNS=keep-id:uid=1000,gid=1000",
        "AddCapability=SYS_PTRACE",
        "PublishPort=127.0.0.1:3000:3000",
        "PodmanArgs=--cpus=3",
        "PodmanArgs=--memory=6g",
        "Label=io.devbox.devcontainer=.devcontainer/devcontainer.json",
        "Label=io.devbox.devcontainer-hash=hash123",
        "Label=io.devbox.ports=3000:3000",
        f"Volume={world.paths.drones_dir}/app/devcontainer.json:/etc/devbox/devcontainer.json:ro",
    ):
        assert line + "\n" in unit, line
    hooks = json.loads((world.paths.drones_dir / "app/devcontainer.json").read_text())
    assert hooks["onCreateCommand"] == "f" and hooks["postCreateCommand"] == "make setup"
    assert hooks["remoteUser"] == "vscode" and hooks["workspaceFolder"] == str(root)
    # destroy takes the hooks file and the drone's directory with it
    assert devbox(capsys, "destroy", "app", "--yes")[0] == 0
    assert not (world.paths.drones_dir / "app").exists()


def test_cpus_and_memory_of_the_user_win_over_host_requirements(world: World, builder: FakeBuilder, capsys) -> None:
    root = workspace(world)
    assert devbox(capsys, "create", "--path", str(root), "--cpus", "1", "--memory", "1g")[0] == 0
    unit = (world.paths.quadlet_dir / "drone-app.container").read_text()
    assert "PodmanArgs=--cpus=1\n" in unit and "PodmanArgs=--memory=1g\n" in unit


def test_a_taken_port_is_published_on_the_next_free_one(world: World, builder: FakeBuilder, capsys) -> None:
    root = workspace(world)
    assert devbox(capsys, "create", "one", "--path", str(root))[0] == 0
    assert devbox(capsys, "create", "two", "--path", str(root))[0] == 0
    unit = (world.paths.quadlet_dir / "drone-two.container").read_text()
    assert "PublishPort=127.0.0.1:3001:3000\n" in unit


def test_dry_run_and_render_build_nothing(world: World, builder: FakeBuilder, capsys) -> None:
    root = workspace(world)
    code, out, err = devbox(capsys, "create", "--path", str(root), "--dry-run")
    assert code == 0, err
    assert builder.built == []
    assert "image localhost/devbox-devcontainer-app:" in out and "not built yet (dry run)" in out
    assert world.files() == []
    code, out, err = devbox(capsys, "render", "--path", str(root))
    assert code == 0, err
    assert builder.built == []
    assert "Image=localhost/devbox-devcontainer-app:" in out
    assert "PublishPort=127.0.0.1:3000:3000" in out and '"postCreateCommand": "make setup"' in out


def test_no_devcontainer_keeps_todays_behaviour(world: World, builder: FakeBuilder, capsys) -> None:
    root = workspace(world)
    code, _, err = devbox(capsys, "create", "--path", str(root), "--no-devcontainer")
    assert code == 0, err
    assert builder.built == []
    unit = (world.paths.quadlet_dir / "drone-app.container").read_text()
    assert "Image=localhost/devbox-drone:latest\n" in unit and "io.devbox.devcontainer" not in unit


def test_an_explicit_image_is_the_users_choice(world: World, builder: FakeBuilder, capsys) -> None:
    root = workspace(world)
    assert devbox(capsys, "create", "--path", str(root), "--image", "localhost/devbox-drone:latest")[0] == 0
    assert builder.built == []


@pytest.mark.parametrize(
    ("files", "args", "words"),
    [
        ({".devcontainer/devcontainer.json": '{\n"privileged": true}'}, [], ":2: privileged containers are refused"),
        ({".devcontainer/devcontainer.json": '{"runArgs": ["--network=host"]}'}, [], "the host's network is refused"),
        (
            {".devcontainer/a/devcontainer.json": "{}", ".devcontainer/b/devcontainer.json": "{}"},
            [],
            "several devcontainer.json files (.devcontainer/a/devcontainer.json, .devcontainer/b/devcontainer.json)",
        ),
        ({".devcontainer/a/devcontainer.json": "{}"}, ["--devcontainer", "c"], "--devcontainer 'c': no"),
        ({".devcontainer.json": '{"containerEnv": {"X": "${nope}"}}'}, [], ":1: unknown variable '${nope}'"),
    ],
)
def test_a_refused_devcontainer_writes_nothing(
    world: World, builder: FakeBuilder, capsys, files: dict[str, str], args: list[str], words: str
) -> None:
    root = workspace(world, files)
    code, out, err = devbox(capsys, "create", "--path", str(root), *args)
    assert (code, out) == (ExitCode.INVALID_INPUT, "")
    assert err.startswith("devbox: ") and err.count("\n") == 1 and words in err, err
    assert builder.built == [] and world.files() == [] and not world.paths.drones_dir.exists()


def test_a_features_refusal_after_the_build_writes_nothing(world: World, builder: FakeBuilder, capsys) -> None:
    builder.metadata = ({"id": "docker-in-docker", "privileged": True},)
    root = workspace(world)
    code, _, err = devbox(capsys, "create", "--path", str(root))
    assert code == ExitCode.INVALID_INPUT and "entry 1: privileged containers are refused" in err
    assert world.files() == [] and not world.paths.drones_dir.exists()


def test_without_a_builder_create_says_so(world: World, capsys) -> None:
    root = workspace(world)
    code, _, err = devbox(capsys, "create", "--path", str(root))
    assert code == ExitCode.ENVIRONMENT
    assert err == "devbox: the devcontainer builder is not available in this devbox\n"
    assert world.files() == []


# --- --repo: the repository is fetched on this host, nothing from it runs -----------------------------


def github_app(world: World) -> None:
    world.paths.config_file.parent.mkdir(parents=True, exist_ok=True)
    world.paths.config_file.write_text('[github]\napp_id = "1"\nprivate_key = "env:KEY"\n')


@dataclass
class FakeGit:
    """git at the subprocess seam: records argv and the credential file as git would see it."""

    files: dict[str, str]
    calls: list[list[str]] = field(default_factory=list)
    credentials: list[tuple[str, int]] = field(default_factory=list)
    env: list[dict[str, str]] = field(default_factory=list)
    fail: bool = False

    def __call__(self, argv: Sequence[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(argv))
        self.env.append(env)
        helper = next(a for a in argv if a.startswith("credential.helper=store"))
        path = Path(helper.split("--file=", 1)[1])
        self.credentials.append((path.read_text(), path.stat().st_mode & 0o777))
        if self.fail:
            return subprocess.CompletedProcess(list(argv), 128, "", "fatal: could not read from tok-123 remote\n")
        checkout = Path(argv[-1])
        for relative, text in self.files.items():
            (checkout / relative).parent.mkdir(parents=True, exist_ok=True)
            (checkout / relative).write_text(text)
        return subprocess.CompletedProcess(list(argv), 0, "", "")


@pytest.fixture
def git(world: World, monkeypatch: pytest.MonkeyPatch) -> FakeGit:
    fake = FakeGit({".devcontainer/devcontainer.json": CONFIG})
    monkeypatch.setenv("KEY", "-----BEGIN RSA PRIVATE KEY-----\nnot-used\n-----END RSA PRIVATE KEY-----")
    revoked: list[str] = []
    monkeypatch.setattr(fetch, "_run", fake)
    monkeypatch.setattr(dc_command, "_repo_token", lambda ctx, repo: ("tok-123", lambda: revoked.append(repo)))
    fake.revoked = revoked  # type: ignore[attr-defined]
    return fake


def test_create_with_repo_fetches_it_safely_with_a_token_for_that_repo(
    world: World, builder: FakeBuilder, git: FakeGit, capsys
) -> None:
    github_app(world)
    code, _, err = devbox(capsys, "create", "--repo", "acme/app")
    assert code == 0, err
    (argv,) = git.calls
    for setting in fetch.SAFE_GIT_CONFIG:
        assert ["-c", setting] == argv[argv.index(setting) - 1 : argv.index(setting) + 1]
    assert argv[argv.index("clone") :][:5] == [
        "clone",
        "--quiet",
        "--depth=1",
        "--no-recurse-submodules",
        "--template=",
    ]
    assert argv[-2] == "https://github.com/acme/app.git"
    assert not any("tok-123" in a for a in argv) and not any("tok-123" in v for v in git.env[0].values())
    assert git.credentials == [("https://x-access-token:tok-123@github.com\n", 0o600)]
    assert git.revoked == ["acme/app"]  # type: ignore[attr-defined]
    build_dir = world.paths.build_dir("acme-app")
    assert builder.built[0].workspace == (build_dir / "checkout").resolve()
    assert [p.name for p in build_dir.iterdir()] == ["checkout"]  # the credential file is gone
    hooks = json.loads((world.paths.drones_dir / "acme-app/devcontainer.json").read_text())
    assert hooks["workspaceFolder"] == "/home/vscode/app"  # cloned into the remote user's home, where the home is
    assert devbox(capsys, "destroy", "acme-app", "--yes")[0] == 0
    assert not build_dir.exists()


def test_a_failed_fetch_leaves_nothing_and_hides_the_token(
    world: World, builder: FakeBuilder, git: FakeGit, capsys
) -> None:
    github_app(world)
    git.fail = True
    code, _, err = devbox(capsys, "create", "--repo", "acme/app")
    assert code == ExitCode.FAILURE
    assert err == (
        "devbox: could not fetch https://github.com/acme/app.git to read its devcontainer.json: "
        "fatal: could not read from *** remote (--no-devcontainer skips it)\n"
    )
    assert not world.paths.build_dir("acme-app").exists() and world.files() == []
    assert git.revoked == ["acme/app"]  # type: ignore[attr-defined]


def test_a_refused_repo_config_leaves_no_checkout(world: World, builder: FakeBuilder, git: FakeGit, capsys) -> None:
    github_app(world)
    git.files = {".devcontainer.json": '{"capAdd": ["SYS_ADMIN"]}'}
    code, _, err = devbox(capsys, "create", "--repo", "acme/app")
    assert code == ExitCode.INVALID_INPUT and "capability SYS_ADMIN is refused" in err
    assert not world.paths.build_dir("acme-app").exists() and world.files() == []


def test_a_repo_without_devcontainer_is_todays_drone(world: World, builder: FakeBuilder, git: FakeGit, capsys) -> None:
    github_app(world)
    git.files = {"README.md": "hi"}
    code, _, err = devbox(capsys, "create", "--repo", "acme/app")
    assert code == 0, err
    assert builder.built == [] and not world.paths.build_dir("acme-app").exists()
    assert "Image=localhost/devbox-drone:latest\n" in (world.paths.quadlet_dir / "drone-acme-app.container").read_text()


def test_codespaces_permissions_scope_the_broker_never_wider(
    world: World, builder: FakeBuilder, git: FakeGit, capsys
) -> None:
    github_app(world)
    repositories = {
        "acme/app": {"permissions": {"contents": "read", "issues": "write"}},
        "acme/other": {"permissions": {"contents": "write"}},
    }
    git.files = {".devcontainer.json": json.dumps({"customizations": {"codespaces": {"repositories": repositories}}})}
    code, out, err = devbox(capsys, "create", "--repo", "acme/app")
    assert code == 0, err
    unit = (world.paths.quadlet_dir / "drone-acme-app.container").read_text()
    assert "Label=io.devbox.permissions=contents:read,issues:write\n" in unit
    assert "Label=io.devbox.repos=acme/app\n" in unit  # acme/other is not added
    assert "acme/other, which is not a --repo of this drone: ignored" in out


def test_without_a_github_app_the_repo_is_not_fetched(world: World, builder: FakeBuilder, git: FakeGit, capsys) -> None:
    code, out, _ = devbox(capsys, "create", "--repo", "acme/app")
    assert code == 0
    assert git.calls == [] and "no GitHub App configured: acme/app's devcontainer.json was not looked for" in out
    code, _, err = devbox(capsys, "create", "x", "--repo", "acme/app", "--devcontainer", "python")
    assert code == ExitCode.INVALID_INPUT and "no GitHub App is configured" in err


def test_a_real_git_clone_runs_no_hook_of_the_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The argv against real git, from a local repository (file:// allowed for this test only)."""
    import shutil

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    origin = tmp_path / "origin"
    subprocess.run(["git", "init", "-q", str(origin)], check=True)
    (origin / ".gitattributes").write_text("* filter=lfs\n")
    (origin / ".devcontainer.json").write_text("{}")
    (origin / ".gitmodules").write_text('[submodule "s"]\n\tpath = s\n\turl = ../evil\n')
    git_id = ["-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "-C", str(origin), "add", "."], check=True)
    subprocess.run(["git", *git_id, "-C", str(origin), "commit", "-qm", "x"], check=True)
    marker = tmp_path / "ran"
    monkeypatch.setattr(
        fetch, "SAFE_GIT_CONFIG", tuple(s for s in fetch.SAFE_GIT_CONFIG if s != "protocol.file.allow=never")
    )
    # A global filter that would run if the repository's .gitattributes were honoured with it.
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text(f'[filter "lfs"]\n\tsmudge = touch {marker}\n\tprocess = touch {marker}\n')
    monkeypatch.setenv("HOME", str(home))
    checkout = fetch.clone(f"file://{origin}", tmp_path / "build", None)
    assert (checkout / ".devcontainer.json").read_text() == "{}"
    assert not marker.exists() and not (checkout / "s" / ".git").exists()


def test_status_shows_the_devcontainer_ports_and_the_hooks_outcome(world: World, builder: FakeBuilder, capsys) -> None:
    from devbox.host.podman import ContainerInfo

    root = workspace(world)
    assert devbox(capsys, "create", "--path", str(root))[0] == 0
    world.podman.containers["app"] = ContainerInfo(
        name="drone-app", drone="app", state="running", image=TAG, started_at=None, ports=("127.0.0.1:3000->3000/tcp",)
    )
    world.systemd.active.add("drone-app.service")
    world.probe.devcontainer["drone-app"] = "postCreateCommand failed (exit 2); sshd is up"
    code, out, err = devbox(capsys, "status", "app", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["devcontainer"] == ".devcontainer/devcontainer.json"
    assert data["devcontainer_outcome"] == "postCreateCommand failed (exit 2); sshd is up"
    assert "127.0.0.1:3000->3000/tcp" in data["ports"]
    code, out, _ = devbox(capsys, "status", "app")
    assert "devcontainer  .devcontainer/devcontainer.json: postCreateCommand failed (exit 2); sshd is up" in out


def test_the_fetch_token_is_read_only_for_that_repo_and_revoked(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """_repo_token against the fake GitHub API, which verifies the App's JWT."""
    from tests.fakegithub import FakeGitHub, rsa_keypair

    private, public = rsa_keypair()
    installations = {"acme": (7, {"app", "other"}, {"contents": "write", "pull_requests": "write"})}
    with FakeGitHub("1", public_key=public, installations=installations) as gh:
        monkeypatch.setenv("KEY", private.decode())
        world.paths.config_file.parent.mkdir(parents=True, exist_ok=True)
        world.paths.config_file.write_text(f'[github]\napp_id = "1"\nprivate_key = "env:KEY"\napi_url = "{gh.url}"\n')
        token, revoke = dc_command._repo_token(world.context(), "acme/app")
        (minted,) = gh.minted.values()
        assert (minted.repos, minted.permissions) == (frozenset({"app"}), {"contents": "read", "metadata": "read"})
        assert gh.token_allows(token, "acme/app", "contents", "read")
        assert not gh.token_allows(token, "acme/app", "contents", "write")
        assert not gh.token_allows(token, "acme/other")
        revoke()
        assert minted.revoked


def test_restore_builds_the_same_devcontainer_json_again() -> None:
    from devbox.commands.backup import request_from_unit
    from devbox.units.render import render_drone
    from tests.unit.cases import HOST, cases

    (unit,) = [f.text for f in render_drone(cases()["devcontainer"], HOST) if f.relative_path == "drone-app.container"]
    request, ignored = request_from_unit(unit, "app2", {})
    # the configuration's containerEnv is taken from it anew (it may have changed): only the user's own carries over
    assert "Environment=NVM_DIR=/usr/local/share/nvm\n" in unit
    assert not any(item.startswith("NVM_DIR=") for item in request.env)
    assert (request.devcontainer, request.path, request.no_devcontainer) == (
        ".devcontainer/devcontainer.json",
        "/home/dev/code/app",
        False,
    )
    assert ignored == []


def test_the_host_fetches_what_drones_reach_as_host_containers_internal() -> None:
    assert dc_command.host_side("http://host.containers.internal:8080/acme/x.git") == "http://127.0.0.1:8080/acme/x.git"
    assert dc_command.host_side("https://github.com/acme/x.git") == "https://github.com/acme/x.git"


def test_ssh_logs_in_as_the_images_remote_user(world: World, builder: FakeBuilder, capsys) -> None:
    """keep-id maps the host user onto the image's remote user: that is who sshd knows."""
    from devbox.cli import app as cli
    from devbox.commands import reach

    root = workspace(world)
    assert devbox(capsys, "create", "--path", str(root))[0] == 0
    unit = (world.paths.quadlet_dir / "drone-app.container").read_text()
    assert "Label=io.devbox.login-user=vscode\n" in unit
    assert reach.ssh_target(cli.make_context(), "app").user == "vscode"


def test_a_remote_user_name_that_could_be_an_ssh_option_is_refused(world: World, builder: FakeBuilder, capsys) -> None:
    from dataclasses import replace as _replace

    hostile = _replace(
        builder.build(DevcontainerSource(Path("/"), Path("/x"), Path("/")), None), remote_user="-oProxyCommand=x"
    )
    world.builder = type("Hostile", (), {"build": lambda self, source, progress, fresh=False, build_args=(): hostile})()
    code, _, err = devbox(capsys, "create", "--path", str(workspace(world)))
    assert code == ExitCode.INVALID_INPUT and "is not a plain user name" in err
    assert not (world.paths.quadlet_dir / "drone-app.container").exists()


def test_destroy_removes_the_devcontainers_named_volumes_and_no_other(
    world: World, builder: FakeBuilder, capsys
) -> None:
    mounts = CONFIG.replace('"remoteUser"', '"mounts": ["source=cache,target=/cache,type=volume"],\n  "remoteUser"')
    root = workspace(world, {".devcontainer/devcontainer.json": mounts})
    assert devbox(capsys, "create", "app", "--path", str(root))[0] == 0
    assert devbox(capsys, "create", "app-vol-x", "--path", str(root))[0] == 0
    unit = (world.paths.quadlet_dir / "drone-app.container").read_text()
    assert "Volume=drone-app-vol-cache:/cache\n" in unit
    world.podman.volumes |= {"drone-app-vol-cache", "drone-app-vol-x-vol-cache", "drone-app-home"}
    code, out, err = devbox(capsys, "destroy", "app", "--yes", "--json")
    assert code == 0, err
    assert json.loads(out)["volumes_removed"] == ["drone-app-vol-cache"]
    assert world.podman.volumes == {"drone-app-vol-x-vol-cache"}  # the other drone's copy stays


def test_destroy_keep_volume_keeps_the_devcontainers_volumes_too(world: World, builder: FakeBuilder, capsys) -> None:
    mounts = CONFIG.replace('"remoteUser"', '"mounts": ["source=cache,target=/cache,type=volume"],\n  "remoteUser"')
    root = workspace(world, {".devcontainer/devcontainer.json": mounts})
    assert devbox(capsys, "create", "app", "--path", str(root))[0] == 0
    world.podman.volumes |= {"drone-app-vol-cache", "drone-app-home"}
    assert devbox(capsys, "destroy", "app", "--yes", "--keep-volume")[0] == 0
    assert world.podman.volumes == {"drone-app-vol-cache", "drone-app-home"}


def test_a_repo_drone_reads_container_workspace_folder_in_the_remote_users_home(
    world: World, builder: FakeBuilder, git: FakeGit, capsys
) -> None:
    github_app(world)
    git.files = {".devcontainer/devcontainer.json": CONFIG.replace('"dev"', '"${containerWorkspaceFolder}/x"')}
    assert devbox(capsys, "create", "--repo", "acme/app")[0] == 0
    unit = (world.paths.quadlet_dir / "drone-acme-app.container").read_text()
    assert "Environment=APP_ENV=/home/vscode/app/x\n" in unit
    assert "Volume=drone-acme-app-home:/home/vscode\n" in unit


def test_a_repo_drone_without_a_remote_user_keeps_the_host_users_home(
    world: World, builder: FakeBuilder, git: FakeGit, capsys
) -> None:
    github_app(world)
    git.files = {
        ".devcontainer/devcontainer.json": '{"image": "x", "containerEnv": {"W": "${containerWorkspaceFolder}"}}'
    }
    world.builder = FakeBuilder()
    world.builder.build = lambda source, progress, fresh=False, build_args=(): BuiltImage(TAG, (), "hash123")  # type: ignore[method-assign]
    assert devbox(capsys, "create", "--repo", "acme/app")[0] == 0
    unit = (world.paths.quadlet_dir / "drone-acme-app.container").read_text()
    assert f"Environment=W={world.paths.home}/app\n" in unit


def test_a_devcontainer_drone_with_the_web_terminal_asks_the_build_for_its_programs(
    world: World, builder: FakeBuilder, capsys
) -> None:
    root = workspace(world)
    assert devbox(capsys, "create", "--path", str(root), "--with", "web-terminal", "--with", "mosh")[0] == 0
    assert builder.build_args == [("DEVBOX_WEB_TERMINAL=1",)]  # mosh is in every contract layer
    unit = (world.paths.quadlet_dir / "drone-app.container").read_text()
    assert "Environment=DEVBOX_WEB=web-terminal:7681\n" in unit and "PublishPort=127.0.0.1:7701:7681\n" in unit
    root2 = world.paths.home / "code" / "other"
    root2.mkdir(parents=True)
    (root2 / ".devcontainer.json").write_text(CONFIG)
    assert devbox(capsys, "create", "--path", str(root2))[0] == 0
    assert builder.build_args[-1] == ()
