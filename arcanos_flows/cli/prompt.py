"""``arcanos-flows prompt``: one question to the enforced model, no Prefect."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from arcanos_flows.cli._shared import (
    JsonOption,
    MetaOption,
    console,
    err_console,
    exit_with_error,
    failure_line,
    load_settings,
    parse_meta,
)

__all__ = ["prompt"]


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
    from arcanos_flows.core.errors import InvalidReasoningInput
    from arcanos_flows.incidents.model import attached_incident

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
            exit_with_error(failure_line(exc), 1)
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    console.print(result.content, markup=False, emoji=False, soft_wrap=True)
    usage = result.usage
    err_console.print(
        Text(
            f"{result.model} · {usage.input_tokens} input / {usage.output_tokens} output tokens · "
            + ("" if usage.cost_usd is None else f"${usage.cost_usd:.6f} · ")
            + f"{result.latency_ms:.0f} ms · request {result.request_id or '-'}",
            style="dim",
        ),
        soft_wrap=True,
    )
