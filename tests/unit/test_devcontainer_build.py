"""devbox/devcontainer/build.py: the Dev Containers CLI and podman faked at the one seam (argv in, lines out)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from devbox.devcontainer import build
from devbox.devcontainer.model import DevcontainerSource
from devbox.errors import DevboxError, ExitCode

PASSWD = ["root:x:0:0:root:/root:/bin/bash", "vscode:x:1500:1501:VS Code:/home/vscode:/bin/bash"]
METADATA = [{"id": "./features/marker"}, {"remoteUser": "vscode", "postCreateCommand": "echo hi"}]


class FakeTools:
    """Answers the devcontainer CLI and podman like they do; records every argv."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.images: dict[str, dict[str, str]] = {}  # tag -> labels
        self.cli_lines = [
            "[1 ms] @devcontainers/cli 0.89.0. Node.js v20.19.2.",
            '{"outcome":"success","imageName":["x"]}',
        ]
        self.cli_status = 0
        self.contract_status = 0
        self.probe = ["os=debian", "apt=yes", "passwd:", *PASSWD]
        self.image_user = ""

    def __call__(self, argv: list[str], on_line: Callable[[str], None]) -> int:
        self.calls.append(argv)
        if argv[1] == "build" and argv[0].endswith("devcontainer"):
            for line in self.cli_lines:
                on_line(line)
            if self.cli_status == 0:
                self.images[argv[argv.index("--image-name") + 1]] = {build.METADATA_LABEL: json.dumps(METADATA)}
            return self.cli_status
        verb = argv[1:3] if argv[1] == "image" else argv[1:2]
        if verb == ["image", "exists"]:
            return 0 if argv[3] in self.images else 1
        if verb == ["image", "inspect"]:
            labels = self.images.get(argv[-1])
            if labels is None:
                on_line("Error: no such image")
                return 125
            on_line(json.dumps([{"Config": {"Labels": labels, "User": self.image_user}}]))
            return 0
        if verb == ["image", "rm"]:
            self.images.pop(argv[-1], None)
            return 0
        if verb == ["run"]:
            for line in self.probe:
                on_line(line)
            return 0
        if verb == ["build"]:
            on_line("STEP 1/6: FROM x")
            if self.contract_status:
                on_line("devbox-contract: ERROR: command sshd is missing")
                return self.contract_status
            base = argv[argv.index("--build-arg") + 1].removeprefix("BASE=")
            labels = dict(self.images[base])
            labels.update(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "--label")
            self.images[argv[argv.index("--tag") + 1]] = labels
            return 0
        raise AssertionError(argv)

    def cli_calls(self) -> list[list[str]]:
        return [c for c in self.calls if c[0].endswith("devcontainer")]


@pytest.fixture
def workspace(tmp_path: Path) -> DevcontainerSource:
    ws = tmp_path / "My_App"
    dc = ws / ".devcontainer"
    (dc / "features" / "marker").mkdir(parents=True)
    (dc / "devcontainer.json").write_text(
        '{ // a comment\n "build": {"dockerfile": "Dockerfile", "args": {"V": "1"}},\n'
        ' "features": {"./features/marker": {}},\n "remoteUser": "vscode",\n}\n'
    )
    (dc / "Dockerfile").write_text("FROM localhost/devbox-base:trixie\n")
    (dc / "features" / "marker" / "install.sh").write_text("#!/bin/sh\necho marker\n")
    (dc / "features" / "marker" / "devcontainer-feature.json").write_text('{"id": "marker", "version": "1.0.0"}')
    (ws / "README").write_text("not in the context\n")
    return DevcontainerSource(ws, dc / "devcontainer.json", dc)


@pytest.fixture
def tools() -> FakeTools:
    return FakeTools()


@pytest.fixture
def cli(tmp_path: Path) -> str:
    path = tmp_path / "bin" / "devcontainer"
    path.parent.mkdir()
    path.write_text("#!/bin/sh\nexit 99\n")
    path.chmod(0o755)
    return str(path)


def builder(tmp_path: Path, tools: FakeTools, cli: str, **kwargs: object) -> build.CliBuilder:
    return build.CliBuilder(tmp_path / "logs", podman="podman", cli=cli, runner=tools, **kwargs)  # type: ignore[arg-type]


# --- the hash ---


def test_the_hash_follows_the_config_the_context_the_features_and_modes_but_not_the_rest(workspace):
    first = build.config_hash(workspace)
    assert first == build.config_hash(workspace)
    (workspace.workspace / "README").write_text("changed outside the context\n")
    (workspace.workspace / ".git").mkdir()
    assert build.config_hash(workspace) == first
    changes: list[Callable[[], object]] = [
        lambda: workspace.config_file.write_text(workspace.config_file.read_text().replace('"1"', '"2"')),
        lambda: (workspace.context_dir / "Dockerfile").write_text("FROM localhost/devbox-base:trixie\nRUN true\n"),
        lambda: (workspace.context_dir / "features" / "marker" / "install.sh").chmod(0o755),
        lambda: (workspace.context_dir / "features" / "marker" / "install.sh").rename(
            workspace.context_dir / "features" / "marker" / "setup.sh"
        ),
    ]
    seen = {first}
    for change in changes:
        change()
        now = build.config_hash(workspace)
        assert now not in seen
        seen.add(now)


def test_a_local_feature_outside_the_context_is_hashed_too(tmp_path):
    ws = tmp_path / "ws"
    (ws / "features" / "f").mkdir(parents=True)
    (ws / ".devcontainer.json").write_text('{"image": "x", "features": {"./features/f": {}}}')
    (ws / "features" / "f" / "install.sh").write_text("a")
    context = tmp_path / "empty"
    context.mkdir()
    source = DevcontainerSource(ws, ws / ".devcontainer.json", context)
    before = build.config_hash(source)
    (ws / "features" / "f" / "install.sh").write_text("b")
    assert build.config_hash(source) != before


def test_config_changed(workspace):
    recorded = build.config_hash(workspace)
    assert not build.config_changed(workspace, recorded)
    assert not build.config_changed(workspace, None)  # not a devcontainer drone
    (workspace.context_dir / "Dockerfile").write_text("FROM other\n")
    assert build.config_changed(workspace, recorded)


def test_tags_are_derived_from_the_workspace_and_the_hash(workspace):
    tag, base = build.image_tags(workspace, "ab" * 32)
    assert tag == "localhost/devbox-dc-my-app:" + "ab" * 10
    assert base == tag + "-cli"


# --- building ---


def test_a_first_build_runs_the_cli_then_the_contract_layer_and_reads_the_user(tmp_path, workspace, tools, cli):
    steps: list[str] = []
    built = builder(tmp_path, tools, cli).build(workspace, steps.append)
    digest = build.config_hash(workspace)
    tag, base = build.image_tags(workspace, digest)
    assert (built.tag, built.config_hash) == (tag, digest)
    assert built.metadata == tuple(METADATA)
    assert (built.remote_user, built.remote_uid, built.remote_gid, built.remote_home) == (
        "vscode",
        1500,
        1501,
        "/home/vscode",
    )
    [cli_argv] = tools.cli_calls()
    assert cli_argv == [
        cli,
        "build",
        "--docker-path",
        "podman",
        "--workspace-folder",
        str(workspace.workspace),
        "--config",
        str(workspace.config_file),
        "--image-name",
        base,
        "--no-lockfile",
    ]
    [contract] = [c for c in tools.calls if c[:2] == ["podman", "build"]]
    assert contract[:7] == ["podman", "build", "--pull=never", "--build-arg", f"BASE={base}", "--tag", tag]
    assert contract[-3:-1] == ["--file", str(build.templates_dir() / "image" / "Containerfile.contract")]
    assert contract[7:9] == ["--build-arg", "DEVBOX_USER=1500:1501"]  # the drone runs as the remote user
    assert contract[-4] == "--layers=false"  # no intermediate image per instruction: the tag is the cache
    labels = tools.images[tag]
    assert labels["io.devbox.devcontainer-hash"] == digest and labels["io.devbox.remote-uid"] == "1500"
    [probe] = [c for c in tools.calls if c[1] == "run"]
    assert "--network=none" in probe and "--pull=never" in probe and probe[-2:] == ["-c", build.PROBE]
    assert any("Dev Containers CLI" in s for s in steps)
    log = tmp_path / "logs" / f"{tag.rsplit('/', 1)[1].replace(':', '-')}.log"
    assert "@devcontainers/cli 0.89.0" in log.read_text()


def test_a_service_s_build_argument_makes_an_image_of_its_own_on_the_same_cli_image(tmp_path, workspace, tools, cli):
    plain = builder(tmp_path, tools, cli).build(workspace, lambda _: None)
    tools.calls.clear()
    with_web = builder(tmp_path, tools, cli).build(workspace, lambda _: None, build_args=("DEVBOX_WEB_TERMINAL=1",))
    tag, base = build.image_tags(workspace, build.config_hash(workspace), ("DEVBOX_WEB_TERMINAL=1",))
    assert with_web.tag == tag != plain.tag and with_web.config_hash == plain.config_hash  # not "changed"
    assert base == build.image_tags(workspace, plain.config_hash)[1]
    [contract] = [c for c in tools.calls if c[:2] == ["podman", "build"]]
    assert contract[7:11] == ["--build-arg", "DEVBOX_USER=1500:1501", "--build-arg", "DEVBOX_WEB_TERMINAL=1"]
    tools.calls.clear()
    assert (
        builder(tmp_path, tools, cli).build(workspace, lambda _: None, build_args=("DEVBOX_WEB_TERMINAL=1",))
        == with_web
    )
    assert tools.cli_calls() == []  # cached like any other


def test_a_second_build_from_the_same_config_never_calls_the_cli(tmp_path, workspace, tools, cli):
    first = builder(tmp_path, tools, cli).build(workspace, lambda _: None)
    tools.calls.clear()
    again = builder(tmp_path, tools, cli).build(workspace, lambda _: None)
    assert again == first
    assert tools.cli_calls() == []
    assert [c[1:3] for c in tools.calls] == [["image", "inspect"]]  # one podman process, the whole cost


def test_a_cached_image_podman_cannot_describe_is_an_error_not_a_build(tmp_path, workspace, tools, cli):
    builder(tmp_path, tools, cli).build(workspace, lambda _: None)
    tools.calls.clear()
    garbled = tools.__call__

    def runner(argv, on_line):
        if argv[1:3] == ["image", "inspect"]:
            on_line("Error: something unreadable")
            return 0
        return garbled(argv, on_line)

    with pytest.raises(DevboxError) as caught:
        build.CliBuilder(tmp_path / "logs", podman="podman", cli=cli, runner=runner).build(workspace, lambda _: None)
    assert caught.value.code == ExitCode.PODMAN and "gave no JSON" in caught.value.message
    assert tools.cli_calls() == []


def test_rebuild_forces_the_cli_even_when_the_tag_exists(tmp_path, workspace, tools, cli):
    builder(tmp_path, tools, cli).build(workspace, lambda _: None)
    builder(tmp_path, tools, cli).build(workspace, lambda _: None, fresh=True)
    assert len(tools.cli_calls()) == 2


def test_a_failed_fresh_build_keeps_the_tag_other_drones_run(tmp_path, workspace, tools, cli):
    built = builder(tmp_path, tools, cli).build(workspace, lambda _: None)
    tools.cli_status = 1
    with pytest.raises(DevboxError):
        builder(tmp_path, tools, cli).build(workspace, lambda _: None, fresh=True)
    assert built.tag in tools.images


def test_the_user_falls_back_to_container_user_then_the_image_user_then_root():
    assert build.remote_user_name(({"containerUser": "a"}, {"remoteUser": "b"}), "c") == "b"
    assert build.remote_user_name(({"containerUser": "a"},), "c:c") == "a"
    assert build.remote_user_name((), "1500:1500") == "1500"
    assert build.remote_user_name((), "") == "root"
    assert build.find_account(PASSWD, "1500").name == "vscode"
    with pytest.raises(DevboxError, match="'nobody' .* not in the image's /etc/passwd"):
        build.find_account(PASSWD, "nobody")


def test_a_failed_cli_build_leaves_no_tag_and_says_the_last_error_and_the_log(tmp_path, workspace, tools, cli):
    tools.cli_status = 1
    tools.cli_lines = [
        "[2 ms] Start: Run: podman build ...",
        'Error: building at STEP "RUN false": while running runtime: exit status 1',
        "[3 ms] Exit code 1",
        '{"outcome":"error","message":"Command failed: podman build -f /tmp/x","description":"An error occurred"}',
    ]
    _, base = build.image_tags(workspace, build.config_hash(workspace))
    tools.images[base] = {}  # as if the CLI had tagged it before failing
    with pytest.raises(DevboxError) as caught:
        builder(tmp_path, tools, cli).build(workspace, lambda _: None)
    assert caught.value.code == ExitCode.IMAGE
    message = str(caught.value)
    assert message.startswith("devcontainer build failed (exit 1): Command failed: podman build -f /tmp/x; full log: ")
    assert "\n" not in message
    assert Path(message.rsplit("full log: ", 1)[1]).read_text().count("Error: building at STEP") == 1
    assert tools.images == {}


def test_a_failed_contract_layer_removes_both_tags(tmp_path, workspace, tools, cli):
    tools.contract_status = 1
    with pytest.raises(
        DevboxError, match="devbox's layer .* devbox-contract: ERROR: command sshd is missing; full log"
    ):
        builder(tmp_path, tools, cli).build(workspace, lambda _: None)
    assert tools.images == {}


def test_an_image_without_apt_get_is_refused_naming_what_is_missing(tmp_path, workspace, tools, cli):
    tools.probe = ["os=alpine", "apt=no", "passwd:", *PASSWD]
    with pytest.raises(DevboxError) as caught:
        builder(tmp_path, tools, cli).build(workspace, lambda _: None)
    assert caught.value.code == ExitCode.IMAGE
    assert str(caught.value) == (
        "the devcontainer image is based on alpine, which has no apt-get: devbox adds openssh-server, git, curl, "
        "ca-certificates, sudo, procps and jq with apt-get; base the image on Debian or Ubuntu"
    )
    assert tools.images == {}


def test_no_cli_is_an_environment_error_with_the_install_command(tmp_path, workspace, tools):
    with pytest.raises(DevboxError) as caught:
        builder(tmp_path, tools, str(tmp_path / "absent")).build(workspace, lambda _: None)
    assert caught.value.code == ExitCode.ENVIRONMENT
    assert "npm install -g @devcontainers/cli@0.89.0" in str(caught.value)


def test_parse_cli_result_and_metadata():
    assert build.parse_cli_result(["x", '{"outcome":"success","imageName":["a"]}', ""]) == {
        "outcome": "success",
        "imageName": ["a"],
    }
    assert build.parse_cli_result(["{not json", "no result"]) is None
    assert build.parse_metadata('{"remoteUser": "a"}') == ({"remoteUser": "a"},)
    assert build.parse_metadata('[{"a": 1}, 3]') == ({"a": 1},)
    with pytest.raises(DevboxError, match="not JSON"):
        build.parse_metadata("[")


def test_the_cli_never_writes_a_lockfile_into_the_workspace_and_honours_a_committed_one(tmp_path):
    config = tmp_path / "devcontainer.json"
    assert build.lockfile_flag(config) == "--no-lockfile"
    (tmp_path / "devcontainer-lock.json").write_text("{}")
    assert build.lockfile_flag(config) == "--frozen-lockfile"
    assert build.lockfile_flag(tmp_path / ".devcontainer.json") == "--no-lockfile"
