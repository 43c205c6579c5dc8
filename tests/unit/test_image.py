"""devbox/image.py and `devbox image`: podman faked at its one seam, image.run_process (argv in, lines out)."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest

from devbox import config
from devbox.commands import image
from devbox.errors import DevboxError, ExitCode
from tests.unit.test_cli import devbox

ROOT = Path(__file__).resolve().parents[2]
IMAGE_ID = "sha256:" + "ab12cd34" * 8


class FakePodman:
    """Answers `podman build`, `podman run ... cat image-info` and `podman load` like Podman 5 does."""

    def __init__(
        self, info: str = "code-server=installed\ntailscale=missing\nbase=Debian GNU/Linux 13 (trixie)\n"
    ) -> None:
        self.calls: list[list[str]] = []
        self.info = info
        self.build_status = 0
        self.build_lines = [
            "STEP 1/12: FROM localhost/devbox-base:trixie",
            "STEP 6/12: RUN set -eu; ...",
            "devbox-image: WARNING: pkgs.tailscale.com is not reachable; this image has no tailscale "
            "(drones will only be reachable on their local SSH port)",
            'STEP 12/12: CMD ["/usr/local/bin/devbox-drone-init"]',
            "COMMIT localhost/devbox-drone:latest",
            "Successfully tagged localhost/devbox-drone:latest",
        ]
        self.missing = False

    def __call__(self, argv: list[str], on_line: Callable[[str], None]) -> int:
        self.calls.append(argv)
        if self.missing:
            raise FileNotFoundError(argv[0])
        if argv[1] == "build":
            for line in self.build_lines:
                on_line(line)
            if self.build_status == 0:
                Path(argv[argv.index("--iidfile") + 1]).write_text(IMAGE_ID)
            return self.build_status
        if argv[1] == "run":
            for line in self.info.splitlines():
                on_line(line)
            return 0
        if argv[1] == "load":
            on_line("Getting image source signatures")
            on_line("Loaded image: localhost/devbox-drone:latest")
            return 0
        raise AssertionError(argv)


@pytest.fixture
def podman(monkeypatch: pytest.MonkeyPatch) -> FakePodman:
    fake = FakePodman()
    monkeypatch.setattr(image, "run_process", fake)
    return fake


def test_the_default_tag_is_the_configs_default_image() -> None:
    assert image.DEFAULT_TAG == config.DEFAULT_IMAGE


def test_the_build_context_is_packaged() -> None:
    context = image.context_dir()
    assert {p.name for p in context.iterdir()} >= {
        "Containerfile",
        "devbox-drone-init",
        "CONTRACT.md",
        "devbox-install-code-server",
        "devbox-code-server",
    }
    assert context == ROOT / "templates" / "image"


def test_build_argv_and_result(podman: FakePodman) -> None:
    lines: list[str] = []
    clock = iter([100.0, 183.0])
    result = image.build(
        image.BuildRequest(base="localhost/devbox-base:trixie"), lines.append, clock=lambda: next(clock)
    )
    build, run = podman.calls
    iidfile = build[build.index("--iidfile") + 1]
    assert build == [
        "podman",
        "build",
        "--pull=missing",
        "--tag",
        "localhost/devbox-drone:latest",
        "--iidfile",
        iidfile,
        "--build-arg",
        "TAILSCALE=auto",
        "--build-arg",
        "CODE_SERVER=auto",
        "--build-arg",
        "BASE=localhost/devbox-base:trixie",
        str(ROOT / "templates" / "image"),
    ]
    assert not Path(iidfile).exists()  # a temporary directory, gone after the build
    assert run == [
        "podman",
        "run",
        "--rm",
        "--pull=never",
        "--network=none",
        "--entrypoint",
        "cat",
        "ab12cd34" * 8,
        "/usr/share/devbox/image-info",
    ]
    assert lines == podman.build_lines  # every line reaches the display
    assert result.info == {"code-server": "installed", "tailscale": "missing", "base": "Debian GNU/Linux 13 (trixie)"}
    assert result.summary() == (
        "built localhost/devbox-drone:latest (image ab12cd34ab12, 1m23s; code-server: installed; tailscale: missing)"
    )
    [warning] = result.warnings()
    assert "has no tailscale (pkgs.tailscale.com was not reachable)" in warning


@pytest.mark.parametrize(
    ("pull", "tailscale", "code_server", "expected"),
    [
        (True, "required", "auto", ["--pull=always", "TAILSCALE=required", "CODE_SERVER=auto"]),
        (False, "skip", "required", ["--pull=never", "TAILSCALE=skip", "CODE_SERVER=required"]),
        (None, "auto", "skip", ["--pull=missing", "TAILSCALE=auto", "CODE_SERVER=skip"]),
    ],
)
def test_pull_tailscale_and_code_server_options(podman: FakePodman, pull, tailscale, code_server, expected) -> None:
    request = image.BuildRequest(tag="localhost/mine:1", pull=pull, tailscale=tailscale, code_server=code_server)
    image.build(request, lambda _: None)
    build = podman.calls[0]
    assert set(expected) <= set(build) and "localhost/mine:1" in build
    assert not any(a.startswith("BASE=") for a in build)  # the Containerfile's own default base


def test_an_image_with_tailscale_and_code_server_has_no_warning(podman: FakePodman) -> None:
    podman.info = "tailscale=installed\ncode-server=installed\n"
    result = image.build(image.BuildRequest(), lambda _: None)
    assert result.tailscale == "installed" and result.warnings() == []
    podman.info = "tailscale=skipped\ncode-server=skipped\n"
    [warning] = image.build(image.BuildRequest(), lambda _: None).warnings()
    assert "(--tailscale skip)" in warning  # a skipped code-server is what was asked for: no warning


def test_an_image_without_code_server_warns(podman: FakePodman) -> None:
    podman.info = "tailscale=installed\ncode-server=missing\n"
    result = image.build(image.BuildRequest(), lambda _: None)
    assert result.code_server == "missing"
    assert result.warnings() == [
        "warning: localhost/devbox-drone:latest has no code-server (the build's devbox-image line says why): "
        "--with code-server does not work in its drones; build with --code-server required to be sure"
    ]
    podman.info = "tailscale=installed\n"  # an image from before code-server
    assert image.build(image.BuildRequest(), lambda _: None).code_server == "unknown"


@pytest.mark.parametrize(
    ("request_", "code", "message"),
    [
        (image.BuildRequest(tailscale="maybe"), ExitCode.INVALID_INPUT, "invalid --tailscale 'maybe'"),
        (image.BuildRequest(code_server="yes"), ExitCode.INVALID_INPUT, "invalid --code-server 'yes'"),
        (image.BuildRequest(tag="Not A Tag"), ExitCode.INVALID_INPUT, "invalid image reference"),
        (image.BuildRequest(base="bad//base"), ExitCode.INVALID_INPUT, "invalid image reference"),
    ],
)
def test_bad_requests_run_nothing(podman: FakePodman, request_, code, message) -> None:
    with pytest.raises(DevboxError) as err:
        image.build(request_, lambda _: None)
    assert err.value.code == code and message in err.value.message
    assert podman.calls == []


def test_a_failed_build_is_an_image_error_with_podman_s_last_lines(podman: FakePodman) -> None:
    podman.build_status = 125
    podman.build_lines = [
        "STEP 5/12: RUN apt-get ...",
        "E: Unable to locate package gh",
        'Error: building at STEP "RUN apt-get ...": while running runtime: exit status 100',
    ]
    with pytest.raises(DevboxError) as err:
        image.build(image.BuildRequest(), lambda _: None)
    assert err.value.code == ExitCode.IMAGE
    assert err.value.message == (
        "podman build of localhost/devbox-drone:latest failed (exit 125): "
        'Error: building at STEP "RUN apt-get ...": while running runtime: exit status 100'
    )
    assert err.value.details == podman.build_lines
    assert len(podman.calls) == 1  # no image-info read
    with pytest.raises(DevboxError) as err:
        image.build(image.BuildRequest(), lambda _: None, tail_on_error=False)
    assert err.value.details == []


def test_podman_missing(podman: FakePodman) -> None:
    podman.missing = True
    with pytest.raises(DevboxError) as err:
        image.build(image.BuildRequest(), lambda _: None)
    assert (err.value.code, err.value.message) == (ExitCode.ENVIRONMENT, "podman is not installed")


def test_load(podman: FakePodman, tmp_path: Path) -> None:
    archive = tmp_path / "result"
    archive.write_bytes(b"tar")
    lines: list[str] = []
    assert image.load(str(archive), lines.append) == ["localhost/devbox-drone:latest"]
    assert podman.calls == [["podman", "load", "--input", str(archive)]]
    assert lines[-1] == "Loaded image: localhost/devbox-drone:latest"
    with pytest.raises(DevboxError) as err:
        image.load(str(tmp_path / "absent"), lines.append)
    assert err.value.code == ExitCode.INVALID_INPUT and len(podman.calls) == 1


def test_step_display_on_a_terminal_and_piped() -> None:
    steps = [
        "STEP 1/2: FROM x",
        "Get:1 http://deb.debian.org ...",
        "devbox-image: WARNING: no tailscale",
        "STEP 2/2: CMD",
    ]
    piped = io.StringIO()
    display = image.StepDisplay(piped, tty=False)
    for line in steps:
        display(line)
    display.clear()
    assert piped.getvalue() == "\n".join(steps) + "\n"

    tty = io.StringIO()
    display = image.StepDisplay(tty, tty=True)
    for line in steps:
        display(line)
    display.clear()
    assert tty.getvalue() == (
        "\r\x1b[KSTEP 1/2: FROM x\r\x1b[Kdevbox-image: WARNING: no tailscale\n\r\x1b[KSTEP 2/2: CMD\r\x1b[K"
    )


# --- the CLI ---


def test_cli_image_build(podman: FakePodman, capsys) -> None:
    code, out, err = devbox(
        capsys, "image", "build", "--base", "localhost/devbox-base:trixie", "--no-pull", "--code-server", "required"
    )
    assert code == 0
    assert out.startswith("built localhost/devbox-drone:latest (image ab12cd34ab12, ")
    assert out.endswith("; code-server: installed; tailscale: missing)\n")
    assert err.splitlines()[: len(podman.build_lines)] == podman.build_lines  # piped: plain lines
    assert err.splitlines()[-1].startswith("devbox: warning: localhost/devbox-drone:latest has no tailscale")
    assert "--pull=never" in podman.calls[0] and "CODE_SERVER=required" in podman.calls[0]


def test_cli_image_build_failure(podman: FakePodman, capsys) -> None:
    podman.build_status = 1
    podman.build_lines = ["Error: no such image: localhost/nope"]
    code, out, err = devbox(capsys, "image", "build", "--base", "localhost/nope")
    assert (code, out) == (ExitCode.IMAGE, "")
    assert err == (
        "Error: no such image: localhost/nope\n"
        "devbox: podman build of localhost/devbox-drone:latest failed (exit 1): Error: no such image: localhost/nope\n"
    )


def test_cli_image_load(podman: FakePodman, capsys, tmp_path: Path) -> None:
    archive = tmp_path / "result"
    archive.write_bytes(b"tar")
    code, out, err = devbox(capsys, "image", "load", str(archive))
    assert (code, out) == (0, "loaded localhost/devbox-drone:latest\n")
    assert "Loaded image: localhost/devbox-drone:latest" in err
