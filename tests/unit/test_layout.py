"""The package layout is the architecture: imports go down the layers, never up, and never round.

Every import counts, including those inside functions (devbox defers heavy imports there),
because a deferred import that goes upward is still a dependency that goes upward.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "devbox"

# Lowest first. A module may import modules of its own layer or of a lower one.
LAYERS: list[tuple[str, ...]] = [
    ("devbox", "devbox.errors", "devbox.paths", "devbox.names", "devbox.values"),
    ("devbox.host",),
    ("devbox.drone",),
    ("devbox.config",),
    ("devbox.context",),
    ("devbox.units",),
    ("devbox.devcontainer",),
    ("devbox.cleanup", "devbox.broker", "devbox.fence"),
    ("devbox.commands",),
    ("devbox.cli", "devbox.__main__"),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(path: Path, known: set[str]) -> Iterator[tuple[str, int]]:
    """(module, line) for every devbox module PATH imports, at any depth of the file."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("devbox"):
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("devbox"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                yield (sub if sub in known else node.module), node.lineno


def layer_of(module: str) -> int:
    best, rank = -1, -1
    for index, layer in enumerate(LAYERS):
        for prefix in layer:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), index
    assert rank >= 0, f"{module} is in no layer: add it to LAYERS"
    return rank


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: {m for m, _ in imported(path, known) if m != name} for name, path in found.items()}


def test_every_module_has_a_layer() -> None:
    for name in modules():
        layer_of(name)


def test_imports_never_go_up_a_layer() -> None:
    found = modules()
    known = set(found)
    upward = [
        f"{name}:{line} imports {target}"
        for name, path in found.items()
        for target, line in imported(path, known)
        if layer_of(target) > layer_of(name)
    ]
    assert upward == []


def test_no_import_cycles() -> None:
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if nxt not in edges:
                continue
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt) :] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("package", ["cli", "commands", "cleanup", "drone", "units", "host", "broker"])
def test_package_inits_re_export_nothing(package: str) -> None:
    tree = ast.parse((PACKAGE / package / "__init__.py").read_text(encoding="utf-8"))
    assert [n for n in tree.body if not isinstance(n, ast.Expr)] == []


def test_errors_imports_nothing_of_devbox() -> None:
    assert graph()["devbox.errors"] == set()
