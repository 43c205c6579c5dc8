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
    assert last.startswith("counter log group") and "reject" in last  # everything else


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
    found = hook.inputs_for(parse_egress("allow:host.containers.internal:8080,203.0.113.7"), env, files)
    assert found.resolvers == (A("169.254.1.1"), A("10.255.255.53"))
    assert found.devbox == ((A("169.254.1.2"), 3000),)
    assert found.allowed == ((A("169.254.1.2"), 8080), (A("203.0.113.7"), None))


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

    monkeypatch.setattr(hook, "tool", no_nft)
    assert hook.main() == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "could not be applied, so the drone does not start" in err


def test_the_hook_loads_the_ruleset_into_the_containers_network_namespace(tmp_path: Path, monkeypatch) -> None:
    loaded: list[tuple[str, str]] = []
    monkeypatch.setattr(hook, "load", lambda netns, text: loaded.append((netns, text)))
    monkeypatch.setattr(hook, "host_addresses", lambda: (A("192.0.2.2"),))
    assert hook.apply(_state(tmp_path, "fenced")) == "a"
    ((netns, text),) = loaded
    assert netns == "/proc/1234/ns/net" and "192.0.2.2" in text
    loaded.clear()
    hook.apply(_state(tmp_path, "open"))
    assert loaded == []
