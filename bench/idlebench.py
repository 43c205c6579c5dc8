"""bench.py's idle part: what COUNT idle drones cost in memory, against COUNT bare containers, same run.

Three rounds, one after the other, each with COUNT containers of the same image, all left idle for
SETTLE seconds and then measured:

  bare:      `podman run -d IMAGE sleep infinity` (a container and nothing in it)
  drones:    `devbox create bench-idle-N --image IMAGE` (init, sshd, the credential socket's mount)
  services:  the same with `--with S` for each of SERVICES (code-server, web-terminal, mosh, ...)

Measured: the RSS of every process of each container (as the host sees them, by command) and of
its conmon, summed. Figures are per container, with the ratios to the bare round. (The host's
MemAvailable was tried and dropped: on a host that does anything else it moves more than a drone
costs.) What a round made is removed after it, also when it fails.
"""

from __future__ import annotations

import time
from pathlib import Path

from bench import container_rss_kib, devbox, run

PREFIX = "bench-idle-"


def _wait_for_ssh(names: list[str], timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    for name in names:
        while devbox("ssh", name, "--", "true", check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise SystemExit(f"bench: drone {name}'s sshd did not answer in {timeout:.0f} s")
            time.sleep(1)


def _conmon_rss_kib(container: str) -> int:
    pid = run(["podman", "inspect", "--format", "{{.State.ConmonPid}}", container]).stdout.strip()
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _measure(containers: list[str], settle: float) -> dict[str, object]:
    time.sleep(settle)
    by_command: dict[str, int] = {}
    for container in containers:
        for command, kib in container_rss_kib(container).items():
            by_command[command] = by_command.get(command, 0) + kib
        by_command["conmon"] = by_command.get("conmon", 0) + _conmon_rss_kib(container)
    count = len(containers)
    return {
        "RSS per container KiB": round(sum(by_command.values()) / count),
        "RSS by command, per container KiB": {c: round(k / count) for c, k in sorted(by_command.items())},
    }


def _bare_round(image: str, count: int, settle: float) -> dict[str, object]:
    names = [f"{PREFIX}bare-{i}" for i in range(count)]
    try:
        for name in names:
            run(["podman", "run", "-d", "--name", name, "--entrypoint", "sleep", image, "infinity"])
        return _measure(names, settle)
    finally:
        run(["podman", "rm", "-f", "-t", "0", *names], check=False)


def _drone_round(image: str, count: int, services: list[str], settle: float) -> dict[str, object]:
    tag = "svc-" if services else ""
    names = [f"{PREFIX}{tag}{i}" for i in range(count)]
    options = [arg for service in services for arg in ("--with", service)]
    made: list[str] = []
    try:
        for name in names:
            devbox("create", name, "--image", image, *options)
            made.append(name)
        _wait_for_ssh(names)
        return _measure([f"drone-{name}" for name in names], settle)
    finally:
        for name in made:
            devbox("destroy", name, "--yes", check=False)


def bench_idle(image: str, count: int, services: list[str], settle: float = 15.0) -> dict[str, object]:
    bare = _bare_round(image, count, settle)
    drones = _drone_round(image, count, [], settle)
    with_services = _drone_round(image, count, services, settle)
    bare_rss = bare["RSS per container KiB"]
    assert isinstance(bare_rss, int)

    def ratio(result: dict[str, object]) -> float:
        rss = result["RSS per container KiB"]
        assert isinstance(rss, int)
        return round(rss / bare_rss, 2) if bare_rss else 0.0

    return {
        "count": count,
        "services": services,
        "bare podman run": bare,
        "drone": drones,
        "drone with services": with_services,
        "drone / bare RSS": ratio(drones),
        "drone with services / bare RSS": ratio(with_services),
    }


def table(result: dict[str, object]) -> list[str]:
    count, services = result["count"], result["services"]
    assert isinstance(services, list)
    lines = [f"idle, {count} containers each (services: {', '.join(services) or 'none'}):"]
    for round_name in ("bare podman run", "drone", "drone with services"):
        figures = result[round_name]
        assert isinstance(figures, dict)
        lines.append(f"  {round_name:<24} RSS {figures['RSS per container KiB']:>8} KiB/container")
    drone, services_ratio = result["drone / bare RSS"], result["drone with services / bare RSS"]
    lines.append(f"  drone / bare RSS {drone}x, with services / bare {services_ratio}x")
    return lines
