from __future__ import annotations

import pytest

from devbox.drone.spec import DroneSpec, name_from_repo, parse_memory, validate_name
from devbox.errors import DevboxError, ExitCode
from tests.fakes import FIXED_NOW


@pytest.mark.parametrize("name", ["x", "ab", "a1", "my-proj", "a" * 40, "a-b-c"])
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    ("repo", "name"),
    [("acme/demo", "acme-demo"), ("Acme/My_Repo.js", "acme-my-repo-js"), ("a/b", "a-b")],
)
def test_names_derived_from_repos(repo: str, name: str) -> None:
    assert name_from_repo(repo) == name


@pytest.mark.parametrize("repo", ["acme/x--y", "acme/-y", "acme/y_"])
def test_derived_names_are_refused_not_rewritten(repo: str) -> None:
    with pytest.raises(DevboxError) as error:
        name_from_repo(repo)
    assert error.value.code == ExitCode.INVALID_INPUT and "give NAME explicitly" in error.value.message


@pytest.mark.parametrize(
    ("given", "normal"), [("4G", "4g"), ("512m", "512m"), ("1.5g", "1.5g"), ("10000000", "10000000")]
)
def test_memory(given: str, normal: str) -> None:
    assert parse_memory(given) == normal


def test_spec_labels_and_names() -> None:
    spec = DroneSpec.build(
        name=None, repos=["acme/demo", "acme/lib"], image="img:1", created=FIXED_NOW, version="9", ssh_port=2201
    )
    assert (spec.name, spec.names.unit, spec.names.service, spec.names.volume) == (
        "acme-demo",
        "drone-acme-demo",
        "drone-acme-demo.service",
        "drone-acme-demo-home",
    )
    assert spec.labels() == {
        "io.devbox.drone": "acme-demo",
        "io.devbox.version": "9",
        "io.devbox.created": "2026-11-22T08:00:00Z",
        "io.devbox.repos": "acme/demo,acme/lib",
        "io.devbox.syncthing": "false",
        "io.devbox.ssh-port": "2201",
    }


def test_the_same_repo_twice_is_refused() -> None:
    with pytest.raises(DevboxError, match="the same repository is given twice"):
        DroneSpec.build(name="a", repos=["acme/x", "acme/x"], image="i", created=FIXED_NOW, version="1")


def test_labels_read_back_as_the_spec_that_wrote_them() -> None:
    """The one table: labels() written, declared_fields() read, give the same fields back."""
    from datetime import UTC, datetime

    from devbox.drone.spec import LABEL_KEYS, declared_fields
    from devbox.names import LABEL_PREFIX

    spec = DroneSpec.build(
        name="demo",
        repos=["acme/demo", "acme/lib"],
        image="localhost/devbox-drone:latest",
        created=datetime(2026, 11, 30, 12, 0, tzinfo=UTC),
        version="1.2.3",
        ssh_port=2205,
        syncthing=True,
        services=("syncthing", "mosh", "web-terminal"),
        mosh_ports="60001-60004",
        web_ports="web-terminal:7705",
        permissions={"contents": "write", "issues": "read"},
        idle_stop="12h",
        idle_destroy="14d",
        keep=True,
        tailscale=True,
        login_server="https://hs.example.org",
        tailscale_ssh=True,
        dotfiles_url="https://github.com/me/dotfiles",
        dotfiles_branch="main",
        path="/home/dev/src/demo",
        devcontainer=".devcontainer/devcontainer.json",
        env={"APP_ENV": "dev", "MINE": "1"},
        devcontainer_env=("APP_ENV",),
        devcontainer_hash="0123abcd",
        login_user="vscode",
        ports=((3000, 3000), (8081, 8080)),
        keys=["openai", "anthropic"],
        egress="allow:api.example.com:443,[2001:db8::1],10.1.2.3:8080",
    )
    labels = {key.removeprefix(LABEL_PREFIX): value for key, value in spec.labels().items()}
    assert set(labels) == LABEL_KEYS  # every label of the table is written for a drone that has them all
    for field, value in declared_fields(labels).items():
        assert value == getattr(spec, field), field


def test_restore_options_keep_absent_flags_off() -> None:
    """A unit without io.devbox.tailscale restores as off the tailnet, never as 'the config decides'."""
    from devbox.drone.spec import label_options

    options = label_options({"drone": "demo", "repos": "acme/demo", "syncthing": "true", "ssh-port": "2201"})
    assert options["tailscale"] is False and options["keep"] is False
    assert options["syncthing"] is True and options["ssh_port"] == 2201
    assert options["idle_stop"] is None


def test_a_damaged_label_reads_as_its_default_not_a_crash() -> None:
    from devbox.drone.spec import declared_fields

    fields = declared_fields({"drone": "demo", "ssh-port": "22x", "idle-stop": "soon", "created": "yesterday"})
    assert fields["ssh_port"] is None and fields["idle_stop"] is None and fields["created"] is None
