"""`devbox list` and `devbox list --json` without the command-line parser.

Importing typer and building the command tree costs more than the query itself, and `list`
is what people and scripts run most. These exact argument lists take this path, which
imports only commands/inventory.py and cli/output.py; any other goes through cli/app.py's
run. The output comes from the same function (output.list_output) and errors from the
same one (output.exit_with), so the two paths cannot drift apart.
"""

from __future__ import annotations

FAST_LIST = {("list",): False, ("list", "--json"): True}


def run(argv: list[str]) -> bool:
    """Run ARGV here when it is one of the fast forms; False when cli/app.py's run must take it."""
    if argv == ["fence-hook"]:  # Podman runs it at every start of a fenced drone: no parser, no typer
        from devbox.fence.hook import main

        raise SystemExit(main())
    as_json = FAST_LIST.get(tuple(argv))
    if as_json is None:
        return False
    from devbox import context
    from devbox.cli import output
    from devbox.commands import inventory
    from devbox.errors import DevboxError

    try:
        ctx = context.real_context()
        text = output.list_output(inventory.list_drones(ctx), ctx.clock(), as_json, output.colour_wanted())
    except DevboxError as exc:
        output.exit_with(exc)
    print(text)
    return True
