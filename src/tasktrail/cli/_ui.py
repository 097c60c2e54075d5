"""``tasktrail ui``: the web dashboard. Its packages (the ``ui`` extra) are imported only
when the command runs, so the rest of the command line works without them."""

from __future__ import annotations

import asyncio
import signal
import webbrowser
from typing import TYPE_CHECKING

import click

from tasktrail.cli._app import console, db_option, existing, main, on_signals, run_async
from tasktrail.errors import TasktrailError

if TYPE_CHECKING:
    from tasktrail.ui import Dashboard

__all__: list[str] = []


@main.command()
@db_option
@click.option(
    "--host", metavar="ADDRESS", default="127.0.0.1", show_default=True,
    help="The address to listen on.",
)  # fmt: skip
@click.option(
    "--port", type=click.IntRange(0, 65535), metavar="N", default=8765, show_default=True,
    help="The port to listen on (0: any free port).",
)  # fmt: skip
@click.option(
    "--allow-actions", is_flag=True,
    help="Offer cancel, force cancel and rerun; each needs the token printed at start.",
)  # fmt: skip
@click.option("--open", "open_browser", is_flag=True, help="Open the dashboard in a browser.")
@run_async
async def ui(db: str | None, host: str, port: int, allow_actions: bool, open_browser: bool) -> None:
    """Serve a web dashboard of the database until Ctrl-C.

    Live task list (filters, counts per state), each task's timeline drawn to scale, its
    events, its output as it is written, a replay slider, verification of the hash chain,
    workers and throughput. Read-only unless started with --allow-actions; then every
    action needs the token printed here and is recorded with actor `ui` and the reason
    typed in the page. Needs the `ui` extra: pip install 'tasktrail[ui]'.

    \b
    Example:
      tasktrail ui                                  # then open http://127.0.0.1:8765/
      tasktrail ui --db postgresql://app@db.internal/tasks --port 9000
      tasktrail ui --allow-actions --open
    """
    try:
        from tasktrail.ui import Settings, serve
        from tasktrail.ui._app import is_loopback
    except ImportError as err:
        raise TasktrailError(
            f"the dashboard needs the ui extra ({err}); install it with: "
            "pip install 'tasktrail[ui]'"
        ) from err
    target = existing(db)
    settings = Settings(target, allow_actions=allow_actions)
    out = console()
    stop = asyncio.Event()

    def announce(url: str, token: str | None, dash: Dashboard) -> None:
        click.echo(f"tasktrail ui: {dash.label} at {url}", color=False)
        if token is not None:
            click.echo(f"actions are on; open {url}?token={token} (the token lets the page act)")
        else:
            click.echo("read-only (start with --allow-actions to cancel and rerun from the page)")
        if not is_loopback(host):
            click.echo(
                f"warning: listening on {host}: whoever reaches it sees every task's prompt "
                "and output",
                err=True,
            )
        out.print("[dim]Ctrl-C stops it.[/]")
        if open_browser:
            webbrowser.open(url if token is None else f"{url}?token={token}")

    def stopping(number: int) -> None:
        if not stop.is_set():
            out.print(f"{signal.Signals(number).name}: stopping")
        stop.set()

    with on_signals(stopping, signal.SIGINT, signal.SIGTERM):
        await serve(settings, host=host, port=port, stop=stop, announce=announce)
    out.print("tasktrail ui stopped")
