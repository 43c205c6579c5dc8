"""Build a repository's devcontainer.json into a runnable drone image, cached by what it is built from.

Two steps, each a process with an argv list (no shell), through one seam (host/process.Runner):

1. `devcontainer build --docker-path PODMAN ...` (the Dev Containers CLI, @devcontainers/cli) builds
   the image the repository describes: its Dockerfile or image, its features, tagged `...:HASH-cli`.
2. `podman build --pull=never` of templates/image/Containerfile.contract FROM that image adds devbox's
   contract (the drone's init, sshd, git, curl, sudo; templates/image/CONTRACT.md): `...:HASH`, the
   tag a drone runs. Debian and Ubuntu bases only (apt-get); any other is refused in one line.

HASH covers the configuration file, every file of the build context and of the local paths the
configuration names (local features, the Dockerfile), with their paths and modes, and devbox's own
contract files: the same inputs give the same tag, and a tag that exists is used without calling the
CLI at all. What the hash cannot see (a base image that moved under the same name, ${localEnv:...}
values) needs `devbox rebuild`, which builds regardless. `.git` directories are left out of it.

The remote user's uid, gid and home are read from the built image's /etc/passwd and kept as labels
of the final image, so a cached build needs one `podman image inspect`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devbox.devcontainer.model import BuiltImage, DevcontainerSource, Progress
from devbox.errors import DevboxError, ExitCode
from devbox.host.process import Runner, last_error, run_process
from devbox.names import LABEL_PREFIX
from devbox.paths import templates_dir

CLI_VERSION = "0.89.0"  # the @devcontainers/cli devbox is tested with
INSTALL_HINT = f"npm install -g @devcontainers/cli@{CLI_VERSION} (Node 18 or newer: Debian's nodejs is enough)"
HASH_VERSION = "1"  # bump when what the hash covers changes
METADATA_LABEL = "devcontainer.metadata"  # written by the Dev Containers CLI
HASH_LABEL = LABEL_PREFIX + "devcontainer-hash"
USER_LABELS = {  # BuiltImage field -> label of the final image
    "remote_user": LABEL_PREFIX + "remote-user",
    "remote_uid": LABEL_PREFIX + "remote-uid",
    "remote_gid": LABEL_PREFIX + "remote-gid",
    "remote_home": LABEL_PREFIX + "remote-home",
}
CONTRACT_FILES = (
    "Containerfile.contract",
    "devbox-drone-init",
    "devbox-drone.sh",
    "CONTRACT.md",
    "devbox-web-terminal",
    "devbox-install-code-server",
    "devbox-code-server",
)
CONTRACT_PACKAGES = "openssh-server, git, curl, ca-certificates, sudo, procps and jq"
SKIP_DIRS = frozenset({".git"})
# A constant script (nothing from the repository): what the built image is, and its users.
PROBE = (
    '. /etc/os-release 2>/dev/null; echo "os=${ID:-unknown}"; '
    "if command -v apt-get >/dev/null; then echo apt=yes; else echo apt=no; fi; "
    "echo passwd:; cat /etc/passwd"
)
_LOCAL_REF = re.compile(r'"(\.\.?(?:/[^"\\]*)?)"')  # "./features/x", "../Dockerfile", ".."
_DOCKERFILE = re.compile(r'"(?:dockerFile|dockerfile)"\s*:\s*"([^"\\]+)"')
_SLUG = re.compile(r"[^a-z0-9]+")


# --- the hash -------------------------------------------------------------------------------------


def _files(root: Path) -> Iterator[Path]:
    if root.is_file() or root.is_symlink():
        yield root
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for name in sorted(filenames):
            yield Path(dirpath) / name
        for name in dirnames:  # a symlink to a directory is not walked: its target is what counts
            if (Path(dirpath) / name).is_symlink():
                yield Path(dirpath) / name


def _local_paths(config_file: Path) -> list[Path]:
    """The local paths the configuration names (features, the Dockerfile, a context), that exist."""
    try:
        text = config_file.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DevboxError(f"cannot read {config_file}: {exc.strerror}", ExitCode.INVALID_INPUT) from None
    base = config_file.parent
    named = [base / ref for ref in _LOCAL_REF.findall(text)] + [base / ref for ref in _DOCKERFILE.findall(text)]
    return [path for path in named if path.exists() or path.is_symlink()]


def _hash_file(digest: Any, path: Path, shown: str) -> None:
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        body = os.readlink(path).encode()
    elif stat.S_ISREG(info.st_mode):
        body = path.read_bytes()
    else:
        return  # sockets, fifos: nothing a build copies
    digest.update(f"{shown}\0{stat.S_IFMT(info.st_mode):o}\0{stat.S_IMODE(info.st_mode):o}\0{len(body)}\0".encode())
    digest.update(body)


def config_hash(source: DevcontainerSource) -> str:
    """sha256 (hex) of everything the image is built from (see the module's docstring)."""
    digest = hashlib.sha256(f"devbox-devcontainer {HASH_VERSION}\0".encode())
    image_dir = templates_dir() / "image"
    for name in CONTRACT_FILES:
        _hash_file(digest, image_dir / name, f"contract/{name}")
    roots = [source.config_file, source.context_dir, *_local_paths(source.config_file)]
    seen: set[Path] = set()
    for root in roots:
        for path in _files(root):
            absolute = Path(os.path.abspath(path))
            if absolute in seen:
                continue
            seen.add(absolute)
            try:
                shown = str(absolute.relative_to(os.path.abspath(source.workspace)))
            except ValueError:
                shown = str(absolute)
            _hash_file(digest, absolute, shown)
    return digest.hexdigest()


def config_changed(source: DevcontainerSource, recorded_hash: str | None) -> bool:
    """Whether the configuration differs from the one a drone's image was built from (its
    `devcontainer-hash` label): `devbox status` shows it, `devbox rebuild` acts on it."""
    return recorded_hash is not None and config_hash(source) != recorded_hash


def image_tags(source: DevcontainerSource, digest: str, build_args: tuple[str, ...] = ()) -> tuple[str, str]:
    """(the drone's image, the CLI's image under it) for a workspace and a hash; the contract layer's
    BUILD_ARGS (a service's programs) make a drone image of their own on the same CLI image."""
    slug = _SLUG.sub("-", source.workspace.name.lower()).strip("-")[:40].strip("-") or "workspace"
    repo = f"localhost/devbox-dc-{slug}"
    variant = "-" + hashlib.sha256(",".join(build_args).encode()).hexdigest()[:8] if build_args else ""
    return f"{repo}:{digest[:20]}{variant}", f"{repo}:{digest[:20]}-cli"


# --- the remote user ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    home: str


def remote_user_name(metadata: tuple[dict[str, Any], ...], image_user: str) -> str:
    """remoteUser, else containerUser (the last entry that sets one wins), else the image's USER, else root."""
    for key in ("remoteUser", "containerUser"):
        for entry in reversed(metadata):
            value = entry.get(key)
            if isinstance(value, str) and value:
                return value
    return image_user.split(":", 1)[0] or "root"


def find_account(passwd: list[str], user: str) -> Account:
    for line in passwd:
        fields = line.split(":")
        if len(fields) < 7 or not fields[2].isdigit() or not fields[3].isdigit():
            continue
        if user in (fields[0], fields[2]):
            return Account(fields[0], int(fields[2]), int(fields[3]), fields[5])
    raise DevboxError(
        f"the devcontainer's user {user!r} (remoteUser, containerUser or the image's USER) "
        "is not in the image's /etc/passwd",
        ExitCode.IMAGE,
    )


def parse_metadata(text: str | None) -> tuple[dict[str, Any], ...]:
    """The devcontainer.metadata label: a JSON list of objects (one object alone is taken as a list)."""
    if not text:
        return ()
    try:
        value = json.loads(text)
    except ValueError:
        raise DevboxError(f"the image's {METADATA_LABEL} label is not JSON", ExitCode.IMAGE) from None
    entries = value if isinstance(value, list) else [value]
    return tuple(entry for entry in entries if isinstance(entry, dict))


def parse_cli_result(lines: list[str] | deque[str]) -> dict[str, Any] | None:
    """The CLI's result: its last output line that is a JSON object with an `outcome`."""
    for line in reversed(lines):
        text = line.strip()
        if text.startswith("{") and '"outcome"' in text:
            try:
                result = json.loads(text)
            except ValueError:
                continue
            if isinstance(result, dict):
                return result
    return None


# --- the builder ----------------------------------------------------------------------------------


def find_cli(configured: str | None = None) -> str | None:
    """The devcontainer command: a configured path, else the first on PATH."""
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    return shutil.which("devcontainer")


def lockfile_flag(config_file: Path) -> str:
    """The CLI writes devcontainer-lock.json beside the configuration unless told not to: devbox never
    writes into the workspace (and a written file would change the hash). A committed one is honoured."""
    name = ".devcontainer-lock.json" if config_file.name.startswith(".") else "devcontainer-lock.json"
    return "--frozen-lockfile" if (config_file.parent / name).exists() else "--no-lockfile"


class CliBuilder:
    """devbox's ImageBuilder: the Dev Containers CLI on Podman, then devbox's contract layer."""

    def __init__(
        self,
        log_dir: Path,
        *,
        podman: str = "podman",
        cli: str | None = None,
        runner: Runner | None = None,
    ) -> None:
        self.log_dir = log_dir  # full build logs, one file per configuration hash
        self.podman = podman
        self.cli = cli
        self.runner = runner

    def build(
        self, source: DevcontainerSource, progress: Progress, *, fresh: bool = False, build_args: tuple[str, ...] = ()
    ) -> BuiltImage:
        digest = config_hash(source)
        tag, base = image_tags(source, digest, build_args)
        cached = self._cached(tag, digest)
        existed = cached is not None
        if cached is not None and not fresh:
            progress(f"the devcontainer image is built already ({tag})")
            return cached
        log = self.log_dir / f"{tag.rsplit('/', 1)[1].replace(':', '-')}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("")
        try:
            self._cli_build(source, base, log, progress)
            metadata, image_user = self._inspect(base)
            account = self._account(base, metadata, image_user)
            self._contract(base, tag, digest, account, log, progress, build_args)
        except BaseException:  # a tag that was there stays: other drones from this config run it
            self._remove_quietly(*((base,) if existed else (tag, base)))
            raise
        return BuiltImage(tag, metadata, digest, account.uid, account.gid, account.name, account.home)

    # -- the steps --

    def _cli_build(self, source: DevcontainerSource, base: str, log: Path, progress: Progress) -> None:
        cli = find_cli(self.cli)
        if cli is None:
            raise DevboxError(
                f"the Dev Containers CLI (devcontainer) is not installed: {INSTALL_HINT}", ExitCode.ENVIRONMENT
            )
        argv = [cli, "build", "--docker-path", self.podman, "--workspace-folder", str(source.workspace)]
        argv += ["--config", str(source.config_file), "--image-name", base, lockfile_flag(source.config_file)]
        progress(f"building {source.config_file.name} with the Dev Containers CLI")
        lines = self._logged(argv, log, progress)
        result = parse_cli_result(lines.tail)
        if lines.status != 0 or result is None or result.get("outcome") != "success":
            why = (result or {}).get("message") or last_error(lines.errors or lines.tail)
            raise DevboxError(
                f"devcontainer build failed (exit {lines.status}): {why}; full log: {log}", ExitCode.IMAGE
            )

    def _inspect(self, image: str) -> tuple[tuple[dict[str, Any], ...], str]:
        """(the devcontainer.metadata label, the image's USER)."""
        raw = self._json([self.podman, "image", "inspect", "--format", "json", image], f"podman image inspect {image}")
        config = (raw[0] if isinstance(raw, list) and raw else {}).get("Config") or {}
        labels = config.get("Labels") or {}
        return parse_metadata(labels.get(METADATA_LABEL)), str(config.get("User") or "")

    def _account(self, image: str, metadata: tuple[dict[str, Any], ...], image_user: str) -> Account:
        argv = [self.podman, "run", "--rm", "--pull=never", "--network=none", "--user=0"]
        argv += ["--entrypoint=/bin/sh", image, "-c", PROBE]
        out: list[str] = []
        status = self._run(argv, out.append)
        if status != 0 or "passwd:" not in out:
            raise DevboxError(
                f"cannot look into the devcontainer image {image} (exit {status}; it needs /bin/sh): {last_error(out)}",
                ExitCode.IMAGE,
            )
        facts = dict(line.split("=", 1) for line in out[: out.index("passwd:")] if "=" in line)
        if facts.get("apt") != "yes":
            raise DevboxError(
                f"the devcontainer image is based on {facts.get('os', 'an unknown system')}, which has no apt-get: "
                f"devbox adds {CONTRACT_PACKAGES} with apt-get; base the image on Debian or Ubuntu",
                ExitCode.IMAGE,
            )
        return find_account(out[out.index("passwd:") + 1 :], remote_user_name(metadata, image_user))

    def _contract(
        self,
        base: str,
        tag: str,
        digest: str,
        account: Account,
        log: Path,
        progress: Progress,
        build_args: tuple[str, ...] = (),
    ) -> None:
        context = templates_dir() / "image"
        labels = {HASH_LABEL: digest, **{USER_LABELS[k]: str(v) for k, v in _account_fields(account).items()}}
        argv = [self.podman, "build", "--pull=never", "--build-arg", f"BASE={base}", "--tag", tag]
        argv += ["--build-arg", f"DEVBOX_USER={account.uid}:{account.gid}"]
        argv += [word for arg in build_args for word in ("--build-arg", arg)]
        argv += [arg for key, value in labels.items() for arg in ("--label", f"{key}={value}")]
        # One commit at the end, not one per instruction: the tag is the cache, and each commit costs
        # about as much as a RUN step (README: Speed).
        argv += ["--layers=false", "--file", str(context / "Containerfile.contract"), str(context)]
        progress("adding devbox's contract layer (init, sshd, git)")
        lines = self._logged(argv, log, progress)
        if lines.status != 0:
            marks = ("error", "devbox-contract: error")
            raise DevboxError(
                f"podman build of devbox's layer on {base} failed (exit {lines.status}): "
                f"{last_error(lines.tail, marks)}; full log: {log}",
                ExitCode.IMAGE,
            )

    def _cached(self, tag: str, digest: str) -> BuiltImage | None:
        """TAG's image from its labels, or None when it is not there: one `podman image inspect`, the
        whole cost of a cached build (another podman process for `image exists` first cost as much)."""
        out: list[str] = []
        if self._run([self.podman, "image", "inspect", "--format", "json", tag], out.append) != 0:
            return None  # no such image; a podman failing otherwise fails again in the build
        try:
            raw = json.loads("\n".join(out))
        except ValueError:
            raise DevboxError(f"podman image inspect {tag} gave no JSON: {last_error(out)}", ExitCode.PODMAN) from None
        labels = ((raw[0] if isinstance(raw, list) and raw else {}).get("Config") or {}).get("Labels") or {}
        fields: dict[str, Any] = {field: labels.get(label) for field, label in USER_LABELS.items()}
        for field in ("remote_uid", "remote_gid"):
            fields[field] = int(fields[field]) if str(fields[field] or "").isdigit() else None
        return BuiltImage(tag, parse_metadata(labels.get(METADATA_LABEL)), digest, **fields)

    # -- podman and processes --

    def _exists(self, tag: str) -> bool:
        return self._run([self.podman, "image", "exists", tag], lambda _: None) == 0

    def _remove_quietly(self, *tags: str) -> None:
        """A failed build leaves no tag behind; a failure to remove one does not hide why it failed."""
        try:
            for tag in tags:
                if self._exists(tag):
                    self._run([self.podman, "image", "rm", "--force", tag], lambda _: None)
        except DevboxError:
            pass

    def _json(self, argv: list[str], what: str) -> Any:
        out: list[str] = []
        status = self._run(argv, out.append)
        try:
            if status == 0:
                return json.loads("\n".join(out))
        except ValueError:
            pass
        raise DevboxError(f"{what} failed (exit {status}): {last_error(out)}", ExitCode.PODMAN)

    def _logged(self, argv: list[str], log: Path, progress: Progress) -> _Output:
        output = _Output()
        with log.open("a", encoding="utf-8") as file:
            file.write("$ " + " ".join(argv) + "\n")

            def on_line(line: str) -> None:
                file.write(line + "\n")
                output.add(line)
                if line.strip():
                    progress(line.strip()[:120])

            output.status = self._run(argv, on_line)
        return output

    def _run(self, argv: list[str], on_line: Callable[[str], None]) -> int:
        try:
            return (self.runner or run_process)(argv, on_line)
        except FileNotFoundError:
            raise DevboxError(f"{argv[0]} is not installed", ExitCode.ENVIRONMENT) from None
        except OSError as exc:
            raise DevboxError(f"cannot run {argv[0]}: {exc.strerror or exc}", ExitCode.IMAGE) from None


@dataclass
class _Output:
    status: int = 0

    def __post_init__(self) -> None:
        self.tail: deque[str] = deque(maxlen=40)
        self.errors: deque[str] = deque(maxlen=5)  # lines that say error: the CLI's last one is the cause

    def add(self, line: str) -> None:
        self.tail.append(line)
        if "error" in line.lower():
            self.errors.append(line)


def _account_fields(account: Account) -> dict[str, Any]:
    return {
        "remote_user": account.name,
        "remote_uid": account.uid,
        "remote_gid": account.gid,
        "remote_home": account.home,
    }
