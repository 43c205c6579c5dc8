"""runArgs: `podman run` options from a repository, through an allow-list.

Only what the configuration's own keys could ask for is taken (capabilities and security
options from their allow-lists, environment, init, mounts inside the workspace or of named
volumes). --label is refused: labels are devbox's record of a drone, and io.devbox.* must not be
forged. Everything else, the host's namespaces, privileges and devices included, is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from devbox.devcontainer.model import Checker, Mount
from devbox.devcontainer.read import JsonPath
from devbox.errors import DevboxError
from devbox.values import validate_env_key


@dataclass(frozen=True)
class RunArgs:
    env: tuple[tuple[str, str], ...] = ()
    cap_add: tuple[str, ...] = ()
    security_opt: tuple[str, ...] = ()
    mounts: tuple[Mount, ...] = ()
    init: bool = False


_HOST_NAMESPACES = {"--network": "the host's network", "--net": "the host's network", "--pid": "the host's processes"}
_HOST_NAMESPACES |= {"--ipc": "the host's IPC", "--uts": "the host's UTS namespace", "--userns": "the host's users"}
_REFUSED = {
    "--privileged": "privileged containers are refused",
    "--device": "devices are refused",
    "--gpus": "devices are refused",
    "--device-cgroup-rule": "devices are refused",
    "--label": "labels are devbox's own record of a drone",
    "-l": "labels are devbox's own record of a drone",
}
_WITH_VALUE = {"--cap-add", "--security-opt", "--env", "-e", "--volume", "-v", "--mount", *_HOST_NAMESPACES, "--device"}
_WITH_VALUE |= {"--label", "-l", "--gpus", "--device-cgroup-rule"}


def _split(items: list[tuple[JsonPath, Any]], checker: Checker) -> list[tuple[JsonPath, str, str | None]]:
    """(path, option, value) from `--opt=value`, `--opt value` and bare flags."""
    words = [(path, checker.string(path, item)) for path, item in items]
    found: list[tuple[JsonPath, str, str | None]] = []
    index = 0
    while index < len(words):
        path, word = words[index]
        option, sep, value = word.partition("=")
        if not sep and option in _WITH_VALUE:
            if index + 1 >= len(words):
                raise checker.refuse(path, f"runArgs option {option} needs a value")
            index += 1
            value = words[index][1]
            sep = "="
        found.append((path, option, value if sep else None))
        index += 1
    return found


def _volume(checker: Checker, path: JsonPath, value: str, long_form: bool) -> Mount:
    if long_form:
        return checker.mount(path, value)
    parts = value.split(":")
    if len(parts) not in (2, 3):
        raise checker.refuse(path, f"runArgs volume {value!r}: expected SOURCE:TARGET[:ro]")
    kind = "bind" if parts[0].startswith(("/", ".")) else "volume"
    spec = {"type": kind, "source": parts[0], "target": parts[1]}
    if len(parts) == 3:
        if parts[2] not in ("ro", "rw", "z", "Z"):
            raise checker.refuse(path, f"runArgs volume option {parts[2]!r} is refused")
        spec["readonly"] = "true" if parts[2] == "ro" else ""
    return checker.mount(path, spec)


def check_run_args(checker: Checker, items: list[tuple[JsonPath, Any]]) -> RunArgs:
    env: list[tuple[str, str]] = []
    caps: list[str] = []
    opts: list[str] = []
    mounts: list[Mount] = []
    init = False
    takes: dict[str, Callable[[JsonPath, str], None]] = {
        "--cap-add": lambda p, v: caps.append(checker.cap(p, v)),
        "--security-opt": lambda p, v: opts.append(checker.security_opt(p, v)),
        "--env": lambda p, v: env.append(_env(checker, p, v)),
        "-e": lambda p, v: env.append(_env(checker, p, v)),
        "--volume": lambda p, v: mounts.append(_volume(checker, p, v, False)),
        "-v": lambda p, v: mounts.append(_volume(checker, p, v, False)),
        "--mount": lambda p, v: mounts.append(_volume(checker, p, v, True)),
    }
    for path, option, value in _split(items, checker):
        if option in _REFUSED:
            raise checker.refuse(path, f"runArgs {option}: {_REFUSED[option]}")
        if option in _HOST_NAMESPACES:
            why = (
                f"{_HOST_NAMESPACES[option]} is refused" if value == "host" else "devbox chooses the drone's namespaces"
            )
            raise checker.refuse(path, f"runArgs {option}={value}: {why}")
        if option == "--init" and value is None:
            init = True
        elif option in takes and value is not None:
            takes[option](path, value)
        else:
            raise checker.refuse(path, f"runArgs option {option} is not supported")
    return RunArgs(tuple(env), tuple(caps), tuple(opts), tuple(mounts), init)


def _env(checker: Checker, path: JsonPath, item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep:
        raise checker.refuse(path, f"runArgs --env {item!r}: expected KEY=VALUE")
    try:
        validate_env_key(key)
    except DevboxError as exc:
        raise checker.refuse(path, exc.message) from None
    return key, checker.checked(path, value)
