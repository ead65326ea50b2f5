"""How the CLI prints results: research reports, usage tables, incidents and run links."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from arcanos_flows.cli._tables import FirstThatFits, key_column, table_style, with_notes
from arcanos_flows.incidents.model import Incident

if TYPE_CHECKING:
    from arcanos_flows.cli._flowrun import FlowOutcome
    from arcanos_flows.flows.research import ResearchReport

__all__ = [
    "REASON_LIMIT",
    "incidents_table",
    "outcome_json",
    "print_outcome",
    "print_report",
    "print_run_footer",
    "report_of",
    "shorten",
    "usage_table",
]

REASON_LIMIT = 240
"""Characters of an incident's reason that the tables' notes show."""

_USAGE_COLUMNS = ("model", "input", "cached", "output", "reasoning", "cost", "latency", "request", "tries")


def report_of(outcome: FlowOutcome) -> ResearchReport | None:
    """The research report of a run: its result, or the partial report a failed run carries."""
    from arcanos_flows.flows.research import ResearchReport

    if isinstance(outcome.result, ResearchReport):
        return outcome.result
    partial = getattr(outcome.error, "report", None)
    return partial if isinstance(partial, ResearchReport) else None


def usage_table(report: ResearchReport) -> RenderableType:
    """Tokens, cost, latency, request id and tries of each step, with the run's total (and budget, if any).

    Step names and statuses (a failure's incident class) are never cut: on a narrow terminal the model moves into
    the caption, and the cached and reasoning tokens, the request ids, the tries and an unknown cost are dropped, in
    that order, until the table fits.
    """
    from arcanos_flows.flows.research.report import format_cost

    models = sorted({step.model for step in report.steps if step.model})
    priced = report.usage.cost_usd is not None or any(step.usage.cost_usd is not None for step in report.steps)

    def layout(columns: frozenset[str], *, narrow: bool) -> Table:
        shown = [name for name in _USAGE_COLUMNS if name in columns]
        table = Table(title="Usage", **table_style(narrow=narrow))
        key_column(table, "step")
        key_column(table, "status")
        for name in shown:
            if name in ("model", "request"):
                key_column(table, name)
            else:
                table.add_column(name, justify="right", no_wrap=name != "cost")
        for step in report.steps:
            if step.ok:
                status = Text(step.status, style="green")
            elif step.status == "skipped":
                status = Text("skipped (budget)", style="yellow")
            else:
                status = Text(f"failed ({step.error_class})", style="red")
            usage = step.usage
            cells: dict[str, RenderableType] = {
                "model": Text(step.model or ""),
                "input": str(usage.input_tokens),
                "cached": str(usage.cached_tokens),
                "output": str(usage.output_tokens),
                "reasoning": str(usage.reasoning_tokens),
                "cost": "" if step.status in ("skipped", "cached") else format_cost(usage.cost_usd, empty="-"),
                "latency": "" if step.latency_ms is None else f"{step.latency_ms:.0f} ms",
                "request": Text(step.request_id or ""),
                "tries": "" if step.attempts is None else str(step.attempts),
            }
            table.add_row(Text(step.step), status, *(cells[name] for name in shown))
        total = report.usage
        totals = {
            "input": str(total.input_tokens),
            "cached": str(total.cached_tokens),
            "output": str(total.output_tokens),
            "reasoning": str(total.reasoning_tokens),
            "cost": format_cost(total.cost_usd, empty="n/a (no prices)"),
        }
        table.add_section()
        table.add_row("total", "", *(totals.get(name, "") for name in shown))
        caption = []
        if "model" not in columns and models:
            caption.append(f"model {', '.join(models)}")
        if "cost" not in columns:
            caption.append("cost n/a (no prices set)")
        if report.budget:
            limits = ", ".join(
                f"{name} {report.budget[name]}"
                for name in ("max_total_tokens", "max_cost_usd")
                if report.budget.get(name)
            )
            caption.append(
                f"budget {limits}: " + ("spent, steps skipped" if report.budget.get("exceeded") else "within")
            )
        table.caption = Text("; ".join(caption)) if caption else None
        return table

    every = frozenset(_USAGE_COLUMNS)
    # Narrower and narrower: the model into the caption (and an unknown cost with it), then the other columns.
    first = {"model"} if priced else {"model", "cost"}
    narrower = [every - first]
    for dropped in ({"cached", "reasoning"}, {"request"}, {"tries"}, {"cost"}):
        if not dropped <= first:
            narrower.append(narrower[-1] - dropped)
    return FirstThatFits(
        layout(every, narrow=False),
        layout(every, narrow=True),
        *(layout(columns, narrow=True) for columns in narrower),
    )


def incidents_table(incidents: Sequence[Incident], *, title: str) -> RenderableType:
    """Incidents as a table (id, class, when, HTTP status, the run they concern), their reasons listed below it.

    Ids and classes are never cut; on a narrow terminal the flow run column goes first, then the HTTP status, then
    the time goes below the date. Each reason is shortened
    to :data:`REASON_LIMIT` characters (``arcanos-flows incidents list --json`` has them whole).
    """
    with_http = any(incident.http_status for incident in incidents)
    with_run = any(incident.context.get("flow_run_id") for incident in incidents)

    def layout(flow_run: bool, http: bool, *, narrow: bool, stacked: bool = False) -> Table:
        table = Table(title=title, **table_style(narrow=narrow))
        table.add_column("#", justify="right", no_wrap=True)
        key_column(table, "id")
        key_column(table, "class")
        table.add_column("occurred_at", overflow="fold")
        if http:
            table.add_column("http", no_wrap=True)
        if flow_run:
            key_column(table, "flow run")
        for number, incident in enumerate(incidents, 1):
            row: list[RenderableType] = [
                str(number),
                Text(str(incident.incident_id)),
                Text(incident.incident_class.value),
                incident.occurred_at.strftime("%Y-%m-%d\n%H:%M:%SZ" if stacked else "%Y-%m-%d %H:%M:%SZ"),
            ]
            if http:
                row.append(str(incident.http_status or ""))
            if flow_run:
                row.append(Text(str(incident.context.get("flow_run_id", ""))))
            table.add_row(*row)
        return table

    layouts = [layout(True, with_http, narrow=False), layout(True, with_http, narrow=True)] if with_run else []
    layouts += [
        layout(False, with_http, narrow=False),
        layout(False, with_http, narrow=True),
        layout(False, False, narrow=True),
        layout(False, False, narrow=True, stacked=True),  # the date above the time
    ]
    reasons = [("", shorten(incident.reason, REASON_LIMIT)) for incident in incidents]
    return with_notes(FirstThatFits(*layouts), reasons)


def shorten(text: str, limit: int) -> str:
    """The text on one line, cut to ``limit`` characters with an ellipsis.

    Examples:
        >>> shorten("Rate limit   reached for requests", 16)
        'Rate limit reac…'
    """
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def print_report(console: Console, report: ResearchReport) -> None:
    """The report as rendered Markdown, its steps as the :func:`usage_table` (which fits the terminal)."""
    from rich.markdown import Markdown

    lines = report.to_markdown().splitlines()
    head, tail = lines, []
    if "## Steps" in lines:
        start = lines.index("## Steps")
        end = next((n for n in range(start + 1, len(lines)) if lines[n].startswith("## ")), len(lines))
        head, tail = lines[:start], lines[end:]
    console.print(Markdown("\n".join(head)))
    console.print(usage_table(report))
    if tail:
        console.print()
        console.print(Markdown("\n".join(tail)))


def print_run_footer(console: Console, outcome: FlowOutcome) -> None:
    """The run's id, name and UI link (or how to get one)."""
    if outcome.flow_run_id:
        console.print(f"Flow run: {outcome.flow_run_id} ({outcome.flow_run_name or outcome.flow_name})", markup=False)
    if outcome.ui_url:
        console.print(f"UI: {outcome.ui_url}", markup=False, soft_wrap=True)


def print_outcome(console: Console, outcome: FlowOutcome, *, errors: Console | None = None) -> None:
    """The report (:func:`print_report`), then the run id and link; a failure line on ``errors`` (stderr)."""
    report = report_of(outcome)
    if report is not None:
        print_report(console, report)
    print_run_footer(console, outcome)
    if errors is not None and not outcome.completed:
        errors.print(
            Text(f"✗ {outcome.flow_name} {outcome.state_name}: {outcome.error_line}", style="red"), soft_wrap=True
        )


def outcome_json(outcome: FlowOutcome) -> str:
    """The outcome as one line of JSON (``"event": "summary"``): run id, state, UI link, (partial) report, error.

    It follows the run's step objects (:func:`arcanos_flows.cli._progress.step_event`), one per line.
    """
    report = report_of(outcome)
    document: dict[str, Any] = {
        "event": "summary",
        "flow_run_id": outcome.flow_run_id,
        "flow_run_name": outcome.flow_run_name,
        "state": outcome.state_name,
        "ui_url": outcome.ui_url,
        "error": outcome.error_line,
        "report": report.model_dump(mode="json") if report is not None else None,
    }
    return json.dumps(document)
