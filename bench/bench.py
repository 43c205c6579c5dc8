#!/usr/bin/env python3
"""devbox's speed, as ratios against the bare Podman and systemd commands measured in the same run.

Run it as the user who owns the drones, on a host with systemd and Podman 5:

    python3 bench/bench.py --image localhost/devbox-drone:latest [--reps 7] [--sizes 1,20,100] [--out results.json]

It creates and destroys its own drones (named bench-*), never touches others, and
prints a table; the same figures go to the JSON file. The broker part runs only
when a GitHub App is configured for devbox (it then measures the real broker
against whatever API the config points at).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

DEVBOX = [sys.executable, "-m", "devbox"]
QUADLET_DIR = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "containers" / "systemd"
PODMAN_PS = ["podman", "ps", "--filter", "label=io.devbox.drone", "--format", "json"]
RUNTIME = Path(os.environ.get("XDG_RUNTIME_DIR", f"/run/user/{os.getuid()}"))
DRONES_DATA = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "devbox" / "drones"


def run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise SystemExit(f"bench: {' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()[:300]}")
    return result


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def median_of(reps: int, action: Callable[[], object], setup: Callable[[], object] | None = None) -> float:
    samples = []
    for _ in range(reps):
        if setup:
            setup()
        samples.append(timed(action))
    return statistics.median(samples)


def devbox(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run([*DEVBOX, *args], check=check)


def systemctl(*args: str) -> None:
    run(["systemctl", "--user", *args])


def bench_startup(reps: int) -> dict[str, float]:
    return {
        "python3 -c pass": median_of(reps, lambda: run([sys.executable, "-c", "pass"])),
        "devbox --help": median_of(reps, lambda: devbox("--help")),
        "devbox list (no drones)": median_of(reps, lambda: devbox("list")),
    }


def bench_create(reps: int, image: str) -> dict[str, float]:
    """devbox create (to active) vs the same Quadlet file written by hand, daemon-reload, start."""
    devbox("create", "bench-probe", "--image", image, "--no-start")
    text = (QUADLET_DIR / "drone-bench-probe.container").read_text()
    keys = (DRONES_DATA / "bench-probe" / "authorized_keys").read_text()
    devbox("destroy", "bench-probe", "--yes")
    manual = QUADLET_DIR / "drone-bench-manual.container"

    def manual_create() -> None:
        (RUNTIME / "devbox" / "drones" / "bench-manual").mkdir(parents=True, exist_ok=True)
        (DRONES_DATA / "bench-manual").mkdir(parents=True, exist_ok=True)
        (DRONES_DATA / "bench-manual" / "authorized_keys").write_text(keys)
        manual.write_text(text.replace("bench-probe", "bench-manual"))
        systemctl("daemon-reload")
        systemctl("start", "drone-bench-manual.service")

    def manual_cleanup() -> None:
        run(["systemctl", "--user", "stop", "drone-bench-manual.service"], check=False)
        manual.unlink(missing_ok=True)
        (DRONES_DATA / "bench-manual" / "authorized_keys").unlink(missing_ok=True)
        systemctl("daemon-reload")
        run(["podman", "volume", "rm", "-f", "drone-bench-manual-home"], check=False)

    bare: list[float] = []
    ours: list[float] = []
    for _ in range(reps):
        bare.append(timed(manual_create))
        manual_cleanup()
        ours.append(timed(lambda: devbox("create", "bench-create", "--image", image)))
        devbox("destroy", "bench-create", "--yes")
    return {
        "hand-written unit + daemon-reload + start": statistics.median(bare),
        "devbox create": statistics.median(ours),
    }


def _running_drones() -> int:
    listed = json.loads(run(PODMAN_PS).stdout or "[]")
    return sum(1 for c in listed if c.get("State") == "running")


def _settle(size: int, timeout: float = 300.0) -> None:
    """Wait until SIZE drones run (a first start copies the image for keep-id, busy for seconds)."""
    deadline = time.monotonic() + timeout
    while _running_drones() < size:
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: {size} drones did not all run within {timeout:.0f} s")
        time.sleep(0.5)


def bench_list(reps: int, sizes: list[int], image: str) -> dict[str, dict[str, float]]:
    """Both commands timed alternately, once the drones have settled, after one untimed call each."""
    results: dict[str, dict[str, float]] = {}
    made = 0
    try:
        for size in sizes:
            while made < size:
                devbox("create", f"bench-l{made:03d}", "--image", image)
                made += 1
            _settle(size)
            run(PODMAN_PS)
            devbox("list", "--json")
            bare: list[float] = []
            ours: list[float] = []
            for _ in range(reps):
                bare.append(timed(lambda: run(PODMAN_PS)))
                ours.append(timed(lambda: devbox("list", "--json")))
            results[str(size)] = {
                "podman ps --filter label=io.devbox.drone --format json": statistics.median(bare),
                "devbox list --json": statistics.median(ours),
            }
    finally:
        for index in range(made):
            devbox("destroy", f"bench-l{index:03d}", "--yes", check=False)
    return results


def _ask(sock: str, target: str = "/token") -> float:
    started = time.perf_counter()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(30)
        conn.connect(sock)
        conn.sendall(f"GET {target} HTTP/1.1\r\nHost: broker\r\n\r\n".encode())
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    if not data.startswith(b"HTTP/1.1 200"):
        status = data.split(b"\r\n", 1)[0].decode()
        raise SystemExit(f"bench: the broker answered {status!r}")
    return time.perf_counter() - started


def _client(sock: str, reps: int, samples: list[float], lock: threading.Lock) -> None:
    for _ in range(reps):
        took = _ask(sock)
        with lock:
            samples.append(took)


def _percentile(samples: list[float], pct: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))]


def _rss_kib(unit: str) -> int | None:
    pid = run(["systemctl", "--user", "show", "-p", "MainPID", "--value", unit]).stdout.strip()
    if not pid or pid == "0":
        return None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


def bench_broker(reps: int, image: str, repo: str, idle_wait: float) -> dict[str, object]:
    name = "bench-broker"
    devbox("create", name, "--image", image, "--repo", repo)
    sock = str(RUNTIME / "devbox" / "drones" / name / "creds.sock")
    unit = f"drone-{name}-creds.service"
    try:
        cold = _ask(sock)  # socket activation, process start, JWT, installation lookup, first mint
        result: dict[str, object] = {"cold request (activation + first mint) s": cold}
        for clients in (1, 50):
            samples: list[float] = []
            lock = threading.Lock()
            threads = [threading.Thread(target=_client, args=(sock, reps, samples, lock)) for _ in range(clients)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            result[f"cached token, {clients} clients: p50 ms"] = _percentile(samples, 50) * 1000
            result[f"cached token, {clients} clients: p99 ms"] = _percentile(samples, 99) * 1000
        result["broker RSS while serving KiB"] = _rss_kib(unit)
        deadline = time.monotonic() + idle_wait
        while _rss_kib(unit) is not None and time.monotonic() < deadline:
            time.sleep(0.5)  # waiting for the broker's own idle exit, polled
        result["broker processes while idle"] = 0 if _rss_kib(unit) is None else 1
        return result
    finally:
        devbox("destroy", name, "--yes", check=False)


def _drone_rss_kib(name: str) -> dict[str, int]:
    """VmRSS of every process of drone NAME (its init and all below it, as the host sees them), by command."""
    root = run(["podman", "inspect", "--format", "{{.State.Pid}}", f"drone-{name}"]).stdout.strip()
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    tree, todo = set(), [int(root)]
    while todo:
        pid = todo.pop()
        tree.add(pid)
        todo.extend(child for child, parent in parents.items() if parent == pid and child not in tree)
    rss: dict[str, int] = {}
    for pid in tree:
        try:
            fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        except OSError:
            continue
        if "VmRSS" in fields:
            command = fields["Name"].strip()
            rss[command] = rss.get(command, 0) + int(fields["VmRSS"].split()[0])
    return rss


def bench_mosh(image: str, settle: float = 5.0) -> dict[str, object] | str:
    """Idle footprint of a drone --with mosh: its processes' RSS alone, then with a real mosh client
    attached (run in a pseudo-terminal here), and the ratio, in the same run."""
    import pty

    if not shutil.which("mosh"):
        return "skipped: no mosh client on this host"
    probe = run(["podman", "run", "--rm", "--entrypoint", "sh", image, "-c", "command -v mosh-server"], check=False)
    if probe.returncode != 0:
        return f"skipped: {image} has no mosh-server"
    name = "bench-mosh"
    devbox("create", name, "--image", image, "--with", "mosh")
    client = None
    try:
        deadline = time.monotonic() + 90
        while devbox("ssh", name, "--", "true", check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise SystemExit("bench: the mosh drone's sshd did not answer in 90 s")
            time.sleep(1)
        time.sleep(settle)
        alone = _drone_rss_kib(name)
        client, fd = pty.fork()
        if client == 0:
            env = {**os.environ, "TERM": "xterm-256color", "LC_ALL": "C.UTF-8"}
            os.execvpe(DEVBOX[0], [*DEVBOX, "mosh", name, "--", "sleep", "3600"], env)
        threading.Thread(target=lambda: _drain(fd), daemon=True).start()
        while "mosh-server" not in _drone_rss_kib(name):
            if time.monotonic() > deadline + 60:
                raise SystemExit("bench: mosh-server did not start in the drone")
            time.sleep(0.5)
        time.sleep(settle)
        attached = _drone_rss_kib(name)
        without, with_mosh = sum(alone.values()), sum(attached.values())
        return {
            "drone RSS, no mosh client KiB": without,
            "drone RSS, a mosh client attached KiB": with_mosh,
            "mosh-server RSS KiB": attached.get("mosh-server", 0),
            "with / without mosh": round(with_mosh / without, 3) if without else None,
        }
    finally:
        if client:
            os.kill(client, 15)
            os.waitpid(client, 0)
        devbox("destroy", name, "--yes", check=False)


def _drain(fd: int) -> None:
    """Read what the mosh client draws, so that it never blocks on a full terminal."""
    try:
        while os.read(fd, 65536):
            pass
    except OSError:
        pass


def machine() -> dict[str, str]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    podman = run(["podman", "--version"]).stdout.strip()
    systemd = run(["systemctl", "--version"]).stdout.splitlines()[0]
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "kernel": platform.release(),
        "podman": podman,
        "systemd": systemd,
        "python": platform.python_version(),
    }


def table(results: dict[str, object]) -> str:
    lines = [f"machine: {results['machine']}"]
    start = results["startup"]
    assert isinstance(start, dict)
    base = start["python3 -c pass"]
    for key, value in start.items():
        lines.append(f"{key:<44} {value * 1000:8.1f} ms  {value / base:5.2f}x python3 -c pass")
    create = results["create"]
    assert isinstance(create, dict)
    bare = create["hand-written unit + daemon-reload + start"]
    for key, value in create.items():
        lines.append(f"{key:<44} {value * 1000:8.1f} ms  {value / bare:5.2f}x by hand")
    listing = results["list"]
    assert isinstance(listing, dict)
    for size, pair in listing.items():
        ps, ours = pair["podman ps --filter label=io.devbox.drone --format json"], pair["devbox list --json"]
        label = f"list, {size} drones: podman ps / devbox"
        lines.append(f"{label:<44} {ps * 1000:8.1f} / {ours * 1000:.1f} ms  {ours / ps:5.2f}x")
    mosh = results.get("mosh")
    if isinstance(mosh, dict):
        lines += [f"mosh: {key:<38} {value}" for key, value in mosh.items()]
    elif mosh is not None:
        lines.append(f"mosh: {mosh}")
    broker = results.get("broker")
    if isinstance(broker, dict):
        for key, value in broker.items():
            lines.append(f"{key:<44} {value if not isinstance(value, float) else round(value, 3)}")
    else:
        lines.append(f"broker: {broker}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", default="localhost/devbox-drone:latest")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--sizes", default="1,20,100")
    parser.add_argument("--repo", default="acme/demo", help="repository for the broker drone")
    parser.add_argument("--idle-wait", type=float, default=60.0, help="how long to wait for the broker's idle exit")
    parser.add_argument("--out", default="bench/results/latest.json")
    parser.add_argument("--mosh-image", help="an image with mosh-server for --with mosh's footprint (default: --image)")
    parser.add_argument("--only-mosh", action="store_true", help="measure only the footprint of --with mosh")
    args = parser.parse_args()
    if not shutil.which("podman") or not shutil.which("systemctl"):
        raise SystemExit("bench: needs podman and systemctl --user")

    results: dict[str, object] = {"machine": machine(), "reps": args.reps}
    if args.only_mosh:
        results["mosh"] = bench_mosh(args.mosh_image or args.image)
        print(json.dumps(results["mosh"], indent=2))
        return
    results["startup"] = bench_startup(args.reps)
    results["create"] = bench_create(args.reps, args.image)
    results["list"] = bench_list(args.reps, [int(s) for s in args.sizes.split(",")], args.image)
    from devbox.config import load_config
    from devbox.paths import Paths

    if load_config(Paths.from_env().config_file).github.enabled:
        results["broker"] = bench_broker(args.reps, args.image, args.repo, args.idle_wait)
    else:
        results["broker"] = "skipped: no GitHub App configured for devbox"
    results["mosh"] = bench_mosh(args.mosh_image or args.image)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
