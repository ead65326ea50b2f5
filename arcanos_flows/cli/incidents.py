"""``arcanos-flows incidents``: the incidents waiting in the spool; list them, deliver them."""

from __future__ import annotations

import json

import typer
from rich.table import Table
from rich.text import Text

from arcanos_flows.cli._shared import JsonOption, console, err_console, exit_with_error, load_notifier_settings

__all__ = ["incidents_app", "incidents_flush", "incidents_list"]

incidents_app = typer.Typer(help="Incidents waiting in the spool: list them, deliver them.", no_args_is_help=True)


@incidents_app.command("list")
def incidents_list(as_json: JsonOption = False) -> None:
    """Show the incidents waiting in the spool (ARCANOS_INCIDENT_SPOOL), oldest first."""
    from arcanos_flows.incidents.outbox import Outbox

    settings = load_notifier_settings()
    pending = Outbox(settings.incident_spool).pending()
    if as_json:
        typer.echo(json.dumps([incident.model_dump(mode="json") for incident in pending], indent=2))
        return
    if not pending:
        err_console.print(f"No incidents waiting in {settings.incident_spool}.", markup=False)
        return
    table = Table("id", "class", "occurred_at", "reason", title=f"Incidents waiting in {settings.incident_spool}")
    for incident in pending:
        reason = " ".join(incident.reason.split())
        table.add_row(
            str(incident.incident_id),
            incident.incident_class.value,
            incident.occurred_at.strftime("%Y-%m-%d %H:%M:%SZ"),
            Text(reason if len(reason) <= 60 else reason[:59] + "…"),
        )
    console.print(table)
    err_console.print(f"{len(pending)} incident(s) waiting.", markup=False)


@incidents_app.command("flush")
def incidents_flush() -> None:
    """Deliver every spooled incident to ARCANOS_MAINTENANCE_WEBHOOK (each keeps its webhook-id).

    Exit code 1 when incidents remain after the attempt and a webhook is configured.
    """
    from arcanos_flows.incidents.notifier import MaintenanceNotifier

    notifier = MaintenanceNotifier(load_notifier_settings(), source="arcanos_flows.cli")
    report = notifier.flush()
    console.print(f"Delivered {report.delivered}, remaining {report.remaining}.", markup=False)
    if notifier.webhook_url is None:
        if report.remaining:
            err_console.print(
                "ARCANOS_MAINTENANCE_WEBHOOK is not set: nothing to deliver to; the incidents stay in "
                f"{notifier.outbox.directory}.",
                markup=False,
                soft_wrap=True,
            )
        raise typer.Exit(0)
    if report.remaining:
        exit_with_error(
            f"{report.remaining} incident(s) still waiting in {notifier.outbox.directory}: the webhook did not "
            "accept them (see the warnings above); run `arcanos-flows incidents flush` again later.",
            1,
        )
