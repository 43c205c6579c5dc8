"""Podman behind one small interface, through podman-py and the user's API socket.

Raw API JSON never leaves this module: `container_from_api` turns it into
`ContainerInfo`. Tests feed that function JSON recorded from a real Podman 5.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from devbox.errors import DevboxError, ExitCode
from devbox.names import DRONE_LABEL, LABEL_PREFIX


@dataclass(frozen=True)
class ContainerInfo:
    name: str
    drone: str
    state: str  # created, running, paused, exited, stopped ...
    image: str
    started_at: datetime | None
    ports: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    exit_code: int | None = None


class Podman(Protocol):
    def drone_containers(self) -> dict[str, ContainerInfo]: ...
    def image_exists(self, ref: str) -> bool: ...
    def pull(self, ref: str) -> None: ...
    def volume_exists(self, name: str) -> bool: ...
    def remove_volume(self, name: str) -> bool: ...
    def remove_container(self, name: str) -> bool: ...
    def create_secret(self, name: str, value: str) -> None: ...  # replaces one of the same name
    def remove_secret(self, name: str) -> bool: ...
    def version(self) -> str: ...
    def create_volume(self, name: str) -> None: ...
    def export_volume(self, name: str, write: Callable[[bytes], object]) -> int: ...
    def import_volume(self, name: str, chunks: Iterable[bytes]) -> int: ...


def _timestamp(value: Any) -> datetime | None:
    if isinstance(value, (int, float)) and value > 0:
        return datetime.fromtimestamp(value, tz=UTC)
    return None


def _port(entry: dict[str, Any]) -> str:
    host_ip = entry.get("host_ip") or "0.0.0.0"
    proto = entry.get("protocol") or "tcp"
    return f"{host_ip}:{entry.get('host_port')}->{entry.get('container_port')}/{proto}"


def container_from_api(raw: dict[str, Any]) -> ContainerInfo:
    """One entry of libpod's `GET /containers/json`."""
    labels = raw.get("Labels") or {}
    names = raw.get("Names") or [""]
    state = raw.get("State") or "unknown"
    return ContainerInfo(
        name=names[0].lstrip("/"),
        drone=labels.get(DRONE_LABEL, ""),
        state=state,
        image=raw.get("Image") or "",
        started_at=_timestamp(raw.get("StartedAt")) if state == "running" else None,
        ports=tuple(_port(p) for p in raw.get("Ports") or []),
        labels={k[len(LABEL_PREFIX) :]: v for k, v in labels.items() if k.startswith(LABEL_PREFIX)},
        exit_code=raw.get("ExitCode") if state != "running" else None,
    )


API_VERSION = "v4.0.0"  # the libpod API path prefix; Podman 5 answers it unchanged


def api_request(
    socket_path: str, method: str, path: str, body: bytes = b"", timeout: float | None = 30.0
) -> tuple[int, bytes]:
    """One request on the libpod API over its Unix socket: status and body.

    Written on a bare socket because `http.client` imports email and ssl (as long as the
    request itself takes), and importing podman-py costs many times that (README). An
    HTTP/1.0 request makes the server answer with a plain body and close the connection.
    """
    import socket

    head = f"{method} /{API_VERSION}/libpod{path} HTTP/1.0\r\nHost: d\r\nContent-Length: {len(body)}\r\n\r\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        conn.connect(socket_path)
        conn.sendall(head.encode() + body)
        chunks = []
        while chunk := conn.recv(262144):
            chunks.append(chunk)
    return parse_http_response(b"".join(chunks))


def api_get(socket_path: str, path: str, timeout: float = 30.0) -> tuple[int, bytes]:
    return api_request(socket_path, "GET", path, timeout=timeout)


def _quoted(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")


def _unexpected(status: int, body: bytes) -> RuntimeError:
    return RuntimeError(f"HTTP {status}: {body[:200].decode(errors='replace')}")


def parse_http_response(data: bytes) -> tuple[int, bytes]:
    """Status and body of a whole HTTP/1.x response (Content-Length or read to the end)."""
    head, separator, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if not separator or len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise RuntimeError(f"not an HTTP response: {data[:60]!r}")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)}
    if headers.get("transfer-encoding", "").lower() == "chunked":
        raise RuntimeError("a chunked answer to an HTTP/1.0 request")
    length = headers.get("content-length", "")
    if length.isdigit():
        if len(body) < int(length):
            raise RuntimeError(f"the answer ended after {len(body)} of {length} bytes")
        body = body[: int(length)]
    return int(parts[1]), body


def list_containers_json(socket_path: str, timeout: float = 30.0) -> list[dict[str, Any]]:
    """libpod's container list (all states, devbox's label) over the Unix socket, with the stdlib."""
    import json
    from urllib.parse import quote

    filters = quote(json.dumps({"label": [DRONE_LABEL]}))
    status, body = api_get(socket_path, f"/containers/json?all=true&filters={filters}", timeout)
    if status != 200:
        raise _unexpected(status, body)
    data = json.loads(body or b"[]")
    return data if isinstance(data, list) else []


def exists_json(socket_path: str, kind: str, name: str, timeout: float = 30.0) -> bool:
    """libpod's `/images|volumes|containers/NAME/exists`: 204 or 404."""
    status, body = api_get(socket_path, f"/{kind}/{_quoted(name)}/exists", timeout)
    if status not in (204, 404):
        raise _unexpected(status, body)
    return status == 204


def delete_json(socket_path: str, path: str, timeout: float | None = None) -> bool:
    """A libpod DELETE: True when it removed something, False when there was nothing (404).
    No timeout by default: Podman answers when it has removed a home volume, however big."""
    status, body = api_request(socket_path, "DELETE", path, timeout=timeout)
    if status not in (200, 204, 404):
        raise _unexpected(status, body)
    return status != 404


def create_secret_json(socket_path: str, name: str, value: bytes, timeout: float = 30.0) -> None:
    """libpod's `POST /secrets/create?name=NAME`, the value as the request body."""
    status, body = api_request(socket_path, "POST", f"/secrets/create?name={_quoted(name)}", value, timeout)
    if status not in (200, 201):
        raise _unexpected(status, body)


def default_socket(runtime_dir: Path) -> str:
    host = os.environ.get("CONTAINER_HOST")
    return host or f"unix://{runtime_dir}/podman/podman.sock"


class PodmanPy:
    """The Podman REST API through podman-py; the client is made on first use."""

    def __init__(self, base_url: str, podman_command: str | None = None) -> None:
        self._base_url = base_url
        self._client: Any = None
        self._given_command = podman_command

    @property
    def _command(self) -> str:
        import shutil

        return self._given_command or shutil.which("podman") or "/usr/bin/podman"

    def _api(self) -> Any:
        if self._client is None:
            from podman import PodmanClient

            self._client = PodmanClient(base_url=self._base_url)
        return self._client

    def _call(self, what: str, func: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except Exception as exc:
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if "Connection" in type(exc).__name__ or "No such file" in text or "Connection" in text:
                hint = "run `systemctl --user enable --now podman.socket`"
                raise DevboxError(f"cannot reach the Podman API at {self._base_url}: {hint}", ExitCode.PODMAN) from None
            raise DevboxError(f"podman could not {what}: {text}", ExitCode.PODMAN) from None

    def drone_containers(self) -> dict[str, ContainerInfo]:
        """One `GET /containers/json` for all drones.

        On the local socket it is a plain stdlib request: importing podman-py (requests,
        urllib3) costs more than the query, and `list` is the command people run most. Any
        other CONTAINER_HOST goes through podman-py.
        """
        if self._local_socket is not None:
            raw = self._call("list containers", list_containers_json, self._local_socket)
        else:
            containers = self._call(
                "list containers", lambda: self._api().containers.list(all=True, filters={"label": DRONE_LABEL})
            )
            raw = [c.attrs for c in containers]
        infos = (container_from_api(item) for item in raw)
        return {info.drone: info for info in infos if info.drone}

    def _exists(self, kind: str, name: str, api_exists: Any) -> bool:
        """Asked on every create: the stdlib on the local socket, as for drone_containers."""
        if self._local_socket is not None:
            return bool(self._call(f"look up {kind[:-1]} {name}", exists_json, self._local_socket, kind, name))
        return bool(self._call(f"look up {kind[:-1]} {name}", lambda: api_exists(name)))

    def image_exists(self, ref: str) -> bool:
        return self._exists("images", ref, lambda name: self._api().images.exists(name))

    def pull(self, ref: str) -> None:
        self._call(f"pull {ref}", lambda: self._api().images.pull(ref))

    def volume_exists(self, name: str) -> bool:
        return self._exists("volumes", name, lambda volume: self._api().volumes.exists(volume))

    @property
    def _local_socket(self) -> str | None:
        """The Unix socket path when the API is local: devbox then asks it with the stdlib."""
        return self._base_url[len("unix://") :] if self._base_url.startswith("unix://") else None

    def _delete(self, what: str, path: str, api_remove: Any, api_exists: Any) -> bool:
        """Removed on every destroy: one stdlib request on the local socket (404: nothing there)."""
        if self._local_socket is not None:
            return bool(self._call(what, delete_json, self._local_socket, path))
        if not self._call(what, api_exists):
            return False
        self._call(what, api_remove)
        return True

    def remove_volume(self, name: str) -> bool:
        return self._delete(
            f"remove volume {name}",
            f"/volumes/{_quoted(name)}?force=true",
            lambda: self._api().volumes.remove(name, force=True),
            lambda: self._api().volumes.exists(name),
        )

    def remove_container(self, name: str) -> bool:
        return self._delete(
            f"remove container {name}",
            f"/containers/{_quoted(name)}?force=true",
            lambda: self._api().containers.remove(name, force=True),
            lambda: self._api().containers.exists(name),
        )

    def create_secret(self, name: str, value: str) -> None:
        """The value goes in the request body over the user's socket: never argv, never a file."""
        self.remove_secret(name)
        if self._local_socket is not None:
            self._call(f"create secret {name}", create_secret_json, self._local_socket, name, value.encode())
        else:
            self._call(f"create secret {name}", lambda: self._api().secrets.create(name, value.encode()))

    def remove_secret(self, name: str) -> bool:
        return self._delete(
            f"remove secret {name}",
            f"/secrets/{_quoted(name)}",
            lambda: self._api().secrets.remove(name),
            lambda: self._api().secrets.exists(name),
        )

    def version(self) -> str:
        info = self._call("report its version", lambda: self._api().version())
        return str(info.get("Version", "unknown"))

    def create_volume(self, name: str) -> None:
        self._call(f"create volume {name}", lambda: self._api().volumes.create(name))

    # Volume export and import go through the podman command, streaming: the libpod API has
    # these endpoints only from Podman 5.6 (Debian 13 has 5.4), and podman-py's
    # export_archive/import_archive hold the whole archive in memory.

    def export_volume(self, name: str, write: Callable[[bytes], object]) -> int:
        """`podman volume export NAME` to `write`, a chunk at a time; returns the byte count."""
        import tempfile

        with tempfile.TemporaryFile() as errors:
            proc = self._popen(["volume", "export", name], stdout=subprocess.PIPE, stderr=errors)
            total = 0
            try:
                assert proc.stdout is not None
                while chunk := proc.stdout.read(CHUNK):
                    write(chunk)
                    total += len(chunk)
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            finally:
                if proc.stdout is not None:
                    proc.stdout.close()
            if proc.wait() != 0:
                raise DevboxError(f"podman could not export volume {name}: {_last_line(errors)}", ExitCode.PODMAN)
        return total

    def import_volume(self, name: str, chunks: Iterable[bytes]) -> int:
        """`podman volume import NAME -` fed from `chunks`; returns the byte count."""
        import tempfile

        with tempfile.TemporaryFile() as errors:
            proc = self._popen(["volume", "import", name, "-"], stdin=subprocess.PIPE, stderr=errors)
            total = 0
            assert proc.stdin is not None
            try:
                for chunk in chunks:
                    proc.stdin.write(chunk)
                    total += len(chunk)
                proc.stdin.close()
            except BrokenPipeError:
                pass  # podman stopped reading: its exit code and stderr say why
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            finally:
                if not proc.stdin.closed:
                    try:
                        proc.stdin.close()
                    except BrokenPipeError:
                        pass
            if proc.wait() != 0:
                raise DevboxError(f"podman could not import volume {name}: {_last_line(errors)}", ExitCode.PODMAN)
        return total

    def _popen(self, args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        try:
            return subprocess.Popen([self._command, *args], stdout=kwargs.pop("stdout", subprocess.DEVNULL), **kwargs)
        except OSError as exc:
            raise DevboxError(f"cannot run {self._command}: {exc.strerror}", ExitCode.ENVIRONMENT) from None


CHUNK = 1024 * 1024


def _last_line(stream: Any) -> str:
    stream.seek(0)
    lines = [line for line in stream.read().decode(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no error message"
