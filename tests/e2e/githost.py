"""Stand-ins for GitHub inside the e2e machine, in one process so they share what was minted:

- the fake GitHub API (tests/fakegithub.py) on 127.0.0.1, which the broker calls;
- a git smart-HTTP server (`git http-backend`) on 0.0.0.0, which drones reach as
  host.containers.internal and which accepts only Basic auth with a token the fake API
  minted for that very repository.

    python3 githost.py STATE_DIR   # writes STATE_DIR/{app.pem,ports.json,minted.log}; runs until killed
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from fakegithub import FakeGitHub, rsa_keypair

STATE = Path(sys.argv[1])
REPOS = STATE / "repos"
INSTALLATIONS = {"acme": (4242, {"demo", "other", "dcdemo"}, {"contents": "write", "pull_requests": "write"})}


def make_repos() -> None:
    for name in ("demo", "other"):
        bare = REPOS / "acme" / f"{name}.git"
        if bare.exists():
            continue
        work = STATE / "work" / name
        work.mkdir(parents=True)
        subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
        (work / "README.md").write_text(f"# acme/{name}\n")
        env = {
            **os.environ,
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@e",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@e",
        }
        subprocess.run(["git", "-C", str(work), "add", "."], check=True)
        subprocess.run(["git", "-C", str(work), "commit", "-qm", f"{name}: first"], check=True, env=env)
        subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
        subprocess.run(["git", "-C", str(bare), "config", "http.receivepack", "true"], check=True)


def git_handler(fake: FakeGitHub) -> type[BaseHTTPRequestHandler]:
    class GitHTTP(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            path, _, query = self.path.partition("?")
            parts = path.strip("/").split("/")
            repo = f"{parts[0]}/{parts[1].removesuffix('.git')}" if len(parts) >= 2 else ""
            auth = self.headers.get("Authorization", "")
            password = ""
            if auth.startswith("Basic "):
                password = base64.b64decode(auth[6:]).decode().partition(":")[2]
            if not password or not fake.token_allows(password, repo):
                with open(STATE / "git-denied.log", "a") as log:
                    log.write(f"{self.command} {repo} {'token' if password else 'none'}\n")
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="fake github"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            env = {
                "PATH": os.environ["PATH"],
                "GIT_PROJECT_ROOT": str(REPOS),
                "GIT_HTTP_EXPORT_ALL": "1",
                "PATH_INFO": path,
                "QUERY_STRING": query,
                "REQUEST_METHOD": self.command,
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)),
                "REMOTE_USER": "x-access-token",
                "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
            }
            out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, check=False).stdout
            head, _, payload = out.partition(b"\r\n\r\n")
            status = 200
            headers = []
            for line in head.decode().split("\r\n"):
                key, _, value = line.partition(": ")
                if key.lower() == "status":
                    status = int(value.split(" ")[0])
                elif key:
                    headers.append((key, value))
            self.send_response(status)
            for key, value in headers:
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _serve

        def log_message(self, *args: object) -> None:
            pass

    return GitHTTP


def main() -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    make_repos()
    private, _public = rsa_keypair()
    key = STATE / "app.pem"
    key.write_bytes(private)
    key.chmod(0o600)
    with FakeGitHub("12345", installations=INSTALLATIONS) as fake:
        port = int(os.environ.get("GITHOST_GIT_PORT", "0"))  # the same port again after a reboot
        git = ThreadingHTTPServer(("0.0.0.0", port), git_handler(fake))
        threading.Thread(target=git.serve_forever, daemon=True).start()
        (STATE / "ports.json").write_text(json.dumps({"api": fake.url, "git_port": git.server_address[1]}))
        seen: set[str] = set()
        stop = threading.Event()
        while not stop.wait(0.2):  # publish minted tokens for the test's secret grep
            new = set(fake.minted) - seen
            if new:
                with open(STATE / "minted.log", "a") as log:
                    log.writelines(f"{t}\n" for t in sorted(new))
                seen |= new


if __name__ == "__main__":
    main()
