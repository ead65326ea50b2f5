"""A deployable flow around one Batch API batch: steps in, each row's answer or failure out, a table in the UI.

The flow runs :func:`~arcanos_flows.prefect.batch.run_reasoning_batch` once, publishes the rows as the table artifact
``arcanos-batch-rows`` (step, status, tokens, cost, error class, incident) and returns the
:class:`~arcanos_flows.prefect.batch.BatchRun`. When rows failed it fails after publishing, with a message naming the
classes and their steps; their incidents (one per class) are already delivered, so the flow's hook sends no other.
"""

from __future__ import annotations

from typing import Any

from prefect.artifacts import create_table_artifact
from prefect.logging import get_run_logger

from arcanos_flows.client.batch import BatchStep
from arcanos_flows.core.errors import BatchRowError, InvalidReasoningInput
from arcanos_flows.core.redaction import redact, redact_data
from arcanos_flows.prefect.batch import BatchRun, run_reasoning_batch
from arcanos_flows.prefect.decorator import arcanos_flow
from arcanos_flows.prefect.runs import run_context

__all__ = ["ROWS_KEY", "batch_rows_table", "reasoning_batch_flow"]

ROWS_KEY = "arcanos-batch-rows"
"""The key of the rows table artifact (its history across runs in the UI's Artifacts page)."""


def batch_rows_table(run: BatchRun, steps: list[str]) -> list[dict[str, Any]]:
    """One row per step, in the steps' order: its status, tokens and cost, or its failure's class and incident.

    Examples:
        >>> run = BatchRun(batch_id="batch_1", status="completed", created=True, endpoint="/v1/chat/completions",
        ...                fingerprint="ab", status_history=[], results={}, failures={})
        >>> batch_rows_table(run, ["q-1"])[0]["status"]
        'missing'
    """
    rows = []
    for step in steps:
        result, failure = run.results.get(step), run.failures.get(step)
        rows.append(
            {
                "step": step,
                "status": "completed" if result else "failed" if failure else "missing",
                "input_tokens": result.usage.input_tokens if result else 0,
                "output_tokens": result.usage.output_tokens if result else 0,
                "cost_usd": result.usage.cost_usd if result else None,
                "error_class": failure.incident_class if failure else None,
                "incident_id": failure.incident_id if failure else None,
            }
        )
    return list(redact_data(rows))


@arcanos_flow(name="arcanos-reasoning-batch")
def reasoning_batch_flow(
    steps: list[BatchStep],
    audit: dict[str, str] | None = None,
    name: str = "batch",
    poll_interval: float = 60.0,
    max_wait: float = 25 * 3600.0,
) -> BatchRun:
    """Run reasoning steps as one OpenAI batch (half the price, up to 24 h) and publish their rows.

    Args:
        steps: The steps (``step``, ``messages``, and optionally ``metadata``, ``reasoning_effort``,
            ``max_output_tokens``); Prefect validates them as :class:`~arcanos_flows.client.batch.BatchStep`.
        audit: Audit metadata sent with every step (the confirmation token comes from ``ARCANOS_CONFIRMATION_TOKEN``).
        name: The batch's name (its task run is ``reasoning-batch[name]``).
        poll_interval: The longest wait in seconds between two polls of the batch.
        max_wait: How long the run waits before it fails with ``batch_timeout`` (the batch keeps running; a rerun
            of the flow run re-attaches to it).

    Returns:
        The :class:`~arcanos_flows.prefect.batch.BatchRun`.

    Raises:
        BatchRowError: Some rows failed (after the table was published); one incident per class was delivered.

    Examples:
        Run it once against the endpoint in ``OPENAI_BASE_URL``::

            from arcanos_flows.flows.batch import reasoning_batch_flow

            run = reasoning_batch_flow(
                [{"step": "layers", "messages": [{"role": "user", "content": "Which confirmation layers exist?"}]}],
                audit={"ticket": "OPS-7"},
                poll_interval=5,
            )
            print(run.results["layers"].content)
    """
    if isinstance(poll_interval, bool) or not isinstance(poll_interval, (int, float)) or not poll_interval > 0:
        raise InvalidReasoningInput(f"reasoning_batch_flow(poll_interval={poll_interval!r}): must be positive seconds")
    run: BatchRun = run_reasoning_batch(
        steps,
        name=name,
        metadata=audit,
        poll_interval=min(poll_interval, 5.0),
        max_poll_interval=poll_interval,
        max_wait=max_wait,
    )
    names = [step.step if isinstance(step, BatchStep) else str(step["step"]) for step in steps]
    logger = get_run_logger()
    try:
        create_table_artifact(
            table=batch_rows_table(run, names),
            key=ROWS_KEY,
            description=redact(f"Rows of batch {run.batch_id} ({run.status}): {len(run.results)} of {len(names)} "
                               "answered"),
        )  # fmt: skip
    except Exception as exc:  # the run's result must not be lost to an artifact
        logger.warning("Could not publish the batch's rows: %s", redact(str(exc)))
    if run.failures:
        raise _rows_failed(run)
    return run


def _rows_failed(run: BatchRun) -> BatchRowError:
    """The flow's failure: the failed rows by class, carrying one of their incidents (the flow hook sends none)."""
    by_class: dict[str, list[str]] = {}
    for step, failure in run.failures.items():
        by_class.setdefault(failure.incident_class, []).append(step)
    summary = "; ".join(f"{incident_class}: {', '.join(steps[:10])}" for incident_class, steps in by_class.items())
    first = next(iter(run.failures.values()))
    message = (
        f"{len(run.failures)} of {len(run.failures) + len(run.results)} rows of batch {run.batch_id} failed "
        f"({summary}); incidents: {', '.join(run.incidents)}"
    )
    return first.as_error(batch_id=run.batch_id, flow_run_id=run_context().get("flow_run_id"), message=message)
