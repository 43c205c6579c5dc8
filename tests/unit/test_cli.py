"""The CLI by its exact output and exit codes, with systemd and Podman faked at their interfaces."""

from __future__ import annotations

import json

import pytest

from devbox.cli import app as cli
from devbox.errors import DevboxError, ExitCode
from devbox.host.podman import ContainerInfo
from tests.fakegithub import rsa_keypair
from tests.fakes import FIXED_NOW, World


def devbox(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        cli.run(list(args))
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


BAD_NAMES = ["Foo", "foo_bar", "x-", "a--b", "a" * 41, "a@b", "a\nb", "fоo", "ｆoo", "1abc", ""]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_create_refuses_bad_names_and_writes_nothing(world: World, capsys, name: str) -> None:
    code, out, err = devbox(capsys, "create", name)
    assert code == ExitCode.INVALID_INPUT
    assert out == ""
    assert (
        err
        == f"devbox: invalid drone name {name!r}: use 1 to 40 of a-z, 0-9 and '-', starting with a letter, not ending with '-', without '--'\n"
    )
    assert world.files() == []
    assert world.systemd.calls == []


def test_name_starting_with_dash_is_a_usage_error(world: World, capsys) -> None:
    code, _, err = devbox(capsys, "create", "-x")
    assert code == ExitCode.USAGE
    assert "No such option: -x" in err
    assert world.files() == []


@pytest.mark.parametrize("repo", ["org", "org/", "/repo", "org/repo/extra", "org/my repo", "org/re\npo", "or g/repo"])
def test_create_refuses_bad_repos(world: World, capsys, repo: str) -> None:
    code, out, err = devbox(capsys, "create", "demo", "--repo", repo)
    assert (code, out) == (ExitCode.INVALID_INPUT, "")
    assert err == f"devbox: invalid repository {repo!r}: expected OWNER/REPO, for example acme/widgets\n"
    assert world.files() == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--env", "A=line\nbreak"],
            "invalid value for environment variable A: newlines, control characters, invisible characters and non-ASCII spaces are not allowed",
        ),
        (["--env", "NOEQUALS"], "invalid --env 'NOEQUALS': expected KEY=VALUE"),
        (
            ["--env", "1A=x"],
            "invalid environment variable name '1A': use letters, digits and '_', not starting with a digit",
        ),
        (
            ["--env", "DEVBOX_DRONE=x"],
            "invalid environment variable name 'DEVBOX_DRONE': names starting with DEVBOX_ are devbox's own",
        ),
        (["--memory", "lots"], "invalid memory size 'lots': use a number with b, k, m or g, for example 512m or 4g"),
        (["--memory", "1m"], "invalid memory size '1m': Podman needs at least 6m"),
        (["--cpus", "0"], "invalid cpu count '0': use a number greater than 0, for example 2 or 0.5"),
        (["--cpus", "many"], "invalid cpu count 'many': use a number greater than 0, for example 2 or 0.5"),
        (["--ssh-port", "70000"], "invalid port '70000': use a number from 1 to 65535"),
        (
            ["--image", "img\n:latest"],
            "invalid image reference 'img\\n:latest': expected something like registry/name:tag",
        ),
        (["--image", "a b"], "invalid image reference 'a b': expected something like registry/name:tag"),
    ],
)
def test_create_refuses_bad_options(world: World, capsys, args: list[str], message: str) -> None:
    code, out, err = devbox(capsys, "create", "demo", *args)
    assert (code, out, err) == (ExitCode.INVALID_INPUT, "", f"devbox: {message}\n")
    assert world.files() == []


def test_create_without_name_or_repo(world: World, capsys) -> None:
    assert devbox(capsys, "create") == (
        ExitCode.INVALID_INPUT,
        "",
        "devbox: give a drone NAME, or --repo or --path to derive one from\n",
    )


def test_create_derives_the_name_from_the_repo(world: World, capsys) -> None:
    code, out, err = devbox(capsys, "create", "--repo", "Acme/My_Widgets.js")
    assert code == 0, err
    assert (
        out.splitlines()[-1] == "drone acme-my-widgets-js is running: systemctl --user status drone-acme-my-widgets-js"
    )


def test_create_refuses_a_repo_whose_derived_name_is_invalid(world: World, capsys) -> None:
    code, _, err = devbox(capsys, "create", "--repo", "acme/" + "x" * 40)
    assert code == ExitCode.INVALID_INPUT
    assert err.startswith(f"devbox: cannot derive a drone name from 'acme/{'x' * 40}'")
    assert err.endswith("give NAME explicitly\n")


def test_create_writes_units_reloads_and_starts(world: World, capsys) -> None:
    code, out, err = devbox(capsys, "create", "demo", "--repo", "acme/demo")
    assert (code, err) == (0, "")
    q, u = world.paths.quadlet_dir, world.paths.unit_dir
    assert out == (
        f"new        {q}/drone-demo.container\n"
        f"new        {q}/drone-demo.container.d/autostart.conf\n"
        f"new        {u}/drone-demo-creds.socket\n"
        f"new        {u}/drone-demo-creds.service\n"
        f"new        {world.paths.drones_dir}/demo/authorized_keys\n"
        f"new        {world.paths.drones_dir}/demo/hooks.d/devbox-fence.json\n"
        "no tailnet configured: SSH on 127.0.0.1:2201 (devbox ssh demo)\n"
        "no SSH public key found in ~/.ssh/*.pub: give --ssh-key FILE to log in over SSH\n"
        "no GitHub App configured: acme/demo's devcontainer.json was not looked for\n"
        "drone demo is running: systemctl --user status drone-demo\n"
    )
    assert world.files() == [
        "containers/systemd/drone-demo.container",
        "containers/systemd/drone-demo.container.d/autostart.conf",
        "systemd/user/devbox-cleanup.service",  # the daily idle clean-up comes with the first drone
        "systemd/user/devbox-cleanup.timer",
        "systemd/user/drone-demo-creds.service",
        "systemd/user/drone-demo-creds.socket",
    ]
    assert [c for c in world.systemd.calls if c[0] != "states"] == [
        ("daemon-reload", ""),  # the timer's files were written with the drone's
        ("start", "drone-demo.service"),
        ("enable", "devbox-cleanup.timer"),
        ("daemon-reload", ""),  # enabling leaves every unit NeedDaemonReload=yes until a reload
    ]
    assert not world.systemd.need_daemon_reload()


def test_create_dry_run_writes_nothing(world: World, capsys) -> None:
    code, out, _ = devbox(capsys, "create", "demo", "--dry-run")
    assert code == 0
    assert out.splitlines()[-1] == "dry run: nothing written"
    assert world.files() == [] and world.systemd.calls == []


def test_create_no_start(world: World, capsys) -> None:
    code, out, _ = devbox(capsys, "create", "demo", "--no-start")
    assert code == 0
    assert out.splitlines()[-1] == "drone demo is created, not started: devbox start demo"
    assert ("start", "drone-demo.service") not in world.systemd.calls


def test_create_of_an_existing_drone(world: World, capsys) -> None:
    assert devbox(capsys, "create", "demo")[0] == 0
    before = {p: (world.paths.quadlet_dir.parent.parent / p).read_text() for p in world.files()}
    assert devbox(capsys, "create", "demo", "--image", "other:1") == (
        ExitCode.EXISTS,
        "",
        "devbox: drone demo exists already\n",
    )
    assert {p: (world.paths.quadlet_dir.parent.parent / p).read_text() for p in world.files()} == before


def test_create_refuses_to_overwrite_a_foreign_file(world: World, capsys) -> None:
    foreign = world.paths.unit_dir / "drone-demo-creds.socket"
    foreign.parent.mkdir(parents=True)
    foreign.write_text("[Socket]\nListenStream=/tmp/mine\n")
    code, out, err = devbox(capsys, "create", "demo")
    assert (code, out) == (ExitCode.CONFLICT, "")
    assert err == f"devbox: {foreign} exists and was not written by devbox: move it away or use --force\n"
    assert world.files() == ["systemd/user/drone-demo-creds.socket"]
    assert foreign.read_text() == "[Socket]\nListenStream=/tmp/mine\n"
    code, out, _ = devbox(capsys, "create", "demo", "--force")
    assert code == 0 and f"changed    {foreign}" in out
    assert foreign.read_text().startswith("# Managed by devbox.")


def test_create_with_a_missing_image_writes_nothing(world: World, capsys) -> None:
    code, out, err = devbox(capsys, "create", "demo", "--image", "localhost/nope:1")
    assert (code, out) == (ExitCode.IMAGE, "")
    assert (
        err
        == "devbox: image localhost/nope:1 is not present and could not be pulled: podman could not pull localhost/nope:1: manifest unknown\n"
    )
    assert world.files() == [] and world.systemd.calls == []


def test_create_pulls_a_missing_image(world: World, capsys) -> None:
    world.podman.pullable.add("quay.io/acme/dev:1")
    assert devbox(capsys, "create", "demo", "--image", "quay.io/acme/dev:1")[0] == 0
    assert "pull quay.io/acme/dev:1" in world.podman.calls


def test_create_that_fails_to_start_removes_what_it_wrote(world: World, capsys, monkeypatch) -> None:
    monkeypatch.setattr("devbox.commands.lifecycle.journal_lines", lambda unit, n: [f"{unit}: Error: crun: boom"])
    world.systemd.fail_start.add("drone-demo.service")
    code, out, err = devbox(capsys, "create", "demo")
    assert (code, out) == (ExitCode.SYSTEMD, "")
    assert err == (
        "devbox: systemd could not start drone-demo.service: Job for drone-demo.service failed.\n"
        "  drone-demo.service: Error: crun: boom\n"
    )
    assert world.files() == []
    assert world.systemd.calls[-1] == ("daemon-reload", "")
    assert "drone-demo.service" not in world.systemd.loaded


def test_create_that_fails_to_reload_removes_what_it_wrote(world: World, capsys) -> None:
    world.systemd.fail_reload = True
    code, _, err = devbox(capsys, "create", "demo")
    assert code == ExitCode.SYSTEMD
    assert err == "devbox: systemd could not reload the user manager: boom\n"
    assert world.files() == []


def test_max_drones(world: World, capsys) -> None:
    world.paths.config_file.parent.mkdir(parents=True)
    world.paths.config_file.write_text("max_drones = 1\n")
    assert devbox(capsys, "create", "one")[0] == 0
    assert devbox(capsys, "create", "two") == (
        ExitCode.LIMIT,
        "",
        "devbox: the drone limit is reached (1, max_drones in the config)\n",
    )


def test_config_that_is_not_toml(world: World, capsys) -> None:
    world.paths.config_file.parent.mkdir(parents=True)
    world.paths.config_file.write_text("this is = = not toml\n")
    code, out, err = devbox(capsys, "create", "demo")
    assert (code, out) == (ExitCode.CONFIG, "")
    assert err.startswith(f"devbox: {world.paths.config_file}: not valid TOML: ")
    assert err.count("\n") == 1
    assert world.files() == []


@pytest.mark.parametrize("command", [["start"], ["stop"], ["restart"], ["status"], ["destroy", "--yes"], ["logs"]])
def test_commands_on_a_drone_that_does_not_exist(world: World, capsys, command: list[str]) -> None:
    code, out, err = devbox(capsys, command[0], "ghost", *command[1:])
    assert (code, out, err) == (ExitCode.NOT_FOUND, "", "devbox: no such drone: ghost\n")


def test_stop_removes_autostart_and_start_brings_it_back(world: World, capsys) -> None:
    devbox(capsys, "create", "demo")
    dropin = world.paths.quadlet_dir / "drone-demo.container.d/autostart.conf"
    assert dropin.is_file()
    assert devbox(capsys, "stop", "demo") == (0, "drone demo is stopped\n", "")
    assert not dropin.exists() and not dropin.parent.exists()
    assert world.systemd.calls[-4:] == [
        ("daemon-reload", ""),
        ("stop", "drone-demo.service"),
        ("stop", "drone-demo-creds.socket"),
        ("stop", "drone-demo-creds.service"),
    ]
    assert devbox(capsys, "start", "demo") == (0, "drone demo is running\n", "")
    assert dropin.is_file()
    actions = [call for call in world.systemd.calls if call[0] != "states"]  # start looks at the broker too
    assert actions[-2:] == [("daemon-reload", ""), ("start", "drone-demo.service")]


def test_destroy_removes_units_container_and_volume(world: World, capsys) -> None:
    devbox(capsys, "create", "demo")
    world.podman.volumes.add("drone-demo-home")
    socket_dir = world.paths.socket_dir("demo")
    socket_dir.mkdir(parents=True)
    assert devbox(capsys, "destroy", "demo", "--yes") == (
        0,
        "drone demo is destroyed (6 files removed, volume removed)\n",
        "",
    )
    assert world.files() == []  # the clean-up timer's files too: this was the last drone
    assert not socket_dir.exists()
    assert "remove_volume drone-demo-home" in world.podman.calls
    destroy_calls = world.systemd.calls[world.systemd.calls.index(("start", "drone-demo.service")) + 3 :]
    assert destroy_calls == [
        ("states", "drone-demo.service,drone-demo-creds.service,drone-demo-creds.socket"),  # one query
        ("stop", "drone-demo.service"),
        ("reset-failed", "drone-demo.service"),
        ("reset-failed", "drone-demo-creds.service"),
        ("reset-failed", "drone-demo-creds.socket"),
        ("disable", "devbox-cleanup.timer"),
        ("daemon-reload", ""),  # one reload, for the drone's units and the timer's alike
    ]
    assert devbox(capsys, "destroy", "demo", "--yes") == (ExitCode.NOT_FOUND, "", "devbox: no such drone: demo\n")


def test_a_timer_that_will_not_go_still_leaves_the_drone_forgotten(world: World, capsys, monkeypatch) -> None:
    devbox(capsys, "create", "demo")
    world.paths.socket_dir("demo").mkdir(parents=True)

    def refuse(unit: str) -> None:
        raise DevboxError(f"systemd could not disable {unit}: Access denied", ExitCode.SYSTEMD)

    monkeypatch.setattr(world.systemd, "disable", refuse)
    code, _, err = devbox(capsys, "destroy", "demo", "--yes")
    assert (code, err) == (ExitCode.SYSTEMD, "devbox: systemd could not disable devbox-cleanup.timer: Access denied\n")
    assert world.systemd.calls[-1] == ("daemon-reload", "") and "drone-demo.service" not in world.systemd.loaded
    assert not world.paths.socket_dir("demo").exists()
    assert [f for f in world.files() if "drone-demo" in f] == []


def test_destroy_keep_volume(world: World, capsys) -> None:
    devbox(capsys, "create", "demo")
    world.podman.volumes.add("drone-demo-home")
    assert (
        devbox(capsys, "destroy", "demo", "--yes", "--keep-volume")[1]
        == "drone demo is destroyed (6 files removed, volume kept)\n"
    )
    assert world.podman.volumes == {"drone-demo-home"}


def test_destroy_without_yes_and_without_a_terminal(world: World, capsys) -> None:
    devbox(capsys, "create", "demo")
    code, _, err = devbox(capsys, "destroy", "demo")
    assert (code, err) == (ExitCode.USAGE, "devbox: refusing to destroy demo without --yes (no terminal to ask on)\n")
    assert len(world.files()) == 6  # the drone's 4 and the clean-up timer's 2


def _running(name: str, image: str = "localhost/devbox-drone:latest") -> ContainerInfo:
    return ContainerInfo(
        name=f"drone-{name}",
        drone=name,
        state="running",
        image=image,
        started_at=FIXED_NOW.replace(hour=7),
        ports=("127.0.0.1:2201->2222/tcp",),
        labels={"drone": name},
    )


def test_list_json_uses_one_query_of_each(world: World, capsys, monkeypatch) -> None:
    for name in ("alpha", "beta", "gamma"):
        devbox(capsys, "create", name, "--repo", f"acme/{name}")
    devbox(capsys, "stop", "beta")
    world.podman.containers = {"alpha": _running("alpha"), "gamma": _running("gamma")}
    world.systemd.calls.clear()
    world.podman.calls.clear()
    monkeypatch.setattr(cli, "_now", lambda: FIXED_NOW)
    code, out, _ = devbox(capsys, "list", "--json")
    assert code == 0
    data = json.loads(out)
    assert [(d["name"], d["state"], d["autostart"]) for d in data] == [
        ("alpha", "running", True),
        ("beta", "stopped", False),
        ("gamma", "running", True),
    ]
    assert data[0]["uptime_seconds"] == 3600 and data[0]["repos"] == ["acme/alpha"]
    assert world.systemd.calls == [("states", "drone-alpha.service,drone-beta.service,drone-gamma.service")]
    assert world.podman.calls == ["drone_containers"]


def test_list_plain(world: World, capsys, monkeypatch) -> None:
    monkeypatch.setattr(cli, "_now", lambda: FIXED_NOW)
    assert devbox(capsys, "list") == (0, "no drones yet: devbox create NAME --repo ORG/REPO\n", "")
    devbox(capsys, "create", "alpha", "--repo", "acme/alpha", "--ssh-port", "2201")
    world.podman.containers = {"alpha": _running("alpha")}
    assert devbox(capsys, "list")[1] == (
        "NAME   STATE    UPTIME  IMAGE                          REPOS       SSH\n"
        "alpha  running  1h0m    localhost/devbox-drone:latest  acme/alpha  127.0.0.1:2201\n"
    )


def test_status_json(world: World, capsys, monkeypatch) -> None:
    monkeypatch.setattr(cli, "_now", lambda: FIXED_NOW)
    devbox(capsys, "create", "alpha", "--repo", "acme/alpha", "--with-syncthing")
    world.podman.containers = {"alpha": _running("alpha")}
    world.podman.volumes.add("drone-alpha-home")
    device_id = "MFZWI3D-BONSGYC-YLTMRWG-C43ENR5-QXGZDMM-FZWI3DP-ONSGYCY-LTMRWGC"
    world.probe.syncthing_ids["drone-alpha"] = device_id
    code, out, _ = devbox(capsys, "status", "alpha", "--json")
    assert code == 0
    assert json.loads(out) == {
        "name": "alpha",
        "state": "running",
        "unit": "drone-alpha.service",
        "unit_state": "active",
        "unit_sub_state": "running",
        "container_state": "running",
        "image": "localhost/devbox-drone:latest",
        "repos": ["acme/alpha"],
        "created": "2026-11-22T08:00:00Z",
        "started": "2026-11-22T07:00:00Z",
        "uptime_seconds": 3600,
        "restarts": 0,
        "ports": ["127.0.0.1:2201->2222/tcp"],
        "volume": "drone-alpha-home",
        "volume_exists": True,
        "autostart": True,
        "ssh": "127.0.0.1:2201",
        "local_ssh": "127.0.0.1:2201",
        "ssh_command": "devbox ssh alpha",
        "tailscale": False,
        "tailnet_name": None,
        "syncthing": True,
        "with": [],
        "mosh_ports": None,
        "web_ports": {},
        "syncthing_device_id": device_id,
        "workspace": None,
        "dotfiles": None,
        "dotfiles_outcome": None,
        "devcontainer": None,
        "devcontainer_outcome": None,
        "devcontainer_changed": None,
        "compose_outcome": None,
        "killed_for_memory": False,
        "broker": {
            "state": "stopped",
            "socket": {
                "unit": "drone-alpha-creds.socket",
                "state": "inactive",
                "sub_state": "dead",
                "result": "success",
            },
            "service": {
                "unit": "drone-alpha-creds.service",
                "state": "inactive",
                "sub_state": "dead",
                "result": "success",
            },
            "reset": [],
        },
        "keys": [],
        "key_proxy": None,
        "egress": "fenced",  # new drones are fenced by default
    }
    text = devbox(capsys, "status", "alpha")[1]
    assert f"syncthing  {device_id}\n" in text
    assert "ssh        127.0.0.1:2201 (devbox ssh alpha)\n" in text


def test_render_prints_every_unit_and_writes_nothing(world: World, capsys) -> None:
    code, out, _ = devbox(capsys, "render", "demo", "--repo", "acme/demo")
    assert code == 0
    headers = [line for line in out.splitlines() if line.startswith("# --- ")]
    assert headers == [
        f"# --- {world.paths.quadlet_dir}/drone-demo.container",
        f"# --- {world.paths.quadlet_dir}/drone-demo.container.d/autostart.conf",
        f"# --- {world.paths.unit_dir}/drone-demo-creds.socket",
        f"# --- {world.paths.unit_dir}/drone-demo-creds.service",
        f"# --- {world.paths.drones_dir}/demo/authorized_keys",
        f"# --- {world.paths.drones_dir}/demo/hooks.d/devbox-fence.json",
    ]
    assert "Label=io.devbox.repos=acme/demo" in out
    assert "Label=io.devbox.egress=fenced" in out  # new drones are fenced by default
    assert world.files() == [] and world.systemd.calls == []


@pytest.mark.parametrize(("version", "line"), [((5, 4), "PodmanArgs=--memory=4g"), ((5, 8), "Memory=4g")])
def test_render_uses_the_keys_of_the_hosts_quadlet(world: World, capsys, version, line) -> None:
    world.quadlet_version = version
    out = devbox(capsys, "render", "demo", "--memory", "4g")[1]
    assert line in out.splitlines() and "--memory" not in out.replace(line, "")


def test_version(capsys) -> None:
    from devbox import __version__

    assert devbox(capsys, "--version") == (0, f"devbox {__version__}\n", "")


def test_create_with_a_github_app(world: World, capsys, monkeypatch) -> None:
    key = world.paths.config_file.parent / "app.pem"
    key.parent.mkdir(parents=True)
    key.write_bytes(rsa_keypair()[0])  # create checks the key the broker will load
    key.chmod(0o600)
    world.paths.config_file.write_text(f'[github]\napp_id = "123"\nprivate_key = "file:{key}"\n')
    code, _, err = devbox(
        capsys,
        "create",
        "demo",
        "--repo",
        "acme/demo",
        "--permission",
        "issues=read",
        "--permission",
        "pull_requests=none",
        "--no-devcontainer",  # the repository is not fetched: test_devcontainer_create.py does that
    )
    assert code == 0, err
    service = (world.paths.unit_dir / "drone-demo-creds.service").read_text()
    assert f"LoadCredential=github-app-key:{key}\n" in service
    container = (world.paths.quadlet_dir / "drone-demo.container").read_text()
    assert "Label=io.devbox.permissions=contents:write,issues:read\n" in container
    assert "not-a-real-key" not in service + container
    tools = sorted(p.name for p in world.paths.tools_dir.iterdir())
    assert tools == [
        "clone-repos",
        "dotfiles",
        "gh",
        "git-credential-devbox",
        "gitconfig",
        "key-forward",
        "no-containers",
    ]
    assert (world.paths.tools_dir / "gh").stat().st_mode & 0o777 == 0o755


def test_an_env_key_is_kept_owner_only_for_loadcredential(world: World, capsys, monkeypatch) -> None:
    monkeypatch.setenv("GH_APP_KEY", "-----BEGIN RSA PRIVATE KEY-----\nsecret-body\n-----END RSA PRIVATE KEY-----")
    world.paths.config_file.parent.mkdir(parents=True)
    world.paths.config_file.write_text('[github]\napp_id = "123"\nprivate_key = "env:GH_APP_KEY"\n')
    assert devbox(capsys, "create", "demo", "--repo", "acme/demo", "--no-devcontainer")[0] == 0
    copy = world.paths.github_key_copy
    assert copy.stat().st_mode & 0o777 == 0o600 and "secret-body" in copy.read_text()
    assert f"LoadCredential=github-app-key:{copy}\n" in (world.paths.unit_dir / "drone-demo-creds.service").read_text()


def test_a_missing_key_aborts_create_and_writes_nothing(world: World, capsys) -> None:
    world.paths.config_file.parent.mkdir(parents=True)
    world.paths.config_file.write_text('[github]\napp_id = "123"\nprivate_key = "env:NO_SUCH_KEY"\n')
    code, out, err = devbox(capsys, "create", "demo", "--repo", "acme/demo")
    assert (code, out) == (ExitCode.SECRET, "")
    assert err == "devbox: cannot resolve secret env:NO_SUCH_KEY: environment variable NO_SUCH_KEY is not set\n"
    assert world.files() == [] and not world.paths.tools_dir.exists()


def test_destroy_with_a_token_github_never_confirmed_revoked_exits_tokens_live(world: World, capsys) -> None:
    """The drone is gone, but a token of its that could not be revoked is still live: destroy
    says so with its own exit code, and the token stays remembered for the next try."""
    import json as _json
    from datetime import UTC, datetime, timedelta

    from devbox.broker.pending import pending_file

    devbox(capsys, "create", "demo")
    record = pending_file(world.paths.state_dir)
    record.parent.mkdir(parents=True, exist_ok=True)
    expires = (datetime.now(UTC) + timedelta(minutes=50)).isoformat()
    record.write_text(_json.dumps({"tokens": [{"token": "ghs_live", "expires_at": expires, "drone": "demo"}]}))
    code, out, err = devbox(capsys, "destroy", "demo", "--yes")
    assert code == ExitCode.TOKENS_LIVE
    assert err.startswith("devbox: drone demo is destroyed, but GitHub did not confirm the revocation of 1 of its")
    assert "ghs_live" not in err  # a token never reaches a message
    assert world.files() == []  # everything else is gone
    assert "ghs_live" in record.read_text()  # still remembered for the next retry


def test_destroy_counts_only_its_own_drones_live_tokens(world: World, capsys) -> None:
    import json as _json
    from datetime import UTC, datetime, timedelta

    from devbox.broker.pending import pending_file

    devbox(capsys, "create", "demo")
    record = pending_file(world.paths.state_dir)
    record.parent.mkdir(parents=True, exist_ok=True)
    expires = (datetime.now(UTC) + timedelta(minutes=50)).isoformat()
    record.write_text(_json.dumps({"tokens": [{"token": "ghs_other", "expires_at": expires, "drone": "other"}]}))
    assert devbox(capsys, "destroy", "demo", "--yes")[0] == 0
