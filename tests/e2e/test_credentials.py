"""Per-drone GitHub credentials in the real machine: socket activation, the broker minting tokens
from the fake GitHub API (which verifies the App's JWT), and git and gh inside drones using them
against a git smart-HTTP server that accepts only tokens minted for that repository."""

from __future__ import annotations

import json
import re
import shlex
import time
from collections.abc import Iterator

import pytest

from tests.e2e.helpers import Devbox, secret_places, wait_for


@pytest.fixture(scope="module")
def box(machine, githost) -> Iterator[Devbox]:
    devbox = Devbox(machine, "pystemd")
    devbox.run("create", "cred", "--repo", "acme/demo")
    try:
        yield devbox
    finally:
        for name in ("cred", "cred2"):
            devbox.run("destroy", name, "--yes", check=False)


def in_drone(box: Devbox, drone: str, command: str, check: bool = True, timeout: float = 60):
    return box.sh(f"podman exec drone-{drone} sh -c {shlex.quote(command)} </dev/null", check=check, timeout=timeout)


def minted(machine) -> list[str]:
    return machine.user("cat ~/githost/state/minted.log 2>/dev/null || true").stdout.split()


def wait_for_clone(box: Devbox) -> None:
    cloned = lambda: in_drone(box, "cred", "test -d ~/demo/.git", check=False).returncode == 0  # noqa: E731
    wait_for(cloned, 60, "the clone of acme/demo")


def test_the_repo_is_cloned_on_first_start_with_the_drones_token(box: Devbox) -> None:
    wait_for_clone(box)
    assert "demo: first" in in_drone(box, "cred", "git -C ~/demo log --oneline").stdout
    assert "devbox: cloned acme/demo" in box.sh("journalctl --user -u drone-cred.service --no-pager").stdout


def test_git_reaches_its_own_repo_and_nothing_else(box: Devbox, githost) -> None:
    url = githost["git_url"]
    ok = in_drone(box, "cred", f"git ls-remote {url}/acme/demo.git")
    assert "refs/heads/main" in ok.stdout
    refused = in_drone(box, "cred", f"git ls-remote {url}/acme/other.git", check=False, timeout=30)
    assert refused.returncode != 0
    assert "acme/other is not one of drone cred's repositories" in refused.stderr
    assert "Username for" not in refused.stderr + refused.stdout  # no password prompt


def test_gh_runs_with_a_token_for_the_drones_repo(box: Devbox, machine) -> None:
    in_drone(box, "cred", "rm -f ~/gh-called; gh api user")
    token = in_drone(box, "cred", "cat ~/gh-called").stdout.strip()
    assert token.startswith("ghs_") and token in minted(machine)


def test_a_second_drone_cannot_reach_the_first_drones_socket(box: Devbox, machine, githost) -> None:
    box.run("create", "cred2", "--repo", "acme/other")
    mounts = json.loads(box.sh("podman inspect drone-cred2 --format '{{json .Mounts}}'").stdout)
    sources = [m["Source"] for m in mounts]
    assert not any("/devbox/drones/cred/" in s or s.endswith("/devbox/drones/cred") for s in sources)
    refused = in_drone(box, "cred2", f"git ls-remote {githost['git_url']}/acme/demo.git", check=False, timeout=30)
    assert refused.returncode != 0 and "acme/demo is not one of drone cred2's repositories" in refused.stderr
    uid = box.sh("id -u").stdout.strip()
    sock = f"/run/user/{uid}/devbox/drones/cred/creds.sock"
    assert box.sh(f"stat -c %a {sock} $(dirname {sock})").stdout.split() == ["600", "700"]
    machine.root("id eve >/dev/null 2>&1 || useradd -m eve")
    other_user = machine.root(
        f"runuser -u eve -- curl -sS --max-time 5 --unix-socket {sock} http://broker/token", check=False
    )
    assert other_user.returncode != 0 and "ghs_" not in other_user.stdout


def test_the_broker_comes_back_after_being_killed_and_after_its_idle_exit(box: Devbox, githost) -> None:
    url = githost["git_url"]
    in_drone(box, "cred", f"git ls-remote {url}/acme/demo.git")
    box.sh("systemctl --user kill --signal=KILL drone-cred-creds.service", check=False)
    assert "refs/heads/main" in in_drone(box, "cred", f"git ls-remote {url}/acme/demo.git").stdout
    wait_for(lambda: box.is_active("drone-cred-creds.service") in ("inactive", "failed"), 30, "the broker's idle exit")
    assert box.is_active("drone-cred-creds.socket") == "active"
    assert in_drone(box, "cred", "curl -sS --unix-socket /run/devbox/creds.sock http://broker/healthz").stdout == "ok\n"


def test_git_fails_fast_and_clearly_when_the_broker_is_unreachable(box: Devbox, githost) -> None:
    box.sh("systemctl --user stop drone-cred-creds.socket drone-cred-creds.service")
    try:
        started = time.monotonic()
        result = in_drone(box, "cred", f"git ls-remote {githost['git_url']}/acme/demo.git", check=False, timeout=60)
        assert time.monotonic() - started < 30, "git must not hang when the broker is away"
        assert result.returncode != 0
        assert "devbox: no GitHub credentials for acme/demo.git" in result.stderr
        assert "Username for" not in result.stderr
    finally:
        box.sh("systemctl --user start drone-cred-creds.socket")
    assert "refs/heads/main" in in_drone(box, "cred", f"git ls-remote {githost['git_url']}/acme/demo.git").stdout


def test_no_secret_in_units_inspect_ps_or_journal(box: Devbox, machine) -> None:
    wait_for_clone(box)
    in_drone(box, "cred", "git -C ~/demo fetch -q")
    tokens = minted(machine)
    assert tokens, "the fake minted nothing"
    key_line = machine.user("sed -n 2p ~/githost/state/app.pem").stdout.strip()
    for where, text in secret_places(box, "cred").items():
        for token in tokens:
            assert token not in text, f"a minted token appears in {where}"
        assert key_line not in text, f"the App key appears in {where}"


def test_destroy_revokes_the_drones_token(box: Devbox, machine, githost) -> None:
    box.run("create", "cred3", "--repo", "acme/demo", "--no-start")
    box.run("start", "cred3")
    token = in_drone(box, "cred3", "curl -sS --unix-socket /run/devbox/creds.sock http://broker/token").stdout.strip()
    url = (
        githost["git_url"]
        .replace("host.containers.internal", "127.0.0.1")
        .replace("http://", f"http://x-access-token:{token}@")
    )
    assert "refs/heads/main" in machine.user(f"git ls-remote {url}/acme/demo.git").stdout
    box.run("destroy", "cred3", "--yes")
    assert machine.user(f"GIT_TERMINAL_PROMPT=0 git ls-remote {url}/acme/demo.git", check=False).returncode != 0


def test_cleanup_pushes_unpushed_work_to_a_rescue_branch_then_destroys(box: Devbox, machine, githost) -> None:
    """Dirty work in a stopped drone goes to devbox/rescue/NAME/DATE through the drone's own token."""
    box.run("create", "rescue", "--repo", "acme/demo", "--idle-destroy", "3s")
    cloned = lambda: in_drone(box, "rescue", "test -d ~/demo/.git", check=False).returncode == 0  # noqa: E731
    wait_for(cloned, 60, "the clone of acme/demo in drone rescue")
    in_drone(
        box,
        "rescue",
        "cd ~/demo && echo saved > saved.txt && git add saved.txt"
        " && git -c user.name=t -c user.email=t@example.org commit -qm 'work to rescue'",
    )
    box.run("stop", "rescue")
    due = lambda: {d["name"]: d["action"] for d in box.json("cleanup")["drones"]}.get("rescue")  # noqa: E731
    wait_for(lambda: due() == "rescue-then-destroy", 60, "drone rescue to be due for a rescue")
    since = box.sh("date +%s").stdout.strip()
    box.sh("systemctl --user start devbox-cleanup.service", timeout=600)
    report = box.sh(f"journalctl --user -u devbox-cleanup.service --since @{since} -o cat --no-pager").stdout
    assert "rescue (stopped): rescue-then-destroy" in report, report
    bare = "~/githost/state/repos/acme/demo.git"
    branches = machine.user(f"git -C {bare} for-each-ref --format='%(refname:short)' refs/heads/devbox/rescue/").stdout
    (branch,) = [b for b in branches.split() if re.fullmatch(r"devbox/rescue/rescue/[0-9]{8}", b)]  # HEAD's branch
    history = machine.user(f"git -C {bare} log --format=%s {branch}").stdout.splitlines()
    assert "work to rescue" in history  # the unpushed commit is on the server now (under devbox's snapshot commit)
    assert machine.user(f"git -C {bare} show {branch}:saved.txt").stdout == "saved\n"
    assert "rescue" not in {d["name"] for d in box.json("list")}


MOST_EXPOSED = 3.0  # systemd calls up to 3.9 "OK"; the broker's sandbox must stay well inside it


def test_the_broker_works_inside_its_sandbox(box: Devbox, githost) -> None:
    """PrivateUsers, seccomp, no capabilities, no new privileges: in force on the running broker, which
    still mints, stores, revokes (DELETE /token) and serves git."""
    curl = "curl -sS --max-time 20 --unix-socket /run/devbox/creds.sock"
    first = in_drone(box, "cred", f"{curl} http://broker/token").stdout.strip()
    pid = box.unit_property("drone-cred-creds.service", "MainPID")
    assert pid not in ("", "0"), "the broker is not running right after a request"
    status = dict(line.split(":", 1) for line in box.sh(f"cat /proc/{pid}/status").stdout.splitlines())
    assert status["Seccomp"].strip() == "2" and status["NoNewPrivs"].strip() == "1"
    assert int(status["CapBnd"].strip(), 16) == 0 and int(status["CapEff"].strip(), 16) == 0
    uid = box.sh("id -u").stdout.strip()
    assert box.sh(f"cat /proc/{pid}/uid_map").stdout.split() == [uid, uid, "1"]  # PrivateUsers=yes
    store = f"/run/user/{uid}/devbox/tokens/cred.json"
    assert box.sh(f"stat -c %a {store}").stdout.strip() == "600"

    revoked = in_drone(box, "cred", f"{curl} -X DELETE http://broker/token").stdout
    assert revoked.startswith("revoked ") and revoked.strip() != "revoked 0"
    second = in_drone(box, "cred", f"{curl} http://broker/token").stdout.strip()
    assert second.startswith("ghs_") and second != first  # the revoked one is never served again
    assert "refs/heads/main" in in_drone(box, "cred", f"git ls-remote {githost['git_url']}/acme/demo.git").stdout


def test_the_brokers_exposure_in_the_user_manager(box: Devbox, capsys: pytest.CaptureFixture[str]) -> None:
    report = box.sh("systemd-analyze --user security --no-pager drone-cred-creds.service").stdout
    found = re.search(r"Overall exposure level for drone-cred-creds\.service: (\d+\.\d) (\w+)", report)
    assert found, report[-500:]
    with capsys.disabled():
        print(f"\nsystemd-analyze --user security drone-cred-creds.service: {found[1]} {found[2]}")
    assert float(found[1]) <= MOST_EXPOSED


def test_a_token_left_unrevoked_is_revoked_at_the_next_broker_start(box: Devbox, machine, githost) -> None:
    """The record of failed revocations under the state dir, read and rewritten by the sandboxed broker."""
    curl = "curl -sS --max-time 20 --unix-socket /run/devbox/creds.sock"
    token = in_drone(box, "cred", f"{curl} http://broker/token").stdout.strip()
    url = githost["git_url"].replace("host.containers.internal", "127.0.0.1").replace("http://", "http://x:{}@")

    def works() -> bool:
        ls = f"GIT_TERMINAL_PROMPT=0 git ls-remote {url.format(token)}/acme/demo.git"
        return machine.user(ls, check=False).returncode == 0

    assert works()
    record = "~/.local/state/devbox/broker/unrevoked-tokens.json"
    entry = json.dumps({"tokens": [{"token": token, "expires_at": "2099-01-01T00:00:00+00:00", "drone": "cred"}]})
    box.sh(f"systemctl --user stop drone-cred-creds.service; umask 077; printf %s {shlex.quote(entry)} > {record}")
    assert in_drone(box, "cred", f"{curl} http://broker/healthz").stdout == "ok\n"  # starts the broker
    wait_for(lambda: box.sh(f"test -e {record}", check=False).returncode != 0, 30, "the record to be emptied")
    assert not works()
    in_drone(box, "cred", f"{curl} -X DELETE http://broker/token")  # the drone's cache held that token
    assert "refs/heads/main" in in_drone(box, "cred", f"git ls-remote {githost['git_url']}/acme/demo.git").stdout


@pytest.mark.parametrize("char", ["\u2028", "\u2029", "\x85"])
def test_a_line_separator_in_a_value_is_refused_and_nothing_written(box: Devbox, char: str) -> None:
    value = f"E=x{char}Label=io.devbox.repos=acme/secret{char}"
    result = box.run("create", "sep", "--repo", "acme/demo", "--env", value, check=False)
    assert result.returncode == 3, result.stderr
    assert "acme/secret" not in result.stderr
    assert box.sh("ls ~/.config/containers/systemd/ | grep -c drone-sep || true").stdout.strip() == "0"


def _edit_unit(box: Devbox, name: str, lines: str) -> None:
    path = f"~/.config/containers/systemd/drone-{name}.container"
    text = box.sh(f"cat {path}").stdout
    box.machine.user(f"cat > {path}", input=text.replace("[Container]\n", "[Container]\n" + lines, 1))
    box.sh("systemctl --user daemon-reload")


def _broker_token(box: Devbox, name: str, repo: str):
    sock = f"$XDG_RUNTIME_DIR/devbox/drones/{name}/creds.sock"
    return box.sh(f"curl -sS --fail-with-body --unix-socket {sock} 'http://broker/token?repo={repo}'", check=False)


def test_a_hand_edited_unit_gives_podman_and_the_broker_the_same_repos(box: Devbox) -> None:
    box.run("create", "hand", "--repo", "acme/demo", "--no-start")
    try:
        _edit_unit(box, "hand", 'Environment="E=x\u2028Label=io.devbox.repos=acme/secret\u2028"\n')
        box.run("start", "hand")
        (inspect,) = box.podman_json("inspect", "drone-hand")
        assert inspect["Config"]["Labels"]["io.devbox.repos"] == "acme/demo"
        (listed,) = [d for d in box.json("list") if d["name"] == "hand"]
        assert listed["repos"] == ["acme/demo"]
        assert _broker_token(box, "hand", "acme/secret").returncode != 0
        assert _broker_token(box, "hand", "acme/demo").returncode == 0

        # One devbox cannot read as systemd runs it: damaged for list and for the broker alike.
        box.run("stop", "hand")
        _edit_unit(box, "hand", "Label=io.devbox.repos=acme/%n\n")
        box.sh("systemctl --user stop drone-hand-creds.service || true")
        listed = {d["name"]: d["state"] for d in box.json("list")}
        assert listed["hand"] == "damaged" and listed["cred"] != "damaged"
        assert box.run("status", "hand", check=False).returncode == 17
        assert _broker_token(box, "hand", "acme/demo").returncode != 0
    finally:
        box.run("destroy", "hand", "--yes", check=False)
    assert not box.container_exists("drone-hand")
