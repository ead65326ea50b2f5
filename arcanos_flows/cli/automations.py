"""``arcanos-flows automations``: the Prefect automations that report crashed or failed runs."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from arcanos_flows.cli._shared import connect_prefect, console, err_console, exit_with_error
from arcanos_flows.cli._tables import key_column

__all__ = ["automations_app", "automations_install", "automations_uninstall"]

automations_app = typer.Typer(help="Prefect automations that report crashed or failed runs.", no_args_is_help=True)


@automations_app.command("install")
def automations_install(
    relay_deployment: Annotated[
        str | None,
        typer.Option("--relay-deployment", help="<flow>/<deployment> of the deployed incident relay."),
    ] = None,
    heartbeat_grace: Annotated[
        int | None,
        typer.Option("--heartbeat-grace", min=31, help="Seconds without a heartbeat before a run counts as crashed."),
    ] = None,
) -> None:
    """Create (or update) the automations that report crashed and failed arcanos runs; safe to run again."""
    from datetime import timedelta

    api_url = _require_prefect_server()
    from arcanos_flows.core.errors import ConfigurationError
    from arcanos_flows.prefect.automations import install_automations

    options: dict[str, object] = {}
    if relay_deployment is not None:
        options["relay_deployment"] = relay_deployment
    if heartbeat_grace is not None:
        options["heartbeat_grace"] = timedelta(seconds=heartbeat_grace)
    try:
        automations = install_automations(**options)  # type: ignore[arg-type]
    except (ConfigurationError, ValueError) as exc:
        exit_with_error(str(exc), 2)
    except Exception as exc:
        exit_with_error(f"could not install the automations on {api_url}: {type(exc).__name__}: {exc}", 1)
    table = Table(title="Installed automations")
    key_column(table, "name")
    key_column(table, "id")
    table.add_column("enabled")
    for automation in automations:
        table.add_row(Text(automation.name), str(automation.id), "yes" if automation.enabled else "no")
    console.print(table)


@automations_app.command("uninstall")
def automations_uninstall() -> None:
    """Delete the arcanos automations from the Prefect server."""
    api_url = _require_prefect_server()
    from arcanos_flows.prefect.automations import uninstall_automations

    try:
        deleted = uninstall_automations()
    except Exception as exc:
        exit_with_error(f"could not delete the automations on {api_url}: {type(exc).__name__}: {exc}", 1)
    console.print(f"Deleted {deleted} automation(s).", markup=False)


def _require_prefect_server() -> str:
    # Automations live on a server; one created on a temporary server would vanish with this process.
    target = connect_prefect()
    if target.api_url is None:
        exit_with_error(
            "automations need a running Prefect server: run `arcanos-flows server start`, or set PREFECT_API_URL "
            "(e.g. after `prefect server start`)"
            + (f". {target.hint()}" if target.discovery.status in ("stale", "not-answering") else ""),
            2,
        )
    if target.kind == "local":
        err_console.print(Text(f"Using {target.describe()}", style="dim"), soft_wrap=True)
    return target.api_url
