"""A research run's investigations as one Batch API batch (``research_flow(mode="batch")``).

The plan and the synthesis stay direct requests (the synthesis needs every finding, and the plan the questions); the
investigations go as one batch at half the price, and each row becomes the investigation's step record: its answer,
usage and request id, or its failure class and the incident that reported it (one per class of failed rows).
"""

from __future__ import annotations

from typing import Any

from arcanos_flows.core.errors import classify
from arcanos_flows.core.redaction import redact
from arcanos_flows.flows.research.prompts import investigation_messages
from arcanos_flows.flows.research.report import BatchSummary, StepRecord
from arcanos_flows.incidents.model import attached_incident
from arcanos_flows.prefect.batch import BatchRun, run_reasoning_batch
from arcanos_flows.prefect.hooks import delivery_of
from arcanos_flows.prefect.runs import incident_id_for

__all__ = ["investigate_in_batch"]

_ERROR_TEXT_LIMIT = 500


def investigate_in_batch(
    topic: str,
    plan: str,
    questions: list[str],
    metadata: dict[str, Any],
    flow_run_id: str | None,
    *,
    poll_interval: float,
    max_wait: float,
) -> tuple[list[StepRecord], list[BaseException], BatchSummary]:
    """Run the investigations as one batch; their records, the errors of the failed ones, and the batch's summary.

    A batch that fails as a whole (refused input, ``failed``) fails every investigation with its error, reported
    once by the batch task's hook.
    """
    steps = [
        {"step": f"investigate-{number}", "messages": investigation_messages(topic, plan, question)}
        for number, question in enumerate(questions, 1)
    ]
    state = run_reasoning_batch(
        steps,
        name="investigations",
        metadata=metadata,
        poll_interval=min(poll_interval, 5.0),
        max_poll_interval=poll_interval,
        max_wait=max_wait,
        return_state=True,
    )
    task_run_id = state.state_details.task_run_id
    if not state.is_completed():
        error = state.result(raise_on_failure=False)
        if not isinstance(error, BaseException):
            error = RuntimeError(state.message or f"the batch task ended {state.name}")
        incident = attached_incident(error)
        incident_class = incident.incident_class if incident is not None else classify(error).incident_class
        incident_id = str(incident_id_for(flow_run_id, task_run_id, incident_class.value)) if task_run_id else None
        batch_id = getattr(error, "batch_id", None)
        text = redact(f"{type(error).__name__}: {error}")[:_ERROR_TEXT_LIMIT]
        failed = [
            StepRecord(
                step=f"investigate-{number}",
                question=question,
                status="failed",
                error_class=incident_class.value,
                error=text,
                incident_id=incident_id,
                incident_delivery=delivery_of(incident_id),
                task_run_id=str(task_run_id) if task_run_id else None,
            )
            for number, question in enumerate(questions, 1)
        ]
        summary = BatchSummary(
            batch_id=batch_id, status=getattr(error, "status", None) or "failed", steps=len(steps), failed=len(steps)
        )
        return failed, [error] * len(failed), summary
    run: BatchRun = state.result()
    records: list[StepRecord] = []
    errors: list[BaseException] = []
    for number, question in enumerate(questions, 1):
        step = f"investigate-{number}"
        result = run.results.get(step)
        if result is not None:
            # A row has no latency of its own: it ran somewhere within the batch's window.
            records.append(StepRecord.answered(step, question, result, task_run_id, timed=False))
            continue
        failure = run.failures[step]
        records.append(
            StepRecord(
                step=step,
                question=question,
                status="failed",
                request_id=failure.request_id,
                attempts=1,
                error_class=failure.incident_class,
                error=failure.reason[:_ERROR_TEXT_LIMIT],
                incident_id=failure.incident_id,
                incident_delivery=delivery_of(failure.incident_id),
                task_run_id=str(task_run_id) if task_run_id else None,
            )
        )
        errors.append(failure.as_error(batch_id=run.batch_id, flow_run_id=flow_run_id))
    summary = BatchSummary(
        batch_id=run.batch_id,
        status=run.status,
        created=run.created,
        status_history=run.status_history,
        steps=len(steps),
        failed=len(run.failures),
        usage=run.usage,
    )
    return records, errors, summary
