"""Rendered units compared byte for byte with tests/golden/. Regenerate on purpose only:

DEVBOX_UPDATE_GOLDEN=1 pytest tests/unit/test_render_golden.py
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from devbox.units.render import quadlet_keys, render_drone
from tests.unit.cases import golden_cases

GOLDEN = Path(__file__).resolve().parent.parent / "golden"


@pytest.mark.parametrize("case", sorted(golden_cases()))
def test_rendered_units_match_golden_files(case: str) -> None:
    rendered = {f"{f.place.value}/{f.relative_path}": f.text for f in render_drone(*golden_cases()[case])}
    directory = GOLDEN / case
    if os.environ.get("DEVBOX_UPDATE_GOLDEN") == "1":
        for relative, text in rendered.items():
            (directory / relative).parent.mkdir(parents=True, exist_ok=True)
            (directory / relative).write_bytes(text.encode())
    on_disk = {str(p.relative_to(directory)): p.read_bytes().decode() for p in directory.rglob("*") if p.is_file()}
    assert sorted(on_disk) == sorted(rendered)
    for relative, text in rendered.items():
        assert text == on_disk[relative], f"{case}/{relative} differs from its golden file"


def test_keys_newer_than_the_hosts_quadlet_are_never_rendered() -> None:
    assert quadlet_keys(None) == quadlet_keys((4, 4)) == quadlet_keys((5, 4)) == frozenset()
    assert quadlet_keys((5, 5)) == quadlet_keys((6, 0)) == {"Memory"}


def test_a_control_character_never_becomes_a_line_break_in_a_unit() -> None:
    import pytest

    from devbox.units.render import systemd_word

    for bad in ("a\nExecStartPre=/bin/true", "a\x00b", "a\rb", "\x1b[31m"):
        with pytest.raises(ValueError):
            systemd_word(bad)
    assert systemd_word("100% $HOME") == '"100%% $$HOME"'
