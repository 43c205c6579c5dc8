"""Reading a devcontainer.json: JSON with comments and trailing commas (JSONC), then variables.

A small parser of our own rather than a package: the Dev Containers spec reads these files
with VS Code's jsonc-parser, which has no Python twin, and json5 accepts far more (unquoted
keys, single quotes, hex numbers) than a file the CLI reads. The parser records the line of
every value, so a refusal later names the file and the line. Nothing in the file is run.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devbox.errors import DevboxError, invalid

JsonPath = tuple[str | int, ...]
MAX_SIZE = 1024 * 1024  # a devcontainer.json is a few KiB; anything near this is not one
MAX_DEPTH = 64


@dataclass(frozen=True)
class Document:
    """A parsed file: its value, and the line of every value in it (by path from the top)."""

    file: Path
    value: Any
    lines: Mapping[JsonPath, int]

    def where(self, path: JsonPath) -> str:
        """`FILE:LINE` of the value at PATH, or of its nearest parent that has a line."""
        if not self.lines:  # an image's metadata entry: no file, no lines
            return str(self.file)
        while path and path not in self.lines:
            path = path[:-1]
        return f"{self.file}:{self.lines.get(path, 1)}"

    def refuse(self, path: JsonPath, message: str) -> DevboxError:
        return invalid(f"{self.where(path)}: {message}")


_WHITESPACE = " \t\r\n\ufeff"
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_LITERALS = {"true": True, "false": False, "null": None}


class _Parser:
    def __init__(self, text: str, file: Path) -> None:
        self.text = text
        self.file = file
        self.pos = 0
        self.lines: dict[JsonPath, int] = {}

    def line(self) -> int:
        return self.text.count("\n", 0, self.pos) + 1

    def fail(self, message: str) -> DevboxError:
        return invalid(f"{self.file}:{self.line()}: not valid JSON with comments: {message}")

    def skip(self) -> None:
        """Whitespace and comments."""
        text = self.text
        while self.pos < len(text):
            if text[self.pos] in _WHITESPACE:
                self.pos += 1
            elif text.startswith("//", self.pos):
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end
            elif text.startswith("/*", self.pos):
                end = text.find("*/", self.pos + 2)
                if end < 0:
                    raise self.fail("a comment that never ends")
                self.pos = end + 2
            else:
                return

    def peek(self) -> str:
        self.skip()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def value(self, path: JsonPath) -> Any:
        if len(path) > MAX_DEPTH:
            raise self.fail(f"nested deeper than {MAX_DEPTH} levels")
        char = self.peek()
        self.lines[path] = self.line()
        if char == "{":
            return self.members(path)
        if char == "[":
            return self.elements(path)
        if char == '"':
            return self.string()
        match = _NUMBER.match(self.text, self.pos)
        if match:
            self.pos = match.end()
            number = match.group()
            return float(number) if any(c in number for c in ".eE") else int(number)
        for word, literal in _LITERALS.items():
            if self.text.startswith(word, self.pos):
                self.pos += len(word)
                return literal
        raise self.fail(f"unexpected {char!r}" if char else "the file ends too early")

    def members(self, path: JsonPath) -> dict[str, Any]:
        self.pos += 1
        found: dict[str, Any] = {}
        while self.peek() != "}":
            if self.peek() != '"':
                raise self.fail("expected a quoted key or '}'")
            key = self.string()
            if self.peek() != ":":
                raise self.fail(f"expected ':' after {key!r}")
            self.pos += 1
            found[key] = self.value((*path, key))
            if not self.separator("}"):
                break
        self.expect("}")
        return found

    def elements(self, path: JsonPath) -> list[Any]:
        self.pos += 1
        found: list[Any] = []
        while self.peek() != "]":
            found.append(self.value((*path, len(found))))
            if not self.separator("]"):
                break
        self.expect("]")
        return found

    def separator(self, closing: str) -> bool:
        """A comma (a trailing one before CLOSING too) means more may follow."""
        char = self.peek()
        if char == ",":
            self.pos += 1
            return True
        if char != closing:
            raise self.fail(f"expected ',' or {closing!r}")
        return False

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise self.fail(f"expected {char!r}")
        self.pos += 1

    def string(self) -> str:
        decoder = json.JSONDecoder()
        try:
            text, end = decoder.raw_decode(self.text, self.pos)
        except json.JSONDecodeError as exc:
            raise self.fail(f"a bad string ({exc.msg})") from None
        self.pos = end
        return str(text)


def parse_jsonc(text: str, file: Path) -> Document:
    parser = _Parser(text, file)
    value = parser.value(())
    if parser.peek():
        raise parser.fail("more after the end of the top-level value")
    if not isinstance(value, dict):
        raise invalid(f"{file}:1: a devcontainer.json holds one object")
    return Document(file, value, parser.lines)


def read_text(file: Path, what: str) -> str:
    """FILE's text (UTF-8, at most MAX_SIZE), or one line saying why not; WHAT names what it should be."""
    try:
        size = file.stat().st_size
        if size > MAX_SIZE:
            raise invalid(f"{file}: larger than {MAX_SIZE // 1024} KiB; not {what}")
        return file.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise invalid(f"{file}: not UTF-8 text") from None
    except OSError as exc:
        raise invalid(f"cannot read {file}: {exc.strerror}") from None


def load(file: Path) -> Document:
    """Read FILE (which discovery found inside the workspace) as JSONC."""
    return parse_jsonc(read_text(file, "a devcontainer.json"), file)


# --- variables -----------------------------------------------------------------------------------
# The spec's ${...} variables. ${containerEnv:VAR} is the drone's own environment, known only when
# it runs: it is kept (as ${VAR}) in remoteEnv and the hooks, which the drone's init expands, and
# refused everywhere else.

_VARIABLE = re.compile(r"\$\{([^}]*)\}")


# ${localEnv:VAR} reads this host's environment, which may hold secrets (OP_SERVICE_ACCOUNT_TOKEN,
# GITHUB_TOKEN...) that an untrusted repository would copy into its drone. Only these harmless names
# are read; any other reads as unset, so its default (or nothing) applies.
LOCAL_ENV_ALLOWED = frozenset({"USER", "LOGNAME", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TERM", "SHELL"})


def host_env(name: str) -> str | None:
    return os.environ.get(name) if name in LOCAL_ENV_ALLOWED else None


@dataclass(frozen=True)
class Variables:
    local_workspace: str  # the workspace on this host (the --path directory, or the fetched checkout)
    container_workspace: str  # where the workspace is in the drone
    devcontainer_id: str  # stable per drone
    local_env: Callable[[str], str | None] = host_env

    def value(self, name: str, container_env: bool) -> str | None:
        """The text for ${NAME}, or None when NAME is unknown."""
        kind, _, rest = name.partition(":")
        fixed = {
            "localWorkspaceFolder": self.local_workspace,
            "localWorkspaceFolderBasename": Path(self.local_workspace).name,
            "containerWorkspaceFolder": self.container_workspace,
            "containerWorkspaceFolderBasename": Path(self.container_workspace).name,
            "devcontainerId": self.devcontainer_id,
        }
        if name in fixed:
            return fixed[name]
        if kind in ("localEnv", "env") and rest:
            var, _, default = rest.partition(":")
            return self.local_env(var) or default
        if kind == "containerEnv" and rest and container_env:
            var, _, default = rest.partition(":")
            # Left for the drone's init to expand when it runs the hook, in the drone's environment.
            return "${" + var + (":-" + default if default else "") + "}"
        return None


def substitute(document: Document, variables: Variables) -> Document:
    """Every ${...} in every string replaced; an unknown one is an error naming its file and line."""

    def walk(value: Any, path: JsonPath) -> Any:
        if isinstance(value, dict):
            return {key: walk(item, (*path, key)) for key, item in value.items()}
        if isinstance(value, list):
            return [walk(item, (*path, index)) for index, item in enumerate(value)]
        if isinstance(value, str):
            return _VARIABLE.sub(lambda match: replace(match, path), value)
        return value

    def replace(match: re.Match[str], path: JsonPath) -> str:
        # ${containerEnv:...} only where the drone's init expands it: remoteEnv and the hooks.
        in_drone = bool(path) and (path[0] == "remoteEnv" or str(path[0]).endswith("Command"))
        found = variables.value(match.group(1), container_env=in_drone)
        if found is None:
            raise document.refuse(path, f"unknown variable {match.group(0)!r}")
        return found

    return Document(document.file, walk(document.value, ()), document.lines)
