"""How the CLI prints results: research reports, usage tables, incidents and run links."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markdown import Markdown
from rich.table import Table
from rich.text import Text

from arcanos_flows.incidents.model import Incident

if TYPE_CHECKING:
    from arcanos_flows.cli._flowrun import FlowOutcome
    from arcanos_flows.flows.research import ResearchReport

__all__ = ["incidents_table", "outcome_json", "print_outcome", "report_of", "usage_table"]


def report_of(outcome: FlowOutcome) -> ResearchReport | None:
    """The research report of a run: its result, or the partial report a failed run carries."""
    from arcanos_flows.flows.research import ResearchReport

    if isinstance(outcome.result, ResearchReport):
        return outcome.result
    partial = getattr(outcome.error, "report", None)
    return partial if isinstance(partial, ResearchReport) else None


def usage_table(report: ResearchReport) -> Table:
    """Tokens, cost, latency, request id and tries of each step, with the run's total (and budget, if any)."""
    from arcanos_flows.flows.research.report import format_cost

    table = Table(
        "step",
        "status",
        "model",
        "input",
        "cached",
        "output",
        "reasoning",
        "cost",
        "latency",
        "request",
        "tries",
        title="Usage",
    )
    for step in report.steps:
        if step.ok:
            status = Text(step.status, style="green")
        elif step.status == "skipped":
            status = Text("skipped (budget)", style="yellow")
        else:
            status = Text(f"failed ({step.error_class})", style="red")
        table.add_row(
            Text(step.step),
            status,
            Text(step.model or ""),
            str(step.usage.input_tokens),
            str(step.usage.cached_tokens),
            str(step.usage.output_tokens),
            str(step.usage.reasoning_tokens),
            "" if step.status in ("skipped", "cached") else format_cost(step.usage.cost_usd, empty="-"),
            "" if step.latency_ms is None else f"{step.latency_ms:.0f} ms",
            Text(step.request_id or ""),
            "" if step.attempts is None else str(step.attempts),
        )
    total = report.usage
    table.add_section()
    table.add_row(
        "total",
        "",
        "",
        str(total.input_tokens),
        str(total.cached_tokens),
        str(total.output_tokens),
        str(total.reasoning_tokens),
        format_cost(total.cost_usd, empty="n/a (no prices)"),
        "",
        "",
        "",
    )
    if report.budget:
        limits = ", ".join(
            f"{name} {report.budget[name]}" for name in ("max_total_tokens", "max_cost_usd") if report.budget.get(name)
        )
        table.caption = f"budget {limits}: " + ("spent, steps skipped" if report.budget.get("exceeded") else "within")
    return table


def incidents_table(incidents: Sequence[Incident], *, title: str) -> Table:
    """Incidents as a table: id, class, when, HTTP status, reason (shortened) and the run they concern."""
    table = Table("id", "class", "occurred_at", "http", "reason", "flow run", title=title)
    for incident in incidents:
        reason = " ".join(incident.reason.split())
        table.add_row(
            str(incident.incident_id),
            incident.incident_class.value,
            incident.occurred_at.strftime("%Y-%m-%d %H:%M:%SZ"),
            str(incident.http_status or ""),
            Text(reason if len(reason) <= 80 else reason[:79] + "…"),
            str(incident.context.get("flow_run_id", "")),
        )
    return table


def print_run_footer(console: Console, outcome: FlowOutcome) -> None:
    """The run's id, name and UI link (or how to get one)."""
    if outcome.flow_run_id:
        console.print(f"Flow run: {outcome.flow_run_id} ({outcome.flow_run_name or outcome.flow_name})", markup=False)
    if outcome.ui_url:
        console.print(f"UI: {outcome.ui_url}", markup=False, soft_wrap=True)


def print_outcome(console: Console, outcome: FlowOutcome, *, errors: Console | None = None) -> None:
    """The report as rendered Markdown, then the run id and link; a failure line on ``errors`` (stderr)."""
    report = report_of(outcome)
    if report is not None:
        console.print(Markdown(report.to_markdown()))
    print_run_footer(console, outcome)
    if errors is not None and not outcome.completed:
        errors.print(
            Text(f"✗ {outcome.flow_name} {outcome.state_name}: {outcome.error_line}", style="red"), soft_wrap=True
        )


def outcome_json(outcome: FlowOutcome) -> str:
    """The outcome as JSON: run id, state, UI link, the (partial) report and the error line."""
    report = report_of(outcome)
    document: dict[str, Any] = {
        "flow_run_id": outcome.flow_run_id,
        "flow_run_name": outcome.flow_run_name,
        "state": outcome.state_name,
        "ui_url": outcome.ui_url,
        "error": outcome.error_line,
        "report": report.model_dump(mode="json") if report is not None else None,
    }
    return json.dumps(document, indent=2)
