"""``arcanos-flows serve``: serve the bundled deployments from this process."""

from __future__ import annotations

from typing import Annotated

import typer

from arcanos_flows.cli._shared import connect_prefect, err_console, load_settings, prepare_prefect

__all__ = ["serve"]


def serve(
    topic: Annotated[
        str, typer.Option("--topic", "-t", help="Topic of the scheduled research runs.")
    ] = "The state of the Arcanos confirmation layers",
    cron: Annotated[str, typer.Option("--cron", help="Schedule of the research deployment (UTC).")] = "0 6 * * *",
    check_interval: Annotated[
        int, typer.Option("--check-interval", min=60, help="Seconds between maintenance checks.")
    ] = 3600,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Flow runs executing at once.")] = None,
) -> None:
    """Serve the research, maintenance-check and incident-relay deployments from this process (no worker needed).

    Needs a Prefect server that outlives this process: PREFECT_API_URL, or the server of `arcanos-flows server
    start`; without one, Prefect starts a temporary server that stops with it. Stop with Ctrl-C.
    """
    prepare_prefect()
    load_settings()
    target = connect_prefect()
    from arcanos_flows.cli import _serve as _cli_serve

    raise typer.Exit(
        _cli_serve.serve_deployments(
            err_console, topic=topic, cron=cron, check_interval=check_interval, limit=limit, target=target
        )
    )
