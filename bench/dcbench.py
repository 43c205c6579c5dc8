"""bench.py's devcontainer part: a drone from a devcontainer.json against the bare commands, same run.

Each repetition, on a private copy of the workspace (named bench-dc, so devbox tags
localhost/devbox-dc-bench-dc:HASH), starting with none of its images or build layers present:

  devbox:  (a) `devbox create --path` that builds (the Dev Containers CLI, then devbox's contract
           layer) and (b) a second drone from the same config, which must not build: each timed
           until an SSH login (`ssh ... true` as the drone's login user, by key) succeeds; then
           (d) `podman run` of the image devbox built, the way its unit runs it, to the same login.
  bare:    (c) `devcontainer build --docker-path podman` with nothing cached, then (c') again with
           everything cached, (e) `podman build` of devbox's contract layer on the CLI's image, and
           (d0) `podman run` of that image to an SSH login: a new image's first start, where Podman
           copies its layers for the keep-id user namespace once, as a first create's start does.

The CLI is reached through a wrapper on PATH that records its calls: a cached create that calls
it, or that gets another image than the first, stops the bench. What the part made (drones,
containers, volumes, image tags and the build layers under them, devbox's build logs, the
workspace copy) is removed after each repetition and at the end, also when it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench import QUADLET_DIR, devbox, run, timed

FIRST, CACHED, RUN = "bench-dca", "bench-dcb", "bench-dc-run"  # RUN: the bare container (RUN-home its volume)
PORTS = {FIRST: 2391, CACHED: 2392, RUN: 2393}
WORKSPACE = "bench-dc"  # the copy's name: devbox's tags are localhost/devbox-dc-bench-dc:...
BARE = "localhost/devbox-bench-dc"  # the bare commands' tags: :cli (the CLI's), :run (with the layer)
OUR_REPOS = ("localhost/devbox-dc-bench-dc", BARE)
SSH = [
    "ssh", "-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
    "-o", "LogLevel=error", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
]  # fmt: skip
SSH_TIMEOUT = 180.0
RECORDING_CLI = '#!/bin/sh\necho "$*" >>"{calls}"\nexec "{cli}" "$@"\n'

FIGURES = {  # key in the JSON -> what it is, for the table
    "first create": "(a) devbox create --path, first (builds), to SSH login",
    "cached create": "(b) devbox create --path, cached, to SSH login",
    "devcontainer build": "(c) devcontainer build, nothing cached",
    "devcontainer build, cached": "(c') devcontainer build again, all cached",
    "contract layer": "(e) podman build of devbox's contract layer",
    "podman run, new image": "(d0) podman run, a new image's first start, to SSH login",
    "podman run": "(d) podman run of the built image to SSH login",
}
RATIOS = {  # label -> (numerator keys, denominator keys)
    "(a) / (c + d)": (("first create",), ("devcontainer build", "podman run")),
    "(a) / (c + e + d0), the same steps by hand": (
        ("first create",),
        ("devcontainer build", "contract layer", "podman run, new image"),
    ),
    "(b) / (d)": (("cached create",), ("podman run",)),
    "(b) / (c' + d), a rebuild that finds all cached": (
        ("cached create",),
        ("devcontainer build, cached", "podman run"),
    ),
}


@dataclass(frozen=True)
class Account:
    """The drone's login user in the image (its labels, written by devbox's builder)."""

    user: str
    uid: str
    gid: str
    home: str


@dataclass(frozen=True)
class Work:
    root: Path
    cli: str  # the real CLI, behind the recording wrapper

    @property
    def workspace(self) -> Path:
        return self.root / WORKSPACE

    @property
    def key(self) -> Path:
        return self.root / "key"

    @property
    def calls(self) -> Path:
        return self.root / "cli-calls"

    def cli_calls(self) -> int:
        return len(self.calls.read_text().splitlines()) if self.calls.exists() else 0

    def config(self) -> Path:
        inside = self.workspace / ".devcontainer" / "devcontainer.json"
        return inside if inside.exists() else self.workspace / ".devcontainer.json"


def bench_devcontainer(reps: int, source: Path) -> dict[str, object] | str:
    """Medians of FIGURES and RATIOS of them; a string saying why when the part cannot run."""
    cli = shutil.which("devcontainer")
    if cli is None:
        return "skipped: no devcontainer (the Dev Containers CLI) on PATH"
    if not source.is_dir():
        return f"skipped: {source} is not a directory (--devcontainer WORKSPACE)"
    samples: dict[str, list[float]] = {key: [] for key in FIGURES}
    images_before = _image_ids()
    with _work(source, cli) as work:
        try:
            for _ in range(reps):
                _clean(images_before)  # nothing of ours cached: both sides start cold
                account = _devbox_side(work, samples)
                _clean(images_before)
                _bare_side(work, account, samples)
        finally:
            _clean(images_before)
        calls = work.cli_calls()
    left = sorted(_image_ids() - images_before)
    figures = {key: statistics.median(values) for key, values in samples.items()}
    return {
        "workspace": str(source),
        "login user": account.user,
        "figures s": figures,
        "ratios": {label: _ratio(figures, top, bottom) for label, (top, bottom) in RATIOS.items()},
        "Dev Containers CLI calls by devbox": calls,  # one per first create: the cached ones made none
        "cached create built": False,  # _devbox_side stops the bench if it did
        "images left behind": left,
    }


def _ratio(figures: dict[str, float], top: tuple[str, ...], bottom: tuple[str, ...]) -> float:
    return sum(figures[k] for k in top) / sum(figures[k] for k in bottom)


def _devbox_side(work: Work, samples: dict[str, list[float]]) -> Account:
    calls = work.cli_calls()
    samples["first create"].append(timed(lambda: _create(work, FIRST)))
    if work.cli_calls() != calls + 1:
        raise SystemExit(f"bench: the first create called the Dev Containers CLI {work.cli_calls() - calls} times")
    samples["cached create"].append(timed(lambda: _create(work, CACHED)))
    if work.cli_calls() != calls + 1:
        raise SystemExit("bench: the second create from the same config called the Dev Containers CLI")
    image = _unit_values(FIRST, "Image=")[0]
    if _unit_values(CACHED, "Image=") != [image]:
        raise SystemExit("bench: the second create from the same config got another image")
    account = _account(image)
    samples["podman run"].append(timed(lambda: _podman_run(work, image, account)))
    return account


def _bare_side(work: Work, account: Account, samples: dict[str, list[float]]) -> None:
    build = [work.cli, "build", "--docker-path", "podman", "--workspace-folder", str(work.workspace)]
    build += ["--config", str(work.config()), "--image-name", f"{BARE}:cli", "--no-lockfile"]
    samples["devcontainer build"].append(timed(lambda: run(build)))
    samples["devcontainer build, cached"].append(timed(lambda: run(build)))
    contract = _contract_build(f"{BARE}:cli", f"{BARE}:run", account)
    samples["contract layer"].append(timed(lambda: run(contract)))
    samples["podman run, new image"].append(timed(lambda: _podman_run(work, f"{BARE}:run", account)))


def _create(work: Work, name: str) -> None:
    devbox(
        "create", name, "--path", str(work.workspace), "--ssh-key", f"{work.key}.pub", "--ssh-port", str(PORTS[name])
    )
    user = _unit_values(name, "Label=io.devbox.login-user=")
    _wait_ssh(work, PORTS[name], user[0] if user else os.environ.get("USER", "root"))


def _podman_run(work: Work, image: str, account: Account) -> None:
    """The image run as a drone's unit runs it (keep-id onto the login user, an init, the home volume,
    the workspace, the authorized keys), without devbox's hooks file, tools or broker socket.
    _clean has removed the container and volume of the last run before: nothing to remove here."""
    argv = ["podman", "run", "-d", "--name", RUN, "--hostname", RUN, "--init", "--pull=never"]
    argv += [f"--userns=keep-id:uid={account.uid},gid={account.gid}", "-e", f"DEVBOX_DRONE={RUN}"]
    argv += ["-e", f"HOME={account.home}", "-v", f"{RUN}-home:{account.home}"]
    argv += ["-v", f"{work.workspace}:{work.workspace}", "-w", str(work.workspace)]
    argv += ["-v", f"{work.key}.pub:/etc/devbox/authorized_keys:ro", "-p", f"127.0.0.1:{PORTS[RUN]}:2222", image]
    run(argv)
    _wait_ssh(work, PORTS[RUN], account.user)


def _contract_build(base: str, tag: str, account: Account) -> list[str]:
    """devbox's contract layer as devbox/devcontainer/build.py builds it (its labels aside)."""
    from devbox.paths import templates_dir

    context = templates_dir() / "image"
    argv = ["podman", "build", "--pull=never", "--build-arg", f"BASE={base}", "--tag", tag]
    argv += ["--build-arg", f"DEVBOX_USER={account.uid}:{account.gid}"]
    return [*argv, "--layers=false", "--file", str(context / "Containerfile.contract"), str(context)]


def _wait_ssh(work: Work, port: int, user: str) -> None:
    argv = [*SSH, "-i", str(work.key), "-p", str(port), f"{user}@127.0.0.1", "true"]
    deadline = time.monotonic() + SSH_TIMEOUT
    while subprocess.run(argv, capture_output=True, check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: no SSH login as {user} on 127.0.0.1:{port} within {SSH_TIMEOUT:.0f} s")
        time.sleep(0.05)


def _unit_values(name: str, prefix: str) -> list[str]:
    text = (QUADLET_DIR / f"drone-{name}.container").read_text()
    return [line[len(prefix) :] for line in text.splitlines() if line.startswith(prefix)]


def _account(image: str) -> Account:
    raw = json.loads(run(["podman", "image", "inspect", "--format", "json", image]).stdout)
    labels = raw[0]["Config"].get("Labels") or {}
    user, uid, gid, home = (labels.get(f"io.devbox.remote-{k}") for k in ("user", "uid", "gid", "home"))
    if not (user and uid and gid and home):
        raise SystemExit(f"bench: {image} has no io.devbox.remote-* labels: not built by devbox's builder?")
    return Account(user, uid, gid, home)


# --- the workspace copy and the clean-up ----------------------------------------------------------


@contextmanager
def _work(source: Path, cli: str) -> Iterator[Work]:
    """The workspace copy, an SSH key and the recording CLI first on PATH; all gone afterwards."""
    work = Work(Path(tempfile.mkdtemp(prefix="devbox-bench-dc-")), cli)
    path = os.environ.get("PATH", "")
    try:
        shutil.copytree(source, work.workspace, symlinks=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "devbox-bench", "-f", str(work.key)])
        wrapper = work.root / "bin" / "devcontainer"
        wrapper.parent.mkdir()
        wrapper.write_text(RECORDING_CLI.format(calls=work.calls, cli=cli))
        wrapper.chmod(0o755)
        os.environ["PATH"] = f"{wrapper.parent}:{path}"
        yield work
    finally:
        os.environ["PATH"] = path
        shutil.rmtree(work.root, ignore_errors=True)


def _clean(images_before: set[str]) -> None:
    """Our drones, container, volume, tags and the build layers under them, devbox's build logs."""
    for name in (FIRST, CACHED):
        if (QUADLET_DIR / f"drone-{name}.container").exists():
            devbox("destroy", name, "--yes", check=False)
    run(["podman", "rm", "-f", "-t", "0", RUN], check=False)
    run(["podman", "volume", "rm", "-f", f"{RUN}-home"], check=False)
    listed = run(["podman", "images", "--format", "{{.Repository}}:{{.Tag}}"]).stdout.split()
    tags = [tag for tag in listed if tag.rsplit(":", 1)[0] in OUR_REPOS]
    if tags:
        run(["podman", "rmi", "-f", *tags], check=False)
    # What our builds left untagged under them (the layer cache), and only that.
    made = [image for image in _image_ids(dangling=True) if image not in images_before]
    if made:
        run(["podman", "rmi", "-f", *made], check=False)
    from devbox.paths import Paths

    for log in (Paths.from_env().state_dir / "builds").glob("devbox-dc-bench-dc-*.log"):
        log.unlink(missing_ok=True)


def _image_ids(dangling: bool = False) -> set[str]:
    argv = ["podman", "images", "-a", "-q", "--no-trunc"]
    return set(run([*argv, "--filter", "dangling=true"] if dangling else argv).stdout.split())


def table(result: dict[str, object] | str) -> list[str]:
    if isinstance(result, str):
        return [f"devcontainer: {result}"]
    figures, ratios = result["figures s"], result["ratios"]
    assert isinstance(figures, dict) and isinstance(ratios, dict)
    lines = [f"devcontainer: {result['workspace']} (SSH login as {result['login user']})"]
    lines += [f"  {FIGURES[key]:<62} {value * 1000:8.0f} ms" for key, value in figures.items()]
    lines += [f"  {label:<62} {value:8.2f}x" for label, value in ratios.items()]
    lines.append(f"  Dev Containers CLI calls by devbox: {result['Dev Containers CLI calls by devbox']} (cached: none)")
    return lines
