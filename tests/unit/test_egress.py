"""The egress policy: parsing, its label, the config key, the create option, and the fence's rules and hook."""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from devbox.config import parse_config
from devbox.drone.egress import EgressPolicy, parse_egress, read_egress
from devbox.drone.spec import DroneSpec, declared_fields, label_options
from devbox.errors import DevboxError, ExitCode
from devbox.fence import hook, rules
from devbox.names import LABEL_PREFIX


@pytest.mark.parametrize(
    "text",
    [
        "open",
        "fenced",
        "allow:api.anthropic.com:443",
        "allow:pypi.org,files.pythonhosted.org:443",
        "allow:203.0.113.7,[2001:db8::1]:8443,[2001:db8::2]",
        "allow:localhost:1",
    ],
)
def test_a_policy_reads_back_as_written(text: str) -> None:
    assert str(parse_egress(text)) == text


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "invalid egress policy ''"),
        ("closed", "use open, fenced or allow:HOST[:PORT]"),
        ("Fenced", "use open, fenced or allow:HOST[:PORT]"),
        ("allow:", "allow: needs HOST[:PORT] items"),
        ("allow:a.com,,b.com", "allow: needs HOST[:PORT] items"),
        ("allow:a.com:0", "invalid port '0'"),
        ("allow:a.com:99999", "invalid port '99999'"),
        ("allow:a.com:http", "invalid port 'http'"),
        ("allow:https://a.com", "not a URL or an address range"),
        ("allow:*.a.com", "is not a host name"),
        ("allow:a_b.com", "is not a host name"),
        ("allow:-a.com", "is not a host name"),
        ("allow:1.2.3", "is not a host name"),
        ("allow:10.0.0.0/8", "not a URL or an address range"),
        ("allow:2001:db8::1", "invalid port"),
        ("allow:[2001:db8::zz]:80", "is not a host name"),
        ("allow:[2001:db8::1]x", "expected [IPV6] or [IPV6]:PORT"),
        ("allow:a.com\n", "newlines, control characters"),
        ("allow:a.com b.com", "is not a host name"),
        ("allow:" + ",".join(f"h{i}.com" for i in range(65)), "at most 64"),
    ],
)
def test_bad_policies_are_refused_in_one_line(text: str, says: str) -> None:
    with pytest.raises(DevboxError) as refused:
        parse_egress(text)
    assert refused.value.code == ExitCode.INVALID_INPUT
    assert says in refused.value.message and "\n" not in refused.value.message


def test_an_unlabelled_unit_is_open_and_a_damaged_label_fenced() -> None:
    assert read_egress(None) == EgressPolicy("open")
    assert read_egress("allow:") == EgressPolicy("fenced")  # never open by accident


def _spec(egress: str) -> DroneSpec:
    created = datetime(2026, 11, 30, tzinfo=UTC)
    return DroneSpec.build(name="a", repos=[], image="localhost/x:1", created=created, version="1", egress=egress)


def test_the_label_carries_the_policy_and_restore_gets_it_back() -> None:
    for text in ("fenced", "allow:pypi.org,[2001:db8::1]:443"):
        labels = {k.removeprefix(LABEL_PREFIX): v for k, v in _spec(text).labels().items()}
        assert labels["egress"] == text
        assert declared_fields(labels)["egress"] == text
        assert label_options(labels)["egress"] == text
    open_labels = {k.removeprefix(LABEL_PREFIX): v for k, v in _spec("open").labels().items()}
    assert "egress" not in open_labels  # no label: open, as drones made before the fence
    assert declared_fields(open_labels)["egress"] == "open"
    assert label_options(open_labels)["egress"] == "open"  # restore keeps an old drone open


def test_the_config_default_is_fenced_and_a_bad_value_names_the_key() -> None:
    assert parse_config({}, Path("c.toml")).drone.egress == "fenced"
    assert parse_config({"drone": {"egress": "allow:pypi.org"}}, Path("c.toml")).drone.egress == "allow:pypi.org"
    with pytest.raises(DevboxError) as refused:
        parse_config({"drone": {"egress": "closed"}}, Path("c.toml"))
    assert refused.value.code == ExitCode.CONFIG and refused.value.message.startswith("c.toml: drone.egress:")


# --- the rules ---------------------------------------------------------------------------------------

A = ipaddress.ip_address
INPUTS = rules.FenceInputs(
    resolvers=(A("169.254.1.1"), A("10.255.255.53")),
    host_addresses=(A("192.0.2.2"), A("fd00::2")),
    devbox=((A("169.254.1.2"), 3000),),
    allowed=((A("203.0.113.7"), 443), (A("2001:db8::1"), None)),
)


def test_fenced_blocks_the_private_ranges_and_the_host_and_lets_dns_and_devbox_through() -> None:
    text = rules.ruleset(parse_egress("fenced"), INPUTS)
    for blocked in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "100.64.0.0/10", "192.0.2.2"):
        assert blocked in text
    for blocked in ("fc00::/7", "fe80::/10", "fd00::2"):
        assert blocked in text
    assert "elements = { 10.255.255.53, 169.254.1.1 }" in text
    assert "169.254.1.2 . 3000" in text
    assert "policy accept" in text and "allow4" not in text
    # The devbox exemption and DNS come before the blocks, in one chain.
    assert text.index("@devbox4 accept") < text.index("@blocked4")
    assert text.index("@dns4 th dport 53 accept") < text.index("@blocked4")


def test_allow_lets_through_only_what_it_lists() -> None:
    text = rules.ruleset(parse_egress("allow:x.example:443,[2001:db8::1]"), INPUTS)
    assert "203.0.113.7 . 443" in text and "elements = { 2001:db8::1 }" in text
    assert "blocked4" not in text and "192.0.2.2" not in text
    last = [line.strip() for line in text.splitlines() if line.strip()][-3]
    assert last == "jump blocked"  # everything else


def test_the_table_is_replaced_whole() -> None:
    lines = rules.ruleset(parse_egress("fenced"), INPUTS).splitlines()
    assert lines[:3] == ["table inet devbox_fence {}", "delete table inet devbox_fence", "table inet devbox_fence {"]


@pytest.mark.skipif(shutil.which("nft", path="/usr/sbin:/sbin") is None, reason="nft is not installed here")
@pytest.mark.skipif(shutil.which("unshare") is None, reason="unshare is not installed here")
@pytest.mark.parametrize("policy", ["fenced", "allow:x.example:443,[2001:db8::1]", "allow:x.example"])
def test_the_kernel_accepts_the_rules(policy: str) -> None:
    nft = shutil.which("nft", path="/usr/sbin:/sbin")
    text = rules.ruleset(parse_egress(policy), INPUTS)
    done = subprocess.run(["unshare", "-rn", str(nft), "-c", "-f", "-"], input=text, capture_output=True, text=True)
    if "Operation not permitted" in done.stderr and "unshare" in done.stderr:
        pytest.skip("no user namespaces here")
    assert done.returncode == 0, done.stderr


# --- the hook ----------------------------------------------------------------------------------------

HOSTS = "127.0.0.1\tlocalhost\n169.254.1.2\thost.containers.internal host.docker.internal\n192.0.2.2\tx\n"
RESOLV = "search example\nnameserver 169.254.1.1\nnameserver 10.255.255.53\noptions edns0\n"


def test_the_hook_finds_resolvers_the_git_remote_and_allow_hosts_in_the_drones_files() -> None:
    env = {"DEVBOX_GIT_URL": "http://host.containers.internal:3000"}
    files = {"/etc/resolv.conf": RESOLV, "/etc/hosts": HOSTS}
    policy = parse_egress("allow:host.containers.internal:8080,203.0.113.7")
    host_files = {"/etc/resolv.conf": "nameserver 127.0.0.53\n", "/run/systemd/resolve/resolv.conf": RESOLV}
    found = hook.inputs_for(policy, env, files, reader(host_files))
    assert found.resolvers == (A("169.254.1.1"), A("10.255.255.53"))
    assert found.devbox == ((A("169.254.1.2"), 3000),)
    assert found.allowed == ((A("169.254.1.2"), 8080), (A("203.0.113.7"), None))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://host.containers.internal:8088/dots.git", ((A("169.254.1.2"), 8088),)),
        ("https://203.0.113.9/me/dots.git", ((A("203.0.113.9"), 443),)),
        ("ssh://git@203.0.113.9/me/dots.git", ((A("203.0.113.9"), 22),)),
        ("git@203.0.113.9:me/dots.git", ()),  # ssh on 22 by an scp-like address: the internet, fenced or not
        ("file:///home/dev/dots", ()),
    ],
)
def test_the_dotfiles_source_is_reachable_like_the_git_remote(url: str, expected: tuple[object, ...]) -> None:
    env = {"DEVBOX_GIT_URL": "http://host.containers.internal:3000", "DEVBOX_DOTFILES_URL": url}
    found = hook.inputs_for(parse_egress("allow:203.0.113.7"), env, {}, reader({}))
    assert found.devbox == ((A("169.254.1.2"), 3000), *expected)


def reader(files: dict[str, str]):
    def read(path: str) -> str:
        if path not in files:
            raise FileNotFoundError(path)
        return files[path]

    return read


def test_before_podman_wrote_the_drones_files_the_hook_derives_them_as_podman_does() -> None:
    """Seen in the e2e machine: at createRuntime the drone's resolv.conf and hosts are empty."""
    env = {"DEVBOX_GIT_URL": "http://host.containers.internal:3000"}
    found = hook.inputs_for(parse_egress("fenced"), env, {}, reader({"/etc/resolv.conf": "nameserver 10.0.0.53\n"}))
    assert found.resolvers == (A("169.254.1.1"), A("10.0.0.53"))  # pasta's forwarder, the host's own
    assert found.devbox == ((A("169.254.1.2"), 3000),)


def test_the_hook_reads_podmans_files_from_the_bundle(tmp_path: Path) -> None:
    (tmp_path / "resolv.conf").write_text(RESOLV)
    config = {"mounts": [{"destination": "/etc/resolv.conf", "source": str(tmp_path / "resolv.conf")}]}
    assert hook.bundle_files(config, ("/etc/resolv.conf", "/etc/hosts")) == {"/etc/resolv.conf": RESOLV}


def _state(tmp_path: Path, egress: str) -> dict[str, object]:
    (tmp_path / "config.json").write_text(json.dumps({"process": {"env": []}, "mounts": []}))
    annotations = {"io.devbox.egress": egress, "io.devbox.drone": "a"}
    return {"pid": 1234, "bundle": str(tmp_path), "annotations": annotations}


def test_the_hook_fails_closed_when_the_rules_cannot_be_loaded(tmp_path: Path, monkeypatch, capsys) -> None:
    state = _state(tmp_path, "fenced")
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO(json.dumps(state)))

    def no_nft(name: str) -> str:
        raise DevboxError(f"{name} is not installed: the network fence needs it (apt install nftables)")

    monkeypatch.setattr(hook, "tool", no_nft)  # as hook.py imported it
    assert hook.main() == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "could not be applied, so the drone does not start" in err


def test_the_hook_loads_the_ruleset_into_the_containers_network_namespace(tmp_path: Path, monkeypatch) -> None:
    loaded: list[tuple[str, str]] = []
    monkeypatch.setattr(hook, "load", lambda netns, text: loaded.append((netns, text)))
    monkeypatch.setattr(hook, "host_addresses", lambda: (A("192.0.2.2"),))
    watchers: list[tuple[int, str, str]] = []
    monkeypatch.setattr(hook, "start_watcher", lambda pid, drone, policy, _: watchers.append((pid, drone, str(policy))))
    assert hook.apply(_state(tmp_path, "fenced")) == "a"
    assert watchers == [(1234, "a", "fenced")]
    ((netns, text),) = loaded
    assert netns == "/proc/1234/ns/net" and "192.0.2.2" in text
    loaded.clear()
    hook.apply(_state(tmp_path, "open"))
    assert loaded == []


# --- the watcher: blocked packets from NFLOG, allow:'s names again ---------------------------------

PROBE = r"""
import json, socket, subprocess, sys
from devbox.fence import watch
setup = "ip link set lo up && ip link add v0 type veth peer name v1 && ip link set v0 up && ip link set v1 up && " \
    "ip addr add 192.0.2.9/24 dev v0 && ip route add default via 192.0.2.1 dev v0"
subprocess.run(setup, shell=True, check=True)
subprocess.run([sys.argv[1], "-f", "-"], input=sys.stdin.read(), text=True, check=True)
log = watch.open_log()
log.settimeout(5)
errors = []
for target in (("10.9.9.9", 443), ("203.0.113.5", 80)):
    with socket.socket() as probe:
        probe.settimeout(2)
        try:
            probe.connect(target)
        except OSError as exc:
            errors.append(exc.errno)
found = [vars(b) for b in watch.parse_messages(log.recv(65536))]
print(json.dumps({"errors": errors, "found": found}))
"""


@pytest.mark.skipif(shutil.which("nft", path="/usr/sbin:/sbin") is None, reason="nft is not installed here")
def test_a_blocked_connection_fails_at_once_and_the_watcher_reads_where_it_went() -> None:
    """In a network namespace of its own (unshare -rn): the fenced ruleset, a connection to a private
    address (refused by the fence at once) and one to TEST-NET-3 (let through: it goes nowhere,
    the veth's other end is in the same namespace and nothing answers)."""
    nft = str(shutil.which("nft", path="/usr/sbin:/sbin"))
    text = rules.ruleset(parse_egress("fenced"), INPUTS)
    root = str(Path(__file__).resolve().parents[2])
    done = subprocess.run(
        ["unshare", "-rn", "python3", "-c", PROBE, nft],
        input=text,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": root, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        timeout=60,
    )
    if done.returncode and "unshare" in done.stderr:
        pytest.skip(f"no user and network namespaces here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    import errno

    assert result["errors"] == [errno.ECONNREFUSED, None], result  # the fence's reset at once; the other goes out
    assert result["found"] == [{"destination": "10.9.9.9", "port": 443, "protocol": "tcp"}]


def test_packet_headers_give_destination_port_and_protocol() -> None:
    from devbox.fence.watch import Blocked, parse_packet

    v4 = bytes([0x45, 0, 0, 40, 0, 0, 0, 0, 64, 17, 0, 0, 192, 0, 2, 2, 10, 1, 2, 3]) + bytes([0, 1, 0x14, 0xE9])
    assert parse_packet(v4) == Blocked("10.1.2.3", 5353, "udp")
    v6 = bytes([0x60, 0, 0, 0, 0, 8, 58, 64]) + bytes(16) + ipaddress.IPv6Address("fd00::1").packed + bytes(8)
    assert parse_packet(v6) == Blocked("fd00::1", None, "icmpv6")
    assert parse_packet(b"") is None and parse_packet(b"\x45\x00") is None


def test_events_beyond_the_rate_are_counted_into_the_next() -> None:
    from devbox.fence.watch import Limiter

    now = [0.0]
    limiter = Limiter(rate=2, clock=lambda: now[0])
    assert [limiter.admit() for _ in range(5)] == [0, 0, None, None, None]
    now[0] = 1.5
    assert limiter.admit() == 3


def test_a_dns_answer_gives_addresses_and_the_shortest_ttl() -> None:
    from devbox.fence.watch import dns_answers, dns_query

    query = dns_query("pypi.org", 1, 0x1234)
    answer = (
        struct_pack(">HHHHHH", 0x1234, 0x8180, 1, 2, 0, 0)
        + query[12:]
        + b"\xc0\x0c"
        + struct_pack(">HHIH", 1, 1, 300, 4)
        + bytes([151, 101, 0, 223])
        + b"\xc0\x0c"
        + struct_pack(">HHIH", 1, 1, 60, 4)
        + bytes([151, 101, 64, 223])
    )
    assert dns_answers(answer, 0x1234) == [("151.101.0.223", 300), ("151.101.64.223", 60)]
    assert dns_answers(answer, 0x4321) == []  # not the answer to our question


def struct_pack(fmt: str, *values: int) -> bytes:
    import struct

    return struct.pack(fmt, *values)


# --- devbox egress: the fence's lines swapped, nothing else ------------------------------------------

POLICIES = ["open", "fenced", "allow:pypi.org,[2001:db8::1]:443"]


@pytest.mark.parametrize("before", POLICIES)
@pytest.mark.parametrize("after", POLICIES)
def test_a_unit_with_another_policy_is_the_unit_rendered_with_it(before: str, after: str) -> None:
    """For every golden case: swapping the fence's lines gives exactly what create would have written."""
    from dataclasses import replace

    from devbox.units.egress import with_egress
    from devbox.units.render import render_drone
    from tests.unit.cases import HOST, cases

    for spec in cases().values():
        old, new = replace(spec, egress=before), replace(spec, egress=after)
        (text,) = [f.text for f in render_drone(old, HOST) if f.relative_path.endswith(".container")]
        (want,) = [f.text for f in render_drone(new, HOST) if f.relative_path.endswith(".container")]
        assert with_egress(text, old, after, HOST) == want


def test_a_hand_edited_fence_is_refused() -> None:
    from dataclasses import replace

    from devbox.units.egress import with_egress
    from devbox.units.render import render_drone
    from tests.unit.cases import HOST, cases

    spec = replace(cases()["minimal"], egress="fenced")
    (text,) = [f.text for f in render_drone(spec, HOST) if f.relative_path.endswith(".container")]
    edited = text.replace("GlobalArgs=--hooks-dir", "GlobalArgs=--log-level=debug --hooks-dir")
    with pytest.raises(DevboxError) as refused:
        with_egress(edited, spec, "open", HOST)
    assert refused.value.code == ExitCode.DAMAGED and "edited by hand" in refused.value.message


def _devbox(capsys, *args: str) -> tuple[int, str, str]:
    from devbox.cli import app as cli

    with pytest.raises(SystemExit) as exited:
        cli.run(list(args))
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


def test_devbox_egress_swaps_the_policy_keeps_the_volume_and_restarts(world, capsys) -> None:
    assert _devbox(capsys, "create", "demo", "--egress", "open")[0] == 0
    unit = world.paths.quadlet_dir / "drone-demo.container"
    assert "io.devbox.egress" not in unit.read_text() and "hooks-dir" not in unit.read_text()
    world.systemd.calls.clear()
    code, out, err = _devbox(capsys, "egress", "demo", "allow:pypi.org:443")
    assert (code, err) == (0, "")
    assert out == "drone demo: egress open -> allow:pypi.org:443 and restarted\n"
    text = unit.read_text()
    assert "Label=io.devbox.egress=allow:pypi.org:443\n" in text and "GlobalArgs=--hooks-dir=" in text
    assert (world.paths.drones_dir / "demo" / "hooks.d" / "devbox-fence.json").exists()
    assert ("restart", "drone-demo.service") in world.systemd.calls
    assert not any(call[0] in ("stop", "remove-volume") for call in world.systemd.calls)
    assert json.loads(_devbox(capsys, "status", "demo", "--json")[1])["egress"] == "allow:pypi.org:443"
    code, out, _ = _devbox(capsys, "egress", "demo", "allow:pypi.org:443", "--json")
    assert json.loads(out) == {
        "name": "demo",
        "before": "allow:pypi.org:443",
        "egress": "allow:pypi.org:443",
        "restarted": False,
    }


@pytest.mark.parametrize("command", [("create", "demo", "--egress", "closed"), ("egress", "demo", "allow:a.com:0")])
def test_a_bad_policy_is_one_line_and_exit_3(world, capsys, command: tuple[str, ...]) -> None:
    if command[0] == "egress":
        assert _devbox(capsys, "create", "demo")[0] == 0
    code, out, err = _devbox(capsys, *command)
    assert code == ExitCode.INVALID_INPUT and err.count("\n") == 1 and err.startswith("devbox: invalid")


def test_a_fenced_drone_is_refused_where_the_fence_cannot_be_enforced(world, capsys, monkeypatch) -> None:
    monkeypatch.setattr("devbox.fence.check.enforcement_problem", lambda: "nft not found: install nftables")
    code, _, err = _devbox(capsys, "create", "demo")
    assert code == ExitCode.ENVIRONMENT
    assert err == "devbox: the network fence cannot be enforced here: nft not found: install nftables\n"
    assert not (world.paths.quadlet_dir / "drone-demo.container").exists()
    assert _devbox(capsys, "create", "demo", "--egress", "open")[0] == 0  # open needs no fence
    assert _devbox(capsys, "egress", "demo", "fenced")[0] == ExitCode.ENVIRONMENT
    assert "io.devbox.egress" not in (world.paths.quadlet_dir / "drone-demo.container").read_text()


def test_render_and_dry_run_show_the_option(world, capsys) -> None:
    out = _devbox(capsys, "render", "demo", "--egress", "allow:pypi.org")[1]
    assert "Label=io.devbox.egress=allow:pypi.org" in out and "Annotation=io.devbox.egress=allow:pypi.org" in out
    out = _devbox(capsys, "create", "demo", "--egress", "open", "--dry-run")[1]
    assert "dry run: nothing written" in out


@pytest.mark.skipif(shutil.which("nft", path="/usr/sbin:/sbin") is None, reason="nft is not installed here")
def test_this_host_can_enforce_the_fence() -> None:
    from devbox.fence.check import enforcement_problem

    assert enforcement_problem() is None


def test_the_watcher_ends_with_the_containers_first_process() -> None:
    """Else the drone's service waits for it at every stop (seen in the e2e machine)."""
    import os
    import socket

    from devbox.fence.watch import log_blocked

    child = subprocess.Popen(["sleep", "0.2"])
    pidfd = os.pidfd_open(child.pid)
    quiet, _other = socket.socketpair()
    done = threading_run(lambda: log_blocked("a", quiet, pidfd), timeout=10)
    child.wait()
    assert done, "log_blocked still runs after the container's process ended"


def threading_run(target, timeout: float) -> bool:
    import threading

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    return not thread.is_alive()


@pytest.mark.parametrize("cap", ["CAP_NET_RAW", "CAP_NET_ADMIN", "CAP_SYS_ADMIN"])
def test_a_fenced_drone_with_a_capability_that_gets_past_the_fence_does_not_start(
    tmp_path: Path, monkeypatch, cap
) -> None:
    """NET_RAW (allowed in a devcontainer.json's capAdd) sends frames on a packet socket, past nftables."""
    state = _state(tmp_path, "fenced")
    caps = {"bounding": ["CAP_CHOWN", cap], "effective": ["CAP_CHOWN", cap]}
    (tmp_path / "config.json").write_text(json.dumps({"process": {"env": [], "capabilities": caps}, "mounts": []}))
    monkeypatch.setattr(hook, "load", lambda netns, text: pytest.fail("loaded"))
    with pytest.raises(DevboxError) as refused:
        hook.apply(state)
    assert cap in refused.value.message and "--egress open" in refused.value.message


def test_the_hook_command_fails_closed_in_one_line_without_the_parser() -> None:
    """What Podman runs: `devbox fence-hook`, the container's state on stdin (cli/fastpath.py)."""
    import sys

    code = "import sys, runpy; sys.argv = ['devbox', 'fence-hook']; runpy.run_module('devbox', run_name='__main__')"
    probe = code.replace(
        "runpy.run_module",
        "import atexit; atexit.register(lambda: print('typer' in sys.modules, file=sys.stderr)); runpy.run_module",
    )
    done = subprocess.run([sys.executable, "-c", probe], input="{}", capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    first, typer_loaded = done.stderr.splitlines()
    assert first.startswith("devbox: the network fence could not be applied, so the drone does not start:")
    assert typer_loaded == "False"
