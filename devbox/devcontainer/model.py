"""A repository's devcontainer.json as devbox takes it: typed, every value checked, the rest refused.

The file is untrusted input. What it may ask for is listed here (allow-lists); anything that
would give the drone more than a user's own options can (privileges, the host's network or
processes, devices, host files outside the workspace) is refused with one line naming the
file and line. Nothing in it runs on the host: initializeCommand is never run.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from devbox.devcontainer.read import Document, JsonPath
from devbox.errors import DevboxError
from devbox.values import PLAIN_PATH, parse_port, validate_env_key, validate_env_value, validate_image, validate_repo

Progress = Callable[[str], None]  # commands/progress.py's shape; this layer sits below commands


# --- the interface with the builder (devcontainer-brief.md, item 1) -------------------------------


@dataclass(frozen=True)
class DevcontainerSource:
    workspace: Path  # the --path directory, or the repository's checkout on this host
    config_file: Path  # the devcontainer.json, inside workspace
    context_dir: Path  # build.context resolved against the config file's directory, or that directory


@dataclass(frozen=True)
class BuiltImage:
    tag: str  # the runnable drone image, devbox's contract layer included
    metadata: tuple[dict[str, Any], ...]  # the image's devcontainer.metadata label, parsed
    config_hash: str
    remote_uid: int | None = None  # the remote user's ids, name and home in the image
    remote_gid: int | None = None
    remote_user: str | None = None
    remote_home: str | None = None


class ImageBuilder(Protocol):
    def build(
        self, source: DevcontainerSource, progress: Progress, *, fresh: bool = False, build_args: tuple[str, ...] = ()
    ) -> BuiltImage:
        """The drone image for SOURCE; cached by its hash unless FRESH (devbox rebuild --no-cache).
        BUILD_ARGS (NAME=1, drone/services.py's build_args) go to the contract layer's build."""
        ...


# --- what is allowed ------------------------------------------------------------------------------

# Capabilities a development container commonly needs (debuggers, ping, nice) and that stay inside
# the drone's user namespace. SYS_ADMIN, NET_ADMIN, SYS_MODULE and the rest are refused.
ALLOWED_CAPS = frozenset({"SYS_PTRACE", "NET_RAW", "SYS_NICE", "NET_BIND_SERVICE", "CHOWN", "SETUID", "SETGID"})
# seccomp=unconfined is what the C++/Go/Rust configurations ask for beside SYS_PTRACE (debuggers
# turn off address randomisation); the drone stays rootless in its user namespace. label=disable
# and apparmor=unconfined drop the host's own confinement of the container: refused.
ALLOWED_SECURITY_OPTS = frozenset({"seccomp=unconfined", "no-new-privileges", "no-new-privileges:true"})
HOOKS = ("onCreateCommand", "updateContentCommand", "postCreateCommand", "postStartCommand")
IGNORED_HOOKS = ("postAttachCommand",)  # an editor's attach: a drone has none
# Where devbox mounts its own files in the drone: a repository's mount may not cover them.
RESERVED_TARGETS = ("/run/devbox", "/etc/devbox", "/usr/local/lib/devbox", "/etc/gitconfig", "/usr/local/bin/gh")
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}\$?|[0-9]{1,10}")
_VOLUME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_FEATURE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,254}")
_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(tb|gb|mb|kb|t|g|m|k|b)?", re.IGNORECASE)
# Keys read but with nothing for devbox to do, or handled elsewhere (the builder reads `build`
# and `features` from the file itself).
KNOWN_KEYS = frozenset(
    {
        "name",
        "image",
        "build",
        "dockerFile",
        "context",
        "features",
        "overrideFeatureInstallOrder",
        "containerEnv",
        "remoteEnv",
        "remoteUser",
        "containerUser",
        "updateRemoteUserUID",
        "userEnvProbe",
        "mounts",
        "workspaceFolder",
        "workspaceMount",
        "forwardPorts",
        "appPort",
        "portsAttributes",
        "otherPortsAttributes",
        "capAdd",
        "init",
        "securityOpt",
        "hostRequirements",
        "runArgs",
        "customizations",
        "initializeCommand",
        "waitFor",
        "shutdownAction",
        "overrideCommand",
        "privileged",
        "dockerComposeFile",
        "service",
        "runServices",
        "$schema",
        "id",
        "version",
        "entrypoint",
        "onAutoForward",
        *HOOKS,
        *IGNORED_HOOKS,
    }
)


@dataclass(frozen=True)
class Mount:
    kind: str  # "bind" or "volume"
    source: str  # a path inside the workspace, or a volume name (devbox prefixes it per drone)
    target: str
    readonly: bool = False


Command = str | tuple[str, ...]  # run with `sh -c`, or exec'd as it is


@dataclass(frozen=True)
class NamedCommands:
    """A hook's object form: name -> command (run in order by the drone's init)."""

    items: tuple[tuple[str, Command], ...]


Hook = Command | NamedCommands | None


@dataclass(frozen=True)
class DevcontainerConfig:
    """One configuration: the repository's file, or one entry of an image's metadata label."""

    image: str | None = None
    container_env: tuple[tuple[str, str], ...] = ()
    remote_env: tuple[tuple[str, str], ...] = ()
    remote_user: str | None = None
    container_user: str | None = None
    mounts: tuple[Mount, ...] = ()
    workspace_folder: str | None = None
    ports: tuple[int, ...] = ()
    cap_add: tuple[str, ...] = ()
    security_opt: tuple[str, ...] = ()
    init: bool | None = None
    cpus: float | None = None
    memory: str | None = None
    hooks: tuple[tuple[str, Hook], ...] = ()
    repositories: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()  # codespaces' repositories
    notes: tuple[str, ...] = field(default=(), compare=False)  # one line each, for the person at create


class Checker:
    """Reads one Document into a DevcontainerConfig; every refusal names the file and line."""

    def __init__(self, document: Document, workspace: Path | None) -> None:
        self.doc = document
        self.workspace = workspace  # None for a --repo drone: there is no host directory to bind
        self.notes: list[str] = []

    def refuse(self, path: JsonPath, message: str) -> DevboxError:
        return self.doc.refuse(path, message)

    def get(self, key: str) -> Any:
        return self.doc.value.get(key)

    def string(self, path: JsonPath, value: Any, what: str = "a string") -> str:
        if not isinstance(value, str):
            raise self.refuse(path, f"{'.'.join(map(str, path))} must be {what}")
        return self.checked(path, value)

    def checked(self, path: JsonPath, value: str) -> str:
        """Every string from the file passes the same check as a user's --env value."""
        try:
            return validate_env_value(str(path[-1]) if path else "value", value)
        except DevboxError as exc:
            raise self.refuse(path, exc.message) from None

    def env(self, key: str) -> tuple[tuple[str, str], ...]:
        table = self.get(key)
        if table is None:
            return ()
        if not isinstance(table, dict):
            raise self.refuse((key,), f"{key} must be an object of NAME: value")
        found = []
        for name, value in table.items():
            if value is None and key == "remoteEnv":  # the spec's way to unset a variable
                continue
            try:
                validate_env_key(name)
            except DevboxError as exc:
                raise self.refuse((key, name), exc.message) from None
            found.append((name, self.string((key, name), value)))
        return tuple(found)

    def user(self, key: str) -> str | None:
        value = self.get(key)
        if value is None:
            return None
        text = self.string((key,), value)
        if not _USER.fullmatch(text):
            raise self.refuse((key,), f"{key} {text!r} is not a user name")
        return text

    def target(self, path: JsonPath, value: str) -> str:
        if not PLAIN_PATH.fullmatch(value) or "/../" in value + "/" or value == "/":
            raise self.refuse(path, f"mount target {value!r} must be an absolute path of plain characters")
        if any(value == r or value.startswith(r + "/") or r.startswith(value + "/") for r in RESERVED_TARGETS):
            raise self.refuse(path, f"mount target {value!r} covers devbox's own files in the drone")
        return value.rstrip("/") or "/"

    def bind_source(self, path: JsonPath, value: str) -> str:
        if self.workspace is None:
            raise self.refuse(path, "a bind mount needs a host workspace (devbox create --path); refused for --repo")
        source = Path(value) if value.startswith("/") else self.workspace / value
        resolved = source.resolve()
        workspace = self.workspace.resolve()
        if resolved != workspace and workspace not in resolved.parents:
            raise self.refuse(path, f"bind mount source {value!r} is outside the workspace {workspace}")
        if not PLAIN_PATH.fullmatch(str(resolved)):
            raise self.refuse(path, f"bind mount source {value!r} has characters unit files cannot hold")
        return str(resolved)

    def mount(self, path: JsonPath, value: Any) -> Mount:
        if isinstance(value, str):
            fields: dict[str, Any] = {}
            for part in self.checked(path, value).split(","):
                key, sep, text = part.partition("=")
                fields[key.strip().lower()] = text.strip() if sep else True
        elif isinstance(value, dict):
            fields = {str(k).lower(): v for k, v in value.items()}
        else:
            raise self.refuse(path, "a mount is a string or an object")
        kind = fields.get("type", "volume")
        source = fields.get("source", fields.get("src"))
        target = fields.get("target", fields.get("destination", fields.get("dst")))
        if kind not in ("bind", "volume"):
            raise self.refuse(path, f"mount type {kind!r} is refused: only bind (inside the workspace) and volume")
        if not isinstance(source, str) or not isinstance(target, str) or not source:
            raise self.refuse(path, "a mount needs a source and a target")
        readonly = fields.get("readonly", fields.get("ro")) in (True, "true", "1")
        target = self.target(path, self.checked(path, target))
        if kind == "volume":
            if not _VOLUME.fullmatch(self.checked(path, source)):
                raise self.refuse(path, f"volume name {source!r}: use letters, digits, '_', '.', '-'")
            return Mount("volume", source, target, readonly)
        return Mount("bind", self.bind_source(path, self.checked(path, source)), target, readonly)

    def mounts(self) -> tuple[Mount, ...]:
        value = self.get("mounts") or []
        if not isinstance(value, list):
            raise self.refuse(("mounts",), "mounts must be a list")
        found = [self.mount(("mounts", i), item) for i, item in enumerate(value)]
        if self.get("workspaceMount") is not None:
            found.append(self.mount(("workspaceMount",), self.get("workspaceMount")))
        return tuple(found)

    def ports(self) -> tuple[int, ...]:
        found: list[int] = []
        for key in ("forwardPorts", "appPort"):
            value = self.get(key)
            items = value if isinstance(value, list) else [] if value is None else [value]
            for index, item in enumerate(items):
                path = (key, index) if isinstance(value, list) else (key,)
                text = str(item).rpartition(":")[2] if key == "appPort" and isinstance(item, str) else item
                if isinstance(text, bool) or not (isinstance(text, int) or (isinstance(text, str) and text.isdigit())):
                    raise self.refuse(path, f"{key} takes port numbers; {item!r} is refused (no other services)")
                try:
                    found.append(parse_port(text))
                except DevboxError as exc:
                    raise self.refuse(path, exc.message) from None
        return tuple(dict.fromkeys(found))

    def cap(self, path: JsonPath, value: Any) -> str:
        cap = self.string(path, value).upper().removeprefix("CAP_")
        if cap not in ALLOWED_CAPS:
            raise self.refuse(path, f"capability {cap} is refused (allowed: {', '.join(sorted(ALLOWED_CAPS))})")
        return cap

    def security_opt(self, path: JsonPath, value: Any) -> str:
        option = self.string(path, value)
        if option not in ALLOWED_SECURITY_OPTS:
            raise self.refuse(
                path, f"securityOpt {option!r} is refused (allowed: {', '.join(sorted(ALLOWED_SECURITY_OPTS))})"
            )
        return option

    def strings(self, key: str) -> list[tuple[JsonPath, Any]]:
        value = self.get(key) or []
        if not isinstance(value, list):
            raise self.refuse((key,), f"{key} must be a list")
        return [((key, i), item) for i, item in enumerate(value)]

    def command(self, path: JsonPath, value: Any) -> Command:
        if isinstance(value, str):
            return self.checked(path, value)
        if isinstance(value, list):
            return tuple(self.string((*path, i), item) for i, item in enumerate(value))
        raise self.refuse(path, f"{'.'.join(map(str, path))} must be a string or a list of strings")

    def hook(self, path: JsonPath, value: Any) -> Hook:
        if value is None:
            return None
        if isinstance(value, dict):
            return NamedCommands(
                tuple((self.checked((*path, k), k), self.command((*path, k), v)) for k, v in value.items() if v)
            )
        return self.command(path, value)

    def host_requirements(self) -> tuple[float | None, str | None]:
        value = self.get("hostRequirements")
        if value is None:
            return None, None
        if not isinstance(value, dict):
            raise self.refuse(("hostRequirements",), "hostRequirements must be an object")
        cpus = value.get("cpus")
        if cpus is not None and (isinstance(cpus, bool) or not isinstance(cpus, int | float) or not 0 < cpus <= 1024):
            raise self.refuse(("hostRequirements", "cpus"), "hostRequirements.cpus must be a number of CPUs")
        memory = value.get("memory")
        if memory is not None:
            match = _SIZE.fullmatch(self.string(("hostRequirements", "memory"), memory).strip())
            if not match:
                raise self.refuse(("hostRequirements", "memory"), f"hostRequirements.memory {memory!r} is not a size")
            number, unit = match.group(1), (match.group(2) or "b").lower()[0]
            memory = f"{number}{'' if unit == 'b' else unit}"
            if unit == "t":
                memory = f"{float(number) * 1024:g}g"
        if value.get("gpu"):
            self.notes.append(f"{self.doc.where(('hostRequirements', 'gpu'))}: hostRequirements.gpu is ignored")
        return (None if cpus is None else float(cpus)), memory

    def repositories(self) -> tuple[tuple[str, tuple[tuple[str, str], ...]], ...]:
        path: JsonPath = ("customizations", "codespaces", "repositories")
        value = self.get("customizations")
        for key in path[1:]:
            value = value.get(key) if isinstance(value, dict) else None
        if value is None:
            return ()
        if not isinstance(value, dict):
            raise self.refuse(path, "customizations.codespaces.repositories must be an object")
        found = []
        for repo, entry in value.items():
            where = (*path, repo)
            permissions = entry.get("permissions") if isinstance(entry, dict) else None
            if isinstance(permissions, str):  # "read-all", "write-all": devbox asks for named permissions only
                self.notes.append(f"{self.doc.where(where)}: permissions {permissions!r} for {repo} are not used")
                continue
            if not isinstance(permissions, dict):
                raise self.refuse(where, f"{repo}: expected an object with permissions")
            try:
                checked = validate_repo(repo) if "*" not in repo else repo
            except DevboxError as exc:
                raise self.refuse(where, exc.message) from None
            levels = tuple((str(k), self.string((*where, "permissions", k), v)) for k, v in permissions.items())
            found.append((checked, levels))
        return tuple(found)

    def image(self) -> str | None:
        value = self.get("image")
        if value is None:
            return None
        try:
            return validate_image(self.string(("image",), value))
        except DevboxError as exc:
            raise self.refuse(("image",), exc.message) from None
