"""``arcanos-flows server``: a local Prefect server in the background, reused by ad-hoc runs."""

from __future__ import annotations

from typing import Annotated

import typer

from arcanos_flows.cli._shared import JsonOption, console, err_console

__all__ = ["server_app", "server_start", "server_status", "server_stop"]

server_app = typer.Typer(
    help="A local Prefect server in the background: ad-hoc runs reuse it instead of starting a temporary one.",
    no_args_is_help=True,
)


@server_app.command("start")
def server_start(
    port: Annotated[int, typer.Option("--port", "-p", min=1, max=65535, help="Port to listen on.")] = 4200,
    host: Annotated[
        str, typer.Option("--host", help="Address to bind; keep loopback (the API has no authentication).")
    ] = "127.0.0.1",
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, help="Seconds to wait for the server to answer.")
    ] = 120.0,
) -> None:
    """Start `prefect server start` in the background, or say that it already runs (exit 0 either way).

    Its output goes to $XDG_STATE_HOME/arcanos-flows/server/server.log; its PID and URL are recorded next to it.
    While it runs, `run research`, `demo`, `serve` and `automations` use it when PREFECT_API_URL is not set,
    and skip the temporary server's start-up. Exit code 1 when it cannot start (the message names the log).
    """
    from arcanos_flows.cli import _server as _cli_server

    raise typer.Exit(_cli_server.start(console, err_console, host=host, port=port, timeout=timeout))


@server_app.command("stop")
def server_stop(
    grace: Annotated[float, typer.Option("--grace", min=0, help="Seconds between SIGTERM and SIGKILL.")] = 10.0,
) -> None:
    """Stop the server of `arcanos-flows server start` by its recorded PID (SIGTERM, then SIGKILL)."""
    from arcanos_flows.cli import _server as _cli_server

    raise typer.Exit(_cli_server.stop(console, grace=grace))


@server_app.command("status")
def server_status(as_json: JsonOption = False) -> None:
    """Show the server of `arcanos-flows server start`; exit code 0 when it runs and answers, else 1."""
    from arcanos_flows.cli import _server as _cli_server

    raise typer.Exit(_cli_server.status(console, as_json=as_json))
