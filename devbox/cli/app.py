"""The command line: parse, call one use-case, print. No logic of its own.

Errors: every DevboxError is caught once, in `run`, and printed as one line on
stderr with its exit code; `--debug` adds the traceback.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from devbox import __version__
from devbox.cli import output
from devbox.drone.services import WEB_SERVICES
from devbox.errors import DevboxError, ExitCode, cannot_run
from devbox.names import names_of

if TYPE_CHECKING:
    from devbox.cli.spinner import Spinner
    from devbox.commands.lifecycle import Context, CreateRequest
    from devbox.devcontainer.model import ImageBuilder
    from devbox.drone.access import SshTarget

app = typer.Typer(
    name="devbox",
    help="Remote development containers (drones) on rootless Podman, run by systemd.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help: importing rich would slow every start (README: speed)
    context_settings={"help_option_names": ["-h", "--help"]},
)

_debug = False


def make_context() -> Context:
    """The real world. Tests replace this function with one that returns fakes."""
    from devbox.context import real_context

    return real_context(image_builder_factory=_devcontainer_builder)


def _devcontainer_builder(ctx: Context) -> ImageBuilder:
    """The Dev Containers CLI on this host's Podman; full build logs under the state directory."""
    from devbox.devcontainer.build import CliBuilder

    return CliBuilder(ctx.paths.state_dir / "builds", podman=ctx.podman_command)


def _now() -> datetime:
    return datetime.now(UTC)


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _progress(text: str) -> None:
    if sys.stderr.isatty():
        _err(f"… {text}")


def _spinner() -> Spinner:
    """The current step with a spinner on a terminal; nothing when stderr is piped."""
    from devbox.cli.spinner import Spinner

    return Spinner(enabled=sys.stderr.isatty() and os.environ.get("TERM") != "dumb")


def _colour() -> bool:
    return output.colour_wanted()


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=False))


def _version(value: bool) -> None:
    if value:
        print(f"devbox {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    debug: bool = typer.Option(False, "--debug", help="Show a traceback when something fails."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    global _debug
    _debug = debug


JsonOpt = typer.Option(False, "--json", help="Machine-readable output.")


def complete_drone_names(incomplete: str) -> list[str]:
    """Shell completion for drone names (bash, zsh, fish through typer)."""
    from devbox.paths import Paths
    from devbox.units.installed import find_drones

    return [name for name in find_drones(Paths.from_env()) if name.startswith(incomplete)]


DroneArg = typer.Argument(..., help="Drone name.", autocompletion=complete_drone_names, show_default=False)


@dataclass(frozen=True)
class DroneOption:
    """One option of `create` and `render`: its parameter, type and typer declaration, and the
    CreateRequest field it fills."""

    param: str
    annotation: Any
    declaration: Any  # typer.Option or typer.Argument
    field: str


# The options `create` and `render` share, declared once; drone_options gives them to both.
DRONE_OPTIONS: tuple[DroneOption, ...] = (
    DroneOption(
        "name",
        str | None,
        typer.Argument(
            None, help="Drone name; derived from --path or the first --repo when omitted.", show_default=False
        ),
        "name",
    ),
    DroneOption(
        "repo",
        list[str],
        typer.Option([], "--repo", "-r", help="GitHub repository ORG/REPO the drone may use (repeatable)."),
        "repos",
    ),
    DroneOption(
        "image", str | None, typer.Option(None, "--image", help="Container image (default from config)."), "image"
    ),
    DroneOption("cpus", str | None, typer.Option(None, "--cpus", help="CPU limit, for example 2 or 0.5."), "cpus"),
    DroneOption(
        "memory", str | None, typer.Option(None, "--memory", help="Memory limit, for example 4g or 512m."), "memory"
    ),
    DroneOption(
        "ssh_port",
        str | None,
        typer.Option(None, "--ssh-port", help="Publish the drone's SSH port on 127.0.0.1:PORT."),
        "ssh_port",
    ),
    DroneOption(
        "with_syncthing",
        bool | None,
        typer.Option(None, "--with-syncthing/--without-syncthing", help="Run Syncthing in the drone."),
        "syncthing",
    ),
    DroneOption(
        "with_service",
        list[str],
        typer.Option([], "--with", help="Run an optional service in the drone (repeatable; see the README)."),
        "services",
    ),
    DroneOption(
        "mosh_ports",
        str | None,
        typer.Option(
            None, "--mosh-ports", help="With --with mosh: publish UDP FIRST-LAST on 127.0.0.1 (default: free)."
        ),
        "mosh_ports",
    ),
    DroneOption(
        "web_ports",
        str | None,
        typer.Option(
            None,
            "--web-ports",
            help="With a web service: its port on 127.0.0.1, SERVICE:PORT,... (default: free from 7701).",
        ),
        "web_ports",
    ),
    DroneOption(
        "env",
        list[str],
        typer.Option([], "--env", "-e", help="KEY=VALUE for the drone's environment (repeatable)."),
        "env",
    ),
    DroneOption(
        "key",
        list[str],
        typer.Option(
            [], "--key", help="Model API key [keys.NAME] the host's key proxy sets for the drone (repeatable)."
        ),
        "keys",
    ),
    DroneOption(
        "permission",
        list[str],
        typer.Option(
            [], "--permission", help="GitHub token permission NAME=LEVEL over the config's (read, write, admin, none)."
        ),
        "permissions",
    ),
    DroneOption(
        "idle_stop",
        str | None,
        typer.Option(None, "--idle-stop", help="Stop after this long idle, e.g. 12h (over [cleanup])."),
        "idle_stop",
    ),
    DroneOption(
        "idle_destroy",
        str | None,
        typer.Option(None, "--idle-destroy", help="Destroy after this long idle and stopped, e.g. 14d."),
        "idle_destroy",
    ),
    DroneOption(
        "keep", bool, typer.Option(False, "--keep", help="Never touch this drone in the idle clean-up."), "keep"
    ),
    DroneOption(
        "ssh_key",
        list[Path],
        typer.Option(
            [], "--ssh-key", help="Public key file the drone's sshd accepts (repeatable; default ~/.ssh/*.pub)."
        ),
        "ssh_keys",
    ),
    DroneOption(
        "tailscale",
        bool | None,
        typer.Option(
            None, "--tailscale/--no-tailscale", help="Join the tailnet (default: on when the config has [tailscale])."
        ),
        "tailscale",
    ),
    DroneOption(
        "path",
        str | None,
        typer.Option(
            None,
            "--path",
            help="Host directory to mount as the workspace, at the same path (NAME defaults to its name).",
        ),
        "path",
    ),
    DroneOption(
        "dotfiles",
        str | None,
        typer.Option(None, "--dotfiles", help="Git URL of your dotfiles (over [dotfiles] repo)."),
        "dotfiles",
    ),
    DroneOption(
        "dotfiles_branch",
        str | None,
        typer.Option(None, "--dotfiles-branch", help="Branch of the dotfiles repository."),
        "dotfiles_branch",
    ),
    DroneOption(
        "devcontainer",
        str | None,
        typer.Option(
            None,
            "--devcontainer",
            help="Which devcontainer.json: SUB (.devcontainer/SUB/) or a path in the workspace.",
        ),
        "devcontainer",
    ),
    DroneOption(
        "no_devcontainer",
        bool,
        typer.Option(False, "--no-devcontainer", help="Ignore the repository's devcontainer.json."),
        "no_devcontainer",
    ),
    DroneOption(
        "egress",
        str | None,
        typer.Option(
            None, "--egress", help="Network policy: open, fenced (default) or allow:HOST[:PORT],... (README)."
        ),
        "egress",
    ),
)


def drone_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give COMMAND the drone options (DRONE_OPTIONS) before its own; it receives them as one
    CreateRequest named `request`. Typer reads the combined signature."""
    # The command's own annotations are strings (postponed evaluation); `request`'s type is only
    # imported for the type checker, so it is left out before the others are evaluated.
    own = [
        p.replace(annotation=eval(p.annotation, command.__globals__) if isinstance(p.annotation, str) else p.annotation)
        for p in inspect.signature(command).parameters.values()
        if p.name != "request"
    ]
    shared = [
        inspect.Parameter(
            o.param, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=o.declaration, annotation=o.annotation
        )
        for o in DRONE_OPTIONS
    ]

    @functools.wraps(command)
    def with_request(**given: Any) -> None:
        from devbox.commands.lifecycle import CreateRequest

        request = CreateRequest(**{o.field: given.pop(o.param) for o in DRONE_OPTIONS})
        command(request=request, **given)

    parameters = [*shared, *own]
    with_request.__signature__ = inspect.Signature(parameters, return_annotation=None)  # type: ignore[attr-defined]
    with_request.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": None}
    return with_request


@app.command()
@drone_options
def create(
    request: CreateRequest,
    new_ssh_key: bool = typer.Option(
        False, "--new-ssh-key", help="Make a key pair for this drone (devbox ssh uses it)."
    ),
    no_start: bool = typer.Option(False, "--no-start", help="Write and load the units, do not start."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be written; write nothing."),
    force: bool = typer.Option(False, "--force", help="Replace unit files devbox did not write."),
    as_json: bool = JsonOpt,
) -> None:
    """Create a drone and start it."""
    from dataclasses import replace

    from devbox.commands import lifecycle

    ctx = make_context()
    with _spinner() as progress:
        result = lifecycle.create(
            ctx,
            replace(request, new_ssh_key=new_ssh_key),
            start=not no_start,
            dry_run=dry_run,
            force=force,
            progress=progress,
        )
    if as_json:
        _print_json(output.create_dict(result))
        return
    for item in result.files:
        print(f"{item.change.value:<9}  {item.path}")
    for note in result.notes:
        print(note)
    if result.dry_run:
        print("dry run: nothing written")
    elif result.started:
        print(f"drone {result.spec.name} is running: systemctl --user status {result.spec.names.unit}")
    else:
        print(f"drone {result.spec.name} is created, not started: devbox start {result.spec.name}")


@app.command()
@drone_options
def render(request: CreateRequest) -> None:
    """Print every unit file devbox would write for a drone; write nothing."""
    from devbox.commands import lifecycle
    from devbox.units import install

    ctx = make_context()
    spec = lifecycle.render_spec(ctx, request)
    for index, rendered in enumerate(lifecycle.render_files(ctx, spec)):
        if index:
            print()
        print(f"# --- {install.target_path(ctx.paths, rendered.place, rendered.relative_path)}")
        print(rendered.text, end="")


@app.command("list")
def list_(as_json: bool = JsonOpt) -> None:
    """Every drone, its state and address."""
    from devbox.commands import inventory

    ctx = make_context()
    print(output.list_output(inventory.list_drones(ctx), ctx.clock(), as_json, _colour()))


@app.command()
def status(
    name: str = DroneArg,
    as_json: bool = JsonOpt,
) -> None:
    """One drone in detail: unit, container, image, repos, uptime, restarts, ports, volume."""
    from devbox.commands import lifecycle

    ctx = make_context()
    result = lifecycle.status(ctx, name)
    if as_json:
        _print_json(output.status_dict(result, _now()))
    else:
        print(output.status_text(result, _now(), ctx.config.flavor))


def _change_state(action: Any, name: str, state: str, as_json: bool) -> None:
    """start, stop and restart: the use-case with a spinner, then one line or one JSON object."""
    with _spinner() as progress:
        action(make_context(), name, progress=progress)
    if as_json:
        _print_json(output.state_dict(name, state))
    else:
        print(f"drone {name} is {state}")


@app.command()
def start(name: str = DroneArg, as_json: bool = JsonOpt) -> None:
    """Start a drone (and bring it back with the user manager)."""
    from devbox.commands import lifecycle

    _change_state(lifecycle.start, name, "running", as_json)


@app.command()
def stop(name: str = DroneArg, as_json: bool = JsonOpt) -> None:
    """Stop a drone; it stays stopped until `devbox start`, across reboots too."""
    from devbox.commands import lifecycle

    _change_state(lifecycle.stop, name, "stopped", as_json)


@app.command()
def restart(name: str = DroneArg, as_json: bool = JsonOpt) -> None:
    """Restart a drone."""
    from devbox.commands import lifecycle

    _change_state(lifecycle.restart, name, "running", as_json)


@app.command()
def rebuild(
    name: str = DroneArg,
    no_cache: bool = typer.Option(False, "--no-cache", help="Build again even when this configuration's image exists."),
    as_json: bool = JsonOpt,
) -> None:
    """Build a devcontainer.json drone again from its current configuration; the home volume stays."""
    from devbox.commands.rebuild import rebuild as rebuild_drone

    ctx = make_context()
    with _spinner() as progress:
        result = rebuild_drone(ctx, name, fresh=no_cache, progress=progress)
    if as_json:
        _print_json(output.rebuild_dict(result))
        return
    for note in result.notes:
        print(note)
    image = f"on {result.spec.image}" if result.image_changed else f"on the same image ({result.spec.image})"
    state = "restarted" if result.restarted else "stopped: it runs the new image at its next start"
    print(f"drone {name} is rebuilt {image}, {state}")


@app.command("tailscale-login")
def tailscale_login(name: str = DroneArg, as_json: bool = JsonOpt) -> None:
    """Give a drone its Tailscale auth key again (its node is gone) and restart it."""
    from devbox.commands import lifecycle

    _change_state(lifecycle.tailscale_login, name, "running", as_json)


@app.command()
def destroy(
    name: str = DroneArg,
    keep_volume: bool = typer.Option(False, "--keep-volume", help="Keep the drone's home volume."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    as_json: bool = JsonOpt,
) -> None:
    """Stop a drone and remove its units, container and (unless --keep-volume) its home volume."""
    from devbox.commands import lifecycle
    from devbox.units import installed

    ctx = make_context()
    installed.require_drone(ctx.paths, name, damaged_ok=True)
    if not yes:
        if not sys.stdin.isatty():
            raise DevboxError(f"refusing to destroy {name} without --yes (no terminal to ask on)", ExitCode.USAGE)
        what = "its units and container" if keep_volume else "its units, container and home volume"
        if not typer.confirm(f"Destroy drone {name} with {what}?", default=False):
            raise DevboxError("nothing destroyed", ExitCode.FAILURE)
    with _spinner() as progress:
        result = lifecycle.destroy(ctx, name, keep_volume=keep_volume, progress=progress)
    if as_json:
        _print_json(output.destroy_dict(name, result))
        return
    volume = "volume kept" if keep_volume else ("volume removed" if result.volume_removed else "no volume")
    if result.other_volumes:
        volume += f", and {len(result.other_volumes)} of its devcontainer.json's"
    if result.containers_removed:
        volume += ", and its containers' store"
    print(f"drone {name} is destroyed ({len(result.removed_files)} files removed, {volume})")


@app.command()
def logs(
    name: str = DroneArg,
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines."),
    lines: int = typer.Option(50, "--lines", "-n", min=1, help="How many lines to show."),
) -> None:
    """The drone's journal."""
    from devbox.host import systemd
    from devbox.units import installed

    ctx = make_context()
    installed.require_drone(ctx.paths, name)
    _exec(systemd.journal_argv(names_of(name).service, lines, follow), "systemd's journal reader")


@app.command()
def audit(
    name: str = DroneArg,
    since: str | None = typer.Option(None, "--since", help="Only the last DURATION: 90s, 30m, 12h, 14d."),
    as_json: bool = JsonOpt,
) -> None:
    """What a drone did with its credentials: tokens, refusals, SSH logins, starts and stops, from the journal."""
    from devbox.commands.audit import audit as read_audit
    from devbox.values import parse_duration

    seconds = parse_duration(since) if since is not None else None
    timeline = read_audit(make_context(), name, seconds)
    if as_json:
        _print_json(output.audit_dict(timeline))
    else:
        print(output.audit_text(timeline))


@app.command()
def doctor(as_json: bool = JsonOpt) -> None:
    """Check that this host can run drones; each failed check says what to do."""
    from devbox.commands.doctor import run_checks

    checks = run_checks()
    if as_json:
        _print_json(output.doctor_list(checks))
    else:
        for check in checks:
            line = f"{check.status.upper():<4}  {check.name}: {check.detail}"
            print(line + (f"\n      fix: {check.fix}" if check.fix and check.status != "ok" else ""))
    if any(c.status == "fail" for c in checks):
        raise typer.Exit(int(ExitCode.ENVIRONMENT))


@app.command(hidden=True)
def broker(name: str = DroneArg) -> None:
    """Serve the drone's credential socket (started by drone-NAME-creds.socket)."""
    from devbox.broker.server import serve_from_systemd

    serve_from_systemd(name)


@app.command("keys-proxy", hidden=True)
def keys_proxy(name: str = DroneArg) -> None:
    """Serve the drone's model API key socket (started by drone-NAME-keys.socket)."""
    from devbox.broker.keyproxy import serve_from_systemd

    serve_from_systemd(name)


@app.command()
def egress(
    name: str = DroneArg,
    policy: str = typer.Argument(..., help="open, fenced or allow:HOST[:PORT],... (README: The network fence)."),
    as_json: bool = JsonOpt,
) -> None:
    """Change a drone's network policy; its home is kept (a running drone restarts)."""
    from devbox.commands import egress as egress_command

    with _spinner() as progress:
        change = egress_command.change(make_context(), name, policy, progress=progress)
    if as_json:
        _print_json(output.egress_dict(change))
    elif change.before == change.after:
        print(f"drone {change.name} is {change.after} already")
    else:
        again = " and restarted" if change.restarted else " (it takes effect at its next start)"
        print(f"drone {change.name}: egress {change.before} -> {change.after}{again}")


@app.command("fence-hook", hidden=True)
def fence_hook() -> None:
    """Load a drone's network fence (run by Podman as an OCI hook, the container's state on stdin)."""
    from devbox.fence.hook import main

    raise typer.Exit(main())


@app.command("exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def exec_(
    ctx: typer.Context,
    name: str = DroneArg,
) -> None:
    """Run a command in a drone as the drone user: devbox exec NAME -- CMD [ARGS...] (default: a shell)."""
    from devbox.commands import reach

    tty = sys.stdin.isatty() and sys.stdout.isatty()
    _exec(reach.exec_argv(make_context(), name, list(ctx.args), tty), "the container engine")


def _ssh_target(ctx: Context, name: str, from_elsewhere: bool = False) -> SshTarget:
    from devbox.commands import reach

    return reach.ssh_target(ctx, name, from_elsewhere)


def _exec(argv: list[str], what: str) -> None:
    sys.stdout.flush()
    try:
        os.execvp(argv[0], argv)
    except FileNotFoundError:
        raise DevboxError(f"{argv[0]} is not installed ({what})", ExitCode.ENVIRONMENT) from None
    except OSError as exc:
        raise cannot_run(argv[0], exc) from None


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def ssh(ctx: typer.Context, name: str = DroneArg) -> None:
    """SSH into a drone, over the tailnet or its local port: devbox ssh NAME [-- CMD ARGS...]"""
    from devbox.drone import access

    _exec(access.ssh_argv(_ssh_target(make_context(), name), list(ctx.args)), "the OpenSSH client")


@app.command("ssh-config")
def ssh_config(names: list[str] = typer.Argument(None, help="Drones (default: all).", show_default=False)) -> None:
    """Print ~/.ssh/config blocks so that `ssh NAME` (and editors) reach each drone."""
    from devbox.drone import access
    from devbox.units import installed

    context = make_context()
    chosen = names or sorted(installed.find_drones(context.paths))
    if not chosen:
        raise DevboxError("no drones yet: devbox create NAME", ExitCode.NOT_FOUND)
    records = installed.find_drones(context.paths)
    mosh = tuple(n for n in chosen if n in records and "mosh" in records[n].declared.services)
    print(access.ssh_config([_ssh_target(context, name, from_elsewhere=True) for name in chosen], mosh), end="")


# --- ways in that outlive the connection: `mosh`, `attach`, `sessions` (commands/sessions.py) ---


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def mosh(ctx: typer.Context, name: str = DroneArg) -> None:
    """mosh into a drone made --with mosh: devbox mosh NAME [-- CMD ARGS...]"""
    from devbox.commands import sessions

    argv = sessions.mosh_argv(make_context(), name, list(ctx.args))
    os.environ.update(sessions.utf8_environment(dict(os.environ)))
    _exec(argv, "the mosh client: apt-get install mosh")


@app.command()
def attach(
    name: str = DroneArg,
    session: str | None = typer.Argument(None, help="tmux session (default: main).", show_default=False),
    over_mosh: bool = typer.Option(False, "--mosh", help="Over mosh instead of SSH (a drone made --with mosh)."),
) -> None:
    """Open or re-attach a tmux session in the drone: it runs on when the connection drops."""
    from devbox.commands import sessions

    argv = sessions.attach_argv(make_context(), name, session, over_mosh)
    if over_mosh:
        os.environ.update(sessions.utf8_environment(dict(os.environ)))
    _exec(argv, "the mosh client: apt-get install mosh" if over_mosh else "the OpenSSH client")


@app.command("sessions")
def sessions_(name: str = DroneArg, as_json: bool = JsonOpt) -> None:
    """List the drone's tmux sessions: created, clients attached, what runs in each window, busy."""
    from devbox.commands import sessions

    with _spinner() as progress:
        progress(f"looking into drone {name}")
        report = sessions.list_sessions(make_context(), name)
    if as_json:
        _print_json(output.sessions_list(report, _now()))
    else:
        print(output.sessions_text(report, name, _now()))


def _editor(name: str, build: Any, what: str, path: str | None) -> None:
    from devbox.commands import reach

    context = make_context()
    target = reach.ssh_target(context, name)
    _exec(build(target, reach.editor_workspace(context, name, path)), what)


PathOpt = typer.Option(None, "--path", help="Directory in the drone (default: the repository's checkout).")


@app.command()
def code(name: str = DroneArg, path: str | None = PathOpt) -> None:
    """Open the drone in VS Code (Remote-SSH; needs the Host from `devbox ssh-config`)."""
    from devbox.drone import access

    _editor(name, access.code_argv, "VS Code's `code` command", path)


@app.command()
def zed(name: str = DroneArg, path: str | None = PathOpt) -> None:
    """Open the drone in Zed over SSH."""
    from devbox.drone import access

    _editor(name, access.zed_argv, "Zed's `zed` command", path)


WEB_WORDS = ", ".join(sorted(s.web.word for s in WEB_SERVICES.values() if s.web))


@app.command("open")
def open_(
    name: str = DroneArg,
    what: str = typer.Argument(
        ..., metavar="PORT|SERVICE", help=f"A port a server in the drone listens on, or a web service: {WEB_WORDS}."
    ),
    https: bool = typer.Option(False, "--https", help="With PORT: an https:// URL."),
    password: bool = typer.Option(False, "--password", help="With a web service: print its password too."),
    as_json: bool = JsonOpt,
) -> None:
    """The URL of a port on the drone over the tailnet, or of a web service (devbox open NAME terminal)."""
    if what.isdigit():
        from devbox.drone import access

        port = int(what)
        if not 1 <= port <= 65535:
            raise DevboxError(f"invalid port {what}: 1 to 65535", ExitCode.INVALID_INPUT)
        url = access.port_url(
            _ssh_target(make_context(), name, from_elsewhere=True), port, "https" if https else "http"
        )
        if as_json:
            _print_json({"drone": name, "port": port, "url": url})
        else:
            print(url)
        return
    from devbox.commands import web

    found = web.web_access(make_context(), name, what, with_password=password)
    if as_json:
        _print_json(output.web_access_dict(found))
    else:
        print(output.web_access_text(found))


@app.command()
def completion(shell: str = typer.Argument(..., help="bash, zsh or fish.")) -> None:
    """Print the shell completion script (drone names included): devbox completion zsh > ~/.zfunc/_devbox"""
    if shell not in ("bash", "zsh", "fish"):
        raise DevboxError(f"no completion for {shell!r}: use bash, zsh or fish", ExitCode.INVALID_INPUT)
    from typer._completion_shared import get_completion_script  # typer's own scripts, as --install-completion writes

    print(get_completion_script(prog_name="devbox", complete_var="_DEVBOX_COMPLETE", shell=shell))


# Aliases for people coming from the Hatchery design; the same code paths, hidden from --help.
for alias, command in (("spawn", create), ("burrow", stop), ("unburrow", start), ("slay", destroy)):
    app.command(alias, hidden=True, help=f"Alias of {command.__name__}.")(command)


# --- idle clean-up: `cleanup`, `touch` ---


@app.command()
def cleanup(
    apply: bool = typer.Option(False, "--apply", help="Act: stop, destroy, rescue; without it, only report."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable report."),
    install_timer: bool = typer.Option(False, "--install", help="Install and enable devbox-cleanup.timer, then exit."),
    uninstall_timer: bool = typer.Option(False, "--uninstall", help="Disable and remove devbox-cleanup.timer."),
) -> None:
    """Stop idle drones, destroy long-idle ones whose work is safe; say what and why for each."""
    from devbox.cleanup import timer
    from devbox.commands import sweep

    ctx = make_context()
    if install_timer and uninstall_timer:
        raise DevboxError("--install and --uninstall exclude each other", ExitCode.USAGE)
    if install_timer:
        for item in timer.install_timer(ctx):
            print(f"{item.change.value:<9}  {item.path}")
        print("devbox-cleanup.timer is enabled: systemctl --user list-timers devbox-cleanup.timer")
        return
    if uninstall_timer:
        removed = timer.uninstall_timer(ctx)
        print(f"devbox-cleanup.timer is removed ({len(removed)} files)")
        return
    with _spinner() as progress:
        report = sweep.run(ctx, apply=apply, progress=progress)
    if as_json:
        _print_json(output.report_dict(report))
    else:
        print(output.report_text(report), flush=True)
    if report.errors:
        names = ", ".join(d.name for d in report.errors)
        raise DevboxError(f"the clean-up could not finish for {names}", ExitCode.FAILURE)


@app.command()
def touch(name: str = typer.Argument(..., help="Drone name.")) -> None:
    """Mark a drone as in use now, for the idle clean-up."""
    from devbox.commands import sweep

    sweep.touch(make_context(), name)
    print(f"drone {name} is marked active")


def run(argv: list[str] | None = None) -> None:
    """Click (inside typer) handles usage errors and exits 2; devbox's own errors are caught here, once."""
    try:
        app(args=argv, prog_name="devbox")
    except DevboxError as exc:
        output.exit_with(exc, _debug)
    except KeyboardInterrupt:
        _err("devbox: interrupted")
        sys.exit(130)


# --- backup and restore ---


class _ByteCounter:
    """`… exporting drone-x-home: 12.5 MiB` on a terminal's stderr, redrawn at most five times a second."""

    def __init__(self, what: str) -> None:
        self.what, self.shown, self.last = what, False, 0.0
        self.enabled = sys.stderr.isatty()

    def __call__(self, total: int) -> None:
        import time

        now = time.monotonic()
        if self.enabled and now - self.last >= 0.2:
            self.last, self.shown = now, True
            sys.stderr.write(f"\r… {self.what}: {total / 1048576:.1f} MiB")
            sys.stderr.flush()

    def end(self) -> None:
        if self.shown:
            sys.stderr.write("\n")
            self.shown = False

    def step(self, text: str) -> None:
        """A step's progress line, after the byte count's line."""
        self.end()
        _progress(text)


def _terminate_cleanly() -> None:
    """SIGTERM unwinds like Ctrl-C, so a stopped drone is started again and no partial file stays."""
    import signal

    def handler(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


@app.command()
def backup(
    name: str = DroneArg,
    archive: str | None = typer.Option(
        None, "--output", "-o", help="Archive file (default NAME-YYYYmmdd-HHMMSS.devbox.tar here, UTC); - for stdout."
    ),
    live: bool = typer.Option(False, "--live", help="Do not stop a running drone; the copy may be inconsistent."),
    as_json: bool = JsonOpt,
) -> None:
    """Save a drone's home volume and unit files to one tar file (a running drone is stopped meanwhile)."""
    from devbox.commands import backup as backups

    if archive == "-" and as_json:
        raise DevboxError("--json and -o - both write to stdout: choose one", ExitCode.USAGE)
    if archive == "-" and sys.stdout.isatty():
        raise DevboxError("refusing to write an archive to a terminal: redirect stdout or use -o FILE", ExitCode.USAGE)
    _terminate_cleanly()
    counter = _ByteCounter(f"exporting drone-{name}-home")
    try:
        result = backups.backup(
            make_context(),
            name,
            output=archive,
            stream=sys.stdout.buffer if archive == "-" else None,
            live=live,
            progress=counter.step,
            progress_bytes=counter,
            notice=_err,
        )
    finally:
        counter.end()
    where = str(result.path) if result.path else None
    if as_json:
        _print_json(output.backup_dict(result, where))
    elif where:
        print(f"drone {name} is saved to {where} ({result.size / 1048576:.1f} MiB)")
    else:
        _err(f"drone {name} is saved to stdout ({result.size / 1048576:.1f} MiB)")


@app.command()
def restore(
    file: str = typer.Argument(..., help="An archive written by devbox backup.", show_default=False),
    name: str | None = typer.Option(None, "--name", help="Restore as this drone (default: the name in the archive)."),
    no_start: bool = typer.Option(False, "--no-start", help="Create the drone, do not start it."),
    as_json: bool = JsonOpt,
) -> None:
    """Recreate a drone from a backup: its home volume, and its units rendered anew from its labels."""
    from pathlib import Path

    from devbox.commands import backup as backups

    _terminate_cleanly()
    counter = _ByteCounter("importing the home volume")
    try:
        result = backups.restore(
            make_context(),
            Path(file),
            name=name,
            start=not no_start,
            progress=counter.step,
            progress_bytes=counter,
        )
    finally:
        counter.end()
    for label in result.ignored_labels:
        _err(f"devbox: warning: label io.devbox.{label} is not known to this devbox and was not restored")
    if as_json:
        _print_json(output.restore_dict(result))
        return
    state = "running" if result.create.started else f"created, not started: devbox start {result.name}"
    print(f"drone {result.name} is restored from {result.source} and {state}")


# --- the drone image: `image build`, `image load` ---

image_app = typer.Typer(help="Build or load the default drone image.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(image_app, name="image")


@image_app.command("build")
def image_build(
    base: str = typer.Option(None, "--base", help="Base image (default docker.io/library/debian:trixie-slim)."),
    tag: str = typer.Option(None, "--tag", help="Tag to build (default localhost/devbox-drone:latest)."),
    tailscale: str = typer.Option(
        "auto", "--tailscale", help="auto: install when pkgs.tailscale.com answers; required: fail without; skip."
    ),
    code_server: str = typer.Option(
        "auto", "--code-server", help="auto: install when the npm registry answers; required: fail without; skip."
    ),
    pull: bool = typer.Option(
        None, "--pull/--no-pull", help="Pull the base image always / never (default: when missing)."
    ),
) -> None:
    """Build the default drone image with podman build (templates/image/Containerfile)."""
    from devbox.commands import image

    display = image.StepDisplay()
    request = image.BuildRequest(
        tag=tag or image.DEFAULT_TAG, base=base, tailscale=tailscale, code_server=code_server, pull=pull
    )
    try:
        result = image.build(request, display, tail_on_error=display.tty)
    finally:
        display.clear()
    print(result.summary(), flush=True)
    for warning in result.warnings():
        _err(f"devbox: {warning}")


@image_app.command("load")
def image_load(
    path: str = typer.Argument(..., help="Image archive, e.g. ./result of nix build .#drone-image."),
) -> None:
    """Load an image archive with podman load (the Nix-built drone image)."""
    from devbox.commands import image

    for name in image.load(path, lambda line: _err(line)):
        print(f"loaded {name}")
