from __future__ import annotations

from pathlib import Path

from devbox.commands import doctor


class FakeHost(doctor.Host):
    def __init__(self, commands: dict[str, tuple[int, str]], files: dict[str, str], quadlet: Path | None) -> None:
        self.uid, self.user, self.runtime_dir = 1000, "dev", Path("/run/user/1000")
        self.commands, self.files, self._quadlet = commands, files, quadlet

    def run(self, argv: list[str]) -> tuple[int, str]:
        return self.commands.get(" ".join(argv), (127, f"{argv[0]}: not found"))

    def read(self, path: str | Path) -> str | None:
        return self.files.get(str(path))

    def exists(self, path: str | Path) -> bool:
        return str(path) in self.files

    def quadlet(self) -> Path | None:
        return self._quadlet

    def drone_names(self) -> list[str]:
        return []

    def drones_with_keys(self) -> list[str]:
        return []

    fence = None  # what enforcement_problem() would say

    def fence_problem(self) -> str | None:
        return self.fence


CG = "/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/cgroup.controllers"
READY = FakeHost(
    {
        "podman --version": (0, "podman version 5.4.2"),
        "systemctl --user is-system-running": (0, "running"),
        "systemctl --user is-active podman.socket": (0, "active"),
        "node --version": (0, "v20.19.2"),
        "devcontainer --version": (0, "0.89.0"),
    },
    {
        "/var/lib/systemd/linger/dev": "",
        "/etc/subuid": "dev:100000:65536\n",
        "/etc/subgid": "1000:100000:65536\n",
        "/sys/fs/cgroup/cgroup.controllers": "cpu memory pids",
        CG: "cpu memory pids",
        "/dev/net/tun": "",
        "/proc/sys/kernel/osrelease": "6.12.48+deb13-amd64\n",
    },
    Path("/usr/libexec/podman/quadlet"),
)


def test_a_ready_host_is_all_green() -> None:
    checks = doctor.run_checks(READY)
    assert [(c.name, c.status) for c in checks] == [
        ("podman", "ok"),
        ("quadlet", "ok"),
        ("user manager", "ok"),
        ("linger", "ok"),
        ("subordinate ids", "ok"),
        ("cgroup controllers", "ok"),
        ("podman.socket", "ok"),
        ("credential brokers", "ok"),
        ("containers in drones", "ok"),
        ("devcontainer builder", "ok"),
        ("network fence", "ok"),
    ]
    assert checks[-2].detail == "devcontainer 0.89.0 (tested: 0.89.0), node v20.19.2"


def test_a_host_that_cannot_fence_says_so_and_how_to_fix_it() -> None:
    host = FakeHost(READY.commands, READY.files, READY._quadlet)
    host.fence = "nft not found: install nftables (Debian/Ubuntu: apt install nftables; Fedora: dnf install nftables)"
    (check,) = [c for c in doctor.run_checks(host) if c.name == "network fence"]
    assert check.status == "fail" and check.detail.startswith("fenced and allow: drones cannot start: nft not found")
    assert "apt install nftables" in check.fix and 'egress = "open"' in check.fix


def test_a_debian_12_container_names_each_missing_piece() -> None:
    host = FakeHost(
        {
            "podman --version": (0, "podman version 4.3.1"),
            "systemctl --user is-system-running": (1, "Failed to connect to bus: No medium found"),
        },
        {"/etc/subuid": "", "/etc/subgid": ""},
        None,
    )
    checks = {c.name: c for c in doctor.run_checks(host)}
    assert checks["podman"].status == "fail" and checks["podman"].detail == "Podman 4.3.1 has no Quadlet"
    assert checks["quadlet"].status == "fail"
    assert checks["user manager"].status == "fail" and "No medium found" in checks["user manager"].detail
    assert checks["linger"].fix == "sudo loginctl enable-linger dev"
    assert checks["subordinate ids"].status == "fail"
    assert checks["cgroup controllers"].status == "warn"
    assert checks["podman.socket"].fix == "systemctl --user enable --now podman.socket"
    assert all(c.fix for c in checks.values() if c.status != "ok")


def test_the_devcontainer_builder_says_how_to_install_node_and_the_cli() -> None:
    no_node = FakeHost({}, {}, None)
    [check] = [c for c in doctor.run_checks(no_node) if c.name == "devcontainer builder"]
    assert check.status == "warn" and check.fix.startswith(
        "apt install nodejs, then npm install -g @devcontainers/cli@"
    )
    node_only = FakeHost({"node --version": (0, "v20.19.2")}, {}, None)
    [check] = [c for c in doctor.run_checks(node_only) if c.name == "devcontainer builder"]
    assert check.status == "warn" and "(node v20.19.2 is)" in check.detail
    assert check.fix.startswith("npm install -g @devcontainers/cli@0.89.0")


def test_containers_in_drones_warn_where_the_kernel_or_the_tun_device_cannot_carry_them() -> None:
    old_kernel = {**READY.files, "/proc/sys/kernel/osrelease": "5.10.0-30-amd64\n"}
    no_tun = {k: v for k, v in READY.files.items() if k != "/dev/net/tun"}
    for files, why in (
        (old_kernel, "Linux 5.10.0-30-amd64 cannot mount overlay in a user namespace (Linux 5.13 or newer can)"),
        (no_tun, "/dev/net/tun is missing, which the inner containers' network (pasta) needs"),
    ):
        host = FakeHost(READY.commands, files, READY._quadlet)
        check = {c.name: c for c in doctor.run_checks(host)}["containers in drones"]
        assert (check.status, check.detail) == ("warn", f"--with containers cannot work: {why}")
        assert "5.13" in check.fix
