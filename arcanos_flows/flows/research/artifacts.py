"""The research run's artifacts: its Markdown report and its steps table, under stable keys.

Keys are stable (``arcanos-research-report``, ``arcanos-research-steps``), so the UI's Artifacts page shows each
one's history across runs. Everything passes through :func:`arcanos_flows.core.redaction.redact` first: no API
key or webhook secret reaches an artifact, and no prompt is published (only the questions and the answers).
"""

from __future__ import annotations

import uuid
from typing import Any, cast

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from arcanos_flows.core.redaction import redact, redact_data
from arcanos_flows.flows.research.report import ResearchReport

__all__ = ["REPORT_KEY", "STEPS_COLUMNS", "STEPS_KEY", "publish_research_artifacts", "steps_table"]

REPORT_KEY = "arcanos-research-report"
STEPS_KEY = "arcanos-research-steps"
STEPS_COLUMNS = (
    "step",
    "status",
    "model",
    "input_tokens",
    "cached_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost_usd",
    "latency_ms",
    "request_id",
    "attempts",
)
"""Columns of the steps table, in order."""

_DESCRIPTION_LIMIT = 200


def steps_table(report: ResearchReport) -> list[dict[str, Any]]:
    """The rows of the steps table: one per step, with the columns of :data:`STEPS_COLUMNS`.

    Latency is in whole milliseconds; a failed step has ``status`` ``failed`` and zero tokens.

    Examples:
        >>> from arcanos_flows.flows.research.report import ResearchReport, StepRecord
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
            "cached_tokens": step.usage.cached_tokens,
            "output_tokens": step.usage.output_tokens,
            "reasoning_tokens": step.usage.reasoning_tokens,
            "cost_usd": step.usage.cost_usd,
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

    Examples:
        Inside a flow::

            from arcanos_flows.flows.research.artifacts import publish_research_artifacts

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
    # Prefect's `@async_dispatch` types each result "UUID or coroutine"; called from sync code they are UUIDs.
    return cast(uuid.UUID, report_id), cast(uuid.UUID, table_id)
