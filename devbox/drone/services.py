"""The optional services a drone runs beside its sshd, chosen with `--with NAME` or `[drone] with`.

Declared once, here: the drone's init starts each one it finds in DEVBOX_WITH (templates/image/
devbox-drone-init, the contract of templates/image/CONTRACT.md), so a devcontainer-built drone
gets them too. A name not in SERVICES is refused. `syncthing` is the older `--with-syncthing`.

A web service (one with `web`) is a server in the drone that a browser opens: it listens on the
drone's 127.0.0.1 only (tailnet peers reach it there through tailscaled's userspace networking),
its port is published on this server's 127.0.0.1 from WEB_FIRST_PORT up (drone/web.py), and it
answers nothing without the password the init makes on first start (README "The web terminal").
The init runs it as `devbox-NAME PORT PASSWORD_FILE` (DEVBOX_WEB names them with their ports):
adding one is an entry here and that program in the image.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from devbox.errors import invalid
from devbox.values import printable

SYNCTHING = "syncthing"  # kept as its own field and label (DroneSpec.syncthing), for older drones
MOSH = "mosh"  # mosh-server, started over SSH by the client (no daemon); UDP ports in drone/mosh.py
CONTAINERS = "containers"  # rootless Podman in the drone (DroneSpec.containers; README "Containers in a drone")
WEB_TERMINAL = "web-terminal"  # a shell in the browser (templates/image/devbox-web-terminal)
CODE_SERVER = "code-server"  # VS Code in the browser (templates/image/devbox-code-server)


@dataclass(frozen=True)
class Web:
    """How a browser reaches a web service."""

    port: int  # where it listens in the drone, on 127.0.0.1 only
    word: str  # `devbox open NAME WORD` prints its URL (and, asked, its password)


@dataclass(frozen=True)
class Service:
    name: str
    summary: str  # one line for --help and the README
    web: Web | None = None
    # The build argument templates/image/Containerfile.contract installs the service's programs with,
    # for a drone built from a devcontainer.json (devcontainer/build.py passes it as NAME=1).
    build_arg: str | None = None


SERVICES: dict[str, Service] = {
    service.name: service
    for service in (
        Service(SYNCTHING, "file sync with your other machines (as --with-syncthing)"),
        Service(MOSH, "mosh, the shell for flaky links: devbox mosh NAME (UDP ports published like SSH)"),
        Service(
            CONTAINERS,
            "rootless Podman in the drone, with a Docker-compatible socket (docker, docker compose)",
            build_arg="DEVBOX_CONTAINERS",
        ),
        Service(
            WEB_TERMINAL,
            "a terminal in the browser, in a tmux session: devbox open NAME terminal",
            Web(7681, "terminal"),
            "DEVBOX_WEB_TERMINAL",
        ),
        Service(
            CODE_SERVER,
            "VS Code in the browser (code-server 4.100.3) on the drone's workspace: devbox open NAME code",
            Web(8080, "code"),
            "DEVBOX_CODE_SERVER",
        ),
    )
}

WEB_SERVICES: dict[str, Service] = {name: s for name, s in SERVICES.items() if s.web is not None}


def validate_services(names: Iterable[str]) -> tuple[str, ...]:
    """Known service names, each once, in a stable order; one line naming the known ones otherwise."""
    chosen = set()
    for name in names:
        if name not in SERVICES:
            known = ", ".join(sorted(SERVICES))
            shown = repr(name) if printable(name) else "(a name with invisible characters)"
            raise invalid(f"unknown service {shown} for --with: known are {known}")
        chosen.add(name)
    return tuple(sorted(chosen))


def build_args(names: Iterable[str]) -> tuple[str, ...]:
    """NAME=1 for each chosen service the contract layer installs with a build argument."""
    return tuple(sorted(f"{s.build_arg}=1" for n in set(names) if (s := SERVICES.get(n)) and s.build_arg))


def web_service_for(word: str) -> Service | None:
    """The web service `devbox open NAME WORD` means (None: WORD names none)."""
    return next((s for s in WEB_SERVICES.values() if s.web is not None and s.web.word == word), None)


def web_word(name: str) -> str:
    """The `devbox open NAME WORD` word of web service NAME (NAME itself for any other)."""
    service = WEB_SERVICES.get(name)
    return service.web.word if service is not None and service.web is not None else name
