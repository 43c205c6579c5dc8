"""A real headless Chromium, driven over the DevTools protocol, for the tests of web services.

    with Browser.connect(devtools_port) as page:       # a Chromium the test started (launch_argv)
        page.basic_auth("dev", password)               # or: page.open(url); page.log_in(password)
        page.open("http://127.0.0.1:7701/")
        page.wait_for("window.terminalState === 'open'", 30)
        page.type_text("echo hi"); page.press_enter()
        page.screenshot(Path("shot.png"))

Only the standard library: a small RFC 6455 client (text frames, client masking, ping, close) is
all the protocol needs, so this module runs in the test process or in the e2e machine's Python
alike, with nothing to install. Chromium is Debian's `chromium` package, started by the test with
`launch_argv` (a fresh profile; no network but what the page asks for).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

# Headless, no sandbox (the e2e machine is a container), and nothing Chromium would fetch by itself.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1100,680",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",  # Chromium picks one and writes it to DevToolsActivePort
)


def launch_argv(user_data_dir: str, binary: str = "chromium") -> list[str]:
    """Chromium's command line with a fresh profile in USER_DATA_DIR (its DevToolsActivePort file
    names the port it listens on: devtools_port)."""
    return [binary, *FLAGS, f"--user-data-dir={user_data_dir}", "about:blank"]


def devtools_port(active_port_file_text: str) -> int | None:
    """The port from DevToolsActivePort's first line (None until Chromium wrote it)."""
    first = active_port_file_text.split("\n", 1)[0].strip()
    return int(first) if first.isdigit() else None


class BrowserError(AssertionError):
    pass


class WebSocket:
    """A blocking websocket client: enough for the DevTools protocol (text messages, no extensions)."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        if parts.scheme != "ws" or parts.hostname is None:
            raise BrowserError(f"not a ws:// URL: {url}")
        self.sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise BrowserError("the DevTools websocket closed during the handshake")
            head += chunk
        head, self.buffer = head.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 101"):
            raise BrowserError(f"the DevTools websocket was refused: {head.splitlines()[0]!r}")

    def _exact(self, count: int) -> bytes:
        while len(self.buffer) < count:
            chunk = self.sock.recv(max(65536, count - len(self.buffer)))
            if not chunk:
                raise BrowserError("the DevTools websocket closed")
            self.buffer += chunk
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        size = len(payload)
        if size < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
        elif size < 1 << 16:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def send(self, text: str) -> None:
        self._send_frame(0x1, text.encode())

    def receive(self) -> str:
        """The next text message (fragments joined; pings answered)."""
        message = b""
        while True:
            first, second = self._exact(2)
            opcode, size = first & 0x0F, second & 0x7F
            if size == 126:
                (size,) = struct.unpack("!H", self._exact(2))
            elif size == 127:
                (size,) = struct.unpack("!Q", self._exact(8))
            payload = self._exact(size)  # a server never masks
            if opcode == 0x9:
                self._send_frame(0xA, payload)
            elif opcode == 0x8:
                raise BrowserError("the DevTools websocket was closed by Chromium")
            elif opcode in (0x0, 0x1, 0x2):
                message += payload
                if first & 0x80:
                    return message.decode()

    def close(self) -> None:
        try:
            self._send_frame(0x8, b"")
        except OSError:
            pass
        self.sock.close()


class Browser:
    """One page of a running Chromium, over its DevTools websocket."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.next_id = 0
        self.events: list[dict[str, Any]] = []
        self.call("Page.enable")
        self.call("Runtime.enable")

    @classmethod
    def connect(cls, port: int, host: str = "127.0.0.1", timeout: float = 30.0) -> Browser:
        """The first page target of the Chromium whose DevTools listen on HOST:PORT."""
        with urllib.request.urlopen(f"http://{host}:{port}/json/list", timeout=timeout) as answer:
            targets = json.load(answer)
        pages = [t for t in targets if t.get("type") == "page" and t.get("webSocketDebuggerUrl")]
        if not pages:
            raise BrowserError(f"Chromium on port {port} has no page: {targets}")
        return cls(WebSocket(pages[0]["webSocketDebuggerUrl"], timeout))

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.ws.close()

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """One DevTools command; its result (events arriving meanwhile are kept in .events)."""
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.receive())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    # --- the API the tests use ---

    def open(self, url: str, timeout: float = 30.0) -> None:
        """Load URL and wait for its document to be complete."""
        result = self.call("Page.navigate", url=url)
        if result.get("errorText"):
            raise BrowserError(f"cannot load {url}: {result['errorText']}")
        self.wait_for("document.readyState === 'complete'", timeout)

    def evaluate(self, expression: str) -> Any:
        """EXPRESSION's value in the page (promises awaited; values come back as JSON)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise BrowserError(f"{expression}: {details.get('exception', {}).get('description') or details}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float, interval: float = 0.2) -> Any:
        """Poll EXPRESSION until it is truthy (its value is returned); a BrowserError after TIMEOUT s."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            try:
                last = self.evaluate(expression)
            except BrowserError as exc:  # a page being replaced, or an object not there yet
                last = exc
            if last and not isinstance(last, BrowserError):
                return last
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out after {timeout:g} s waiting for {expression} (last: {last!r})")
            time.sleep(interval)

    def type_text(self, text: str) -> None:
        """TEXT as typed into the focused element."""
        self.call("Input.insertText", text=text)

    def press_enter(self) -> None:
        for kind in ("keyDown", "keyUp"):
            key = {"key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "nativeVirtualKeyCode": 13}
            self.call("Input.dispatchKeyEvent", type=kind, **key, **({"text": "\r"} if kind == "keyDown" else {}))

    def screenshot(self, path: Path) -> Path:
        """The page as it looks now, as PNG."""
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    # --- logging in ---

    def basic_auth(self, user: str, password: str) -> None:
        """Send HTTP basic auth with every request of this page from now on (websockets too)."""
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self.call("Network.enable")
        self.call("Network.setExtraHTTPHeaders", headers={"Authorization": f"Basic {token}"})

    def fill(self, selector: str, value: str) -> None:
        """Set the value of the form field SELECTOR as typing would (an input event follows)."""
        script = (
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return false;"
            f" e.focus(); e.value = {json.dumps(value)}; e.dispatchEvent(new Event('input', {{bubbles: true}}));"
            " return true; })()"
        )
        if not self.evaluate(script):
            raise BrowserError(f"no {selector} on {self.evaluate('location.href')}")

    def click(self, selector: str) -> None:
        script = (
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e && e.click(); return !!e; }})()"
        )
        if not self.evaluate(script):
            raise BrowserError(f"no {selector} on {self.evaluate('location.href')}")

    def log_in(
        self,
        password: str,
        field: str = "input[type=password]",
        submit: str = "[type=submit]",
        timeout: float = 30.0,
    ) -> None:
        """Fill a login page's password FIELD, SUBMIT it, and wait for the next page to load."""
        before = self.evaluate("performance.timeOrigin")
        self.fill(field, password)
        self.click(submit)
        self.wait_for(f"performance.timeOrigin !== {before} && document.readyState === 'complete'", timeout)
