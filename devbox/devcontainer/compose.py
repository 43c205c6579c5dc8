"""A compose-based devcontainer.json (`dockerComposeFile` + `service`): the named service becomes the
drone, the other services run inside it (with the drone's rootless Podman, `--with containers`).

The compose files are untrusted input like the devcontainer.json. They are read with PyYAML's safe
loader (no tags that build objects), every value is checked, and every refusal names the file and
line. What comes out:

- the main service's image or build (context and Dockerfile inside the workspace), as the `image` or
  `build` of a scratch devcontainer.json that the Dev Containers CLI builds like any other (features
  and the remote user are copied from the repository's file); its environment, volumes (named, or
  binds inside the workspace), ports (published on 127.0.0.1 like forwardPorts) and allowed
  capabilities join the devcontainer.json's own;
- the other services (runServices, else all) as a derived compose file holding only the keys checked
  here, each with `network_mode: host`: they share the drone's network namespace, and the drone's
  unit names each of them 127.0.0.1 (AddHost=), so the main service reaches them by name.

Interpolation: `$$` is a dollar; `${VAR:-default}` and `${VAR-default}` give the default, and `${VAR}`
reads this host's environment only for read.LOCAL_ENV_ALLOWED's harmless names (as `${localEnv:...}`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from devbox.devcontainer.discover import inside
from devbox.devcontainer.model import Checker, DevcontainerConfig, DevcontainerSource, Mount
from devbox.devcontainer.read import MAX_DEPTH, Document, JsonPath, host_env, read_text
from devbox.errors import DevboxError, invalid
from devbox.values import parse_port, validate_env_key, validate_image

PROJECT = "devbox"  # the inner compose project's name (docker compose -p)
MAX_NODES = 100_000  # anchors and aliases can make a small file huge: a compose file is far below this
SERVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_VOLUME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_INTERPOLATION = re.compile(r"\$(?:(\$)|\{([^}]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
_VARIABLE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])(.*))?", re.DOTALL)
_RESTART = frozenset({"no", "always", "on-failure", "unless-stopped"})
_DURATION = re.compile(r"[0-9]+(?:\.[0-9]+)?(?:us|ms|s|m|h)(?:[0-9]+(?:\.[0-9]+)?(?:us|ms|s|m|h))*")
_SIGNAL = re.compile(r"(?:SIG)?[A-Z0-9+-]{1,16}")
# What a service may never ask for, main or inner: the host's devices, processes, network, namespaces
# or privileges. One line each, naming the file and line.
REFUSED_KEYS = {
    "privileged": "privileged containers are refused",
    "devices": "devices are refused",
    "device_cgroup_rules": "device rules are refused",
    "gpus": "GPUs are refused",
    "pid": "another process namespace is refused",
    "ipc": "another IPC namespace is refused",
    "uts": "another UTS namespace is refused",
    "userns_mode": "another user namespace is refused",
    "cgroup": "another cgroup namespace is refused",
    "cgroup_parent": "cgroup_parent is refused",
    "volumes_from": "volumes_from is refused",
    "sysctls": "sysctls are refused",
    "runtime": "another runtime is refused",
    "isolation": "isolation is refused",
    "env_file": "env_file is not supported: write the variables under environment",
    "extends": "extends is not supported",
    "secrets": "secrets are not supported",
    "configs": "configs are not supported",
    "links": "links are not supported (services reach each other by name)",
    "external_links": "external_links are refused",
}
REFUSED_TOP = {
    "include": "include is not supported: list the files in dockerComposeFile",
    "secrets": "secrets are not supported",
    "configs": "configs are not supported",
}
IGNORED_TOP = frozenset({"version", "name", "networks", "volumes", "services"})
# Keys of the main service devbox takes; the rest of its keys are the drone's business (its init runs,
# not the service's command) and are named in a note.
MAIN_KEYS = frozenset(
    {"build", "image", "environment", "volumes", "ports", "cap_add", "security_opt", "user", "network_mode"}
)
INNER_KEYS = frozenset(
    {
        "image",
        "command",
        "entrypoint",
        "environment",
        "working_dir",
        "user",
        "healthcheck",
        "depends_on",
        "stop_signal",
        "stop_grace_period",
        "restart",
        "volumes",
        "cap_add",
        "network_mode",
        "tmpfs",
    }
)
# The devcontainer.json keys the Dev Containers CLI reads to build the main service's image.
BUILD_KEYS = ("features", "overrideFeatureInstallOrder", "remoteUser", "containerUser", "updateRemoteUserUID")


@dataclass(frozen=True)
class ComposeDocument(Document):
    """The merged compose files: each value remembers its own file and line."""

    origins: Mapping[JsonPath, tuple[Path, int]] = field(default_factory=dict)
    prefix: JsonPath = ()

    def where(self, path: JsonPath) -> str:
        full = (*self.prefix, *path)
        while full and full not in self.origins:
            full = full[:-1]
        file, line = self.origins.get(full, (self.file, 1))
        return f"{file}:{line}"

    def service(self, name: str) -> ComposeDocument:
        """One service's mapping as a document of its own (for model.Checker), lines still right."""
        value = self.value["services"][name]
        return ComposeDocument(self.file, value, {}, self.origins, ("services", name))


@dataclass(frozen=True)
class MainService:
    name: str
    build: dict[str, Any]  # the scratch devcontainer.json's "build" or "image" (one key)
    context_dir: Path | None  # the build context (inside the workspace), or None for an image
    env: tuple[tuple[str, str], ...] = ()
    mounts: tuple[Mount, ...] = ()
    ports: tuple[int, ...] = ()
    cap_add: tuple[str, ...] = ()
    security_opt: tuple[str, ...] = ()
    user: str | None = None


@dataclass(frozen=True)
class Compose:
    main: MainService
    inner: str | None  # the derived compose file (JSON, which YAML reads), or None: no other service
    hosts: tuple[str, ...]  # the inner services' names: AddHost=NAME:127.0.0.1 in the drone's unit
    notes: tuple[str, ...] = ()


def is_compose(document: Document) -> bool:
    return document.value.get("dockerComposeFile") is not None


# --- reading YAML with lines ----------------------------------------------------------------------


def _interpolate(text: str, where: Callable[[], str], notes: list[str]) -> str:
    def one(match: re.Match[str]) -> str:
        if match.group(1):
            return "$"
        expression = match.group(2) if match.group(2) is not None else match.group(3)
        found = _VARIABLE.fullmatch(expression)
        if not found:
            raise invalid(f"{where()}: a bad interpolation {match.group(0)!r}")
        name, operator, default = found.group(1), found.group(2), found.group(3) or ""
        value = host_env(name)
        if operator is None:
            if value is None:
                notes.append(f"{where()}: ${{{name}}} is not read from this host: empty")
            return value or ""
        if (not value) if operator.startswith(":") else (value is None):
            if operator.endswith("?"):
                raise invalid(f"{where()}: {name} must be set ({default or 'required'}); devbox reads none")
            return default
        return value or ""

    return _INTERPOLATION.sub(one, text)


class _Reader:
    def __init__(self, file: Path, notes: list[str]) -> None:
        self.file = file
        self.notes = notes
        self.origins: dict[JsonPath, tuple[Path, int]] = {}
        self.count = 0

    def fail(self, mark: Any, message: str) -> DevboxError:
        line = mark.line + 1 if mark is not None else 1
        return invalid(f"{self.file}:{line}: {message}")

    def load(self, text: str) -> Any:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return {}
            return self.walk(loader, node, (), None)
        except yaml.MarkedYAMLError as exc:
            raise self.fail(exc.problem_mark, f"not valid YAML: {exc.problem}") from None
        except yaml.YAMLError as exc:
            raise invalid(f"{self.file}: not valid YAML: {str(exc).splitlines()[0]}") from None
        except RecursionError:  # PyYAML's composer recurses once per level of nesting
            raise invalid(f"{self.file}: nested too deeply for a compose file") from None
        finally:
            loader.dispose()

    def walk(self, loader: yaml.SafeLoader, node: yaml.Node, path: JsonPath, line: int | None) -> Any:
        """NODE as a value; its line is LINE (its key's, for a mapping's value) or its own."""
        self.count += 1
        if self.count > MAX_NODES or len(path) > MAX_DEPTH:
            raise self.fail(node.start_mark, "too large or too deep for a compose file (aliases?)")
        self.origins[path] = (self.file, line or node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            loader.flatten_mapping(node)  # `<<: *anchor` merge keys
            found: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = loader.construct_object(key_node)
                if not isinstance(key, str | int) or isinstance(key, bool):
                    raise self.fail(key_node.start_mark, "a mapping key must be a string")
                found[str(key)] = self.walk(loader, value_node, (*path, str(key)), key_node.start_mark.line + 1)
            return found
        if isinstance(node, yaml.SequenceNode):
            return [self.walk(loader, item, (*path, index), None) for index, item in enumerate(node.value)]
        value = loader.construct_object(node)
        if isinstance(value, str):
            return _interpolate(value, lambda: f"{self.file}:{node.start_mark.line + 1}", self.notes)
        if value is not None and not isinstance(value, bool | int | float):
            raise self.fail(node.start_mark, f"a {type(value).__name__} value is not taken here")
        return value


def _merge(base: Any, over: Any) -> Any:
    """A later file over an earlier one: mappings key by key, anything else replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        merged = dict(base)
        for key, value in over.items():
            merged[key] = _merge(base.get(key), value) if key in base else value
        return merged
    return over


def load_files(files: list[Path], notes: list[str]) -> ComposeDocument:
    value: Any = {}
    origins: dict[JsonPath, tuple[Path, int]] = {}
    for file in files:
        loaded = parse_text(read_text(file, "a compose file"), file, notes)
        value = _merge(value, loaded.value)
        origins.update(loaded.origins)
    return ComposeDocument(files[0], value, {}, origins)


def parse_text(text: str, file: Path, notes: list[str]) -> ComposeDocument:
    """One compose file's TEXT (read from FILE), with the file and line of every value."""
    reader = _Reader(file, notes)
    loaded = reader.load(text)
    if not isinstance(loaded, dict):
        raise invalid(f"{file}:1: a compose file holds one mapping")
    return ComposeDocument(file, loaded, {}, reader.origins)


# --- judging services -----------------------------------------------------------------------------


def _strings(checker: Checker, path: JsonPath, value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (checker.checked(path, value),)
    if isinstance(value, list):
        return tuple(checker.string((*path, i), item, what) for i, item in enumerate(value))
    raise checker.refuse(path, f"{path[-1]} must be a string or a list of strings")


def _scalar(checker: Checker, path: JsonPath, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return checker.string(path, value)


def _environment(checker: Checker, notes: list[str]) -> tuple[tuple[str, str], ...]:
    value = checker.get("environment")
    if value is None:
        return ()
    items: list[tuple[JsonPath, str, Any]] = []
    if isinstance(value, dict):
        items = [(("environment", k), k, v) for k, v in value.items()]
    elif isinstance(value, list):
        for index, item in enumerate(value):
            text = checker.string(("environment", index), item)
            key, sep, rest = text.partition("=")
            items.append((("environment", index), key, rest if sep else None))
    else:
        raise checker.refuse(("environment",), "environment must be a mapping or a list of NAME=value")
    found = []
    for path, key, item in items:
        try:
            validate_env_key(key)
        except DevboxError as exc:
            raise checker.refuse(path, exc.message) from None
        if item is None:
            notes.append(f"{checker.doc.where(path)}: {key} takes no value from this host: left out")
            continue
        found.append((key, _scalar(checker, path, item)))
    return tuple(found)


def _refuse_keys(checker: Checker, service: dict[str, Any], main: bool) -> None:
    for key, why in REFUSED_KEYS.items():
        if key in service and service[key] not in (None, False, [], {}):
            raise checker.refuse((key,), why)
    mode = service.get("network_mode")
    if mode is not None:
        text = checker.string(("network_mode",), mode)
        if text not in ("bridge", "default") and not (main and text.startswith("service:")):
            raise checker.refuse(("network_mode",), f"network_mode {text!r} is refused")
    caps = service.get("cap_add")
    if caps is not None:
        for path, cap in ((("cap_add", i), c) for i, c in enumerate(caps if isinstance(caps, list) else [caps])):
            checker.cap(path, cap)


def _is_bind_source(source: str) -> bool:
    return source.startswith((".", "/", "~"))


def _volume_parts(checker: Checker, path: JsonPath, value: Any) -> tuple[str, str | None, str, bool]:
    """(type, source, target, read-only) of a short (SRC:TARGET[:MODE]) or long volume."""
    if isinstance(value, str):
        parts = checker.checked(path, value).split(":")
        if len(parts) == 1:
            return "volume", None, parts[0], False
        if len(parts) > 3:
            raise checker.refuse(path, f"volume {value!r}: expected SOURCE:TARGET[:MODE]")
        modes = set(parts[2].split(",")) if len(parts) == 3 else set()
        kind = "bind" if _is_bind_source(parts[0]) else "volume"
        return kind, parts[0], parts[1], "ro" in modes
    if isinstance(value, dict):
        kind = value.get("type", "volume")
        source, target = value.get("source"), value.get("target")
        if not isinstance(target, str) or (source is not None and not isinstance(source, str)):
            raise checker.refuse(path, "a volume needs a target (and a source, both strings)")
        return str(kind), source, target, value.get("read_only") is True
    raise checker.refuse(path, "a volume is a string or a mapping")


def _main_mounts(checker: Checker, project_dir: Path, notes: list[str]) -> tuple[Mount, ...]:
    value = checker.get("volumes") or []
    if not isinstance(value, list):
        raise checker.refuse(("volumes",), "volumes must be a list")
    found = []
    for index, item in enumerate(value):
        path: JsonPath = ("volumes", index)
        kind, source, target, readonly = _volume_parts(checker, path, item)
        if kind == "tmpfs" or source is None:
            notes.append(f"{checker.doc.where(path)}: an anonymous or tmpfs volume at {target} is left out")
            continue
        if kind not in ("bind", "volume"):
            raise checker.refuse(path, f"volume type {kind!r} is refused: only bind (inside the workspace) and volume")
        target = checker.target(path, checker.checked(path, target))
        if kind == "volume":
            if not _VOLUME_NAME.fullmatch(source):
                raise checker.refuse(path, f"volume name {source!r}: use letters, digits, '_', '.', '-'")
            found.append(Mount("volume", source, target, readonly))
            continue
        if source.startswith("~"):
            raise checker.refuse(path, f"bind mount source {source!r} is outside the workspace")
        found.append(Mount("bind", checker.bind_source(path, str(project_dir / source)), target, readonly))
    return tuple(found)


def _main_ports(checker: Checker, notes: list[str]) -> tuple[int, ...]:
    value = checker.get("ports") or []
    if not isinstance(value, list):
        raise checker.refuse(("ports",), "ports must be a list")
    found = []
    for index, item in enumerate(value):
        path: JsonPath = ("ports", index)
        port = item.get("target") if isinstance(item, dict) else str(item).rpartition(":")[2].partition("/")[0]
        try:
            found.append(parse_port(str(port)))
        except DevboxError:
            raise checker.refuse(path, f"port {item!r}: devbox publishes single ports on 127.0.0.1") from None
    if found:
        notes.append(f"{checker.doc.where(('ports',))}: ports are published on 127.0.0.1 only, like forwardPorts")
    return tuple(found)


def _main_build(checker: Checker, workspace: Path, project_dir: Path) -> tuple[dict[str, Any], Path | None]:
    build = checker.get("build")
    if build is None:
        image = checker.get("image")
        if image is None:
            raise checker.refuse((), "the service has neither build nor image")
        try:
            return {"image": validate_image(checker.string(("image",), image))}, None
        except DevboxError as exc:
            raise checker.refuse(("image",), exc.message) from None
    if isinstance(build, str):
        build = {"context": build}
    if not isinstance(build, dict):
        raise checker.refuse(("build",), "build must be a string or a mapping")
    for key in ("ssh", "secrets", "additional_contexts", "dockerfile_inline", "network", "extra_hosts", "privileged"):
        if key in build:
            raise checker.refuse(("build", key), f"build.{key} is refused")
    context_text = checker.string(("build", "context"), build.get("context", "."))
    try:
        context = inside(workspace, project_dir / context_text, "the build context")
    except DevboxError as exc:
        raise checker.refuse(("build", "context"), exc.message) from None
    dockerfile_text = checker.string(("build", "dockerfile"), build.get("dockerfile", "Dockerfile"))
    try:
        dockerfile = inside(workspace, context / dockerfile_text, "the Dockerfile")
    except DevboxError as exc:
        raise checker.refuse(("build", "dockerfile"), exc.message) from None
    scratch: dict[str, Any] = {"dockerfile": str(dockerfile), "context": str(context)}
    args = build.get("args")
    if args is not None:
        if isinstance(args, list):
            args = dict(str(a).partition("=")[::2] for a in args)
        if not isinstance(args, dict):
            raise checker.refuse(("build", "args"), "build.args must be a mapping or a list of NAME=value")
        scratch["args"] = {
            checker.checked(("build", "args", k), k): _scalar(checker, ("build", "args", k), v)
            for k, v in args.items()
            if v is not None
        }
    if build.get("target") is not None:
        scratch["target"] = checker.string(("build", "target"), build["target"])
    return {"build": scratch}, context


def main_service(
    document: ComposeDocument, name: str, workspace: Path, bind_root: Path | None, notes: list[str]
) -> MainService:
    checker = Checker(document.service(name), bind_root)
    service = checker.doc.value
    _refuse_keys(checker, service, main=True)
    project_dir = document.file.parent
    build, context = _main_build(checker, workspace, project_dir)
    for key in sorted(set(service) - MAIN_KEYS - {"container_name"}):
        notes.append(
            f"{checker.doc.where((key,))}: {key} of the main service is not used (the drone runs its own init)"
        )
    user = service.get("user")
    user_name = None
    if user is not None:
        text = _scalar(checker, ("user",), user).partition(":")[0]
        user_name = text if re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}|[0-9]{1,10}", text) else None
    caps = service.get("cap_add") or []
    options = service.get("security_opt") or []
    return MainService(
        name=name,
        build=build,
        context_dir=context,
        env=_environment(checker, notes),
        mounts=_main_mounts(checker, project_dir, notes),
        ports=_main_ports(checker, notes),
        cap_add=tuple(checker.cap(("cap_add", i), c) for i, c in enumerate(caps if isinstance(caps, list) else [caps])),
        security_opt=tuple(
            checker.security_opt(("security_opt", i), o)
            for i, o in enumerate(options if isinstance(options, list) else [options])
        ),
        user=user_name,
    )


def _healthcheck(checker: Checker, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise checker.refuse(("healthcheck",), "healthcheck must be a mapping")
    found: dict[str, Any] = {}
    for key, item in value.items():
        path: JsonPath = ("healthcheck", key)
        if key == "test":  # a string runs with the container's shell; a list starts with NONE, CMD or CMD-SHELL
            words = _strings(checker, path, item, "a string")
            found[key] = words[0] if isinstance(item, str) else list(words)
        elif key in ("interval", "timeout", "start_period", "start_interval"):
            text = checker.string(path, item)
            if not _DURATION.fullmatch(text):
                raise checker.refuse(path, f"healthcheck.{key} {text!r} is not a duration like 5s")
            found[key] = text
        elif key == "retries":
            if isinstance(item, bool) or not isinstance(item, int) or not 0 <= item <= 1000:
                raise checker.refuse(path, "healthcheck.retries must be a number")
            found[key] = item
        elif key == "disable":
            found[key] = item is True
        else:
            raise checker.refuse(path, f"healthcheck.{key} is not supported")
    return found


def _depends_on(checker: Checker, value: Any, running: set[str]) -> dict[str, Any]:
    names: dict[str, Any] = {}
    if isinstance(value, list):
        names = {checker.string(("depends_on", i), v): {} for i, v in enumerate(value)}
    elif isinstance(value, dict):
        for key, item in value.items():
            condition = item.get("condition") if isinstance(item, dict) else None
            if condition is not None and condition not in (
                "service_started",
                "service_healthy",
                "service_completed_successfully",
            ):
                raise checker.refuse(("depends_on", key, "condition"), f"condition {condition!r} is not known")
            names[key] = {"condition": condition} if condition else {}
    else:
        raise checker.refuse(("depends_on",), "depends_on must be a list or a mapping")
    return {k: {"condition": v.get("condition", "service_started")} for k, v in names.items() if k in running}


def _escape(value: Any) -> Any:
    """Compose reads `$` in the derived file again: every one is written as `$$`."""
    if isinstance(value, str):
        return value.replace("$", "$$")
    if isinstance(value, list):
        return [_escape(v) for v in value]
    if isinstance(value, dict):
        return {k: _escape(v) for k, v in value.items()}
    return value


def inner_service(
    document: ComposeDocument, name: str, running: set[str], volumes: set[str], notes: list[str]
) -> dict[str, Any]:
    checker = Checker(document.service(name), None)
    service = checker.doc.value
    _refuse_keys(checker, service, main=False)
    if "build" in service:
        raise checker.refuse(("build",), f"service {name}: only the main service is built; give it an image")
    if service.get("image") is None:
        raise checker.refuse((), f"service {name} has no image")
    for key in sorted(set(service) - INNER_KEYS):
        notes.append(
            f"{checker.doc.where((key,))}: {key} of service {name} is not used (it runs in the drone's network)"
        )
    found: dict[str, Any] = {}
    try:
        found["image"] = validate_image(checker.string(("image",), service["image"]))
    except DevboxError as exc:
        raise checker.refuse(("image",), exc.message) from None
    for key in ("command", "entrypoint"):
        if service.get(key) is not None:
            value = _strings(checker, (key,), service[key], "a string")
            found[key] = value[0] if isinstance(service[key], str) else list(value)
    environment = _environment(checker, notes)
    if environment:
        found["environment"] = dict(environment)
    for key in ("working_dir", "user", "stop_grace_period"):
        if service.get(key) is not None:
            found[key] = _scalar(checker, (key,), service[key])
    if service.get("working_dir") is not None:
        checker.target(("working_dir",), found["working_dir"])
    if service.get("stop_grace_period") is not None and not _DURATION.fullmatch(found["stop_grace_period"]):
        raise checker.refuse(
            ("stop_grace_period",), f"stop_grace_period {found['stop_grace_period']!r} is not a duration"
        )
    if service.get("stop_signal") is not None:
        signal = checker.string(("stop_signal",), service["stop_signal"])
        if not _SIGNAL.fullmatch(signal):
            raise checker.refuse(("stop_signal",), f"stop_signal {signal!r} is not a signal name")
        found["stop_signal"] = signal
    if service.get("restart") is not None:
        restart = checker.string(("restart",), service["restart"])
        if restart.partition(":")[0] not in _RESTART:
            raise checker.refuse(("restart",), f"restart {restart!r} is not known")
        found["restart"] = restart
    if service.get("healthcheck") is not None:
        found["healthcheck"] = _healthcheck(checker, service["healthcheck"])
    if service.get("depends_on") is not None:
        depends = _depends_on(checker, service["depends_on"], running)
        if depends:
            found["depends_on"] = depends
    if service.get("cap_add"):
        caps = service["cap_add"]
        found["cap_add"] = [
            checker.cap(("cap_add", i), c) for i, c in enumerate(caps if isinstance(caps, list) else [caps])
        ]
    if service.get("tmpfs") is not None:
        found["tmpfs"] = [
            checker.target(("tmpfs", i), t)
            for i, t in enumerate(_strings(checker, ("tmpfs",), service["tmpfs"], "a path"))
        ]
    mounts: list[str] = []
    listed = service.get("volumes") or []
    if not isinstance(listed, list):
        raise checker.refuse(("volumes",), "volumes must be a list")
    for index, item in enumerate(listed):
        path: JsonPath = ("volumes", index)
        kind, source, target, readonly = _volume_parts(checker, path, item)
        target = checker.target(path, checker.checked(path, target))
        if kind != "volume" or source is None:
            raise checker.refuse(path, f"service {name}: only named volumes (declared under volumes:) are taken")
        if source not in volumes:
            raise checker.refuse(path, f"volume {source!r} is not declared under the top-level volumes:")
        mounts.append(f"{source}:{target}" + (":ro" if readonly else ""))
    if mounts:
        found["volumes"] = mounts
    found["network_mode"] = "host"  # the drone's network namespace: the main service reaches it on 127.0.0.1
    return _escape(found)


def read(document: Document, workspace: Path, bind_root: Path | None) -> Compose:
    """The compose files DOCUMENT (a devcontainer.json, variables substituted) names, judged. BIND_ROOT:
    the host directory binds may come from (the --path workspace), or None (a --repo drone: no binds)."""
    notes: list[str] = []
    files_value = document.value.get("dockerComposeFile")
    files_list = files_value if isinstance(files_value, list) else [files_value]
    if not files_list or not all(isinstance(f, str) and f for f in files_list):
        raise document.refuse(("dockerComposeFile",), "dockerComposeFile must be a file name or a list of them")
    files = []
    for index, name in enumerate(files_list):
        path: JsonPath = ("dockerComposeFile", index) if isinstance(files_value, list) else ("dockerComposeFile",)
        try:
            file = inside(workspace, document.file.parent / name, "the compose file")
        except DevboxError as exc:
            raise document.refuse(path, exc.message) from None
        if not file.is_file():
            raise document.refuse(path, f"the compose file {name} is not there")
        files.append(file)
    return judge(document, load_files(files, notes), workspace, bind_root, notes)


def judge(
    document: Document, compose: ComposeDocument, workspace: Path, bind_root: Path | None, notes: list[str]
) -> Compose:
    """The merged compose files COMPOSE for the devcontainer.json DOCUMENT."""
    value = document.value
    service = value.get("service")
    if not isinstance(service, str) or not service:
        raise document.refuse(("service",), "a dockerComposeFile configuration needs service: the main service's name")
    for key, why in REFUSED_TOP.items():
        if key in compose.value:
            raise compose.refuse((key,), why)
    services = compose.value.get("services")
    if not isinstance(services, dict) or not services:
        raise compose.refuse(("services",), "the compose files have no services")
    for name, body in services.items():
        if not SERVICE_NAME.fullmatch(name):
            raise compose.refuse(("services", name), f"service name {name!r}: use letters, digits, '_', '.', '-'")
        if not isinstance(body, dict):
            raise compose.refuse(("services", name), f"service {name} must be a mapping")
    if service not in services:
        raise document.refuse(("service",), f"service {service!r} is not in the compose files ({', '.join(services)})")
    wanted = value.get("runServices")
    others = [s for s in services if s != service]
    if wanted is not None:
        if not isinstance(wanted, list) or not all(isinstance(v, str) for v in wanted):
            raise document.refuse(("runServices",), "runServices must be a list of service names")
        for name in wanted:
            if name not in services:
                raise document.refuse(
                    ("runServices",), f"runServices names {name!r}, which is not in the compose files"
                )
        others = [s for s in others if s in wanted]
    volumes_value = compose.value.get("volumes") or {}
    if not isinstance(volumes_value, dict):
        raise compose.refuse(("volumes",), "volumes must be a mapping of names")
    for name in volumes_value:
        if not _VOLUME_NAME.fullmatch(name):
            raise compose.refuse(("volumes", name), f"volume name {name!r}: use letters, digits, '_', '.', '-'")
    for key in sorted(set(compose.value) - IGNORED_TOP - set(REFUSED_TOP)):
        if not key.startswith("x-"):
            notes.append(f"{compose.where((key,))}: {key} is not used by devbox")
    main = main_service(compose, service, workspace, bind_root, notes)
    running = set(others)
    inner = {name: inner_service(compose, name, running, set(volumes_value), notes) for name in others}
    used = {v.split(":", 1)[0] for body in inner.values() for v in body.get("volumes", [])}
    derived = None
    if inner:
        document_out: dict[str, Any] = {"name": PROJECT, "services": inner}
        if used:
            document_out["volumes"] = {name: {} for name in sorted(used)}
        derived = "# Written by devbox from the repository's compose files: only the keys it checked.\n"
        derived += json.dumps(document_out, indent=2, ensure_ascii=False) + "\n"
    return Compose(main, derived, tuple(others), tuple(notes))


def with_main_service(config: DevcontainerConfig, main: MainService) -> DevcontainerConfig:
    """The devcontainer.json's configuration with the main service's: the file's own values win."""
    env = dict(main.env) | dict(config.container_env)
    mounts = {m.target: m for m in main.mounts} | {m.target: m for m in config.mounts}
    return replace(
        config,
        container_env=tuple(env.items()),
        mounts=tuple(mounts.values()),
        ports=tuple(dict.fromkeys([*main.ports, *config.ports])),
        cap_add=tuple(dict.fromkeys([*main.cap_add, *config.cap_add])),
        security_opt=tuple(dict.fromkeys([*main.security_opt, *config.security_opt])),
    )


def scratch_config(document: Document, main: MainService) -> str:
    """The devcontainer.json the Dev Containers CLI builds: the main service's image or build, and the
    repository's features and users. Local features (./...) would be looked for beside this file:
    refused."""
    value = document.value
    features = value.get("features") or {}
    if isinstance(features, dict):
        for key in features:
            if str(key).startswith("."):
                raise document.refuse(
                    ("features", key), "local features are not supported with dockerComposeFile (yet)"
                )
    scratch: dict[str, Any] = dict(main.build)
    scratch.update({key: value[key] for key in BUILD_KEYS if key in value})
    if main.user and "remoteUser" not in scratch and "containerUser" not in scratch:
        scratch["containerUser"] = main.user
    return json.dumps(scratch, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def scratch_source(
    workspace: Path, config_file: Path, main: MainService, text: str, scratch_root: Path
) -> DevcontainerSource:
    """Where the build finds its files: the scratch devcontainer.json (written under SCRATCH_ROOT, one
    directory per repository configuration, so drones from the same one share the cached image)."""
    key = hashlib.sha256(str(config_file).encode()).hexdigest()[:16]
    folder = scratch_root / key
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    file = folder / "devcontainer.json"
    if not file.is_file() or file.read_text(encoding="utf-8") != text:
        tmp = folder / "devcontainer.json.tmp"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(file)
    context = main.context_dir or folder
    return DevcontainerSource(workspace=workspace.resolve(), config_file=file, context_dir=context)
