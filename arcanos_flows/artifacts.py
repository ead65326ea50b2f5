"""Prefect artifacts of the bundled flows: what a run found, shown in the UI under stable keys.

A research run publishes a Markdown report (``arcanos-research-report``) and a table of its steps
(``arcanos-research-steps``); the maintenance check publishes ``arcanos-maintenance-check``. Keys are stable, so
the UI's Artifacts page shows each one's history across runs. Everything passes through
:func:`arcanos_flows.redaction.redact` first: no API key or webhook secret reaches an artifact, and no prompt
is published (only the questions and the model's answers).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from arcanos_flows.errors import classify
from arcanos_flows.incidents import attached_incident
from arcanos_flows.redaction import redact, redact_data
from arcanos_flows.results import ReasoningResult

if TYPE_CHECKING:
    from arcanos_flows.research import ResearchReport

__all__ = [
    "CHECK_KEY",
    "REPORT_KEY",
    "STEPS_COLUMNS",
    "STEPS_KEY",
    "check_markdown",
    "publish_check_artifact",
    "publish_research_artifacts",
    "steps_table",
]

REPORT_KEY = "arcanos-research-report"
STEPS_KEY = "arcanos-research-steps"
CHECK_KEY = "arcanos-maintenance-check"
STEPS_COLUMNS = (
    "step",
    "status",
    "model",
    "input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "latency_ms",
    "request_id",
    "attempts",
)
"""Columns of the steps table, in order."""

_DESCRIPTION_LIMIT = 200
_ANSWER_LIMIT = 2000


def steps_table(report: ResearchReport) -> list[dict[str, Any]]:
    """The rows of the steps table: one per step, with the columns of :data:`STEPS_COLUMNS`.

    Latency is in whole milliseconds; a failed step has ``status`` ``failed`` and zero tokens.

    Example:
        >>> from arcanos_flows.research import ResearchReport, StepRecord
        >>> report = ResearchReport(topic="t", steps=[StepRecord(step="plan", status="failed", attempts=1)])
        >>> steps_table(report)[0]["status"], steps_table(report)[0]["input_tokens"]
        ('failed', 0)
    """
    rows = [
        {
            "step": step.step,
            "status": step.status,
            "model": step.model,
            "input_tokens": step.usage.input_tokens,
            "output_tokens": step.usage.output_tokens,
            "reasoning_tokens": step.usage.reasoning_tokens,
            "latency_ms": None if step.latency_ms is None else round(step.latency_ms),
            "request_id": step.request_id,
            "attempts": step.attempts,
        }
        for step in report.steps
    ]
    return list(redact_data(rows))


def publish_research_artifacts(report: ResearchReport) -> tuple[uuid.UUID, uuid.UUID]:
    """Publish a research report: the Markdown report and the steps table, linked to the current run.

    Args:
        report: The research report (failed steps are marked in both artifacts).

    Returns:
        The ids of the Markdown artifact and of the table artifact.

    Example:
        Inside a flow::

            from arcanos_flows.artifacts import publish_research_artifacts

            publish_research_artifacts(report)   # keys arcanos-research-report and arcanos-research-steps
    """
    failed = len(report.failed_steps)
    summary = f"{len(report.steps)} steps" + (f", {failed} failed" if failed else "")
    topic = " ".join(report.topic.split())[:_DESCRIPTION_LIMIT]
    report_id = create_markdown_artifact(
        markdown=redact(report.to_markdown()),
        key=REPORT_KEY,
        description=redact(f"Research report: {topic} ({summary})"),
    )
    table_id = create_table_artifact(
        table=steps_table(report),
        key=STEPS_KEY,
        description=redact(f"Reasoning steps of the research on: {topic} ({summary})"),
    )
    return report_id, table_id


def check_markdown(result: ReasoningResult | None, error: BaseException | None = None) -> str:
    """The Markdown of a maintenance check: the answering model, usage and request id, or the failure.

    Example:
        >>> result = ReasoningResult(content="Three layers.", model="ft:gpt-5.1:a::x", response_id="chatcmpl-1")
        >>> check_markdown(result).splitlines()[0]
        '# Maintenance check: ok'
    """
    if result is not None:
        usage = result.usage
        answer = result.content if len(result.content) <= _ANSWER_LIMIT else result.content[:_ANSWER_LIMIT] + " …"
        lines = [
            "# Maintenance check: ok",
            "",
            "| Model | Input | Output | Reasoning | Latency (ms) | Request id | Attempts |",
            "| --- | ---: | ---: | ---: | ---: | --- | ---: |",
            f"| {result.model} | {usage.input_tokens} | {usage.output_tokens} | {usage.reasoning_tokens} | "
            f"{round(result.latency_ms)} | {result.request_id or ''} | {result.attempts} |",
            "",
            "## Answer",
            "",
            answer,
        ]
    else:
        incident = attached_incident(error) if error is not None else None
        facts = classify(error) if error is not None else None
        incident_class = incident.incident_class.value if incident else (facts.incident_class.value if facts else "")
        message = f"{type(error).__name__}: {error}" if error is not None else "unknown failure"
        lines = [
            f"# Maintenance check: failed ({incident_class or 'unknown'})",
            "",
            f"**Request id:** {facts.request_id if facts and facts.request_id else 'none'}  ",
            f"**Error:** {message[:1000]}",
            "",
            "The maintenance incident was reported by the failed step.",
        ]
    return redact("\n".join(lines) + "\n")


def publish_check_artifact(result: ReasoningResult | None, *, error: BaseException | None = None) -> uuid.UUID:
    """Publish the outcome of a maintenance check (key ``arcanos-maintenance-check``).

    Args:
        result: The check's answer, or ``None`` when it failed.
        error: The failure, when ``result`` is ``None``.

    Returns:
        The artifact id.
    """
    status = "ok" if result is not None else "failed"
    return create_markdown_artifact(
        markdown=check_markdown(result, error),
        key=CHECK_KEY,
        description=f"Maintenance check: {status}",
    )
