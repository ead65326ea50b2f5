"""Reasoning steps as one OpenAI batch: half the price, hours of latency, nothing billed twice.

:func:`run_reasoning_batch` is a Prefect task that writes the steps' JSONL input, uploads it, creates the batch (or
re-attaches to the one it already created: a retried task, or a rerun of the same flow run, lists the batches and finds
it by the input's fingerprint), polls it, and reads every row back like a direct answer. It returns a
:class:`BatchRun`: each step's result or failure, the batch's status history and its usage at batch prices.

**Polling.** The task sleeps between polls, with backoff (``poll_interval`` growing x1.5 up to
``max_poll_interval``), for at most ``max_wait`` (25 h: the 24 h completion window and its finalising). It holds its
worker slot (a thread of the flow's task runner) while it sleeps; Prefect 3 has no way to hand a slot back while a task
waits on an outside system short of ending the flow run. A batch still running when ``max_wait`` runs out is left
running (``batch_timeout``); a rerun re-attaches.

**Incidents.** One per failed batch (upload or creation refused, a batch that ended ``failed``: the task fails, and its
hook reports it), and one per class of failed rows, with the count and the custom ids, not one per row (the task
succeeds with those rows marked failed). Expired or cancelled batches keep the rows that finished; the others are
failed steps of class ``batch_expired`` / ``batch_cancelled`` and are not resubmitted.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from openai.types import Batch
from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError
from pydantic import BaseModel, ConfigDict, Field

from arcanos_flows.client.batch import MAX_BATCH_FILE_BYTES, MAX_BATCH_REQUESTS, BatchRow, BatchStep
from arcanos_flows.client.batch_client import FINISHED_STATUSES, BatchClient, BatchStatus, status_history
from arcanos_flows.core.errors import ArcanosError, BatchError, BatchRowError, IncidentClass, classify
from arcanos_flows.core.metadata import MetadataValue
from arcanos_flows.core.redaction import redact
from arcanos_flows.core.results import ReasoningResult, Usage
from arcanos_flows.incidents.model import Incident, attach_incident
from arcanos_flows.incidents.notifier import MaintenanceNotifier
from arcanos_flows.prefect import hooks
from arcanos_flows.prefect.budget import current_budget
from arcanos_flows.prefect.credentials import ArcanosCredentials, resolve_settings
from arcanos_flows.prefect.runs import incident_id_for, request_identity, run_context
from arcanos_flows.prefect.tasks import _awaitable_step, retry_transient_failures

__all__ = ["PROGRESS_KEY", "SOURCE", "BatchRowFailure", "BatchRun", "arun_reasoning_batch", "run_reasoning_batch"]

PROGRESS_KEY = "arcanos-batch-progress"
"""The key of the progress artifact a batch shows while the task waits for it (rows finished, status)."""
SOURCE = "arcanos_flows.batch"
"""The ``source`` of the incidents about a batch's failed rows (a failed batch is reported by the task hook)."""
logger = logging.getLogger("arcanos_flows.batch")
_SHOWN_IDS = 50


class BatchRowFailure(BaseModel):
    """Why one step of a batch failed, and the incident that reported its class.

    Examples:
        >>> BatchRowFailure(step="q-2", incident_class="batch_expired", reason="not run").incident_class
        'batch_expired'
    """

    model_config = ConfigDict(frozen=True)

    step: str
    incident_class: str
    reason: str
    request_id: str | None = None
    incident_id: str | None = None

    def as_error(self, *, batch_id: str, flow_run_id: str | None, message: str | None = None) -> BatchRowError:
        """The failure as an exception carrying the incident its class was reported as.

        A flow that fails with it sends no second incident: its hook finds the root cause already reported.

        Examples:
            >>> failure = BatchRowFailure(step="q-2", incident_class="batch_expired", reason="q-2: not run")
            >>> failure.as_error(batch_id="batch_1", flow_run_id=None).incident_class.value
            'batch_expired'
        """
        incident_class = IncidentClass(self.incident_class)
        error = BatchRowError(message or self.reason, custom_id=self.step, incident_class=incident_class)
        if self.incident_id:
            reported = Incident(
                incident_id=uuid.UUID(self.incident_id),
                incident_class=incident_class,
                reason=self.reason,
                error_type="arcanos_flows.errors.BatchRowError",
                source=SOURCE,
                context={"flow_run_id": flow_run_id, "batch_id": batch_id},
            )
            attach_incident(error, reported)
        return error


class BatchRun(BaseModel):
    """What a batch gave: each step's checked result or failure, its status history and its usage.

    Attributes:
        batch_id: The batch's id.
        status: Its final status (``completed``, ``expired``, ``cancelled``).
        created: Whether this task run created it (``False``: it re-attached to the batch an earlier try created).
        endpoint: ``/v1/chat/completions`` or ``/v1/responses``.
        fingerprint: SHA-256 of its requests, in the batch's metadata.
        status_history: The statuses it went through, with their times.
        results: The steps that answered and passed every check, by step.
        failures: The steps that failed, by step.
        usage: Tokens of the answered steps, priced at the batch prices when prices are set.
        incidents: The ids of the incidents sent for failed rows (one per class).

    Examples:
        >>> run = BatchRun(batch_id="batch_1", status="completed", created=True, endpoint="/v1/chat/completions",
        ...                fingerprint="ab", status_history=[], results={}, failures={})
        >>> run.ok, run.usage.total_tokens
        (True, 0)
    """

    batch_id: str
    status: str
    created: bool
    endpoint: str
    fingerprint: str
    status_history: list[BatchStatus]
    results: dict[str, ReasoningResult]
    failures: dict[str, BatchRowFailure]
    usage: Usage = Field(default_factory=Usage)
    incidents: list[str] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every step answered."""
        return not self.failures


def _log() -> Any:
    try:
        return get_run_logger()
    except MissingContextError:
        return logger


def _batch_metadata(identity: Mapping[str, str], name: str, count: int) -> dict[str, str]:
    kept = {key: value for key, value in identity.items() if key != "prefect.task_run_id"}
    return {**kept, "arcanos.batch": name[:512], "arcanos.steps": str(count)}


_BATCH_OPTIONS: dict[str, Any] = {
    "name": "arcanos-reasoning-batch",
    "task_run_name": "reasoning-batch[{name}]",
    "retries": 2,
    "retry_delay_seconds": 10,
    "retry_condition_fn": retry_transient_failures,
    "on_failure": [hooks.task_on_failure],
    "cache_policy": NO_CACHE,
    "persist_result": False,
    "result_serializer": "json",
}


@task(**_BATCH_OPTIONS)
async def arun_reasoning_batch(
    steps: Sequence[BatchStep | Mapping[str, Any]],
    *,
    name: str = "batch",
    metadata: Mapping[str, MetadataValue] | None = None,
    output_type: Any = None,
    poll_interval: float = 5.0,
    max_poll_interval: float = 60.0,
    max_wait: float = 25 * 3600.0,
    max_requests: int = MAX_BATCH_REQUESTS,
    max_file_bytes: int = MAX_BATCH_FILE_BYTES,
    credentials: ArcanosCredentials | None = None,
) -> BatchRun:
    """The async twin of :func:`run_reasoning_batch`, for async flows: the batch is polled in a worker thread.

    The event loop serves the flow's other steps while the batch runs (hours, at most ``max_wait``).
    ``await run_reasoning_batch(...)`` in an async flow runs this task.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... async def nightly(questions: list[str]) -> int:
        ...     run = await arun_reasoning_batch(
        ...         [{"step": f"q-{n}", "messages": [{"role": "user", "content": q}]} for n, q in enumerate(questions)]
        ...     )
        ...     return len(run.results)
    """
    # The sync task's function, run in a worker thread with this task run's context (to_thread copies it).
    return await asyncio.to_thread(
        run_reasoning_batch.fn,
        steps,
        name=name,
        metadata=metadata,
        output_type=output_type,
        poll_interval=poll_interval,
        max_poll_interval=max_poll_interval,
        max_wait=max_wait,
        max_requests=max_requests,
        max_file_bytes=max_file_bytes,
        credentials=credentials,
    )


@_awaitable_step(arun_reasoning_batch, **_BATCH_OPTIONS)
def run_reasoning_batch(
    steps: Sequence[BatchStep | Mapping[str, Any]],
    *,
    name: str = "batch",
    metadata: Mapping[str, MetadataValue] | None = None,
    output_type: Any = None,
    poll_interval: float = 5.0,
    max_poll_interval: float = 60.0,
    max_wait: float = 25 * 3600.0,
    max_requests: int = MAX_BATCH_REQUESTS,
    max_file_bytes: int = MAX_BATCH_FILE_BYTES,
    credentials: ArcanosCredentials | None = None,
) -> BatchRun:
    """Run reasoning steps as one OpenAI batch on the enforced model, and read every row back checked.

    Args:
        steps: The steps (:class:`~arcanos_flows.client.batch.BatchStep` or mappings of its fields: ``step``,
            ``messages``, ``metadata``, ``reasoning_effort``, ``max_output_tokens``).
        name: Names the task run (``reasoning-batch[name]``) and goes into the batch's metadata.
        metadata: Audit metadata of every step; each step's own is merged over it. The run's identity is added.
        output_type: A type every answer must validate as (its strict JSON schema is sent); a row that does not is
            an ``invalid_output`` failure (a batch cannot re-ask).
        poll_interval: Seconds before the first poll; each next wait is 1.5x longer.
        max_poll_interval: Longest wait between two polls.
        max_wait: Longest the task polls before it fails with ``batch_timeout`` (the batch keeps running).
        max_requests: Most steps (the API's 50,000).
        max_file_bytes: Largest input file (the API's 200 MB).
        credentials: An ``ArcanosCredentials`` block; the environment when omitted.

    Returns:
        The batch's :class:`BatchRun`.

    Raises:
        InvalidReasoningInput: Bad steps, named, before anything is uploaded.
        BatchError: The input was refused, or the batch ended ``failed``.
        BatchTimeoutError: Still running after ``max_wait``.

    Examples:
        ::

            from prefect import flow
            from arcanos_flows.prefect.batch import run_reasoning_batch

            @flow
            def nightly(questions: list[str]) -> dict[str, str]:
                run = run_reasoning_batch(
                    [{"step": f"q-{n}", "messages": [{"role": "user", "content": q}]} for n, q in enumerate(questions)],
                    name="nightly",
                    metadata={"source": "nightly-research"},
                )
                return {step: result.content for step, result in run.results.items()}

        In an async flow, ``await run_reasoning_batch(...)`` runs :func:`arun_reasoning_batch`.
    """
    settings = resolve_settings(credentials)
    budget = current_budget()
    if budget is not None:
        budget.check(f"reasoning-batch[{name}]")
    client = BatchClient(settings)
    notifier = MaintenanceNotifier(settings, source=SOURCE)
    log = _log()
    identity = request_identity()
    try:
        batch_input = client.prepare(
            steps,
            metadata=metadata,
            identity=identity,
            output_type=output_type,
            max_requests=max_requests,
            max_file_bytes=max_file_bytes,
        )
        batch, created = client.submit(
            batch_input, metadata=_batch_metadata(identity, name, len(batch_input.custom_ids))
        )
        log.info(
            "Batch %s %s: %d steps on %s (fingerprint %s)",
            batch.id,
            "created" if created else f"found, re-attached ({batch.status})",
            len(batch_input.custom_ids),
            batch_input.endpoint,
            batch_input.fingerprint[:12],
        )
        seen = [batch.status]
        progress = _BatchProgress(batch.id, len(batch_input.custom_ids))

        def on_poll(polled: Batch) -> None:
            progress.show(polled)
            if polled.status != seen[-1]:
                seen.append(polled.status)
                counts = polled.request_counts
                done = f" ({counts.completed + counts.failed}/{counts.total} rows)" if counts else ""
                log.info("Batch %s is %s%s", polled.id, polled.status, done)

        batch = client.wait(
            batch.id,
            poll_interval=poll_interval,
            max_poll_interval=max_poll_interval,
            max_wait=max_wait,
            on_poll=on_poll,
        )
        rows = client.rows(batch, batch_input, output_type=output_type)
    except ArcanosError as exc:
        _attach_batch_context(exc, settings.fine_tuned_model)
        raise
    finally:
        client.close()
    failures, incident_ids = _report_failed_rows(batch, rows, notifier, settings.fine_tuned_model)
    results = {row.custom_id: row.result for row in rows if row.result is not None}
    usage = sum((result.usage for result in results.values()), Usage())
    if budget is not None:
        budget.record(usage)
    log.info(
        "Batch %s %s: %d of %d steps answered, %d tokens%s",
        batch.id,
        batch.status,
        len(results),
        len(rows),
        usage.total_tokens,
        "" if usage.cost_usd is None else f", ${usage.cost_usd:.6f} at batch prices",
    )
    return BatchRun(
        batch_id=batch.id,
        status=batch.status,
        created=created,
        endpoint=batch_input.endpoint,
        fingerprint=batch_input.fingerprint,
        status_history=status_history(batch),
        results=results,
        failures=failures,
        usage=usage,
        incidents=incident_ids,
    )


class _BatchProgress:
    """The batch's progress in the UI while the task waits: a progress artifact, updated when its row counts change."""

    def __init__(self, batch_id: str, steps: int) -> None:
        self.batch_id, self.steps = batch_id, steps
        self.shown: tuple[str, int] | None = None
        self.artifact_id: Any = None

    def show(self, batch: Batch) -> None:
        counts = batch.request_counts
        done = (counts.completed + counts.failed) if counts is not None else 0
        if (batch.status, done) == self.shown:
            return
        self.shown = (batch.status, done)
        percent = 100.0 if batch.status in FINISHED_STATUSES else 100.0 * done / self.steps
        description = f"Batch {self.batch_id}: {done} of {self.steps} rows ({batch.status})"
        try:
            if self.artifact_id is None:
                # _sync: the async twin polls in a worker thread, where Prefect would otherwise hand back coroutines.
                self.artifact_id = create_progress_artifact(
                    progress=percent,
                    key=PROGRESS_KEY,
                    description=description,
                    _sync=True,  # type: ignore[call-arg]
                )
            else:
                update_progress_artifact(  # type: ignore[call-arg]
                    self.artifact_id, progress=percent, description=description, _sync=True
                )
        except Exception as exc:  # the batch's rows matter, not its progress bar
            logger.warning("Could not show the progress of batch %s: %s", self.batch_id, redact(str(exc)))


def _attach_batch_context(error: ArcanosError, model: str) -> None:
    """The batch's id and status go into the incident the task hook sends."""
    if not isinstance(error, BatchError):
        return
    context = {key: value for key, value in (("batch_id", error.batch_id), ("batch_status", error.status)) if value}
    attach_incident(error, Incident.from_exception(error, source=SOURCE, model=model, context=context))


def _report_failed_rows(
    batch: Batch, rows: list[BatchRow], notifier: MaintenanceNotifier, model: str
) -> tuple[dict[str, BatchRowFailure], list[str]]:
    """One incident per class of failed rows (count, custom ids, the first reason); each failure names its incident."""
    by_class: dict[IncidentClass, list[BatchRow]] = defaultdict(list)
    for row in rows:
        if row.error is not None:
            by_class[classify(row.error).incident_class].append(row)
    context = run_context()
    failures: dict[str, BatchRowFailure] = {}
    incident_ids: list[str] = []
    for incident_class, failed in by_class.items():
        first = failed[0].error
        assert first is not None
        custom_ids = [row.custom_id for row in failed]
        incident_id = incident_id_for(context.get("flow_run_id"), batch.id, incident_class.value)
        incident = Incident.from_exception(
            first,
            source=SOURCE,
            incident_class=incident_class,
            model=model,
            incident_id=incident_id,
            context={
                **context,
                "batch_id": batch.id,
                "batch_status": batch.status,
                "row_count": len(failed),
                "custom_ids": custom_ids[:_SHOWN_IDS],
            },
        ).model_copy(update={"reason": _reason(batch, incident_class, failed)})
        if hooks.delivery_of(incident_id) is not None:
            # A re-attached try in this process already reported this class of this batch's rows.
            delivered, outcome = incident, "already reported"
        else:
            delivered = hooks.report(incident, notifier)
            outcome = notifier.delivery_of(delivered)
            hooks.record_delivery(delivered.incident_id, outcome, delivered)
        incident_ids.append(str(delivered.incident_id))
        _log().warning(
            "Batch %s: %d row(s) failed with %s; incident %s %s",
            batch.id,
            len(failed),
            incident_class,
            delivered.incident_id,
            outcome,
        )
        for row in failed:
            assert row.error is not None
            failures[row.custom_id] = BatchRowFailure(
                step=row.custom_id,
                incident_class=incident_class.value,
                reason=redact(str(row.error)),
                request_id=row.error.request_id,
                incident_id=str(delivered.incident_id),
            )
    return failures, incident_ids


def _reason(batch: Batch, incident_class: IncidentClass, failed: list[BatchRow]) -> str:
    shown = ", ".join(row.custom_id for row in failed[:10]) + (" ..." if len(failed) > 10 else "")
    first = redact(str(failed[0].error))
    return f"{len(failed)} row(s) of batch {batch.id} failed with {incident_class} ({shown}); first: {first}"
