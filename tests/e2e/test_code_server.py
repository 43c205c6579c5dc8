"""`--with code-server` in the real machine: VS Code in the browser, on the default image.

The image is built here by `devbox image build` from the local Debian 13 base: apt from Debian's
mirror, code-server from the npm registry (the machine trusts this host's certificate authorities:
tests/e2e/machine.sh). The drone runs code-server and the web terminal side by side: the init starts
devbox-code-server on the drone's 127.0.0.1:8080 behind a password it made; devbox publishes it on
the machine's 127.0.0.1. Requests go from the machine with curl; a real headless Chromium (Debian's,
driven over the DevTools protocol: tests/e2e/browser.py) logs in and waits for the workbench. The
screenshot is kept in ARTIFACTS.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import ARTIFACTS
from tests.e2e.helpers import WEBSOCKET_UPGRADE as UPGRADE
from tests.e2e.helpers import Devbox, secret_places, wait_for, write_config

DRONE_IMAGE = "localhost/devbox-drone:latest"
DRONE = "code"
WORKSPACE = "/home/dev/project"
STATE = "/home/dev/.local/state/devbox-drone"


def in_drone(box: Devbox, command: str, check: bool = True):
    return box.in_drone(DRONE, command, check)


def answer(box: Devbox, url: str, *options: str) -> str:
    """curl's status and redirect for URL from the machine ("302 http://...", "200 ")."""
    return box.sh(
        f"curl -s -o /dev/null -w '%{{http_code}} %{{redirect_url}}' --max-time 10 {' '.join(options)} {url}; true"
    ).stdout


def running(box: Devbox) -> bool:
    return "code-server=running" in in_drone(box, "devbox-drone-init status", check=False).stdout


def answering(box: Devbox, url: str) -> bool:
    return answer(box, url + "login").startswith("200")


@pytest.fixture(scope="module")
def box(machine) -> Iterator[Devbox]:
    devbox = Devbox(machine, "systemctl")
    devbox.run("image", "build", "--base", "localhost/devbox-base:trixie", timeout=1800)
    devbox.sh("test -f ~/.ssh/id_ed25519 || ssh-keygen -q -t ed25519 -N '' -f ~/.ssh/id_ed25519")
    devbox.sh("rm -rf ~/project && mkdir -p ~/project && echo hello > ~/project/README.md")
    write_config(machine, f'[drone]\nimage = "{DRONE_IMAGE}"\n')
    try:
        devbox.run("create", DRONE, "--path", WORKSPACE, "--with", "code-server", "--with", "web-terminal")
        wait_for(lambda: running(devbox), 90, "code-server in the drone")
        url = devbox.json("open", DRONE, "code")["url"]
        wait_for(lambda: answering(devbox, url), 120, "code-server answering")
        yield devbox
    finally:
        devbox.run("destroy", DRONE, "--yes", check=False)
        write_config(machine)


def access(box: Devbox, *options: str) -> dict:
    return box.json("open", DRONE, "code", *options)


def test_code_server_listens_on_the_loopback_only_beside_the_web_terminal(box: Devbox) -> None:
    status = box.json("status", DRONE)
    assert status["with"] == ["code-server", "web-terminal"]
    code_port, terminal_port = status["web_ports"]["code-server"], status["web_ports"]["web-terminal"]
    assert code_port != terminal_port and min(code_port, terminal_port) >= 7701
    assert access(box)["url"] == f"http://127.0.0.1:{code_port}/" and "password" not in access(box)
    assert box.sh(f"ss -Htln 'sport = :{code_port}'").stdout.split()[3] == f"127.0.0.1:{code_port}"
    inside = in_drone(box, "ss -Htln 'sport = :8080'").stdout.split()
    assert inside[3] == "127.0.0.1:8080", inside
    processes = in_drone(box, "ps -eo user=,args=").stdout.splitlines()
    assert any(p.split()[0] == "dev" and "code-server" in p and "127.0.0.1:8080" in p for p in processes), processes
    info = in_drone(box, "cat /usr/share/devbox/image-info").stdout.splitlines()
    assert "code-server=installed" in info, info


def test_nothing_answers_without_the_password(box: Devbox) -> None:
    url = access(box)["url"]
    assert answer(box, url) == f"302 {url}login"
    commit = in_drone(box, "code-server --version").stdout.split()[1]
    query = "?reconnectionToken=e2e&reconnection=false&skipWebSocketFrames=false"
    for path in (query, f"stable-{commit}{query}"):
        assert answer(box, url + path, UPGRADE).startswith("401"), path
    assert "Incorrect password" in box.sh(f"curl -s -m 10 --data-urlencode password=wrong {url}login").stdout
    # the password: the login's cookie opens the workbench on the drone's workspace and its websocket
    box.machine.user("umask 077 && cat > ~/code-pw", input=access(box, "--password")["password"])  # not on argv
    jar = "~/code-jar"
    assert answer(box, url + "login", f"-c {jar} --data-urlencode password@$HOME/code-pw") == f"302 {url}"
    page = box.sh(f"curl -sL -m 30 -b {jar} -w '\\n%{{http_code}} %{{url_effective}}' {url}").stdout
    body, _, last = page.rpartition("\n")
    assert last == f"200 {url}?folder={WORKSPACE}"
    assert 'id="vscode-workbench-web-configuration"' in body
    assert answer(box, f"{url}stable-{commit}{query}", UPGRADE, f"-b {jar}").startswith("101")


def test_the_password_is_made_once_kept_0600_and_never_leaks(box: Devbox) -> None:
    password = access(box, "--password")["password"]
    assert len(password) == 24 and password.isalnum()
    files = f"{STATE}/web/code-server.password {STATE}/code-server/config.yaml"
    assert in_drone(box, f"stat -c '%a %U' {files}").stdout.split() == ["600", "dev", "600", "dev"]
    box.run("restart", DRONE)
    wait_for(lambda: running(box) and answering(box, access(box)["url"]), 120, "code-server after the restart")
    assert access(box, "--password")["password"] == password  # kept in the home volume
    places = secret_places(box, DRONE)
    places["devbox status --json"] = json.dumps(box.json("status", DRONE))
    places["devbox open"] = box.run("open", DRONE, "code").stdout
    places["the drone's processes and their environments"] = in_drone(
        box, "for p in /proc/[0-9]*; do tr '\\0' '\\n' < $p/cmdline; tr '\\0' '\\n' < $p/environ; done", check=False
    ).stdout
    assert "code-server" in places["the drone's processes and their environments"]
    leaks = [name for name, text in places.items() if password in text]
    assert leaks == [], f"code-server's password shows in: {leaks}"


def test_a_real_browser_logs_in_and_shows_the_workbench(box: Devbox, chromium) -> None:
    url = access(box)["url"]
    password = access(box, "--password")["password"]
    with chromium() as page:
        page.call("Network.enable")
        page.call("Network.clearBrowserCookies")
        page.open(url)
        page.wait_for("location.pathname === '/login' && !!document.querySelector('input[type=password]')", 30)
        page.log_in(password)
        page.wait_for("!!document.querySelector('.monaco-workbench')", 120)
        assert page.evaluate("new URL(location.href).searchParams.get('folder')") == WORKSPACE
        # the explorer shows the workspace's file (a workspace-trust prompt may sit on top)
        page.wait_for("document.body.innerText.includes('README.md')", 120)
        shot = page.screenshot(ARTIFACTS / "code-server.png")
        print(f"\nscreenshot: {shot}")


def test_bench_measures_idle_drones_with_every_service(box: Devbox, capsys) -> None:
    """bench.py's idle part on the default image, small: bare containers, drones, and drones with
    code-server, the web terminal and mosh (the README's figure is the same part with 20)."""
    from pathlib import Path

    bench = Path(__file__).resolve().parents[2] / "bench"
    for part in ("bench.py", "idlebench.py"):
        box.machine.user(f"mkdir -p ~/bench && cat > ~/bench/{part}", input=(bench / part).read_text())
    out = box.sh(
        "cd ~/bench && /opt/devbox-venv/bin/python bench.py --parts idle --idle-count 2 "
        f"--idle-with code-server,web-terminal,mosh --image {DRONE_IMAGE} --out ~/bench/idle-all.json",
        timeout=1200,
    )
    with capsys.disabled():
        print("\n" + out.stdout)
    idle = json.loads(box.sh("cat ~/bench/idle-all.json").stdout)["idle"]
    services = idle["drone with services"]["RSS by command, per container KiB"]
    assert "node" in services or "code-server" in services, services  # code-server's node processes were counted
    assert idle["drone with services / bare RSS"] > idle["drone / bare RSS"] > 1
    assert box.sh("podman ps -a --format '{{.Names}}' | grep -c bench- || true").stdout.strip() == "0"
