"""bench/bench.py's devcontainer part (bench/dcbench.py) in the real machine, on the devcontainer
fixture (FROM the machine's base image, a local feature, offline), with a small repetition count.
No timing is asserted: the test checks that every figure is measured, that the cached create
built nothing, and that the bench left nothing behind."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.e2e.test_devcontainer import DIR, WS, put_fixture

BENCH = Path(__file__).resolve().parents[2] / "bench"
# DEVBOX_BENCH_REPS=7 gives the README's figures.
REPS = int(os.environ.get("DEVBOX_BENCH_REPS", "2"))
FIGURES = {
    "first create",
    "cached create",
    "devcontainer build",
    "devcontainer build, cached",
    "contract layer",
    "podman run, new image",
    "podman run",
}


def test_devcontainer_bench_measures_everything(machine, capsys) -> None:
    put_fixture(machine)
    for source in (BENCH / "bench.py", BENCH / "dcbench.py"):
        machine.user(f"mkdir -p ~/bench && cat > ~/bench/{source.name}", input=source.read_text())
    try:
        result = machine.user(
            "cd ~/bench && /opt/devbox-venv/bin/python bench.py --parts devcontainer "
            f"--devcontainer {WS} --reps {REPS} --out ~/bench/dc-results.json",
            timeout=3600,
        )
    finally:
        machine.user(f"rm -rf {DIR}", check=False)
    with capsys.disabled():
        print("\n" + result.stdout)
    data = json.loads(machine.user("cat ~/bench/dc-results.json").stdout)
    assert set(data) == {"machine", "reps", "devcontainer"}
    assert data["machine"]["devcontainer"] == "0.89.0"
    part = data["devcontainer"]
    assert isinstance(part, dict), part  # a string says why the part was skipped
    assert set(part["figures s"]) == FIGURES and all(v > 0 for v in part["figures s"].values())
    assert len(part["ratios"]) == 4 and all(v > 0 for v in part["ratios"].values())
    # The bench stops when a cached create calls the CLI or gets another image; one call per first create.
    assert part["cached create built"] is False
    assert part["Dev Containers CLI calls by devbox"] == REPS
    # Nothing left: images and build layers, drones, containers, volumes, the workspace copy, build logs.
    assert part["images left behind"] == []
    left = machine.user(
        "podman ps -a --format '{{.Names}}' | grep bench-dc; podman volume ls -q | grep bench-dc; "
        "ls ~/.config/containers/systemd | grep bench-dc; ls -d /tmp/devbox-bench-dc-* ~/.local/state/devbox/builds/*bench-dc*",
        check=False,
    )
    assert left.stdout == ""
