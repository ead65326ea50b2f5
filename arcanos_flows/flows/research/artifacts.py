"""The research run's artifacts: its Markdown report, its steps table and its progress, under stable keys.

Keys are stable (``arcanos-research-report``, ``arcanos-research-steps``, ``arcanos-research-progress``), so the UI's
Artifacts page shows each one's history across runs. While a run runs, :class:`ResearchProgress` keeps a progress
artifact (percentage of steps finished) and the steps table of the steps finished so far up to date.

Everything passes through :func:`arcanos_flows.core.redaction.redact` first: no API
key or webhook secret reaches an artifact, and no prompt is published (only the questions and the answers).
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
import uuid
from typing import Any, cast

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from arcanos_flows.core.redaction import redact, redact_data
from arcanos_flows.flows.research.report import ResearchReport, StepRecord

logger = logging.getLogger("arcanos_flows.research")

__all__ = [
    "PROGRESS_KEY",
    "REPORT_KEY",
    "STEPS_COLUMNS",
    "STEPS_KEY",
    "ResearchProgress",
    "publish_research_artifacts",
    "steps_table",
]

REPORT_KEY = "arcanos-research-report"
STEPS_KEY = "arcanos-research-steps"
PROGRESS_KEY = "arcanos-research-progress"
STEPS_COLUMNS = (
    "step",
    "status",
    "input_tokens",
    "cached_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost_usd",
    "latency_ms",
    "attempts",
    "error_class",
)
"""Columns of the steps table, in order: short ones, so the table fits a 1280 px window. The model, request ids,
questions and errors are in the report's body."""

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
            "input_tokens": step.usage.input_tokens,
            "cached_tokens": step.usage.cached_tokens,
            "output_tokens": step.usage.output_tokens,
            "reasoning_tokens": step.usage.reasoning_tokens,
            "cost_usd": step.usage.cost_usd,
            "latency_ms": None if step.latency_ms is None else round(step.latency_ms),
            "attempts": step.attempts,
            "error_class": step.error_class,
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


class ResearchProgress:
    """A research run's progress in the UI while it runs: a progress artifact and the steps finished so far.

    Steps report here as they finish (from the flow, or from a future's done callback); a publisher thread (with the
    run's context, so the artifacts link to the run) updates the progress artifact and a new version of the steps
    table, each at its own pace: the percentage at most every ``interval`` seconds, the table at most every
    ``table_interval`` seconds (it carries every finished step, so it is the heavier call). Each update costs the
    Prefect server CPU that the steps themselves need on a small machine: a run of hundreds of steps makes about one
    API call a second for its progress, not one per step. Publishing never fails the run: a problem is logged.

    Args:
        report: The report being built (its topic and the steps finished before this was made).
        interval: Least seconds between two updates of the percentage.
        table_interval: Least seconds between two versions of the steps table (the final table follows the run).

    Examples:
        Inside the flow::

            with ResearchProgress(report) as progress:    # closed (100 %, publisher stopped) on the way out
                progress.expect(2 + len(questions))        # plan, investigations, synthesis
                progress.finished(record)                  # as each step ends
    """

    def __init__(self, report: ResearchReport, *, interval: float = 1.0, table_interval: float = 3.0) -> None:
        self._report = report
        self._interval = interval
        self._table_interval = table_interval
        self._table_published_at = 0.0
        self._table_steps = 0
        self._progress_shown: tuple[float, int] = (0.0, 0)
        self._lock = threading.Lock()
        self._steps: list[StepRecord] = []
        self._total: int | None = None
        self._changed = threading.Event()
        self._stopped = threading.Event()
        self._artifact_id: uuid.UUID | None = None
        try:
            self._artifact_id = cast(
                uuid.UUID,
                create_progress_artifact(
                    progress=0.0, key=PROGRESS_KEY, description=redact(f"Research on: {_short(report.topic)}")
                ),
            )
        except Exception as exc:
            logger.warning("Could not create the research progress artifact: %s", redact(str(exc)))
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._publish_until_closed,), name="arcanos-research-progress", daemon=True
        )
        self._thread.start()

    def expect(self, total: int) -> None:
        """Set how many steps the run has in all (known once the plan has proposed its questions)."""
        with self._lock:
            self._total = total
        self._changed.set()

    def finished(self, step: StepRecord) -> None:
        """Count a finished step (completed, cached, failed or skipped)."""
        with self._lock:
            self._steps.append(step)
        self._changed.set()

    def close(self) -> None:
        """Stop publishing; the progress artifact shows 100 % (the run's final artifacts follow). Idempotent."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._changed.set()
        self._thread.join(timeout=10)
        self._update_progress(100.0, self._description())

    def __enter__(self) -> ResearchProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _description(self) -> str:
        with self._lock:
            done, total = len(self._steps), self._total
        return f"{done} of {total if total is not None else '?'} steps finished"

    def _publish_until_closed(self) -> None:
        while not self._stopped.is_set():
            self._changed.wait()
            if self._stopped.is_set():
                return
            self._changed.clear()
            self._publish()
            self._stopped.wait(self._interval)

    def _publish(self) -> None:
        with self._lock:
            steps, total = list(self._steps), self._total
        percent = 0.0 if not total else min(100.0, 100.0 * len(steps) / total)
        if (percent, len(steps)) != self._progress_shown:
            self._progress_shown = (percent, len(steps))
            self._update_progress(percent, self._description())
        if len(steps) == self._table_steps:
            return
        if time.monotonic() - self._table_published_at < self._table_interval:
            self._changed.set()  # the table is due later: come back at the next tick
            return
        self._table_published_at, self._table_steps = time.monotonic(), len(steps)
        try:
            partial = self._report.model_copy(update={"steps": steps})
            create_table_artifact(
                table=steps_table(partial),
                key=STEPS_KEY,
                description=redact(f"Reasoning steps so far of the research on: {_short(self._report.topic)}"),
            )
        except Exception as exc:
            logger.warning("Could not update the research steps table: %s", redact(str(exc)))

    def _update_progress(self, percent: float, description: str) -> None:
        if self._artifact_id is None:
            return
        try:
            update_progress_artifact(self._artifact_id, progress=percent, description=description)
        except Exception as exc:
            logger.warning("Could not update the research progress: %s", redact(str(exc)))


def _short(text: str) -> str:
    return " ".join(text.split())[:_DESCRIPTION_LIMIT]
