"""`devbox image`: build the default drone image from the packaged build context, or load the Nix one.

The build context is `templates/image/` (shipped in the wheel): Containerfile, devbox-drone-init,
CONTRACT.md. Podman is run as a process with an argv list, through one seam (`Runner`), so tests
see exactly what would run. Errors are DevboxError with ExitCode.IMAGE.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from devbox.errors import DevboxError, ExitCode, cannot_run
from devbox.host.process import Runner, last_error, run_process
from devbox.values import rough_duration

DEFAULT_TAG = "localhost/devbox-drone:latest"  # devbox.config.DEFAULT_IMAGE
INSTALL_MODES = ("auto", "required", "skip")  # --tailscale and --code-server: the Containerfile's build args
IMAGE_INFO = "/usr/share/devbox/image-info"  # key=value lines the Containerfile writes
MARK = "devbox-image:"  # the Containerfile's own lines (the Tailscale warning) start with this


def context_dir() -> Path:
    from devbox.paths import templates_dir

    path = templates_dir() / "image"
    if not (path / "Containerfile").is_file():
        raise DevboxError(f"the drone image's build context is missing from this installation ({path})", ExitCode.IMAGE)
    return path


@dataclass(frozen=True)
class BuildRequest:
    tag: str = DEFAULT_TAG
    base: str | None = None  # the Containerfile's default: docker.io/library/debian:trixie-slim
    tailscale: str = "auto"
    code_server: str = "auto"
    pull: bool | None = None  # True: --pull=always, False: --pull=never, None: --pull=missing
    podman: str = "podman"


@dataclass(frozen=True)
class BuildResult:
    tag: str
    image_id: str
    seconds: float
    info: dict[str, str] = field(default_factory=dict)

    @property
    def tailscale(self) -> str:
        """installed, missing, skipped, or unknown (an image-info without the line)."""
        return self.info.get("tailscale", "unknown")

    @property
    def code_server(self) -> str:
        """installed, missing, skipped, or unknown (an image built before code-server was in it)."""
        return self.info.get("code-server", "unknown")

    def summary(self) -> str:
        took = rough_duration(self.seconds)
        return (
            f"built {self.tag} (image {self.image_id[:12]}, {took}; "
            f"code-server: {self.code_server}; tailscale: {self.tailscale})"
        )

    def warnings(self) -> list[str]:
        found = []
        if self.code_server == "missing":
            found.append(
                f"warning: {self.tag} has no code-server (the build's devbox-image line says why): "
                "--with code-server does not work in its drones; build with --code-server required to be sure"
            )
        if self.tailscale != "installed":
            why = "--tailscale skip" if self.tailscale == "skipped" else "pkgs.tailscale.com was not reachable"
            found.append(
                f"warning: {self.tag} has no tailscale ({why}): its drones are reachable on their local SSH port "
                "only; build where pkgs.tailscale.com answers, with --tailscale required, to be sure"
            )
        return found


def build_argv(request: BuildRequest, context: Path, iidfile: str) -> list[str]:
    pull = {True: "always", False: "never", None: "missing"}[request.pull]
    argv = [request.podman, "build", f"--pull={pull}", "--tag", request.tag, "--iidfile", iidfile]
    argv += ["--build-arg", f"TAILSCALE={request.tailscale}", "--build-arg", f"CODE_SERVER={request.code_server}"]
    if request.base:
        argv += ["--build-arg", f"BASE={request.base}"]
    return [*argv, str(context)]


def info_argv(request: BuildRequest, image: str) -> list[str]:
    return [request.podman, "run", "--rm", "--pull=never", "--network=none", "--entrypoint", "cat", image, IMAGE_INFO]


def build(
    request: BuildRequest,
    on_line: Callable[[str], None],
    runner: Runner | None = None,
    clock: Callable[[], float] = time.monotonic,
    tail_on_error: bool = True,
) -> BuildResult:
    """podman build on the packaged context; every output line goes to on_line. On failure the
    error carries podman's last lines (tail_on_error: when on_line did not show them all)."""
    from devbox.values import validate_image

    validate_image(request.tag)
    if request.base:
        validate_image(request.base)
    for option, value in (("--tailscale", request.tailscale), ("--code-server", request.code_server)):
        if value not in INSTALL_MODES:
            raise DevboxError(f"invalid {option} {value!r}: use {', '.join(INSTALL_MODES)}", ExitCode.INVALID_INPUT)
    context = context_dir()
    tail: deque[str] = deque(maxlen=15)

    def keep(line: str) -> None:
        tail.append(line)
        on_line(line)

    start = clock()
    with tempfile.TemporaryDirectory(prefix="devbox-image-") as tmp:
        iidfile = os.path.join(tmp, "iid")
        status = _run(runner, build_argv(request, context, iidfile), keep)
        if status != 0:
            raise DevboxError(
                f"podman build of {request.tag} failed (exit {status}): {_last_error(tail)}",
                ExitCode.IMAGE,
                details=list(tail) if tail_on_error else [],
            )
        try:
            image_id = Path(iidfile).read_text().strip().removeprefix("sha256:")
        except OSError:
            image_id = ""
    seconds = clock() - start
    return BuildResult(request.tag, image_id, seconds, read_info(request, image_id or request.tag, runner))


def read_info(request: BuildRequest, image: str, runner: Runner | None = None) -> dict[str, str]:
    """The image's /usr/share/devbox/image-info (written at build time: what the build could install)."""
    lines: list[str] = []
    status = _run(runner, info_argv(request, image), lines.append)
    if status != 0:
        raise DevboxError(
            f"cannot read {IMAGE_INFO} from {image} (exit {status}): {_last_error(lines)}",
            ExitCode.IMAGE,
        )
    info = {}
    for line in lines:
        key, sep, value = line.partition("=")
        if sep and key.strip():
            info[key.strip()] = value.strip()
    return info


def load(path: str, on_line: Callable[[str], None], runner: Runner | None = None, podman: str = "podman") -> list[str]:
    """podman load of an image archive (the Nix image: `nix build .#drone-image` gives ./result)."""
    if not os.path.isfile(path):
        raise DevboxError(f"no image archive at {path}", ExitCode.INVALID_INPUT)
    lines: list[str] = []

    def keep(line: str) -> None:
        lines.append(line)
        on_line(line)

    status = _run(runner, [podman, "load", "--input", path], keep)
    if status != 0:
        raise DevboxError(f"podman load {path} failed (exit {status}): {_last_error(lines)}", ExitCode.IMAGE)
    return [line.split(":", 1)[1].strip() for line in lines if line.startswith("Loaded image")]


def _run(runner: Runner | None, argv: list[str], on_line: Callable[[str], None]) -> int:
    try:
        return (runner or run_process)(argv, on_line)  # looked up at call time: tests replace it
    except FileNotFoundError:
        raise DevboxError(f"{argv[0]} is not installed", ExitCode.ENVIRONMENT) from None
    except OSError as exc:
        raise cannot_run(argv[0], exc, ExitCode.IMAGE) from None


def _last_error(lines: deque[str] | list[str]) -> str:
    return last_error(lines, ("error", "devbox-image: error"))


class StepDisplay:
    """Podman's output on a terminal: one line, the current STEP, rewritten in place; the image's own
    `devbox-image:` lines stay. Piped: every line, plain."""

    def __init__(self, stream: TextIO | None = None, tty: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.shown = False

    def __call__(self, line: str) -> None:
        if not self.tty:
            print(line, file=self.stream, flush=True)
        elif line.startswith("STEP "):
            width = max(20, _columns() - 1)
            self.stream.write("\r\x1b[K" + (line if len(line) <= width else line[: width - 1] + "…"))
            self.stream.flush()
            self.shown = True
        elif line.startswith(MARK):
            self.clear()
            print(line, file=self.stream, flush=True)

    def clear(self) -> None:
        if self.tty and self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False


def _columns() -> int:
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns or 80  # a pty may say 0
    except OSError:
        return 80
