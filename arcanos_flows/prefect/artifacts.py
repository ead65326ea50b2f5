"""Prefect artifacts of a single reasoning result: what a maintenance check found, under a stable key.

The maintenance check publishes ``arcanos-maintenance-check`` (the research flow's report and steps table live
with the flow, :mod:`arcanos_flows.flows.research.artifacts`). Everything passes through
:func:`arcanos_flows.core.redaction.redact` first: no API key or webhook secret reaches an artifact.
"""

from __future__ import annotations

import uuid
from typing import cast

from prefect.artifacts import create_markdown_artifact

from arcanos_flows.core.errors import classify
from arcanos_flows.core.redaction import redact
from arcanos_flows.core.results import ReasoningResult
from arcanos_flows.incidents.model import attached_incident

__all__ = ["CHECK_KEY", "check_markdown", "publish_check_artifact"]

CHECK_KEY = "arcanos-maintenance-check"
_ANSWER_LIMIT = 2000


def check_markdown(result: ReasoningResult | None, error: BaseException | None = None) -> str:
    """The Markdown of a maintenance check: the answering model, usage and request id, or the failure.

    Examples:
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
    # Prefect's `@async_dispatch` types the result "UUID or coroutine"; called from sync code it is the UUID.
    return cast(
        uuid.UUID,
        create_markdown_artifact(
            markdown=check_markdown(result, error),
            key=CHECK_KEY,
            description=f"Maintenance check: {status}",
        ),
    )
