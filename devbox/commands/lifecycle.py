"""The use-cases: create, start, stop, restart, destroy, status, list.

They take a `Context` (paths, config, systemd, podman, clock; tests pass fakes)
and plain options, and return results. They print nothing: `progress` is a
callback the CLI gives for long steps.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from devbox import __version__
from devbox.cleanup import activity, timer
from devbox.commands import locks
from devbox.commands.apikeys import drone_keys, install_keys, without_key_env
from devbox.commands.brokerstate import broker_state, broker_units, key_proxy_state, key_proxy_units
from devbox.commands.inventory import DroneStatus, status_of
from devbox.commands.progress import Progress, no_progress
from devbox.commands.tailscale import on_tailnet, resolve_key, retire_key
from devbox.config import parse_permission
from devbox.context import Context, host_facts
from devbox.drone.containers import check_host as check_containers_host
from devbox.drone.services import CONTAINERS, MOSH, SYNCTHING, WEB_SERVICES, validate_services
from devbox.drone.spec import SOCKET_PATH_MAX, DroneSpec
from devbox.drone.web import validate_ports as validate_web_ports
from devbox.errors import DevboxError, ExitCode, invalid
from devbox.host import quadlet
from devbox.host.ports import loopback_free
from devbox.host.systemd import details, journal_lines
from devbox.names import devcontainer_volume, names_of
from devbox.paths import Paths
from devbox.units import install, unitfile
from devbox.units.installed import DroneRecord, find_drones, require_drone
from devbox.units.render import (
    RenderedFile,
    drone_files,
    render_autostart,
    render_drone,
    render_drone_tools,
)
from devbox.values import parse_env

if TYPE_CHECKING:
    from devbox.broker.github import GitHubApp
    from devbox.drone.access import SshTarget


@dataclass(frozen=True)
class CreateRequest:
    name: str | None
    repos: Sequence[str] = ()
    image: str | None = None
    cpus: str | None = None
    memory: str | None = None
    ssh_port: str | int | None = None
    syncthing: bool | None = None
    services: Sequence[str] = ()  # --with NAME, over the config's [drone] with
    mosh_ports: str | tuple[int, int] | None = None  # --with mosh: FIRST-LAST; None: a free range (commands/mosh.py)
    web_ports: str | tuple[tuple[str, int], ...] | None = None  # SERVICE:PORT,...; the others free (commands/web.py)
    env: Sequence[str] = ()
    permissions: Sequence[str] = ()  # NAME=LEVEL over the config's defaults; LEVEL "none" drops one
    idle_stop: str | None = None  # a duration such as 12h; None: the config's [cleanup] idle_stop
    idle_destroy: str | None = None
    keep: bool = False  # exempt from the idle clean-up
    tailscale: bool | None = None  # None: on when the config has a [tailscale] table
    ssh_keys: Sequence[Path] = ()  # public key files; none: ~/.ssh/*.pub
    path: str | None = None  # a host directory as the workspace
    new_ssh_key: bool = False  # make a key pair for this drone; `devbox ssh` uses it
    dotfiles: str | None = None  # a git URL; None: the config's [dotfiles] repo
    dotfiles_branch: str | None = None
    devcontainer: str | None = None  # which devcontainer.json (SUB or a path in the workspace); None: the only one
    no_devcontainer: bool = False  # ignore the workspace's devcontainer.json
    keys: Sequence[str] = ()  # model API keys ([keys.NAME]) on top of the config's [drone] keys
    egress: str | None = None  # open, fenced or allow:...; None: the config's [drone] egress


T = TypeVar("T")

SSH_PORTS = range(2201, 3000)  # where a drone without a tailnet gets its 127.0.0.1 SSH port


def port_free(port: int) -> bool:
    return loopback_free(port)


def free_ssh_port(paths: Paths, is_free: Callable[[int], bool] | None = None) -> int:
    """The lowest port in SSH_PORTS no drone claims and nothing listens on."""
    is_free = is_free or port_free
    claimed = {record.declared.ssh_port for record in find_drones(paths).values()}
    for port in SSH_PORTS:
        if port not in claimed and is_free(port):
            return port
    raise DevboxError(
        f"no free port for SSH in {SSH_PORTS.start}-{SSH_PORTS.stop - 1}: give --ssh-port", ExitCode.LIMIT
    )


def _private_dirs(ctx: Context) -> tuple[Path, ...]:
    """What no drone may have mounted: sockets, settings, keys, devbox's own files (see drone/workspace.py)."""
    import getpass

    from devbox.commands.apikeys import secret_references
    from devbox.drone.workspace import secret_file_dirs

    paths = ctx.paths
    references = (
        ctx.config.github.private_key,
        ctx.config.tailscale.auth_key_reference(getpass.getuser()),
        *secret_references(ctx),
    )
    return (
        paths.runtime_dir,
        paths.config_file.parent,
        paths.quadlet_dir,
        paths.unit_dir,
        paths.data_dir,
        paths.state_dir,
        paths.home / ".ssh",
        paths.home / ".gnupg",
        *secret_file_dirs(references),
    )


def build_spec(ctx: Context, request: CreateRequest, extra_keys: Sequence[str] = ()) -> DroneSpec:
    """Command-line options over config defaults, validated."""
    defaults = ctx.config.drone
    env = dict(defaults.env)
    env.update(parse_env(item) for item in request.env)
    keys = drone_keys(ctx, request.keys)
    env = without_key_env(ctx, keys, env)
    permissions = dict(ctx.config.github.permissions)
    for item in request.permissions:
        perm, sep, level = item.partition("=")
        if not sep:
            raise DevboxError(f"invalid --permission {item!r}: expected NAME=LEVEL", ExitCode.INVALID_INPUT)
        if level == "none":
            permissions.pop(perm, None)
        else:
            permissions.update([parse_permission(perm, level)])
    from devbox.drone.sshkeys import gather_keys
    from devbox.drone.workspace import validate_workspace

    services = validate_services([*defaults.services, *request.services])
    if CONTAINERS in services:
        check_containers_host()
    tailscale = ctx.config.tailscale
    on_tailnet = tailscale.enabled if request.tailscale is None else request.tailscale
    ssh_port = request.ssh_port
    if ssh_port is None:  # on a tailnet too: `devbox ssh` on this server, and a way in if the tailnet is down
        ssh_port = free_ssh_port(ctx.paths)
    mosh_ports = request.mosh_ports
    if mosh_ports is None and MOSH in services:
        from devbox.commands.mosh import free_mosh_ports

        mosh_ports = free_mosh_ports(ctx.paths)
    web_ports: tuple[tuple[str, int], ...] = ()
    if any(name in WEB_SERVICES for name in services):
        from devbox.commands.web import free_web_ports

        web_ports = free_web_ports(
            ctx.paths, services, validate_web_ports(request.web_ports or (), services), port_free
        )
    elif request.web_ports:
        raise invalid("--web-ports needs a web service: --with " + " or --with ".join(sorted(WEB_SERVICES)))
    spec = DroneSpec.build(
        name=request.name,
        repos=list(request.repos),
        image=request.image or defaults.image,
        created=ctx.clock().replace(microsecond=0),
        version=__version__,
        cpus=request.cpus if request.cpus is not None else defaults.cpus,
        memory=request.memory if request.memory is not None else defaults.memory,
        ssh_port=ssh_port,
        syncthing=SYNCTHING in services or (defaults.syncthing if request.syncthing is None else request.syncthing),
        services=[name for name in services if name != SYNCTHING],
        mosh_ports=mosh_ports if MOSH in services else None,
        web_ports=web_ports,
        env=env,
        permissions=permissions,
        idle_stop=request.idle_stop,
        idle_destroy=request.idle_destroy,
        keep=request.keep,
        tailscale=on_tailnet,
        login_server=tailscale.login_server,
        tailscale_ssh=tailscale.ssh,
        path=None if request.path is None else validate_workspace(request.path, ctx.paths.home, _private_dirs(ctx)),
        ssh_keys=[
            *extra_keys,
            *gather_keys(request.ssh_keys, ctx.config.ssh.authorized_keys, ctx.paths.home, ctx.config.ssh.default_keys),
        ],
        dotfiles_url=request.dotfiles or ctx.config.dotfiles.repo,  # DroneSpec.build checks both
        dotfiles_branch=request.dotfiles_branch or ctx.config.dotfiles.branch,
        keys=keys,
        egress=request.egress or defaults.egress,
    )
    socket = ctx.paths.creds_socket(spec.name)
    if len(str(socket).encode()) > SOCKET_PATH_MAX:
        raise DevboxError(
            f"the credential socket path {socket} would be longer than {SOCKET_PATH_MAX} bytes: use a shorter name",
            ExitCode.INVALID_INPUT,
        )
    return spec


def render_spec(ctx: Context, request: CreateRequest) -> DroneSpec:
    """The spec `devbox render` shows: with a devcontainer.json, its config alone (nothing is built)."""
    from devbox.commands import devcontainer

    spec = build_spec(ctx, request)
    try:
        return devcontainer.prepare(ctx, request, spec, build=False, is_free=port_free)[0]
    finally:
        devcontainer.discard(ctx, spec.name)


def render_files(ctx: Context, spec: DroneSpec) -> list[RenderedFile]:
    return render_drone(spec, host_facts(ctx))


def _install_shared(ctx: Context) -> None:
    """What every drone shares: the drone tools, and the GitHub App key when it is not a plain file."""
    reference = ctx.config.github.private_key
    if ctx.config.github.enabled and reference and not reference.startswith("file:"):
        from devbox.host.secrets import Resolver

        key = Resolver(op_token_file=ctx.paths.state_dir / "op-token").resolve(reference)  # fails before any write
        ctx.paths.github_key_copy.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        install.atomic_write(ctx.paths.github_key_copy, key.value + "\n", mode=0o600)
    from devbox.drone.identity import git_identity

    identity = git_identity(ctx.config.identity.name, ctx.config.identity.email, ctx.paths.home)
    install.apply(install.plan(render_drone_tools(ctx.config.github.repo_base_url, identity), ctx.paths, force=True))


@dataclass
class CreateResult:
    spec: DroneSpec
    files: list[install.PlannedFile]
    started: bool = False
    dry_run: bool = False
    notes: list[str] = field(default_factory=list)  # one line each, for the person who ran create


def _create_notes(spec: DroneSpec) -> list[str]:
    notes = []
    if not spec.tailscale:
        notes.append(f"no tailnet configured: SSH on 127.0.0.1:{spec.ssh_port} (devbox ssh {spec.name})")
    if not spec.ssh_keys:
        notes.append("no SSH public key found in ~/.ssh/*.pub: give --ssh-key FILE to log in over SSH")
    return notes


def create(
    ctx: Context,
    request: CreateRequest,
    *,
    start: bool = True,
    dry_run: bool = False,
    force: bool = False,
    progress: Progress = no_progress,
    prepare: Callable[[DroneSpec], None] | None = None,
) -> CreateResult:
    """`prepare` (restore's hook) runs once every check has passed and the image is there, before
    anything is written: restore fills the home volume there, so the first start finds it populated."""
    keypair = None
    if request.new_ssh_key:
        from devbox.drone.sshkeys import generate_keypair

        keypair = generate_keypair(f"devbox-{request.name or 'drone'}")
    spec = build_spec(ctx, request, extra_keys=[keypair[1]] if keypair else [])
    if spec.fenced and not dry_run:  # refused in one line, never a drone that runs open
        from devbox.fence.check import require_enforceable

        require_enforceable()
    if dry_run:
        return _create(
            ctx, request, spec, keypair, start=start, dry_run=True, force=force, progress=progress, prepare=prepare
        )
    with locks.drone_lock(ctx.paths, spec.name, waiting=progress):  # a second create of NAME waits, then: EXISTS
        return _create(
            ctx, request, spec, keypair, start=start, dry_run=False, force=force, progress=progress, prepare=prepare
        )


def _create(
    ctx: Context,
    request: CreateRequest,
    spec: DroneSpec,
    keypair: tuple[str, str] | None,
    *,
    start: bool,
    dry_run: bool,
    force: bool,
    progress: Progress,
    prepare: Callable[[DroneSpec], None] | None,
) -> CreateResult:
    existing = find_drones(ctx.paths)
    if spec.name in existing:
        raise DevboxError(f"drone {spec.name} exists already", ExitCode.EXISTS)
    limit = ctx.config.max_drones
    if limit and len(existing) >= limit:
        raise DevboxError(f"the drone limit is reached ({limit}, max_drones in the config)", ExitCode.LIMIT)
    if ctx.config.github.enabled:  # dry runs too: a key the broker cannot load fails here, not on first use
        from devbox.host.secrets import check_private_key_file

        check_private_key_file(ctx.config.github.private_key)
    from devbox.commands import devcontainer

    try:
        spec, devcontainer_notes = devcontainer.prepare(
            ctx, request, spec, build=not dry_run, is_free=port_free, progress=progress
        )
        planned = install.plan(_new_drone_files(ctx, spec, start), ctx.paths, force=force)
    except BaseException:
        devcontainer.discard(ctx, spec.name)
        raise
    notes = _create_notes(spec) + devcontainer_notes
    if dry_run:
        devcontainer.discard(ctx, spec.name)
        return CreateResult(spec, planned, dry_run=True, notes=notes)

    tailscale_key = resolve_key(ctx) if spec.tailscale else None  # fails before any write
    _ensure_image(ctx, spec.image, progress)
    if prepare is not None:
        prepare(spec)
    _install_shared(ctx)
    install_keys(ctx, spec.keys)
    progress("writing unit files")
    volume_was_there = ctx.podman.volume_exists(spec.names.volume)  # a failed first start must not leave one behind
    with locks.claims_lock(ctx.paths, waiting=progress):
        spec, planned = _claim_again(ctx, request, spec, planned, start=start, force=force)
        written = install.apply(planned)
    timer_written: list[install.PlannedFile] = []
    try:
        # The clean-up timer comes with the first drone; its files go in before the one reload.
        timer_written = timer.write_timer(ctx)
        if keypair is not None:
            _write_private_key(ctx.paths.drone_key(spec.name), keypair[0])
        if tailscale_key is not None:
            ctx.podman.create_secret(spec.names.tailscale_secret, tailscale_key.value)
        progress("reloading the user manager")
        ctx.systemd.daemon_reload()
        check_generated(ctx, spec.name)
        if start:
            progress(f"starting {spec.names.service}")
            start_or_explain(ctx, spec.names.service)
    except BaseException:  # Ctrl-C during a long first start too
        _undo_create(ctx, spec.name, written + timer_written, volume_was_there)
        raise
    timer.enable_timer(ctx, changed=bool(timer_written))
    return CreateResult(spec, planned, started=start, notes=_create_notes(spec) + devcontainer_notes)


def _new_drone_files(ctx: Context, spec: DroneSpec, start: bool) -> list[RenderedFile]:
    """Made stopped, a drone stays stopped at boot like one `devbox stop` stopped: no autostart drop-in."""
    files = render_files(ctx, spec)
    return files if start else [f for f in files if f.relative_path != names_of(spec.name).autostart_dropin]


def _claim_again(
    ctx: Context,
    request: CreateRequest,
    spec: DroneSpec,
    planned: list[install.PlannedFile],
    *,
    start: bool,
    force: bool,
) -> tuple[DroneSpec, list[install.PlannedFile]]:
    """Under the claims lock, what another create may have taken since this one looked: the drone
    limit, and its ports (an SSH port devbox chose is chosen again; one the user gave is an error)."""
    others = {n: r for n, r in find_drones(ctx.paths).items() if n != spec.name}
    limit = ctx.config.max_drones
    if limit and len(others) >= limit:
        raise DevboxError(f"the drone limit is reached ({limit}, max_drones in the config)", ExitCode.LIMIT)
    owners = port_owners(others)
    refuse_claimed(spec, owners, "create")
    changed = spec
    if spec.ssh_port in owners:
        if request.ssh_port is not None:
            raise DevboxError(f"--ssh-port {spec.ssh_port} is drone {owners[spec.ssh_port]}'s", ExitCode.EXISTS)
        changed = replace(changed, ssh_port=free_ssh_port(ctx.paths))
    taken = [(service, port) for service, port in spec.web_ports if port in owners]
    if taken:
        given = dict(validate_web_ports(request.web_ports or (), spec.services))
        for service, port in taken:
            if service in given:
                raise DevboxError(f"--web-ports {service}:{port} is drone {owners[port]}'s", ExitCode.EXISTS)
        from devbox.commands.web import free_web_ports

        kept = tuple(pair for pair in spec.web_ports if pair not in taken)
        changed = replace(changed, web_ports=free_web_ports(ctx.paths, spec.services, kept, port_free, but=spec.name))
    if changed == spec:
        return spec, planned
    return changed, install.plan(_new_drone_files(ctx, changed, start), ctx.paths, force=force)


def port_owners(drones: dict[str, DroneRecord]) -> dict[int, str]:
    """The host TCP ports these drones have declared (SSH, published, web services), each with its drone."""
    owners = {r.declared.ssh_port: n for n, r in drones.items() if r.declared.ssh_port is not None}
    owners |= {host: n for n, r in drones.items() for _, host in r.declared.web_ports}
    return owners | {host: n for n, r in drones.items() for host, _ in r.declared.ports}


def refuse_claimed(spec: DroneSpec, owners: dict[int, str], verb: str) -> None:
    """A published port of SPEC that another drone claimed since it was chosen: VERB again."""
    for host, _ in spec.ports:
        if host in owners:
            raise DevboxError(f"port {host} was just claimed by drone {owners[host]}: {verb} again", ExitCode.LIMIT)


def _write_private_key(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        install.atomic_write(path, text, mode=0o600)
    except OSError as exc:
        raise DevboxError(f"cannot write the drone's SSH key {path}: {exc.strerror}", ExitCode.FAILURE) from None


def _ensure_image(ctx: Context, image: str, progress: Progress) -> None:
    if ctx.podman.image_exists(image):
        return
    progress(f"pulling {image}")
    try:
        ctx.podman.pull(image)
    except DevboxError as exc:
        raise DevboxError(
            f"image {image} is not present and could not be pulled: {exc.message}", ExitCode.IMAGE
        ) from None
    if not ctx.podman.image_exists(image):
        raise DevboxError(f"image {image} is not present and could not be pulled", ExitCode.IMAGE)


def check_generated(ctx: Context, name: str) -> None:
    """After daemon-reload the Quadlet generator must have produced drone-NAME.service."""
    service = names_of(name).service
    if ctx.systemd.states([service])[service].exists:
        return
    reasons = quadlet.problems(ctx.paths.quadlet_dir, names_of(name).container_file)
    raise DevboxError(
        f"the Quadlet generator produced no {service}" + (f": {reasons[0]}" if reasons else ""),
        ExitCode.SYSTEMD,
        details=reasons[1:],
    )


def start_or_explain(ctx: Context, service: str, action: Callable[[str], None] | None = None) -> None:
    """Start (or restart) a drone; when that fails, the error carries the unit's last journal lines."""
    try:
        (action or ctx.systemd.start)(service)
    except DevboxError as exc:
        raise DevboxError(exc.message, exc.code, details=journal_lines(service, 20)) from None


def _undo_create(ctx: Context, name: str, written: list[install.PlannedFile], volume_was_there: bool) -> None:
    """Leave nothing half-made: stop what may have started, put the files back, remove the key, the
    secret and the volume the first start made. Each step is tried whatever the others do."""
    names = names_of(name)
    failures: list[str] = []
    for unit in (names.service, names.creds_socket, names.creds_service, names.keys_socket, names.keys_service):
        _attempt(failures, unit, functools.partial(ctx.systemd.stop, unit))
    _attempt(failures, "the unit files", lambda: install.rollback(written))
    _attempt(failures, "the SSH key", lambda: ctx.paths.drone_key(name).unlink(missing_ok=True))
    _attempt(failures, "the Tailscale key secret", lambda: ctx.podman.remove_secret(names.tailscale_secret))
    _attempt(failures, "the container", lambda: ctx.podman.remove_container(names.container))
    if not volume_was_there:
        _attempt(failures, "the volume", lambda: ctx.podman.remove_volume(names.volume))
    shutil.rmtree(ctx.paths.build_dir(name), ignore_errors=True)
    _attempt(failures, "daemon-reload", ctx.systemd.daemon_reload)


def _ensure_autostart(ctx: Context, record: DroneRecord) -> None:
    """A started drone comes back with the user manager: write its [Install] drop-in again."""
    if not record.autostart:
        install.atomic_write(ctx.paths.quadlet_dir / names_of(record.name).autostart_dropin, render_autostart())
        ctx.systemd.daemon_reload()


def _reset_broker(ctx: Context, record: DroneRecord, progress: Progress) -> None:
    """A broker (or key proxy) systemd gave up on (failed, start limit hit) gets a fresh start with
    its drone: the drone only Wants= the socket, so without this it would start with no tokens."""
    pairs = [(broker_units(record.name), broker_state, "credential broker")]
    if record.declared.keys:
        pairs.append((key_proxy_units(record.name), key_proxy_state, "key proxy"))
    for units, state_of, what in pairs:
        pair = state_of(ctx.systemd.states(units), record.name)
        if pair.healthy or pair.state == "missing":
            continue
        progress(f"the {what} was {pair.state}: resetting it")
        for unit in units:
            ctx.systemd.reset_failed(unit)


@locks.locked
def start(ctx: Context, name: str, progress: Progress = no_progress) -> None:
    record = require_drone(ctx.paths, name)
    _ensure_autostart(ctx, record)
    _reset_broker(ctx, record, progress)
    retire_key(ctx, record, progress)  # before the start: a registered drone starts without its auth key
    progress(f"starting {names_of(name).service}")
    start_or_explain(ctx, names_of(name).service)


@locks.locked
def stop(ctx: Context, name: str, progress: Progress = no_progress) -> None:
    """Stop, and stay stopped across a restart of the user manager (the autostart drop-in goes)."""
    record = require_drone(ctx.paths, name)
    if install.remove_file(ctx.paths.quadlet_dir / names_of(name).autostart_dropin):
        ctx.systemd.daemon_reload()
    progress(f"stopping {names_of(name).service}")
    ctx.systemd.stop(names_of(name).service)
    key_units = (names_of(name).keys_socket, names_of(name).keys_service) if record.declared.keys else ()
    for unit in (names_of(name).creds_socket, names_of(name).creds_service, *key_units):
        ctx.systemd.stop(unit)
    # systemd forgets a stopped Quadlet unit's stop time; the idle clean-up needs it.
    with contextlib.suppress(OSError):
        activity.mark(ctx.paths, name, "stopped", ctx.clock())


@locks.locked
def restart(ctx: Context, name: str, progress: Progress = no_progress, *, keep_key: bool = False) -> None:
    """keep_key: leave the Tailscale auth key mounted (tailscale-login has just given it back)."""
    record = require_drone(ctx.paths, name)
    _ensure_autostart(ctx, record)
    if not keep_key:
        retire_key(ctx, record, progress)
    _reset_broker(ctx, record, progress)
    progress(f"restarting {names_of(name).service}")
    start_or_explain(ctx, names_of(name).service, ctx.systemd.restart)


@dataclass
class DestroyResult:
    name: str
    removed_files: list[Path] = field(default_factory=list)
    volume_removed: bool = False
    volume_kept: bool = False
    other_volumes: list[str] = field(default_factory=list)  # the devcontainer.json's named volumes, removed
    containers_removed: bool = False  # the inner store's volume (--with containers) was there and is gone
    tokens_revoked: int = 0
    tokens_live: int = 0  # tokens GitHub has not confirmed revoked (remembered, retried later)


def devcontainer_volumes(record: DroneRecord) -> list[str]:
    """The named volumes a drone's devcontainer.json gave it (its own copies: names.devcontainer_volume)."""
    if record.damaged is not None:
        return []
    try:
        sources = unitfile.volume_sources(record.path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, unitfile.UnitFileError):
        return []
    prefix = devcontainer_volume(record.name, "")
    return [source for source in sources if source.startswith(prefix) and "/" not in source]


def _token_revoker(ctx: Context) -> GitHubApp | None:
    """What revokes tokens: GitHub's API with the token itself (no App key needed)."""
    from devbox.broker.github import AppConfig, GitHubApp

    github = ctx.config.github
    return GitHubApp(AppConfig(github.app_id or "", b"", github.api_url)) if github.enabled else None


def _revoke_tokens(ctx: Context, name: str) -> int:
    """Revoke the GitHub tokens the drone's broker kept; the ones GitHub does not confirm are
    remembered (broker/pending.py) for a retry."""
    store_path = ctx.paths.token_store(name)
    if not store_path.exists():
        return 0
    from devbox.broker.pending import pending_file
    from devbox.broker.service import revoke_stored

    return revoke_stored(store_path, _token_revoker(ctx), pending_file(ctx.paths.state_dir))


def revoke_remembered(ctx: Context, drone: str | None = None) -> int:
    """Try the remembered unrevoked tokens again; how many stay live (DRONE's only, when given)."""
    from devbox.broker.pending import pending_file, revoke_pending

    return revoke_pending(pending_file(ctx.paths.state_dir), _token_revoker(ctx), drone=drone)


def _attempt(failures: list[str], what: str, step: Callable[[], T]) -> T | None:
    """One clean-up step that must not stop the others; what failed is collected for one message."""
    try:
        return step()
    except (DevboxError, OSError) as exc:
        failures.append(f"{what} ({exc})")
        return None


@locks.locked
def destroy(ctx: Context, name: str, *, keep_volume: bool = False, progress: Progress = no_progress) -> DestroyResult:
    """Stop the drone, then remove what it holds: secrets and keys first, the unit files last.

    A step that fails does not stop the others; the unit files stay until everything else is
    gone, so running destroy again finds the drone and finishes the job.
    """
    names = names_of(name)
    record = require_drone(ctx.paths, name, damaged_ok=True)
    result = DestroyResult(name)
    progress(f"stopping {names.service}")
    key_units = (names.keys_service, names.keys_socket) if record.declared.keys or record.damaged else ()
    units = (names.service, names.creds_service, names.creds_socket, *key_units)
    states = ctx.systemd.states(units)
    for unit in units:
        state = states[unit]
        if state.exists and state.active_state not in ("inactive",):
            ctx.systemd.stop(unit)
        ctx.systemd.reset_failed(unit)
    failures: list[str] = []
    result.tokens_revoked = int(
        _attempt(failures, "revoking its GitHub tokens", lambda: _revoke_tokens(ctx, name)) or 0
    )
    _attempt(failures, "its Tailscale key secret", lambda: ctx.podman.remove_secret(names.tailscale_secret))
    key = ctx.paths.drone_key(name)
    install.remove_stale_temps(key)  # from a create killed while writing it
    if key.exists() and _attempt(failures, f"its SSH key {key}", key.unlink) is None and not key.exists():
        result.removed_files.append(key)
    _attempt(failures, "its host key line", lambda: forget_host_key(ctx.paths, name))
    _attempt(failures, f"container {names.container}", lambda: ctx.podman.remove_container(names.container))
    if keep_volume:
        result.volume_kept = bool(_attempt(failures, "its volume", lambda: ctx.podman.volume_exists(names.volume)))
    else:
        progress(f"removing volume {names.volume}")
        removed = _attempt(failures, f"volume {names.volume}", lambda: ctx.podman.remove_volume(names.volume))
        result.volume_removed = bool(removed)
        inner = names.containers_volume  # --with containers: the inner store
        result.containers_removed = bool(_attempt(failures, f"volume {inner}", lambda: ctx.podman.remove_volume(inner)))
        for volume in devcontainer_volumes(record):
            if _attempt(failures, f"volume {volume}", functools.partial(ctx.podman.remove_volume, volume)):
                result.other_volumes.append(volume)
    if failures:
        raise DevboxError(
            f"drone {name} is destroyed only in part: could not remove {'; '.join(failures)}; "
            f"run devbox destroy {name} again",
            ExitCode.PODMAN,
        )
    for place, relative in drone_files(name):
        path = install.target_path(ctx.paths, place, relative)
        if install.remove_file(path):
            result.removed_files.append(path)
    try:
        activity.forget(ctx.paths, name)
        # The clean-up timer goes with the last drone (destroy's own daemon-reload follows).
        if not find_drones(ctx.paths) and not ctx.config.cleanup.keep_timer:
            timer.remove_timer(ctx)
    finally:  # the drone's units are gone from disk: systemd must forget them whatever happened to the timer
        ctx.systemd.daemon_reload()
        shutil.rmtree(ctx.paths.socket_dir(name), ignore_errors=True)
        shutil.rmtree(ctx.paths.build_dir(name), ignore_errors=True)
    result.tokens_live = revoke_remembered(ctx, name)
    if result.tokens_live:
        raise DevboxError(
            f"drone {name} is destroyed, but GitHub did not confirm the revocation of {result.tokens_live} of its "
            "tokens: they stay live until they expire (an hour at most); devbox tries again at every destroy, "
            "clean-up and broker start",
            ExitCode.TOKENS_LIVE,
        )
    return result


def _update_known_hosts(paths: Paths, alias: str, key: str | None) -> Path:
    from devbox.drone.access import known_hosts_text

    path = paths.known_hosts
    previous = path.read_text(encoding="utf-8") if path.exists() else ""
    text = known_hosts_text(previous, alias, key)
    if text != previous:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        install.atomic_write(path, text, mode=0o600)
    return path


def forget_host_key(paths: Paths, name: str) -> None:
    """A destroyed drone's line leaves devbox's known_hosts (a new drone of that name has a new key)."""
    _update_known_hosts(paths, f"devbox-{name}", None)


def record_host_key(ctx: Context, target: SshTarget) -> Path | None:
    """For a drone on 127.0.0.1, its sshd's host key as the drone reports it, in devbox's known_hosts.

    Then ssh checks the key strictly, with no trust-on-first-use question. None when the
    drone cannot tell (stopped, or an image that keeps its key elsewhere): ssh asks as usual.
    """
    if target.on_tailnet or target.host_key_alias is None:
        return None
    key = ctx.probe.ssh_host_key(names_of(target.name).container)
    return None if key is None else _update_known_hosts(ctx.paths, target.host_key_alias, key)


def status(ctx: Context, name: str) -> DroneStatus:
    record = require_drone(ctx.paths, name)
    unit = details(ctx.systemd, names_of(name).service)
    container = ctx.podman.drone_containers().get(name)
    volume_exists = ctx.podman.volume_exists(names_of(name).volume)
    result = status_of(record, unit, container, volume_exists, ctx.config.tailscale.tailnet)
    result = replace(result, broker=broker_state({u: details(ctx.systemd, u) for u in broker_units(name)}, name))
    if result.keys:
        proxy = key_proxy_state({u: details(ctx.systemd, u) for u in key_proxy_units(name)}, name)
        result = replace(result, key_proxy=proxy)
    if result.state == "running":
        if result.syncthing:
            result = replace(result, syncthing_id=ctx.probe.syncthing_id(names_of(name).container))
        if result.dotfiles:
            result = replace(result, dotfiles_outcome=ctx.probe.dotfiles_outcome(names_of(name).container))
        if result.devcontainer:
            result = replace(result, devcontainer_outcome=ctx.probe.devcontainer_outcome(names_of(name).container))
            if record.declared.containers:  # only a compose-based one's init leaves this line
                result = replace(result, compose_outcome=ctx.probe.compose_outcome(names_of(name).container))
    if result.devcontainer:
        from devbox.commands.devcontainer import changed_since_build

        result = replace(result, devcontainer_changed=changed_since_build(record.declared, ctx.paths.compose_dir))
    return result


@locks.locked
def tailscale_login(ctx: Context, name: str, progress: Progress = no_progress) -> None:
    """Give a drone its auth key again (its node is gone, or its state was lost) and restart it."""
    from devbox.units.render import render_tailscale_key

    record = require_drone(ctx.paths, name)
    if not on_tailnet(record):
        raise invalid(f"drone {name} is not on a tailnet: there is no key to give it")
    key = resolve_key(ctx)  # fails before any write
    names = names_of(name)
    progress(f"writing the Podman secret {names.tailscale_secret}")
    ctx.podman.create_secret(names.tailscale_secret, key.value)
    dropin = render_tailscale_key(name, host_facts(ctx))
    install.atomic_write(ctx.paths.quadlet_dir / dropin.relative_path, dropin.text)
    ctx.systemd.daemon_reload()
    # Not through retire_key: the drone's old marker goes only when its init starts with the key.
    restart(ctx, name, progress, keep_key=True)
