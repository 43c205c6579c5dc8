"""Pure rendering: a DroneSpec in, the text of every unit file out. No I/O but reading the
templates, and Jinja's cache of them compiled (`_bytecode_cache`), which can never change a result.

Quoting for systemd lives in exactly one place, `systemd_word`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from functools import cache
from types import ModuleType
from typing import TYPE_CHECKING, Any

from devbox.context import HostFacts, KeyFacts
from devbox.drone import web
from devbox.drone.identity import GitIdentity
from devbox.drone.spec import DroneSpec
from devbox.names import DRONE_SSH_PORT, KEY_PROXY_ADDRESS, LABEL_PREFIX, names_of
from devbox.paths import templates_dir
from devbox.units.unitfile import MARKER
from devbox.values import printable

if TYPE_CHECKING:
    import jinja2
    import jinja2.bccache

HEADER = f"{MARKER} Change it with devbox; hand edits are lost on the next write."

_BARE_WORD = re.compile(r"[A-Za-z0-9_./:@,+=%$-]+")


def systemd_word(value: object) -> str:
    """Quote one word for a unit file value that systemd (or Quadlet) splits into words.

    `%` and `$` are doubled because systemd expands specifiers and variables in
    ExecStart=, which is where Quadlet copies these values; backslash and double
    quote are escaped inside double quotes. Non-printing characters never get here
    (values.printable refuses them at input); one that did is an error, not a line
    break in a unit. Nor does an empty word: Quadlet ends a value there.
    """
    text = str(value)
    if not text or not printable(text):
        raise ValueError("an empty unit file word, or one with a character values.printable refuses")
    text = text.replace("%", "%%").replace("$", "$$")
    if _BARE_WORD.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def gitconfig_value(value: object) -> str:
    """A gitconfig value in double quotes; the caller refuses newlines (drone/identity.py)."""
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _cpus(value: float) -> str:
    return f"{value:g}"


class Place(Enum):
    """Which directory a rendered file goes to (see paths.Paths)."""

    QUADLET = "quadlet"
    UNITS = "units"
    TOOLS = "tools"
    DRONES = "drones"  # per-drone data: NAME/authorized_keys


@dataclass(frozen=True)
class RenderedFile:
    place: Place
    relative_path: str
    text: str
    mode: int = 0o644


# The first Quadlet that reads each key devbox would otherwise pass as PodmanArgs=.
QUADLET_KEYS_SINCE = {"Memory": (5, 5)}


def quadlet_keys(version: tuple[int, int] | None) -> frozenset[str]:
    """The keys of QUADLET_KEYS_SINCE a generator of this version reads."""
    return frozenset(key for key, since in QUADLET_KEYS_SINCE.items() if version is not None and version >= since)


# How the templates are compiled; part of the compiled-template cache's key (see _bytecode_cache).
_SYNTAX: dict[str, Any] = {
    "trim_blocks": True,
    "lstrip_blocks": True,
    "keep_trailing_newline": True,
    "autoescape": False,
}


@cache
def _environment() -> jinja2.Environment:  # jinja2 is imported here, lazily, for a fast CLI start
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        bytecode_cache=_bytecode_cache(jinja2),
        **_SYNTAX,
    )
    env.filters["systemd_word"] = systemd_word
    env.filters["cpus"] = _cpus
    env.filters["gitconfig_value"] = gitconfig_value
    return env


def _bytecode_cache(jinja: ModuleType) -> jinja2.BytecodeCache | None:
    """Compiled templates kept between runs, so that `create` does not compile them every time.

    Jinja's own per-user directory (TMPDIR/_jinja2-cache-UID, 0700, refused if it is not the
    user's). Jinja keys an entry on the template's path and source and on Python's version;
    the file name adds Jinja's version, devbox's and the syntax options, which change the
    compiled code too. The cache can never fail a render: an entry it cannot read is
    compiled again, one it cannot write is skipped, and with no safe directory there is none.
    """
    import hashlib

    from devbox import __version__

    stamp = hashlib.sha256(f"{jinja.__version__} {__version__} {sorted(_SYNTAX.items())}".encode()).hexdigest()

    class QuietCache(jinja.FileSystemBytecodeCache):  # type: ignore[name-defined]
        def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
            try:
                super().load_bytecode(bucket)
            except Exception:  # a truncated or foreign entry: pickle, marshal and OS errors alike
                bucket.reset()

        def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
            try:
                super().dump_bytecode(bucket)
            except OSError:
                pass

    try:
        return QuietCache(pattern=f"__devbox_{stamp[:16]}_%s.cache")
    except (OSError, RuntimeError):  # no safe directory
        return None


def _render(template: str, **context: object) -> str:
    return _environment().get_template(template).render(header=HEADER, **context)


def render_drone(spec: DroneSpec, host: HostFacts) -> list[RenderedFile]:
    """Every file of one drone, in a stable order."""
    name = spec.name
    keys = [key for key in host.keys if key.name in spec.keys]  # the caller checked each one is configured
    return [
        RenderedFile(
            Place.QUADLET,
            names_of(name).container_file,
            _render(
                "quadlet/drone.container.j2",
                spec=spec,
                host=host,
                # The egress label goes with the fence's own lines (egress_blocks), so `devbox egress` can swap them.
                labels=sorted(item for item in spec.labels().items() if item[0] != EGRESS_LABEL),
                drone_ssh_port=DRONE_SSH_PORT,
                keys=keys,
                key_proxy_address=KEY_PROXY_ADDRESS,
                fence_hooks_dir=f"{host.drones_dir}/{name}/hooks.d",
                quadlet_keys=quadlet_keys(host.quadlet_version),
                web_services=web.drone_ports(spec.web_services),  # (service, its port in the drone)
                web_published=web_published(spec),
                web_network=web.NETWORK if spec.web_services else None,
                # The drone's home: the host user's (%h, keep-id), or a devcontainer image's remote user's
                # (a plain path, checked by devcontainer/mapping.py: it needs no quoting and holds no %).
                home=spec.extras.home if spec.extras and spec.extras.home else "%h",
            ),
        ),
        RenderedFile(Place.QUADLET, names_of(name).autostart_dropin, _render("quadlet/autostart.conf.j2")),
        *([render_tailscale_key(name, host)] if spec.tailscale else []),
        RenderedFile(Place.UNITS, names_of(name).creds_socket, _render("units/creds.socket.j2", spec=spec)),
        RenderedFile(
            Place.UNITS, names_of(name).creds_service, _render("units/creds.service.j2", spec=spec, host=host)
        ),
        *(key_proxy_units(spec, host, keys) if keys else []),
        RenderedFile(Place.DRONES, authorized_keys_file(name), _render("drone/authorized_keys.j2", spec=spec)),
        *hooks_files(spec),
        *fence_files(spec, host),
    ]


def web_published(spec: DroneSpec) -> list[tuple[int, int]]:
    """(host port, drone port) of each web service with a host port."""
    ports = dict(spec.web_ports)
    return [(ports[name], port) for name, port in web.drone_ports(spec.web_services) if name in ports]


def key_proxy_units(spec: DroneSpec, host: HostFacts, keys: list[KeyFacts]) -> list[RenderedFile]:
    """The model API key proxy's socket-activated pair, for a drone with keys."""
    names = names_of(spec.name)
    return [
        RenderedFile(Place.UNITS, names.keys_socket, _render("units/keys.socket.j2", spec=spec)),
        RenderedFile(
            Place.UNITS, names.keys_service, _render("units/keys.service.j2", spec=spec, host=host, keys=keys)
        ),
    ]


def render_tailscale_key(name: str, host: HostFacts) -> RenderedFile:
    """The drop-in that mounts the auth key secret, for the drone user only (uid=, gid=)."""
    text = _render(
        "quadlet/tailscale-authkey.conf.j2", secret=names_of(name).tailscale_secret, uid=host.uid, gid=host.gid
    )
    return RenderedFile(Place.QUADLET, names_of(name).tailscale_dropin, text)


def hooks_files(spec: DroneSpec) -> list[RenderedFile]:
    """A devcontainer.json drone's hooks file (JSON, written by devcontainer/mapping.py), for its init."""
    if spec.extras is None or spec.extras.hooks is None:
        return []
    files = [RenderedFile(Place.DRONES, names_of(spec.name).hooks_file, spec.extras.hooks)]
    if spec.extras.compose is not None:  # a compose-based one's other services (devcontainer/compose.py)
        files.append(RenderedFile(Place.DRONES, names_of(spec.name).compose_file, spec.extras.compose))
    return files


EGRESS_LABEL = LABEL_PREFIX + "egress"


def egress_blocks(spec: DroneSpec, host: HostFacts) -> tuple[str, str]:
    """The fence's lines of a drone's unit: after its labels in [Container], first in [Service]."""
    context = {"spec": spec, "fence_hooks_dir": f"{host.drones_dir}/{spec.name}/hooks.d"}
    return _render("quadlet/egress-container.j2", **context), _render("quadlet/egress-service.j2", **context)


def fence_hook_file(name: str) -> str:
    """The OCI hooks directory the drone's unit gives Podman (--hooks-dir): the fence's hook alone."""
    return f"{name}/hooks.d/devbox-fence.json"


def fence_files(spec: DroneSpec, host: HostFacts) -> list[RenderedFile]:
    """A fenced drone's OCI hook (devbox/fence/hook.py runs as `devbox fence-hook`)."""
    if not spec.fenced:
        return []
    import json

    config = {
        "version": "1.0.0",
        "hook": {"path": host.devbox_command[0], "args": [*host.devbox_command, "fence-hook"], "timeout": 60},
        "when": {"annotations": {"^io\\.devbox\\.egress$": ".+"}},
        "stages": ["createRuntime"],
    }
    return [RenderedFile(Place.DRONES, fence_hook_file(spec.name), json.dumps(config, indent=2) + "\n")]


def authorized_keys_file(name: str) -> str:
    return f"{name}/authorized_keys"


DRONE_TOOLS = ("git-credential-devbox", "gh", "clone-repos", "dotfiles", "key-forward", "no-containers")


def render_drone_tools(git_url: str, identity: GitIdentity | None = None) -> list[RenderedFile]:
    """The scripts every drone mounts from Paths.tools_dir (relative paths in that directory)."""
    tools = [
        RenderedFile(Place.TOOLS, tool, (templates_dir() / "drone" / tool).read_text(), 0o755) for tool in DRONE_TOOLS
    ]
    gitconfig = _render("drone/gitconfig.j2", git_url=git_url, identity=identity or GitIdentity())
    return tools + [RenderedFile(Place.TOOLS, "gitconfig", gitconfig)]


CLEANUP_TIMER = "devbox-cleanup.timer"
CLEANUP_SERVICE = "devbox-cleanup.service"


def render_cleanup(host: HostFacts) -> list[RenderedFile]:
    """The per-user daily clean-up: a timer and the oneshot service it starts."""
    return [
        RenderedFile(Place.UNITS, CLEANUP_TIMER, _render("units/devbox-cleanup.timer.j2")),
        RenderedFile(Place.UNITS, CLEANUP_SERVICE, _render("units/devbox-cleanup.service.j2", host=host)),
    ]


def render_autostart() -> str:
    return _render("quadlet/autostart.conf.j2")


def drone_files(name: str) -> list[tuple[Place, str]]:
    """The files a drone has, whether or not they exist: what destroy removes."""
    return [
        (Place.QUADLET, names_of(name).container_file),
        (Place.QUADLET, names_of(name).autostart_dropin),
        (Place.QUADLET, names_of(name).tailscale_dropin),
        (Place.UNITS, names_of(name).creds_socket),
        (Place.UNITS, names_of(name).creds_service),
        (Place.UNITS, names_of(name).keys_socket),
        (Place.UNITS, names_of(name).keys_service),
        (Place.DRONES, fence_hook_file(name)),  # before the others: its hooks.d is then empty and goes with it
        (Place.DRONES, authorized_keys_file(name)),
        (Place.DRONES, names_of(name).hooks_file),
        (Place.DRONES, names_of(name).compose_file),
    ]
