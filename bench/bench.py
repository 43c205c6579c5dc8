#!/usr/bin/env python3
"""devbox's speed, as ratios against the bare Podman and systemd commands measured in the same run.

Run it as the user who owns the drones, on a host with systemd and Podman 5:

    python3 bench/bench.py --image localhost/devbox-drone:latest [--reps 7] [--sizes 1,20,100] [--out results.json]

It creates and destroys its own drones (named bench-*), never touches others, and
prints a table; the same figures go to the JSON file. The broker part runs only
when a GitHub App is configured for devbox (it then measures the real broker
against whatever API the config points at). The devcontainer part (bench/dcbench.py)
builds the workspace given with --devcontainer (by default the end-to-end fixture,
whose Dockerfile is FROM localhost/devbox-base:trixie) and needs the Dev Containers
CLI on PATH. --parts chooses the parts.
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
PARTS = ("startup", "create", "list", "keys", "fence", "broker", "mosh", "web", "devcontainer", "idle")
# The devcontainer part's default workspace: the end-to-end fixture (FROM localhost/devbox-base:trixie).
DEVCONTAINER = Path(__file__).resolve().parent.parent / "tests" / "e2e" / "devcontainer" / "demo"


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
    """devbox create (to active) vs the same Quadlet file written by hand, daemon-reload, start.

    Both open (a hand-written unit has no fence hook); a fenced create beside them (its hook loads
    the fence and starts the watcher before the drone runs)."""
    devbox("create", "bench-probe", "--image", image, "--no-start", "--egress", "open")
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
    fenced: list[float] = []
    for _ in range(reps):
        bare.append(timed(manual_create))
        manual_cleanup()
        ours.append(timed(lambda: devbox("create", "bench-create", "--image", image, "--egress", "open")))
        devbox("destroy", "bench-create", "--yes")
        fenced.append(timed(lambda: devbox("create", "bench-create", "--image", image, "--egress", "fenced")))
        devbox("destroy", "bench-create", "--yes")
    return {
        "hand-written unit + daemon-reload + start": statistics.median(bare),
        "devbox create": statistics.median(ours),
        "devbox create, fenced": statistics.median(fenced),
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


# The key proxy in a process of its own, on a Unix socket, as systemd would hand it over (the
# socket activation itself is the broker's, measured above).
_PROXY_SCRIPT = """
import asyncio, socket, sys
from devbox.broker.keyproxy import KeyProxy, Upstream, serve
sock_path, url, key_file, ca = sys.argv[1:5]
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(sock_path)
listener.listen(128)
key = open(key_file).read().strip()
proxy = KeyProxy("bench", {"bench": Upstream("bench", url, "x-api-key", key, ca)}, record=lambda *a, **k: None)
asyncio.run(serve(proxy, listener, 3600))
"""


def _fakeupstream() -> Path:
    """tests/fakeupstream.py: beside this script (the e2e machine copies it there) or in the checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "fakeupstream.py", here.parent / "tests" / "fakeupstream.py"):
        if candidate.exists():
            return candidate
    raise SystemExit("bench: tests/fakeupstream.py is missing (the key proxy's stand-in upstream)")


def _http(connect: Callable[[], socket.socket], target: str, headers: str = "") -> tuple[float, int]:
    """One GET on a new connection: (seconds to the last byte, bytes of the answer)."""
    started = time.perf_counter()
    with connect() as conn:
        conn.sendall(f"GET {target} HTTP/1.1\r\nHost: bench\r\n{headers}Connection: close\r\n\r\n".encode())
        size, first = 0, b""
        while chunk := conn.recv(1 << 20):
            if not first:
                first = chunk[:16]
            size += len(chunk)
    if not first.startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"bench: the key proxy's upstream answered {first!r}")
    return time.perf_counter() - started, size


def bench_key_proxy(reps: int, megabytes: int = 100) -> dict[str, float]:
    """The model API key proxy against the direct TLS connection to the same stand-in upstream, in one run:
    small requests (each a new connection both ways, as the proxy makes one upstream connection per
    request) and a streamed response of MEGABYTES."""
    import ssl
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="devbox-bench-keys-"))
    key_file = work / "key"
    key_file.write_text("sk-bench-" + os.urandom(8).hex())
    key_file.chmod(0o600)
    state = work / "upstream"
    state.mkdir()
    upstream = subprocess.Popen([sys.executable, str(_fakeupstream()), str(state), "x-api-key", str(key_file)])
    proxy = None
    try:
        deadline = time.monotonic() + 30
        while not (state / "port").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        port = int((state / "port").read_text())
        sock = str(work / "keys.sock")
        url = f"https://127.0.0.1:{port}"
        proxy = subprocess.Popen([sys.executable, "-c", _PROXY_SCRIPT, sock, url, str(key_file), str(state / "ca.pem")])
        while not Path(sock).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        context = ssl.create_default_context(cafile=str(state / "ca.pem"))
        key = key_file.read_text()

        def direct() -> socket.socket:
            return context.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="127.0.0.1")

        def proxied() -> socket.socket:
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            conn.connect(sock)
            return conn

        # The direct client sends the key itself; through the proxy the client sends none.
        direct_request = lambda target: _http(direct, target, f"x-api-key: {key}\r\n")  # noqa: E731
        samples: dict[str, list[float]] = {"direct": [], "proxy": []}
        for _ in range(max(reps * 30, 50)):
            samples["direct"].append(direct_request("/small")[0])
            samples["proxy"].append(_http(proxied, "/bench/small")[0])
        total = megabytes * 1024 * 1024
        direct_bulk = min(direct_request(f"/bytes/{total}")[0] for _ in range(max(1, reps // 3)))
        proxy_bulk = min(_http(proxied, f"/bench/bytes/{total}")[0] for _ in range(max(1, reps // 3)))
        result = {}
        for pct in (50, 99):
            ms_direct = _percentile(samples["direct"], pct) * 1000
            ms_proxy = _percentile(samples["proxy"], pct) * 1000
            result[f"small request p{pct}: direct ms"] = ms_direct
            result[f"small request p{pct}: proxy ms"] = ms_proxy
            result[f"small request p{pct}: proxy/direct"] = ms_proxy / ms_direct
        result[f"{megabytes} MB streamed: direct MB/s"] = megabytes / direct_bulk
        result[f"{megabytes} MB streamed: proxy MB/s"] = megabytes / proxy_bulk
        result[f"{megabytes} MB streamed: proxy/direct throughput"] = direct_bulk / proxy_bulk
        return result
    finally:
        for process in (proxy, upstream):
            if process is not None:
                process.terminate()
                process.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


def _serve_file(size_mb: int) -> tuple[subprocess.Popen[bytes], int, Path]:
    """An HTTP server on this host's addresses (0.0.0.0, a free port) with one file of SIZE_MB."""
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="devbox-bench-"))
    with open(root / "blob", "wb") as blob:
        blob.truncate(size_mb * 1024 * 1024)
    with socket.socket() as probe:
        probe.bind(("0.0.0.0", 0))
        port = probe.getsockname()[1]
    argv = [sys.executable, "-m", "http.server", str(port), "--bind", "0.0.0.0", "--directory", str(root)]
    server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    return server, port, root


def bench_fence(reps: int, image: str, size_mb: int) -> dict[str, float]:
    """A bulk download through the drone's network, open against behind the fence, in the same run.

    The server is on this host, which a fenced drone may not reach; an allow: drone listing it
    has the same ruleset on every packet (the fence's table, its conntrack), so it stands for the fence."""
    server, port, root = _serve_file(size_mb)
    policies = {"open": "open", "fenced": f"allow:host.containers.internal:{port}"}
    url = f"http://host.containers.internal:{port}/blob"
    made = []
    try:
        for label, policy in policies.items():
            name = f"bench-fence-{label}"
            devbox("create", name, "--image", image, "--egress", policy)
            made.append(name)
        fetch = "curl -sS -o /dev/null -w '%{size_download}' " + url
        result: dict[str, float] = {}
        for label in policies:
            argv = ["podman", "exec", f"drone-bench-fence-{label}", "sh", "-c", fetch]
            run(argv)  # warm: the first connection, page cache
            result[f"{size_mb} MB download, {label} s"] = median_of(reps, lambda argv=argv: run(argv))
        result["fenced / open"] = result[f"{size_mb} MB download, fenced s"] / result[f"{size_mb} MB download, open s"]
        ps = run(["ps", "-eo", "rss=,args="]).stdout.splitlines()
        watcher = [int(line.split()[0]) for line in ps if "devbox.fence.watch bench-fence-fenced" in line]
        result["fence watcher RSS KiB"] = float(sum(watcher))
        return result
    finally:
        for name in made:
            devbox("destroy", name, "--yes", check=False)
        server.terminate()
        shutil.rmtree(root, ignore_errors=True)


def _drone_rss_kib(name: str) -> dict[str, int]:
    return container_rss_kib(f"drone-{name}")


def container_rss_kib(container: str) -> dict[str, int]:
    """VmRSS of every process of CONTAINER (its first process and all below it, as the host sees them), by command."""
    root = run(["podman", "inspect", "--format", "{{.State.Pid}}", container]).stdout.strip()
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


def bench_web(image: str, settle: float = 5.0) -> dict[str, object] | str:
    """Idle footprint of a drone --with web-terminal (no page open): its processes' RSS beside a drone
    without it, each against a bare `podman run` of the same image (its init and sshd, keep-id, a
    home volume), in the same run."""
    has = ["podman", "run", "--rm", "--entrypoint", "sh", image, "-c", "command -v devbox-web-terminal"]
    probe = run(has, check=False)
    if probe.returncode != 0:
        return f"skipped: {image} has no devbox-web-terminal"
    bare = "bench-web-bare"
    home = str(Path.home())
    argv = ["podman", "run", "-d", "--rm", "--name", bare, "--userns=keep-id", "--init", "--workdir", home]
    run([*argv, "-v", f"{bare}-home:{home}", image])
    try:
        devbox("create", "bench-web-off", "--image", image, "--egress", "open")
        devbox("create", "bench-web-on", "--image", image, "--egress", "open", "--with", "web-terminal")
        deadline = time.monotonic() + 90
        status = ["podman", "exec", "drone-bench-web-on", "devbox-drone-init", "status"]
        while "web-terminal=running" not in run(status, check=False).stdout:
            if time.monotonic() > deadline:
                raise SystemExit("bench: the web terminal did not start in 90 s")
            time.sleep(0.5)
        time.sleep(settle)
        baseline = sum(container_rss_kib(bare).values())
        without, with_web = (sum(_drone_rss_kib(name).values()) for name in ("bench-web-off", "bench-web-on"))
        server = sum(v for k, v in _drone_rss_kib("bench-web-on").items() if k.startswith("devbox-web"))
        return {
            "bare podman run RSS KiB": baseline,
            "drone RSS KiB": without,
            "drone --with web-terminal RSS KiB": with_web,
            "devbox-web-terminal RSS KiB": server,
            "drone / bare podman run": round(without / baseline, 3) if baseline else None,
            "with web-terminal / bare podman run": round(with_web / baseline, 3) if baseline else None,
            "with / without web-terminal": round(with_web / without, 3) if without else None,
        }
    finally:
        for name in ("bench-web-off", "bench-web-on"):
            devbox("destroy", name, "--yes", check=False)
        run(["podman", "rm", "-f", "-t", "0", bare], check=False)
        run(["podman", "volume", "rm", "-f", f"{bare}-home"], check=False)


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
    found = {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "kernel": platform.release(),
        "podman": podman,
        "systemd": systemd,
        "python": platform.python_version(),
    }
    if shutil.which("devcontainer"):
        found["devcontainer"] = run(["devcontainer", "--version"]).stdout.strip()
    return found


def table(results: dict[str, object]) -> str:
    lines = [f"machine: {results['machine']}"]
    start = results.get("startup")
    if isinstance(start, dict):
        base = start["python3 -c pass"]
        for key, value in start.items():
            lines.append(f"{key:<44} {value * 1000:8.1f} ms  {value / base:5.2f}x python3 -c pass")
    create = results.get("create")
    if isinstance(create, dict):
        bare = create["hand-written unit + daemon-reload + start"]
        for key, value in create.items():
            lines.append(f"{key:<44} {value * 1000:8.1f} ms  {value / bare:5.2f}x by hand")
    listing = results.get("list")
    if isinstance(listing, dict):
        for size, pair in listing.items():
            ps, ours = pair["podman ps --filter label=io.devbox.drone --format json"], pair["devbox list --json"]
            label = f"list, {size} drones: podman ps / devbox"
            lines.append(f"{label:<44} {ps * 1000:8.1f} / {ours * 1000:.1f} ms  {ours / ps:5.2f}x")
    keys = results.get("key proxy")
    if isinstance(keys, dict):
        for key, value in keys.items():
            lines.append(f"key proxy: {key:<33} {value:8.2f}")
    fence = results.get("fence")
    if isinstance(fence, dict):
        for key, value in fence.items():
            lines.append(f"{key:<44} {value:8.3f}")
    mosh = results.get("mosh")
    if isinstance(mosh, dict):
        lines += [f"mosh: {key:<38} {value}" for key, value in mosh.items()]
    elif mosh is not None:
        lines.append(f"mosh: {mosh}")
    web = results.get("web")
    if isinstance(web, dict):
        lines += [f"web: {key:<39} {value}" for key, value in web.items()]
    elif web is not None:
        lines.append(f"web: {web}")
    broker = results.get("broker")
    if isinstance(broker, dict):
        for key, value in broker.items():
            lines.append(f"{key:<44} {value if not isinstance(value, float) else round(value, 3)}")
    elif broker is not None:
        lines.append(f"broker: {broker}")
    if "devcontainer" in results:
        from dcbench import table as devcontainer_table

        lines += devcontainer_table(results["devcontainer"])  # type: ignore[arg-type]
    if "idle" in results:
        from idlebench import table as idle_table

        lines += idle_table(results["idle"])  # type: ignore[arg-type]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", default="localhost/devbox-drone:latest")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--sizes", default="1,20,100")
    parser.add_argument("--repo", default="acme/demo", help="repository for the broker drone")
    parser.add_argument("--idle-wait", type=float, default=60.0, help="how long to wait for the broker's idle exit")
    parser.add_argument("--fence-mb", type=int, default=100, help="size of the fence's bulk download")
    parser.add_argument("--out", default="bench/results/latest.json")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"which parts to run, of {','.join(PARTS)}")
    parser.add_argument("--devcontainer", default=str(DEVCONTAINER), help="the devcontainer part's workspace")
    parser.add_argument("--mosh-image", help="an image with mosh-server for --with mosh's footprint (default: --image)")
    parser.add_argument("--idle-count", type=int, default=20, help="the idle part's drones per round")
    parser.add_argument("--idle-with", default="mosh", help="the idle part's services, comma-separated (--with each)")
    parser.add_argument("--idle-image", help="the idle part's image, which has those services (default: --image)")
    args = parser.parse_args()
    parts = args.parts.split(",")
    if not shutil.which("podman") or not shutil.which("systemctl"):
        raise SystemExit("bench: needs podman and systemctl --user")
    if args.reps < 1 or not set(parts) <= set(PARTS):
        raise SystemExit(f"bench: --reps is at least 1; --parts are of {','.join(PARTS)}")

    results: dict[str, object] = {"machine": machine(), "reps": args.reps}
    if "startup" in parts:
        results["startup"] = bench_startup(args.reps)
    if "create" in parts:
        results["create"] = bench_create(args.reps, args.image)
    if "list" in parts:
        results["list"] = bench_list(args.reps, [int(s) for s in args.sizes.split(",")], args.image)
    if "keys" in parts:
        results["key proxy"] = bench_key_proxy(args.reps)
    if "fence" in parts:
        results["fence"] = bench_fence(args.reps, args.image, args.fence_mb)
    if "broker" in parts:
        from devbox.config import load_config
        from devbox.paths import Paths

        if load_config(Paths.from_env().config_file).github.enabled:
            results["broker"] = bench_broker(args.reps, args.image, args.repo, args.idle_wait)
        else:
            results["broker"] = "skipped: no GitHub App configured for devbox"
    if "devcontainer" in parts:
        from dcbench import bench_devcontainer

        results["devcontainer"] = bench_devcontainer(args.reps, Path(args.devcontainer))
    if "mosh" in parts:
        results["mosh"] = bench_mosh(args.mosh_image or args.image)
    if "web" in parts:
        results["web"] = bench_web(args.image)
    if "idle" in parts:
        from idlebench import bench_idle

        services = [s for s in args.idle_with.split(",") if s]
        results["idle"] = bench_idle(args.idle_image or args.image, args.idle_count, services)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
