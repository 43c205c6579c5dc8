"""code-server in the default drone image (--with code-server), in the real machine.

The image is built here by `devbox image build` from the local Debian 13 base: apt from Debian's
mirror, code-server from the npm registry (the machine trusts this host's certificate authorities:
tests/e2e/machine.sh). It is cached as a `podman save` archive under DEVBOX_E2E_CACHE, keyed on
templates/image/ and the base image, so later runs load it in seconds. The drone's web-service
plumbing (published ports, `devbox open`) is not here: the test runs the image's wrapper,
devbox-code-server, with a plain `podman run` as the drone's init would, and reaches code-server on
the container's loopback from the machine through its network namespace (`podman unshare nsenter`).

A real headless Chromium (Debian's, installed from the mirror by the test) logs in with the password
and waits for the workbench; its screenshot is kept in DEVBOX_E2E_ARTIFACTS (default
$DEVBOX_E2E_STATE/artifacts/code-server.png).
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]
BASE = "localhost/devbox-base:trixie"
IMAGE = "localhost/devbox-drone:code-server-e2e"
C = "cs-e2e"
HOME = "/home/dev"
STATE = f"{HOME}/.local/state/devbox-drone/code-server"
WORKSPACE = f"{HOME}/ws"
URL = "http://127.0.0.1:8080"
CACHE = Path(os.environ.get("DEVBOX_E2E_CACHE", "/var/cache/devbox-e2e"))
E2E_STATE = Path(os.environ.get("DEVBOX_E2E_STATE", "/var/tmp/devbox-e2e/run"))
GUEST_HOME = E2E_STATE / "root" / "home" / "dev"  # the guest's /home/dev, seen from this host (machine.sh)
ARTIFACTS = Path(os.environ.get("DEVBOX_E2E_ARTIFACTS", str(E2E_STATE / "artifacts")))
DEV_UID = 1000

# The machine's Chromium: installed here, not in machine.sh's package list (the cached machine root
# stays the one every other test uses).
CHROMIUM = (
    "command -v chromium >/dev/null || "
    "{ apt-get -q -o Acquire::Retries=3 update && DEBIAN_FRONTEND=noninteractive "
    "apt-get -q -o Acquire::Retries=3 install -y --no-install-recommends chromium fonts-dejavu-core; }"
)

# A minimal DevTools client over --remote-debugging-pipe (fd 3: commands in, fd 4: replies out,
# NUL-terminated JSON): open URL, log in with the password from a file (never on a command line),
# wait for the workbench's DOM, save a screenshot. Prints what it saw, one key=value a line.
BROWSER = r"""
import base64, json, os, sys, tempfile, time

url, password_file, shot = sys.argv[1:4]
password = open(password_file).read().strip()
profile = tempfile.mkdtemp(prefix="cs-e2e-chromium-")
to_chrome_r, to_chrome_w = os.pipe()
from_chrome_r, from_chrome_w = os.pipe()
args = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1280,800",
        "--remote-debugging-pipe", "about:blank"]
pid = os.posix_spawnp("chromium", args, os.environ, file_actions=[
    (os.POSIX_SPAWN_DUP2, to_chrome_r, 3), (os.POSIX_SPAWN_DUP2, from_chrome_w, 4),
    (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0), (os.POSIX_SPAWN_OPEN, 2, "/dev/null", os.O_WRONLY, 0)])
os.close(to_chrome_r); os.close(from_chrome_w)
buf, ids = b"", iter(range(1, 1 << 30))

def call(method, session=None, **params):
    global buf
    mid = next(ids)
    msg = {"id": mid, "method": method, "params": params}
    if session:
        msg["sessionId"] = session
    os.write(to_chrome_w, json.dumps(msg).encode() + b"\0")
    while True:
        while b"\0" not in buf:
            chunk = os.read(from_chrome_r, 1 << 20)
            if not chunk:
                raise SystemExit("chromium closed its DevTools pipe")
            buf += chunk
        raw, buf = buf.split(b"\0", 1)
        reply = json.loads(raw)
        if reply.get("id") == mid:
            if "error" in reply:
                raise SystemExit(f"{method}: {reply['error']}")
            return reply["result"]

def js(session, expression):
    r = call("Runtime.evaluate", session, expression=expression, returnByValue=True)
    return r.get("result", {}).get("value")

def until(what, session, expression, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if js(session, expression):
            return True
        time.sleep(0.25)
    print(f"timeout={what}")
    print("html=" + json.dumps((js(session, "document.documentElement.outerHTML") or "")[:400]))
    return False

try:
    target = call("Target.createTarget", url="about:blank")["targetId"]
    session = call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    call("Page.enable", session)
    call("Page.navigate", session, url=url)
    if until("login form", session, "!!document.querySelector('input[name=password]')", 60):
        print("login_page=" + js(session, "location.pathname"))
        js(session, "const i = document.querySelector('input[name=password]'); i.value = "
           + json.dumps(password) + "; i.form.submit(); true")
        if until("workbench", session, "!!document.querySelector('.monaco-workbench')", 120):
            print("workbench=yes")
            # The explorer shows the workspace's files once the extension host is up.
            until("explorer", session, "document.body.innerText.includes('README.md')", 60)
            print("folder=" + js(session, "new URLSearchParams(location.search).get('folder')"))
            print("title=" + js(session, "document.title"))
            data = call("Page.captureScreenshot", session, format="png")["data"]
            open(shot, "wb").write(base64.b64decode(data))
            print(f"screenshot={shot}")
finally:
    try:
        call("Browser.close")
    except BaseException:
        os.kill(pid, 9)
    os.waitpid(pid, 0)
"""


def in_drone(machine, command: str, check: bool = True, timeout: float = 60):
    return machine.user(f"podman exec {C} bash -c {shlex.quote(command)} </dev/null", check=check, timeout=timeout)


def on_loopback(machine, command: str, check: bool = True, timeout: float = 60):
    """COMMAND from the machine, in the drone's network namespace (code-server's loopback)."""
    return machine.user(
        f"podman unshare nsenter -t $(podman inspect -f '{{{{.State.Pid}}}}' {C}) -n bash -c {shlex.quote(command)}",
        check=check,
        timeout=timeout,
    )


def status(machine, curl_args: str) -> str:
    return on_loopback(machine, f"curl -s -m 10 -o /dev/null -w '%{{http_code}} %{{redirect_url}}' {curl_args}").stdout


def websocket(machine, path: str, cookie: str = "") -> str:
    """The status line code-server answers a WebSocket upgrade on PATH with."""
    headers = (
        "-H 'Connection: Upgrade' -H 'Upgrade: websocket' -H 'Sec-WebSocket-Version: 13' "
        "-H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=='"
    )
    r = on_loopback(machine, f"curl -si -m 5 {cookie} {headers} {shlex.quote(URL + path)} | head -n 1", check=False)
    return r.stdout.strip()


def _image_key(machine) -> str:
    digest = hashlib.sha256()
    digest.update(machine.user(f"podman image inspect --format '{{{{.Id}}}}' {BASE}").stdout.strip().encode())
    for path in sorted((ROOT / "templates" / "image").rglob("*")):
        if path.is_file():
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="module")
def image(machine) -> str:
    """The default image with code-server: from the cache, else built (a few minutes) and cached."""
    entry = CACHE / f"codeserver-image-{_image_key(machine)}"
    archive = "code-server-e2e-image.tar"
    if (entry / "image.tar").is_file():
        os.utime(entry)  # last use, for the pruning below
        shutil.copyfile(entry / "image.tar", GUEST_HOME / archive)
        os.chown(GUEST_HOME / archive, DEV_UID, DEV_UID)
        machine.user(f"podman load -q -i ~/{archive} >/dev/null; rm -f ~/{archive}", timeout=600)
    else:
        built = machine.user(f"devbox image build --base {BASE} --no-pull --tag {IMAGE}", timeout=1800)
        if "code-server: installed" not in built.stdout:
            pytest.skip(f"the image has no code-server (the guest cannot reach the npm registry?): {built.stdout}")
        machine.user(f"rm -f ~/{archive}; podman save -q -o ~/{archive} {IMAGE}", timeout=600)
        tmp = entry.with_name(f"{entry.name}.tmp.{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        shutil.move(GUEST_HOME / archive, tmp / "image.tar")
        try:
            tmp.rename(entry)
        except OSError:  # another run cached the same entry meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
        entries = [p for p in CACHE.glob("codeserver-image-*") if ".tmp." not in p.name]
        for stale in sorted(entries, key=lambda p: p.stat().st_mtime, reverse=True)[2:]:  # keep two
            shutil.rmtree(stale, ignore_errors=True)
    info = machine.user(f"podman run --rm --entrypoint cat {IMAGE} /usr/share/devbox/image-info").stdout
    assert "code-server=installed" in info.splitlines(), info
    return IMAGE


@pytest.fixture(scope="module")
def drone(machine, image) -> Iterator[str]:
    """The image's wrapper as the drone's init runs it: the drone user (keep-id), the home volume,
    the workspace as the working directory."""
    machine.user(
        f"""set -e
        podman rm -f -t 0 {C} >/dev/null 2>&1; podman volume rm -f {C}-home >/dev/null 2>&1 || true
        rm -rf ~/cs-e2e && mkdir -p ~/cs-e2e/ws && echo hello > ~/cs-e2e/ws/README.md
        podman run -d --name {C} --userns=keep-id --init -v {C}-home:$HOME -v ~/cs-e2e/ws:{WORKSPACE} \
          -w {WORKSPACE} {image} devbox-code-server >/dev/null"""
    )
    ready(machine)
    yield C
    machine.user(f"podman rm -f -t 0 {C}; podman volume rm -f {C}-home; rm -rf ~/cs-e2e", check=False)


def ready(machine) -> None:
    """code-server answers on the drone's loopback (its log keeps the last start's lines)."""
    wait_for(
        lambda: on_loopback(machine, f"curl -s -m 5 -o /dev/null {URL}/login", check=False).returncode == 0,
        90,
        "code-server answering",
    )


def password(machine) -> str:
    return in_drone(machine, f"cat {STATE}/password").stdout


def test_it_listens_on_the_drone_s_loopback_only_and_refuses_without_the_password(machine, drone) -> None:
    listening = in_drone(machine, "ss -Htln").stdout
    assert "127.0.0.1:8080 " in listening and "0.0.0.0:8080" not in listening and "*:8080" not in listening
    assert status(machine, f"{URL}/") == f"302 {URL}/login"
    assert status(machine, f"{URL}/login") == "200 "
    commit = in_drone(machine, "code-server --version").stdout.split()[1]
    query = "?reconnectionToken=e2e&reconnection=false&skipWebSocketFrames=false"
    for path in (f"/{query}", f"/stable-{commit}{query}"):
        assert websocket(machine, path) == "HTTP/1.1 401 Unauthorized", path


def test_the_password_is_a_0600_file_in_the_home_volume_and_nowhere_else(machine, drone) -> None:
    modes = in_drone(machine, f"stat -c '%a %U %n' {STATE} {STATE}/password {STATE}/config.yaml").stdout.splitlines()
    assert modes == [f"700 dev {STATE}", f"600 dev {STATE}/password", f"600 dev {STATE}/config.yaml"]
    secret = password(machine)
    assert len(secret) == 24 and secret.isalnum()
    places = {
        "podman inspect": machine.user(f"podman inspect {C}").stdout,
        "the machine's argv and environments": machine.root("ps auxwwe").stdout,
        "the drone's argv and environments": in_drone(
            machine,
            "for p in /proc/[0-9]*; do tr '\\0' '\\n' < $p/cmdline; tr '\\0' '\\n' < $p/environ; done",
            check=False,
        ).stdout,
        "the drone's log": machine.user(f"podman logs {C} 2>&1").stdout,
        "user journal": machine.user("journalctl --user --no-pager").stdout,
        "system journal": machine.root("journalctl --no-pager").stdout,
    }
    assert "code-server" in places["the drone's argv and environments"]  # the probe saw its processes
    assert [place for place, text in places.items() if secret in text] == []
    # Made once: a restart (Quadlet recreates the container; the home volume stays) keeps it.
    machine.user(f"podman restart -t 10 {C} >/dev/null")
    ready(machine)
    assert password(machine) == secret


def test_the_password_logs_in_and_the_workbench_opens_the_workspace(machine, drone) -> None:
    machine.user(f"umask 077 && podman exec {C} cat {STATE}/password > ~/cs-e2e/pw")
    wrong = on_loopback(machine, f"curl -s -m 10 -c ~/cs-e2e/bad-jar --data-urlencode password=wrong {URL}/login")
    assert "Incorrect password" in wrong.stdout
    assert "code-server-session" not in machine.user("cat ~/cs-e2e/bad-jar").stdout
    jar = "-b ~/cs-e2e/jar"
    assert status(machine, f"-c ~/cs-e2e/jar --data-urlencode password@$HOME/cs-e2e/pw {URL}/login") == f"302 {URL}/"
    page = on_loopback(machine, f"curl -sL -m 30 {jar} -w '\\n%{{http_code}} %{{url_effective}}' {URL}/").stdout
    body, _, last = page.rpartition("\n")
    assert last == f"200 {URL}/?folder={WORKSPACE}"
    assert 'id="vscode-workbench-web-configuration"' in body and "/workbench/workbench.js" in body
    commit = in_drone(machine, "code-server --version").stdout.split()[1]
    upgrade = websocket(machine, f"/stable-{commit}?reconnectionToken=e2e&reconnection=false", cookie=jar)
    assert upgrade == "HTTP/1.1 101 Switching Protocols"  # so the 401s above were for the missing login


def test_a_headless_browser_logs_in_and_shows_the_workbench(machine, drone) -> None:
    if machine.root(CHROMIUM, check=False, timeout=900).returncode != 0:
        pytest.skip("chromium could not be installed in the machine from Debian's mirror")
    machine.user("cat > ~/cs-e2e/browser.py", input=BROWSER)
    machine.user(f"umask 077 && podman exec {C} cat {STATE}/password > ~/cs-e2e/pw")
    shot = f"{HOME}/cs-e2e/code-server.png"
    r = on_loopback(machine, f"python3 ~/cs-e2e/browser.py {URL}/ ~/cs-e2e/pw {shot}", timeout=300, check=False)
    seen = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
    assert seen.get("login_page") == "/login", r.stdout + r.stderr
    assert seen.get("workbench") == "yes", r.stdout + r.stderr
    assert seen.get("folder") == WORKSPACE
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(GUEST_HOME / "cs-e2e" / "code-server.png", ARTIFACTS / "code-server.png")
    assert (ARTIFACTS / "code-server.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"\nscreenshot: {ARTIFACTS / 'code-server.png'}")
