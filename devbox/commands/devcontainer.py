"""create's devcontainer.json step: find the workspace's configuration, read and judge it, build it
(through the ImageBuilder seam), and turn the merged result into the drone's spec.

For --path the workspace is that directory. For --repo the repository is fetched on this host
into a per-drone build directory with a read-only token minted for exactly that repository,
revoked as soon as the clone is done. Nothing from the repository runs here.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

from devbox.commands.progress import Progress, no_progress
from devbox.context import Context
from devbox.devcontainer import compose, discover, fetch, mapping, read, validate
from devbox.devcontainer.model import BuiltImage, DevcontainerConfig, DevcontainerSource, ImageBuilder
from devbox.drone.containers import check_host as check_containers_host
from devbox.drone.extras import ContainerExtras
from devbox.drone.services import CONTAINERS, build_args, validate_services
from devbox.drone.spec import DroneSpec
from devbox.errors import DevboxError, ExitCode, invalid
from devbox.units.installed import find_drones
from devbox.values import parse_env, validate_image, validate_login_name


class CreateRequest(Protocol):
    """What this step reads of lifecycle.CreateRequest (which imports this module)."""

    @property
    def path(self) -> str | None: ...
    @property
    def repos(self) -> Sequence[str]: ...
    @property
    def image(self) -> str | None: ...
    @property
    def cpus(self) -> str | None: ...
    @property
    def memory(self) -> str | None: ...
    @property
    def env(self) -> Sequence[str]: ...
    @property
    def permissions(self) -> Sequence[str]: ...
    @property
    def devcontainer(self) -> str | None: ...
    @property
    def no_devcontainer(self) -> bool: ...


CONTAINERS_HOST = "host.containers.internal"  # Podman's name for this host, seen from a container
PORT_SEARCH = 100  # a forwarded port taken here is published on the next free one above it, within this many


@dataclass(frozen=True)
class Found:
    """A workspace's devcontainer.json, read and judged, ready to build."""

    relative: str  # the config file, relative to the workspace (the `devcontainer` label)
    source: DevcontainerSource
    config: DevcontainerConfig
    container_workspace: str  # where the workspace is in the drone
    fetched: Path | None  # the build directory of a --repo checkout
    compose: compose.Compose | None = None  # a dockerComposeFile configuration's services


def _repo_token(ctx: Context, repo: str) -> tuple[str, Callable[[], None]]:
    """A read-only token for exactly REPO from the GitHub App, and how to revoke it."""
    from devbox.broker.github import AppConfig, GitHubApp
    from devbox.host.secrets import Resolver

    github = ctx.config.github
    key = Resolver(op_token_file=ctx.paths.state_dir / "op-token").resolve(github.private_key or "")
    app = GitHubApp(AppConfig(github.app_id or "", key.value.encode(), github.api_url, github.installation_id))
    owner, name = repo.split("/", 1)
    token = app.create_token(app.installation_for(owner, name), [name], {"contents": "read"})

    def revoke() -> None:
        try:
            app.revoke(token.token)
        except DevboxError:
            pass  # it expires within the hour; the clone is done either way

    return token.token, revoke


def host_side(url: str) -> str:
    """The git URL as this host reaches it: drones reach this host as host.containers.internal."""
    parts = urlsplit(url)
    if parts.hostname != CONTAINERS_HOST:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(CONTAINERS_HOST, "127.0.0.1", 1)))


def _fetch(ctx: Context, repo: str, name: str) -> Path:
    token, revoke = _repo_token(ctx, repo)
    try:
        url = host_side(f"{ctx.config.github.repo_base_url}/{repo}.git")
        return fetch.clone(url, ctx.paths.build_dir(name), token)
    finally:
        revoke()


def _wanted(request: CreateRequest) -> bool:
    if request.no_devcontainer or not (request.path or request.repos):
        return False
    if request.devcontainer is not None:
        return True
    return request.image is None  # an explicit --image is the user's choice over the repository's


def find(ctx: Context, request: CreateRequest, spec: DroneSpec, notes: list[str]) -> Found | None:
    """The workspace's devcontainer.json, judged; None when there is none (or none is wanted)."""
    if not _wanted(request):
        return None
    fetched = None
    if spec.path:
        workspace = Path(spec.path)
        container_workspace = spec.path
    else:
        repo = spec.repos[0]
        if not ctx.config.github.enabled:
            if request.devcontainer is not None:
                raise invalid(f"--devcontainer: {repo} cannot be fetched, no GitHub App is configured ([github])")
            notes.append(f"no GitHub App configured: {repo}'s devcontainer.json was not looked for")
            return None
        fetched = ctx.paths.build_dir(spec.name)
        workspace = _fetch(ctx, repo, spec.name)
        container_workspace = repo_workspace(str(ctx.paths.home), repo)
    try:
        relative = discover.choose(workspace, request.devcontainer)
        if relative is None:
            _discard(fetched)
            return None
        document = _document(spec.name, workspace, relative, container_workspace)
        config, source, services = _judge(
            ctx.paths.compose_dir, workspace, relative, document, workspace if spec.path else None
        )
    except BaseException:
        _discard(fetched)
        raise
    notes += config.notes
    if services is not None:
        notes += services.notes
    return Found(relative, source, config, container_workspace, fetched, services)


def _judge(
    scratch_root: Path, workspace: Path, relative: str, document: read.Document, bind_root: Path | None
) -> tuple[DevcontainerConfig, DevcontainerSource, compose.Compose | None]:
    """The configuration, where its build finds its files, and a compose-based one's services."""
    if not compose.is_compose(document):
        return validate.check(document, bind_root), discover.source(workspace, relative, document), None
    services = compose.read(document, workspace, bind_root)
    config = compose.with_main_service(validate.check(document, bind_root, compose=True), services.main)
    config_file = discover.inside(workspace, workspace / relative, "the devcontainer.json")
    text = compose.scratch_config(document, services.main)
    source = compose.scratch_source(workspace, config_file, services.main, text, scratch_root)
    return config, source, services


def repo_workspace(home: str, repo: str) -> str:
    """Where the drone's init clones a --repo repository: into the drone user's home."""
    return f"{home}/{repo.split('/', 1)[1]}"


def _in_remote_home(ctx: Context, spec: DroneSpec, found: Found, home: str | None) -> Found:
    """A --repo drone whose home is the image's remote user's: its workspace is there, so the
    configuration's ${containerWorkspaceFolder} is read again with that path."""
    if spec.path or not home or not spec.repos:
        return found
    container_workspace = repo_workspace(home, spec.repos[0])
    if container_workspace == found.container_workspace:
        return found
    workspace = found.source.workspace
    document = _document(spec.name, workspace, found.relative, container_workspace)
    config, _, services = _judge(ctx.paths.compose_dir, workspace, found.relative, document, None)
    return replace(found, config=config, container_workspace=container_workspace, compose=services)


def _document(name: str, workspace: Path, relative: str, container_workspace: str) -> read.Document:
    """The devcontainer.json at RELATIVE in WORKSPACE, read and with its variables substituted."""
    document = read.load(discover.inside(workspace, workspace / relative, "the devcontainer.json"))
    variables = read.Variables(
        local_workspace=str(workspace),
        container_workspace=container_workspace,
        devcontainer_id=hashlib.sha256(f"devbox-drone:{name}".encode()).hexdigest()[:32],
    )
    return read.substitute(document, variables)


def changed_since_build(declared: DroneSpec, scratch_root: Path) -> bool | None:
    """Whether a --path drone's devcontainer.json (or its build context) changed since its image was
    built; None when that cannot be told here (no devcontainer, a --repo drone, an unreadable file)."""
    from devbox.devcontainer.build import config_changed

    if not (declared.devcontainer and declared.devcontainer_hash and declared.path):
        return None
    workspace = Path(declared.path)
    try:
        document = _document(declared.name, workspace, declared.devcontainer, declared.path)
        _, source, _ = _judge(scratch_root, workspace, declared.devcontainer, document, workspace)
        return config_changed(source, declared.devcontainer_hash)
    except (DevboxError, OSError):
        return None


def prepare(
    ctx: Context,
    request: CreateRequest,
    spec: DroneSpec,
    *,
    build: bool,
    is_free: Callable[[int], bool],
    progress: Progress = no_progress,
    fresh: bool = False,
) -> tuple[DroneSpec, list[str]]:
    """SPEC as the workspace's devcontainer.json makes it (unchanged without one), and one-line notes.

    A --repo checkout stays in the build directory for `devbox rebuild`; `discard` removes it."""
    notes: list[str] = []
    found = find(ctx, request, spec, notes)
    if found is None:
        return spec, notes
    spec = apply(ctx, request, spec, found, build=build, is_free=is_free, notes=notes, progress=progress, fresh=fresh)
    return spec, notes


def discard(ctx: Context, name: str) -> None:
    """The drone's build directory goes (a dry run, a failed create, destroy)."""
    _discard(ctx.paths.build_dir(name))


def _discard(build_dir: Path | None) -> None:
    if build_dir is not None:
        shutil.rmtree(build_dir, ignore_errors=True)


def unbuilt_image(name: str, source: DevcontainerSource) -> BuiltImage:
    """What a dry run shows: a tag from the config's hash, with no build and no image metadata."""
    digest = hashlib.sha256(source.config_file.read_bytes()).hexdigest()
    return BuiltImage(tag=f"localhost/devbox-devcontainer-{name}:{digest[:12]}", metadata=(), config_hash=digest)


def allocate_ports(
    ctx: Context, name: str, ports: Sequence[int], taken: Sequence[int], is_free: Callable[[int], bool]
) -> tuple[tuple[int, int], ...]:
    """(host port on 127.0.0.1, drone port): the same number when free, else the next free one above."""
    claimed = set(taken)
    for drone, record in find_drones(ctx.paths).items():
        if drone != name:
            claimed |= {host for host, _ in record.declared.ports} | {record.declared.ssh_port or 0}
    found = []
    for port in ports:
        host = next((p for p in range(port, min(port + PORT_SEARCH, 65536)) if p not in claimed and is_free(p)), None)
        if host is None:
            raise DevboxError(f"no free port on 127.0.0.1 for the drone's port {port}", ExitCode.LIMIT)
        claimed.add(host)
        found.append((host, port))
    return tuple(found)


def _permissions(
    config: DevcontainerConfig, spec: DroneSpec, request: CreateRequest, notes: list[str]
) -> tuple[tuple[str, str], ...]:
    """customizations.codespaces.repositories: the permissions asked for the repositories the user named
    (never another repository), under the user's own --permission options."""
    if not config.repositories or not spec.repos:
        return spec.permissions
    named = {repo.lower() for repo in spec.repos}
    levels = {"read": 1, "write": 2, "admin": 3}
    wanted: dict[str, str] = {}
    for pattern, permissions in config.repositories:
        owner, _, repo = pattern.lower().partition("/")
        matches = [r for r in named if r == pattern.lower() or (repo == "*" and r.startswith(owner + "/"))]
        if not matches:
            notes.append(f"devcontainer.json asks for {pattern}, which is not a --repo of this drone: ignored")
            continue
        for permission, level in permissions:
            if level not in levels:
                raise invalid(f"devcontainer.json: permission {permission}={level!r} is not read, write or admin")
            if levels[level] > levels.get(wanted.get(permission, ""), 0):
                wanted[permission] = level
    if not wanted:
        return spec.permissions
    for item in request.permissions:  # build_spec has checked them
        permission, _, level = item.partition("=")
        if level == "none":
            wanted.pop(permission, None)
        else:
            wanted[permission] = level
    return tuple(sorted(wanted.items()))


def apply(
    ctx: Context,
    request: CreateRequest,
    spec: DroneSpec,
    found: Found,
    *,
    build: bool,
    is_free: Callable[[int], bool],
    notes: list[str],
    progress: Progress = no_progress,
    fresh: bool = False,
) -> DroneSpec:
    """SPEC with the devcontainer.json's image, environment, limits, ports, mounts and hooks. A compose-based
    one's drone runs its other services with its own Podman: --with containers comes with it."""
    if found.compose is not None and not spec.containers:
        if build:
            check_containers_host()
        spec = replace(spec, services=validate_services((*spec.services, CONTAINERS)))
        notes.append("dockerComposeFile: the drone runs the other services with its own Podman (--with containers)")
    try:
        if build:
            builder: ImageBuilder = ctx.image_builder
            image = builder.build(found.source, progress, fresh=fresh, build_args=build_args(spec.services))
        else:
            image = unbuilt_image(spec.name, found.source)
            notes.append(f"image {image.tag}: not built yet (dry run)")
        merged = mapping.merge([*mapping.metadata_configs(image), found.config])
        moved = _in_remote_home(ctx, spec, found, mapping.drone_home(merged, image))
        if moved is not found:
            found, merged = moved, mapping.merge([*mapping.metadata_configs(image), moved.config])
    except BaseException:
        _discard(found.fetched)
        raise
    config = merged.config
    user_env = dict(parse_env(item) for item in request.env)
    env = dict(ctx.config.drone.env) | dict(config.container_env) | user_env
    user_limits = request.cpus is not None or ctx.config.drone.cpus is not None
    user_memory = request.memory is not None or ctx.config.drone.memory is not None
    return replace(
        spec,
        image=validate_image(image.tag),
        env=tuple(sorted(env.items())),
        cpus=spec.cpus if user_limits or config.cpus is None else config.cpus,
        memory=spec.memory if user_memory or config.memory is None else config.memory,
        permissions=_permissions(config, spec, request, notes),
        devcontainer=found.relative,
        devcontainer_hash=image.config_hash,
        devcontainer_env=tuple(sorted(name for name, _ in config.container_env if name not in user_env)),
        login_user=None
        if image.remote_user is None
        else validate_login_name(image.remote_user, "the image's remote user"),
        ports=allocate_ports(ctx, spec.name, config.ports, [spec.ssh_port or 0], is_free),
        extras=_with_services(
            mapping.extras(
                spec.name,
                merged,
                image,
                config.workspace_folder if spec.path else None,
                found.container_workspace,
            ),
            found.compose,
        ),
    )


def _with_services(extras: ContainerExtras, services: compose.Compose | None) -> ContainerExtras:
    if services is None:
        return extras
    return replace(extras, compose=services.inner, hosts=services.hosts)
