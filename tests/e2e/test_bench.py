"""bench/bench.py runs in the real machine with a small repetition count and writes its JSON.
No timing is asserted: the figures are for people, the test checks that they are all measured."""

from __future__ import annotations

import json
import os
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench.py"
# CI runs it small; DEVBOX_BENCH_REPS=7 DEVBOX_BENCH_SIZES=1,20,100 gives the README's table.
REPS = os.environ.get("DEVBOX_BENCH_REPS", "3")
SIZES = os.environ.get("DEVBOX_BENCH_SIZES", "1,3")


def test_bench_measures_everything(machine, githost, capsys) -> None:
    machine.user("mkdir -p ~/bench && cat > ~/bench/bench.py", input=BENCH.read_text())
    fake = BENCH.parents[1] / "tests" / "fakeupstream.py"  # the key proxy's stand-in upstream
    machine.user("cat > ~/bench/fakeupstream.py", input=fake.read_text())
    result = machine.user(
        "cd ~/bench && /opt/devbox-venv/bin/python bench.py --image localhost/devbox-test:latest "
        f"--reps {REPS} --sizes {SIZES} --idle-wait 30 --parts startup,create,list,keys,fence,broker,mosh --out ~/bench/results.json",
        timeout=3600,
    )
    with capsys.disabled():
        print("\n" + result.stdout)
    data = json.loads(machine.user("cat ~/bench/results.json").stdout)
    assert set(data) == {"machine", "reps", "startup", "create", "list", "key proxy", "fence", "broker", "mosh"}
    keys = data["key proxy"]
    assert keys["small request p99: proxy ms"] >= keys["small request p50: proxy ms"] > 0
    assert keys["100 MB streamed: proxy/direct throughput"] > 0 and keys["small request p50: proxy/direct"] > 0
    assert data["fence"]["fenced / open"] > 0 and data["fence"]["100 MB download, open s"] > 0
    assert str(data["mosh"]).startswith("skipped: ")  # the test image has no mosh: test_sessions.py measures it
    assert set(data["startup"]) == {"python3 -c pass", "devbox --help", "devbox list (no drones)"}
    assert all(v > 0 for v in data["startup"].values()) and all(v > 0 for v in data["create"].values())
    assert set(data["list"]) == set(SIZES.split(","))
    broker = data["broker"]
    assert broker["cold request (activation + first mint) s"] > 0
    assert broker["cached token, 50 clients: p99 ms"] >= broker["cached token, 50 clients: p50 ms"] > 0
    assert broker["broker RSS while serving KiB"] > 0
    assert broker["broker processes while idle"] == 0  # the broker left after its idle time
    assert machine.user("podman ps -a --format '{{.Names}}' | grep -c bench- || true").stdout.strip() == "0"
