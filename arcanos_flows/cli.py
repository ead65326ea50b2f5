"""The ``arcanos-flows`` command line: ad-hoc research runs, one-off prompts, checks, the incident spool, the demo.

Exit codes: 0 success, 1 a flow, run or check failed, 2 configuration or usage error (one clear line, no
traceback). Secrets are only ever printed masked.

Importing this module must stay cheap: ``--help``, ``prompt``, ``check``, ``incidents`` and ``server`` never
import Prefect. Anything heavy is imported inside the command that needs it. Commands that run flows use, in
this order, a configured ``PREFECT_API_URL``, the server started by ``arcanos-flows server start`` (when it
answers at once), or Prefect's temporary server.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from arcanos_flows.redaction import redact

if TYPE_CHECKING:
    from arcanos_flows._cli_server import PrefectTarget
    from arcanos_flows.settings import ArcanosSettings, NotifierSettings

__all__ = ["app", "main"]

CREDENTIALS_BLOCK_VARIABLE = "ARCANOS_CREDENTIALS_BLOCK"  # the same name as arcanos_flows.credentials, sans Prefect
EPHEMERAL_STARTUP_TIMEOUT_VARIABLE = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"

app = typer.Typer(
    name="arcanos-flows",
    help="Run arcanos-flows research flows, prompts, checks and incident replay.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    # Tracebacks with locals would print the API key; unexpected errors are reported in main() instead.
    pretty_exceptions_enable=False,
)
run_app = typer.Typer(help="Run a flow now, in this process, and show its progress.", no_args_is_help=True)
incidents_app = typer.Typer(help="Incidents waiting in the spool: list them, deliver them.", no_args_is_help=True)
automations_app = typer.Typer(help="Prefect automations that report crashed or failed runs.", no_args_is_help=True)
server_app = typer.Typer(
    help="A local Prefect server in the background: ad-hoc runs reuse it instead of starting a temporary one.",
    no_args_is_help=True,
)
app.add_typer(run_app, name="run")
app.add_typer(incidents_app, name="incidents")
app.add_typer(automations_app, name="automations")
app.add_typer(server_app, name="server")

console = Console(highlight=False)
"""Results: reports, answers, tables (stdout)."""
err_console = Console(stderr=True, highlight=False)
"""Progress, status and errors (stderr)."""


def exit_with_error(message: str, code: int = 1) -> NoReturn:
    """Print one redacted line to stderr and exit with ``code`` (1 failure, 2 configuration or usage)."""
    err_console.print(Text(f"Error: {redact(message)}", style="red"), soft_wrap=True)
    raise typer.Exit(code)


def _prepare_prefect() -> None:
    # Call before Prefect is imported (it reads its settings then). A first run creates Prefect's database, which
    # on a slow or busy machine outlasts the temporary server's default 20 s start-up timeout.
    os.environ.setdefault(EPHEMERAL_STARTUP_TIMEOUT_VARIABLE, "120")


def _connect_prefect(what: str | None = None) -> PrefectTarget:
    """Pick the Prefect server for this process's runs (see :mod:`arcanos_flows._cli_server`) and say which.

    Imports Prefect (with :func:`arcanos_flows._cli_flowrun.heavy_imports`); call it once a command knows it
    will run something.
    """
    from arcanos_flows import _cli_flowrun, _cli_server

    with _cli_flowrun.heavy_imports():
        target = _cli_server.select_prefect_api()
    if what is not None:
        _cli_server.announce(err_console, target, what)
    return target


def _uses_credentials_block() -> bool:
    return bool(os.environ.get(CREDENTIALS_BLOCK_VARIABLE))


def load_settings(*, allow_block: bool = True) -> ArcanosSettings:
    """The reasoning settings (block named by ``ARCANOS_CREDENTIALS_BLOCK``, else environment and ``.env``).

    Exits with code 2 on a configuration error. Only the block lookup imports Prefect.
    """
    from arcanos_flows.errors import ConfigurationError

    try:
        if allow_block and _uses_credentials_block():
            from arcanos_flows.credentials import resolve_settings

            return resolve_settings()
        from arcanos_flows.settings import ArcanosSettings

        return ArcanosSettings()
    except ConfigurationError as exc:
        exit_with_error(str(exc), 2)


def load_notifier_settings() -> NotifierSettings:
    """The webhook, secret and spool settings; exits with code 2 on a configuration error."""
    from arcanos_flows.errors import ConfigurationError

    try:
        if _uses_credentials_block():
            from arcanos_flows.credentials import load_notifier_settings as from_block

            return from_block()
        from arcanos_flows.settings import NotifierSettings

        return NotifierSettings()
    except ConfigurationError as exc:
        exit_with_error(str(exc), 2)


def parse_meta(values: list[str] | None) -> dict[str, str]:
    """Turn ``--meta key=value`` options into audit metadata, checked against OpenAI's limits.

    Example:
        >>> parse_meta(["ticket=OPS-7", "note=a=b"])
        {'ticket': 'OPS-7', 'note': 'a=b'}
    """
    from arcanos_flows.errors import InvalidReasoningInput
    from arcanos_flows.metadata import build_metadata

    metadata: dict[str, str] = {}
    for item in values or []:
        key, separator, value = item.partition("=")
        key = key.strip()
        if not separator or not key:
            raise typer.BadParameter(f"{item!r} is not key=value (e.g. --meta ticket=OPS-7)", param_hint="'--meta'")
        if key in metadata:
            raise typer.BadParameter(f"key {key!r} is given twice", param_hint="'--meta'")
        metadata[key] = value
    try:
        return build_metadata(metadata)
    except InvalidReasoningInput as exc:
        raise typer.BadParameter(str(exc), param_hint="'--meta'") from None


def _failure_line(error: BaseException) -> str:
    from arcanos_flows.errors import classify

    facts = classify(error)
    details = [f"HTTP {facts.http_status}" if facts.http_status else None, facts.request_id]
    shown = ", ".join(detail for detail in details if detail)
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return f"{facts.incident_class.value}: {text}" + (f" ({shown})" if shown else "")


MetaOption = Annotated[
    list[str] | None,
    typer.Option("--meta", "-m", metavar="KEY=VALUE", help="Audit metadata for every request; repeatable."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]


@app.command()
def prompt(
    text: Annotated[str, typer.Argument(help="The question for the enforced model.")],
    system: Annotated[str | None, typer.Option("--system", "-s", help="A system message.")] = None,
    meta: MetaOption = None,
    as_json: JsonOption = False,
) -> None:
    """Ask ARCANOS_FINE_TUNED_MODEL one question (no Prefect: settings from the environment and .env).

    A failure is reported as a maintenance incident, like any other call of the client.
    """
    metadata = parse_meta(meta)
    settings = load_settings(allow_block=False)
    from arcanos_flows.client import ArcanosPythonClient
    from arcanos_flows.errors import InvalidReasoningInput
    from arcanos_flows.incidents import attached_incident

    with ArcanosPythonClient(settings) as client:
        try:
            result = client.run_simple_prompt(text, system=system, metadata=metadata or None)
        except InvalidReasoningInput as exc:
            exit_with_error(str(exc), 2)
        except Exception as exc:
            incident = attached_incident(exc)
            if incident is not None:
                where = "sent to the maintenance webhook" if client.notifier.webhook_url else "printed on stdout"
                err_console.print(
                    Text(f"Incident {incident.incident_id} ({incident.incident_class.value}) {where}.", style="dim"),
                    soft_wrap=True,
                )
            exit_with_error(_failure_line(exc), 1)
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    console.print(result.content, markup=False, emoji=False, soft_wrap=True)
    usage = result.usage
    err_console.print(
        Text(
            f"{result.model} · {usage.input_tokens} input / {usage.output_tokens} output tokens · "
            f"{result.latency_ms:.0f} ms · request {result.request_id or '-'}",
            style="dim",
        ),
        soft_wrap=True,
    )


@app.command()
def check(
    send_test: Annotated[
        bool,
        typer.Option(
            "--send-test",
            help="Also POST one signed 'arcanos.check' ping (not an incident) to the webhook and expect a 2xx.",
        ),
    ] = False,
) -> None:
    """Validate the configuration and reach the model (GET /models/{id}) and the maintenance webhook.

    Without --send-test the webhook is only probed with a HEAD request: no delivery is made.
    Exit code 0 when everything is fine, 1 when a check fails, 2 when the configuration is invalid.
    """
    from arcanos_flows import _cli_check

    raise typer.Exit(_cli_check.run_checks(console, send_test=send_test, use_block=_uses_credentials_block()))


@run_app.command("research")
def run_research(
    topic: Annotated[str, typer.Option("--topic", "-t", help="What to research.")],
    question: Annotated[
        list[str] | None,
        typer.Option("--question", "-q", metavar="QUESTION", help="A question to investigate in parallel; repeatable."),
    ] = None,
    meta: MetaOption = None,
    confirmation_token: Annotated[
        str | None,
        typer.Option("--confirmation-token", help="Added to the metadata of every request of the run."),
    ] = None,
    max_parallel: Annotated[
        int, typer.Option("--max-parallel", min=1, max=32, help="Investigation steps in flight at once.")
    ] = 4,
    as_json: JsonOption = False,
    show_logs: Annotated[
        bool, typer.Option("--show-logs", help="Also print Prefect's own run logs on stderr.")
    ] = False,
) -> None:
    """Run the research flow now (plan, parallel investigations, synthesis) and print its report.

    Uses PREFECT_API_URL when set, else the server of `arcanos-flows server start` when it is running, else a
    temporary local server for this run alone. Exit code 0 when the run completed, 1 when it failed, 2 on
    configuration errors.
    """
    _prepare_prefect()
    audit = parse_meta(meta)
    reserved = [key for key in audit if key.startswith("prefect.")]
    if reserved:
        raise typer.BadParameter(
            f"key {reserved[0]!r} is reserved: arcanos-flows sets the prefect.* keys", param_hint="'--meta'"
        )
    if not topic.strip():
        raise typer.BadParameter("the topic must not be blank", param_hint="'--topic'")
    if question is not None and any(not item.strip() for item in question):
        raise typer.BadParameter("questions must not be blank", param_hint="'--question'")
    load_settings()  # fail fast (exit 2) before Prefect starts
    _connect_prefect("Running arcanos-research")
    from arcanos_flows import _cli_flowrun, _cli_render

    outcome = _cli_flowrun.run_research(
        err_console,
        topic=topic,
        questions=question or None,
        audit=audit or None,
        confirmation_token=confirmation_token,
        max_parallel=max_parallel,
        show_logs=show_logs,
        live=not as_json,
    )
    if as_json:
        typer.echo(_cli_render.outcome_json(outcome))
    else:
        _cli_render.print_outcome(console, outcome, errors=err_console)
    raise typer.Exit(outcome.exit_code)


@incidents_app.command("list")
def incidents_list(as_json: JsonOption = False) -> None:
    """Show the incidents waiting in the spool (ARCANOS_INCIDENT_SPOOL), oldest first."""
    from arcanos_flows.outbox import Outbox

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
    from arcanos_flows.notifier import MaintenanceNotifier

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


@app.command()
def demo(
    topic: Annotated[
        str, typer.Option("--topic", "-t", help="What the demo research run is about.")
    ] = "Confirmation layers of the Arcanos maintenance AI",
) -> None:
    """Show the whole path on this machine, no API key needed.

    Starts a fake OpenAI-compatible server and a webhook receiver on loopback (labelled stand-ins; with
    OPENAI_API_KEY set the research run uses your real configuration instead), runs the research flow on
    Prefect (the server of `arcanos-flows server start` when it is running, else a temporary one), then a
    maintenance check that fails on purpose, and shows the report, the usage table and the incident the
    receiver got. Exit code 0 when the demo ran as designed.
    """
    _prepare_prefect()
    target = _connect_prefect()
    from arcanos_flows import demo as demo_module

    raise typer.Exit(demo_module.run_demo(console, err_console, topic=topic, target=target))


@app.command()
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
    _prepare_prefect()
    load_settings()
    target = _connect_prefect()
    from arcanos_flows import _cli_serve

    raise typer.Exit(
        _cli_serve.serve_deployments(
            err_console, topic=topic, cron=cron, check_interval=check_interval, limit=limit, target=target
        )
    )


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
    from arcanos_flows.automations import install_automations
    from arcanos_flows.errors import ConfigurationError

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
    table = Table("name", "id", "enabled", title="Installed automations")
    for automation in automations:
        table.add_row(Text(automation.name), str(automation.id), "yes" if automation.enabled else "no")
    console.print(table)


@automations_app.command("uninstall")
def automations_uninstall() -> None:
    """Delete the arcanos automations from the Prefect server."""
    api_url = _require_prefect_server()
    from arcanos_flows.automations import uninstall_automations

    try:
        deleted = uninstall_automations()
    except Exception as exc:
        exit_with_error(f"could not delete the automations on {api_url}: {type(exc).__name__}: {exc}", 1)
    console.print(f"Deleted {deleted} automation(s).", markup=False)


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
    from arcanos_flows import _cli_server

    raise typer.Exit(_cli_server.start(console, err_console, host=host, port=port, timeout=timeout))


@server_app.command("stop")
def server_stop(
    grace: Annotated[float, typer.Option("--grace", min=0, help="Seconds between SIGTERM and SIGKILL.")] = 10.0,
) -> None:
    """Stop the server of `arcanos-flows server start` by its recorded PID (SIGTERM, then SIGKILL)."""
    from arcanos_flows import _cli_server

    raise typer.Exit(_cli_server.stop(console, grace=grace))


@server_app.command("status")
def server_status(as_json: JsonOption = False) -> None:
    """Show the server of `arcanos-flows server start`; exit code 0 when it runs and answers, else 1."""
    from arcanos_flows import _cli_server

    raise typer.Exit(_cli_server.status(console, as_json=as_json))


@app.command()
def version() -> None:
    """Print the installed arcanos-flows version."""
    from arcanos_flows._version import __version__

    typer.echo(__version__)


def _require_prefect_server() -> str:
    # Automations live on a server; one created on a temporary server would vanish with this process.
    target = _connect_prefect()
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


def main() -> None:
    """Entry point of the ``arcanos-flows`` console script."""
    try:
        app()
    except Exception as exc:
        # Known problems are handled in the commands; this is the last line: one redacted line, no locals.
        from arcanos_flows.errors import ConfigurationError

        code = 2 if isinstance(exc, ConfigurationError) else 1
        message = f"Error: unexpected {type(exc).__name__}: {redact(str(exc)).splitlines()[0] if str(exc) else ''}"
        err_console.print(Text(message, style="red"), soft_wrap=True)
        if os.environ.get("ARCANOS_CLI_TRACEBACK"):
            import traceback

            sys.stderr.write(redact("".join(traceback.format_exception(exc))))
        sys.exit(code)
    finally:
        # The command is done and the process ends: its objects go with it. Freezing them spares the
        # interpreter's last full garbage collection, about half a second once Prefect and the SDK are loaded.
        gc.freeze()


if __name__ == "__main__":  # pragma: no cover - `python -m arcanos_flows.cli`
    main()
