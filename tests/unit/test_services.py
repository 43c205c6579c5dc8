"""--with NAME and [drone] with: the optional services, declared once in drone/services.py."""

from __future__ import annotations

import json

from devbox.errors import ExitCode
from tests.fakes import World
from tests.unit.test_cli import devbox


def test_with_syncthing_is_the_older_flag(world: World, capsys) -> None:
    assert devbox(capsys, "create", "a", "--with", "syncthing", "--with", "syncthing")[0] == 0
    unit = (world.paths.quadlet_dir / "drone-a.container").read_text()
    assert "Environment=DEVBOX_SYNCTHING=1\n" in unit and "Label=io.devbox.syncthing=true\n" in unit
    assert "DEVBOX_WITH" not in unit  # syncthing keeps its own variable and label
    assert json.loads(devbox(capsys, "status", "a", "--json")[1])["syncthing"] is True


def test_an_unknown_service_is_one_line_and_nothing_is_written(world: World, capsys) -> None:
    code, _, err = devbox(capsys, "create", "a", "--with", "vnc")
    assert code == ExitCode.INVALID_INPUT
    assert err.strip() == "devbox: unknown service 'vnc' for --with: known are code-server, containers, mosh, syncthing, web-terminal"
    assert not (world.paths.quadlet_dir / "drone-a.container").exists()
    code, _, err = devbox(capsys, "create", "a", "--with", "x\u2028y")
    assert code == ExitCode.INVALID_INPUT and "\u2028" not in err and "invisible" in err


def test_the_config_gives_every_new_drone_its_services(world: World, capsys) -> None:
    world.paths.config_file.parent.mkdir(parents=True, exist_ok=True)
    world.paths.config_file.write_text('[drone]\nwith = ["syncthing"]\n')
    assert devbox(capsys, "create", "a")[0] == 0
    assert "Environment=DEVBOX_SYNCTHING=1\n" in (world.paths.quadlet_dir / "drone-a.container").read_text()
    world.paths.config_file.write_text('[drone]\nwith = ["vnc"]\n')
    code, _, err = devbox(capsys, "create", "b")
    assert code == ExitCode.CONFIG and "drone.with" in err and "unknown service 'vnc'" in err


def test_services_reach_the_init_and_read_back_from_the_label() -> None:
    from dataclasses import replace

    from devbox.units.installed import _declared
    from devbox.units.render import render_drone
    from devbox.units.unitfile import labels
    from tests.unit.cases import HOST, cases

    spec = replace(cases()["minimal"], services=("syncthing",))
    [unit] = [f.text for f in render_drone(spec, HOST) if f.relative_path.endswith(".container")]
    assert "Environment=DEVBOX_WITH=syncthing\n" in unit
    assert _declared(spec.name, spec.image, labels(unit), spec.created).services == ("syncthing",)
