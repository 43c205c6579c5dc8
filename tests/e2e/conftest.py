"""End-to-end tests in a real Debian 13 machine: systemd as PID 1, rootless Podman 5
with Quadlet, devbox installed for user `dev`. tests/e2e/machine.sh builds and
boots it (see its header); this file wraps it as the session fixture `machine`.

DEVBOX_E2E=0 skips these tests; DEVBOX_E2E_KEEP=1 leaves the machine running
after the session and reuses it (reinstalling the devbox wheel) next time.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import PLAIN_CONFIG, wait_for, write_config
from tests.e2e.testnets import drone_test_networks

HERE = Path(__file__).resolve().parent
MACHINE_SH = HERE / "machine.sh"
UP_TIMEOUT = float(os.environ.get("DEVBOX_E2E_UP_TIMEOUT", "1800"))
KEEP = os.environ.get("DEVBOX_E2E_KEEP") == "1"


class GuestCommandError(subprocess.CalledProcessError):
    def __str__(self) -> str:
        return f"{super().__str__()}\n--- stdout:\n{self.stdout}\n--- stderr:\n{self.stderr}"


def _sh(*args: str, timeout: float, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """machine.sh ARGS in its own process group: a timeout kills the command inside the guest too."""
    proc = subprocess.Popen(
        [str(MACHINE_SH), *args],
        text=True,
        start_new_session=True,
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise subprocess.TimeoutExpired(proc.args, timeout, out, err) from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


class Machine:
    def user(
        self, cmd: str, check: bool = True, timeout: float = 120, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`bash -lc CMD` as user dev in the guest (in ~dev, with the user's bus)."""
        return self._run("user", cmd, check, timeout, input)

    def root(
        self, cmd: str, check: bool = True, timeout: float = 120, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`bash -lc CMD` as root in the guest."""
        return self._run("root", cmd, check, timeout, input)

    def diag(self) -> str:
        """Failed units, drone units, dev's journal tail, podman ps -a."""
        r = _sh("diag", timeout=180)
        return r.stdout + r.stderr

    @staticmethod
    def wait_until(what: str, probe: Callable[[], object], timeout: float = 30, interval: float = 0.1):
        """Poll PROBE until it returns something truthy (returned); fail after TIMEOUT seconds."""
        deadline, last = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            last = probe()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")

    def _run(self, who, cmd, check, timeout, input):
        r = _sh(who, cmd, timeout=timeout, input=input)
        if check and r.returncode != 0:
            raise GuestCommandError(r.returncode, f"machine.sh {who} {cmd!r}", r.stdout, r.stderr)
        return r


def _skip_reason() -> str | None:
    if os.environ.get("DEVBOX_E2E") == "0":
        return "DEVBOX_E2E=0"
    if os.geteuid() != 0:
        return "the e2e machine needs root (debootstrap, systemd-nspawn)"
    tools = ("systemd-nspawn", "debootstrap")
    if not all(map(shutil.which, tools)) and shutil.which("apt-get"):
        subprocess.run(
            "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
            "debootstrap systemd-container uidmap",
            shell=True,
            capture_output=True,
            timeout=900,
        )
    missing = [t for t in tools if not shutil.which(t)]
    return f"{', '.join(missing)} missing and could not be installed" if missing else None


def _up(config: pytest.Config) -> None:
    """machine.sh up, its progress streamed to the terminal (CI log) as it happens."""
    capman = config.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
        sys.stderr.write(f"\n{MACHINE_SH} up (timeout {UP_TIMEOUT:.0f} s)\n")
        proc = subprocess.Popen(
            [str(MACHINE_SH), "up"],
            text=True,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

        def stop() -> None:  # TERM lets machine.sh clean up; KILL if it does not
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(UP_TIMEOUT, stop)
        timer.daemon = True
        timer.start()
        tail: collections.deque[str] = collections.deque(maxlen=150)
        for line in proc.stdout:  # type: ignore[union-attr]
            sys.stderr.write(line)
            sys.stderr.flush()
            tail.append(line)
        rc = proc.wait()
        timer.cancel()
    if rc != 0:
        pytest.fail(
            f"machine.sh up failed (exit {rc}{', timed out' if rc < 0 else ''}):\n{''.join(tail)}", pytrace=False
        )


@pytest.fixture(scope="session")
def machine(request: pytest.FixtureRequest):
    reason = _skip_reason()
    if reason:
        print(f"\nskipping e2e tests: {reason}", file=sys.stderr)
        pytest.skip(reason)
    if not KEEP:  # a machine left running by an interrupted session
        _sh("down", timeout=300)
    try:
        _up(request.config)
        if KEEP:
            _sh("install", timeout=600).check_returncode()
        yield Machine()
    finally:
        if not KEEP:
            r = _sh("down", timeout=300)
            if r.returncode:
                print(f"machine.sh down failed:\n{r.stderr}", file=sys.stderr)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.e2e)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed and "machine" in getattr(item, "fixturenames", ()):
        try:
            text = Machine().diag()
        except Exception as e:  # the report must not fail because diag did
            text = f"machine.sh diag failed: {e!r}"
        rep.sections.append(("machine.sh diag", text))


# -- the fake GitHub (API and git server) that the credential, clean-up and bench tests share -------------


@pytest.fixture(scope="module")
def githost(machine) -> Iterator[dict[str, str]]:
    machine.user("rm -rf ~/githost && mkdir -p ~/githost")
    for source in (HERE.parent / "fakegithub.py", HERE / "githost.py"):
        machine.user(f"cat > ~/githost/{source.name}", input=source.read_text())
    machine.user("nohup /opt/devbox-venv/bin/python ~/githost/githost.py ~/githost/state > ~/githost/log 2>&1 &")
    wait_for(
        lambda: machine.user("test -s ~/githost/state/ports.json", check=False).returncode == 0, 60, "the fake GitHub"
    )
    ports = json.loads(machine.user("cat ~/githost/state/ports.json").stdout)
    git_url = f"http://host.containers.internal:{ports['git_port']}"
    config = PLAIN_CONFIG + (
        f'\n[github]\napp_id = "12345"\nprivate_key = "file:/home/dev/githost/state/app.pem"\n'
        f'api_url = "{ports["api"]}"\ngit_url = "{git_url}"\n\n[broker]\nidle_exit = 3\n'
    )
    write_config(machine, config)
    try:
        yield {"git_url": git_url, "api": ports["api"], "config": config}
    finally:
        machine.user("pkill -f githost.py", check=False)
        write_config(machine)


@pytest.fixture(scope="module")
def nets(machine) -> Iterator[dict[str, str]]:
    """tests/e2e/testnets.py's networks: {"inet": address, "lan": address}, servers on PORTS in each."""
    with drone_test_networks(machine) as addresses:
        yield addresses


# -- a real headless Chromium in the machine, driven from here (tests/e2e/browser.py) --------------------

# Debian's chromium, installed by the fixture rather than machine.sh: the cached machine root stays the
# one every other test uses. fonts-dejavu-core gives the screenshots a monospace font.
CHROMIUM = (
    "command -v chromium >/dev/null || { apt-get -q -o Acquire::Retries=3 update && DEBIAN_FRONTEND=noninteractive "
    "apt-get -q -o Acquire::Retries=3 install -y --no-install-recommends chromium fonts-dejavu-core; }"
)
ARTIFACTS = Path(
    os.environ.get("DEVBOX_E2E_ARTIFACTS")
    or Path(os.environ.get("DEVBOX_E2E_STATE", "/var/tmp/devbox-e2e/run")) / "artifacts"
)


@pytest.fixture(scope="module")
def chromium(machine) -> Iterator[Callable[[], object]]:
    """Headless Chromium as user dev in the machine (a transient user unit, a fresh profile); gives a
    function that connects to its page: a tests.e2e.browser.Browser. The machine shares this host's
    network namespace (SANDBOX.md), so its DevTools port on 127.0.0.1 is reached from here."""
    import urllib.request

    from tests.e2e.browser import Browser, devtools_port, launch_argv
    from tests.e2e.helpers import q

    machine.root(CHROMIUM, timeout=900)
    profile = "/home/dev/e2e-chromium"
    machine.user(f"systemctl --user stop e2e-chromium 2>/dev/null; rm -rf {profile} && mkdir -p {profile}")
    machine.user(f"systemd-run --user --unit=e2e-chromium --collect {q(*launch_argv(profile))}")
    try:
        port = machine.wait_until(
            "Chromium's DevTools port",
            lambda: devtools_port(machine.user(f"cat {profile}/DevToolsActivePort", check=False).stdout),
            timeout=60,
        )
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/json/version", timeout=10).close()
        except OSError as exc:
            pytest.skip(f"Chromium's DevTools port in the machine is not reachable from the test process: {exc}")
        yield lambda: Browser.connect(port)
    finally:
        machine.user("systemctl --user stop e2e-chromium", check=False)
