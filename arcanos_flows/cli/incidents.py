"""``arcanos-flows incidents``: the incidents waiting in the spool; list them, deliver them."""

from __future__ import annotations

import json

import typer

from arcanos_flows.cli._shared import JsonOption, console, err_console, exit_with_error, load_notifier_settings

__all__ = ["incidents_app", "incidents_flush", "incidents_list"]

incidents_app = typer.Typer(help="Incidents waiting in the spool: list them, deliver them.", no_args_is_help=True)


@incidents_app.command("list")
def incidents_list(as_json: JsonOption = False) -> None:
    """Show the incidents waiting in the spool (ARCANOS_INCIDENT_SPOOL), oldest first.

    The table has each incident's id, class, time, HTTP status and flow run; their reasons follow it as a numbered
    list, shortened (--json has them whole).
    """
    from arcanos_flows.incidents.outbox import Outbox

    settings = load_notifier_settings()
    pending = Outbox(settings.incident_spool).pending()
    if as_json:
        typer.echo(json.dumps([incident.model_dump(mode="json") for incident in pending], indent=2))
        return
    if not pending:
        err_console.print(f"No incidents waiting in {settings.incident_spool}.", markup=False)
        return
    from arcanos_flows.cli._render import incidents_table

    console.print(incidents_table(pending, title=f"Incidents waiting in {settings.incident_spool}"))
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
