"""A model API stand-in: a loopback HTTPS server with its own test CA, for the key proxy's tests and bench.

It answers only requests that carry the expected key header, records what it received (never
shown in an assertion message), and streams server-sent events one chunk at a time: each chunk
after the first waits for `release` (tests set it once the client has seen the first chunk), so a
test can prove the proxy does not gather a response. `GET /bytes/N` streams N bytes (bench).

Runnable on its own (the e2e machine starts it): python3 fakeupstream.py DIR KEYHEADER KEYFILE
writes DIR/ca.pem and DIR/port, then serves until killed (see `main`).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import socket
import ssl
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SSE_EVENTS = 3


def make_ca(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 and localhost: (ca.pem, cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "devbox test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        # Python 3.13's default context checks strictly (VERIFY_X509_STRICT): key identifiers are needed.
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # keyCertSign, cRLSign
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


@dataclass
class Seen:
    """One request as the upstream received it."""

    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class FakeUpstream:
    header: str  # the key header it checks, lower case
    value: str  # its expected value (prefix and key)
    seen: list[Seen] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    sent_last: threading.Event = field(default_factory=threading.Event)
    port: int = 0
    ca: Path | None = None

    def start(self, directory: Path, host: str = "127.0.0.1") -> FakeUpstream:
        ca, cert, key = make_ca(directory)
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = b""
                    while size := int(self.rfile.readline().split(b";")[0], 16):
                        data += self.rfile.read(size)
                        self.rfile.readline()
                    while self.rfile.readline() not in (b"\r\n", b""):
                        pass
                    return data
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self) -> None:
                body = self._body()
                upstream.seen.append(Seen(self.command, self.path, list(self.headers.items()), body))
                if self.headers.get(upstream.header) != upstream.value:
                    self._send(401, b'{"error": "bad or missing key"}')
                elif self.path.startswith("/bytes/"):
                    self._stream_bytes(int(self.path.rsplit("/", 1)[1]))
                elif "stream" in self.path or b'"stream": true' in body:
                    self._stream_events()
                else:
                    self._send(200, json.dumps({"ok": True, "path": self.path}).encode())

            do_GET = do_POST = do_PUT = do_DELETE = _handle

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()

            def _stream_events(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for n in range(SSE_EVENTS):
                    if n == 1 and not upstream.release.wait(30):
                        break  # nobody saw the first chunk: end (the test fails on what it got)
                    if n == SSE_EVENTS - 1:
                        upstream.sent_last.set()
                    self._chunk(f"event: delta\ndata: {json.dumps({'n': n})}\n\n".encode())
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

            def _stream_bytes(self, total: int) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                block = b"x" * 65536
                while total > 0:
                    self._chunk(block[: min(total, len(block))])
                    total -= len(block)
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server = ThreadingHTTPServer((host, 0), Handler)
        server.daemon_threads = True
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self.port, self.ca = server.server_address[1], ca
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main(directory: Path, header: str, key_file: Path) -> None:
    """Serve until killed, on 127.0.0.1: DIR/ca.pem, DIR/port; streams wait for DIR/release; DIR/sent-last
    appears when the last event of a stream is sent; DIR/seen.jsonl has each request (headers too)."""
    import time

    fake = FakeUpstream(header, key_file.read_text().strip()).start(directory)
    (directory / "port").write_text(str(fake.port))
    count = 0
    with (directory / "seen.jsonl").open("a") as log:
        while True:
            if (directory / "release").exists():
                fake.release.set()
            else:
                fake.release.clear()
            if fake.sent_last.is_set():
                (directory / "sent-last").touch()
                fake.sent_last.clear()
            for item in fake.seen[count:]:
                # The key is written as a marker: this log must not be one more place that holds it.
                headers = [(k, "<the key>" if v == fake.value else v) for k, v in item.headers]
                log.write(json.dumps({"method": item.method, "path": item.path, "headers": headers}) + "\n")
                log.flush()
            count = len(fake.seen)
            time.sleep(0.02)


if __name__ == "__main__":  # the e2e machine: fakeupstream.py DIR HEADER KEYFILE (the key never in argv)
    main(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]))
