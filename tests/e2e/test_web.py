"""Web services in the real machine: `--with web-terminal` on the default image.

The drone's init starts devbox-web-terminal on the drone's 127.0.0.1:7681 behind a password it
made; devbox publishes it on the machine's 127.0.0.1 (pasta's --host-lo-to-ns-lo). Requests go
from the machine with curl (HTTP and a websocket upgrade); a real headless Chromium (Debian's, in
the machine, driven over the DevTools protocol from here: tests/e2e/browser.py) logs in, types a
command into the terminal and reads its output. The screenshot is kept in ARTIFACTS.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import ARTIFACTS
from tests.e2e.helpers import WEBSOCKET_UPGRADE as UPGRADE
from tests.e2e.helpers import Devbox, secret_places, wait_for, write_config

DRONE_IMAGE = "localhost/devbox-drone:latest"
DRONE = "web"
SCREEN = (  # what xterm.js shows, its whole buffer as text
    "(() => { const b = term.buffer.active, lines = [];"
    " for (let i = 0; i < b.length; i++) lines.push(b.getLine(i).translateToString(true));"
    " return lines.join('\\n'); })()"
)


def in_drone(box: Devbox, command: str, check: bool = True):
    return box.in_drone(DRONE, command, check)


def status_code(box: Devbox, url: str, *options: str) -> str:
    """curl's HTTP status for URL from the machine (a websocket upgrade gives up after 3 s: 101 is kept)."""
    return box.sh(f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 3 {' '.join(options)} {url}; true").stdout


@pytest.fixture(scope="module")
def box(machine) -> Iterator[Devbox]:
    devbox = Devbox(machine, "systemctl")
    devbox.run("image", "build", "--base", "localhost/devbox-base:trixie", timeout=1200)
    devbox.sh("test -f ~/.ssh/id_ed25519 || ssh-keygen -q -t ed25519 -N '' -f ~/.ssh/id_ed25519")
    write_config(machine, f'[drone]\nimage = "{DRONE_IMAGE}"\n')
    try:
        devbox.run("create", DRONE, "--with", "web-terminal")
        wait_for(
            lambda: "web-terminal=running" in in_drone(devbox, "devbox-drone-init status", check=False).stdout,
            60,
            "the web terminal",
        )
        yield devbox
    finally:
        devbox.run("destroy", DRONE, "--yes", check=False)
        write_config(machine)


def access(box: Devbox, *options: str) -> dict:
    return box.json("open", DRONE, "terminal", *options)


def test_the_drone_publishes_its_web_terminal_on_the_loopback_only(box: Devbox) -> None:
    status = box.json("status", DRONE)
    port = status["web_ports"]["web-terminal"]
    assert status["with"] == ["web-terminal"] and port >= 7701
    assert access(box)["url"] == f"http://127.0.0.1:{port}/" and "password" not in access(box)
    listening = box.sh(f"ss -Htln 'sport = :{port}'").stdout.split()
    assert listening[3] == f"127.0.0.1:{port}", listening  # the machine's loopback, nothing else
    inside = in_drone(box, "ss -Htln 'sport = :7681'").stdout.split()
    assert inside[3] == "127.0.0.1:7681", inside  # and the drone's
    (server,) = [p for p in in_drone(box, "ps -eo user=,args=").stdout.splitlines() if "devbox-web-terminal" in p]
    assert server.split()[0] == "dev" and server.split()[-2:][0] == "7681", server  # PORT PASSWORD_FILE


def test_nothing_answers_without_the_password(box: Devbox) -> None:
    url = access(box)["url"]
    password = access(box, "--password")["password"]
    assert len(password) == 24
    # no credentials: the page is the login page alone, the rest 401, the websocket refused before its upgrade
    assert status_code(box, url) == "401"
    assert "xterm.js" not in box.sh(f"curl -s {url}").stdout
    assert status_code(box, url + "xterm/xterm.js") == "401"
    assert status_code(box, url + "ws", UPGRADE) == "401"
    assert status_code(box, url + "ws", UPGRADE, "-u dev:wrong-password") == "401"
    assert status_code(box, url + "login", "--data-urlencode password=wrong-password") == "401"
    assert status_code(box, url, f"-u other:{password}") == "401"
    # the password: basic auth, or the login form's cookie, for the page, its scripts and the websocket
    assert status_code(box, url, f"-u dev:{password}") == "200"
    assert status_code(box, url + "xterm/xterm.js", f"-u dev:{password}") == "200"
    assert status_code(box, url + "ws", UPGRADE, f"-u dev:{password}") == "101"
    jar = "~/web-cookies"
    box.sh(f"rm -f {jar}; curl -s -c {jar} -o /dev/null --data-urlencode password={password} {url}login")
    assert status_code(box, url + "ws", UPGRADE, f"-b {jar}") == "101"
    # a page of another origin cannot open the terminal's websocket, even with the cookie
    assert status_code(box, url + "ws", UPGRADE, f"-b {jar}", "-H 'Origin: http://evil.example'") == "403"


def test_the_password_is_made_once_kept_0600_and_never_leaks(box: Devbox) -> None:
    password = access(box, "--password")["password"]
    file = "~/.local/state/devbox-drone/web/web-terminal.password"
    assert in_drone(box, f"stat -c '%a %U' {file}").stdout.split() == ["600", "dev"]
    box.run("restart", DRONE)
    wait_for(
        lambda: "web-terminal=running" in in_drone(box, "devbox-drone-init status", check=False).stdout, 60, "restart"
    )
    assert access(box, "--password")["password"] == password  # kept in the home volume
    places = secret_places(box, DRONE)
    places["devbox status --json"] = json.dumps(box.json("status", DRONE))
    places["devbox open"] = box.run("open", DRONE, "terminal").stdout
    places["the drone's processes"] = in_drone(box, "ps -eo args=").stdout
    leaks = [name for name, text in places.items() if password in text]
    assert leaks == [], f"the web terminal's password shows in: {leaks}"


def test_a_real_browser_runs_a_command_in_the_terminal(box: Devbox, chromium) -> None:
    url = access(box)["url"]
    password = access(box, "--password")["password"]
    with chromium() as page:
        page.open(url)
        assert page.evaluate("!!document.querySelector('input[type=password]') && !window.term")
        page.log_in("wrong-password")
        assert page.evaluate("document.body.innerText").count("Wrong password") == 1
        page.log_in(password)
        page.wait_for("window.terminalState === 'open'", 30)
        page.wait_for(f"{SCREEN}.includes('$')", 30)  # the shell's prompt
        page.type_text("echo web-$((6*7))-$(id -un)-$(hostname)")
        page.press_enter()
        page.wait_for(f"{SCREEN}.includes('web-42-dev-{DRONE}')", 30)
        shot = page.screenshot(ARTIFACTS / "web-terminal.png")
        print(f"\nscreenshot: {shot}")
        # the shell runs in the tmux session "web", which devbox sessions sees with the page attached
        web = next(s for s in box.json("sessions", DRONE) if s["name"] == "web")
        assert web["attached"] == 1 and web["windows"][0]["commands"] == ["bash"], web

        # the page goes, the session stays; a new page shows it again with its output
        page.open("about:blank")
        wait_for(
            lambda: next(s for s in box.json("sessions", DRONE) if s["name"] == "web")["attached"] == 0, 30, "detach"
        )
        page.open(url)  # the login's cookie is still there
        page.wait_for("window.terminalState === 'open'", 30)
        page.wait_for(f"{SCREEN}.includes('web-42-dev-{DRONE}')", 30)
        assert in_drone(box, "tmux capture-pane -p -t web").stdout.count(f"web-42-dev-{DRONE}") == 1


def test_a_browser_with_basic_auth_gets_the_terminal(box: Devbox, chromium) -> None:
    url = access(box)["url"]
    with chromium() as page:
        page.call("Network.enable")
        page.call("Network.clearBrowserCookies")
        page.basic_auth(access(box)["user"], access(box, "--password")["password"])
        page.open(url)
        page.wait_for("window.terminalState === 'open'", 30)


def test_ssh_logins_from_this_server_show_as_from_the_loopback(box: Devbox) -> None:
    """The cost of --host-lo-to-ns-lo (README "The web terminal"): the audit cannot tell a login from
    this server from one over the tailnet (tailscaled's userspace networking delivers on 127.0.0.1 too)."""
    box.run("ssh", DRONE, "--", "true", timeout=60)
    logins = [e for e in box.json("audit", DRONE)["events"] if e.get("event") == "ssh-login"]
    assert logins and logins[-1]["details"]["address"] == "127.0.0.1", logins[-1:]


def test_a_devcontainer_drone_gets_the_web_terminal_in_its_contract_layer(box: Devbox, machine) -> None:
    """tests/e2e/devcontainer/demo (remote user vscode, uid 1500) made --with web-terminal: devbox builds
    its contract layer with DEVBOX_WEB_TERMINAL=1, and the terminal runs as the remote user."""
    from tests.e2e.test_devcontainer import DIR, WS, put_fixture

    put_fixture(machine)
    try:
        box.run("create", "dcweb", "--path", WS, "--with", "web-terminal", timeout=900)
        status = "podman exec drone-dcweb devbox-drone-init status"
        wait_for(lambda: "web-terminal=running" in box.sh(status, check=False).stdout, 60, "the web terminal")
        found = box.json("open", "dcweb", "terminal", "--password")
        assert found["user"] == "vscode" and found["url"] != access(box)["url"]  # a port of its own
        assert status_code(box, found["url"]) == "401"
        assert status_code(box, found["url"], f"-u vscode:{found['password']}") == "200"
        image = box.json("status", "dcweb")["image"]
        assert box.sh(f"podman image inspect --format '{{{{.Id}}}}' {image}").stdout.strip()
    finally:
        box.run("destroy", "dcweb", "--yes", check=False)
        machine.user(f"rm -rf {DIR}", check=False)


def test_bench_measures_the_idle_footprint_of_the_web_terminal(box: Devbox, capsys) -> None:
    """bench/bench.py's web part on the real image: drones with and without it, against a bare podman run."""
    from pathlib import Path

    bench = Path(__file__).resolve().parents[2] / "bench" / "bench.py"
    box.machine.user("mkdir -p ~/bench && cat > ~/bench/bench.py", input=bench.read_text())
    out = box.sh(
        f"cd ~/bench && /opt/devbox-venv/bin/python bench.py --parts web --image {DRONE_IMAGE} --out ~/bench/web.json",
        timeout=600,
    )
    with capsys.disabled():
        print("\n" + out.stdout)
    figures = json.loads(box.sh("cat ~/bench/web.json").stdout)["web"]
    assert figures["devbox-web-terminal RSS KiB"] > 0, figures
    assert figures["drone --with web-terminal RSS KiB"] > figures["drone RSS KiB"] > 0
    assert figures["with / without web-terminal"] > 1 and figures["drone / bare podman run"] > 0
    assert box.sh("podman ps -a --format '{{.Names}}' | grep -c bench- || true").stdout.strip() == "0"
