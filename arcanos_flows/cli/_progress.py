"""A run's steps as they finish: one plain line each (a log, CI) or one JSON object each (``--json``).

The steps are the flow's task runs (``reasoning[plan]``, ``reasoning[investigate-2]``...). The live tracker
(:class:`arcanos_flows.cli._flowrun.RunTracker`) reports each one the moment its task run logs its final state,
with the tokens of its usage line and the seconds since it started. Steps it could not see finish (a budget left
them ``skipped``: they never started; or they ran where this process does not get their logs) are reported from the
run's report at the end, so every step of the report gets exactly one line or object, before the summary.

A step object (one line of ``arcanos-flows run research --json``)::

    {"event": "step", "step": "investigate-2", "status": "completed", "tokens": 84, "seconds": 1.23, ...}

``status`` is ``completed``, ``cached``, ``failed`` (with ``error_class`` and ``error``) or ``skipped``; ``tokens``
counts input and output tokens (0 for cached, failed and skipped steps); the summary that follows is one object with
``"event": "summary"``.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from arcanos_flows.flows.research.report import ResearchReport, StepRecord

__all__ = [
    "StepReporter",
    "is_batch",
    "record_event",
    "record_line",
    "status_of",
    "step_event",
    "step_line",
    "step_name",
    "unreported",
]

_STEP_NAME = re.compile(r"^[\w.-]+\[(?P<step>.+)\]$")
_STATUSES = {"Completed": "completed", "Cached": "cached"}


@dataclass
class StepView:
    """What the CLI knows about one task run (a step) of the flow run it watches.

    Attributes:
        name: The task run's name (``reasoning[plan]``).
        state: Its state's name (``Running``, ``Retrying 1/2``, ``Completed``, ``Cached``, ``Failed``...).
        attempts: Tries so far.
        model: The model that answered (from the step's usage line).
        input_tokens: Input tokens of the answer (from the usage line).
        output_tokens: Output tokens of the answer (from the usage line).
        latency_ms: Latency of the successful request (from the usage line).
        request_id: Upstream request id (from the usage line).
        error: Why it failed or retries: one redacted, shortened line.
        error_class: The incident class of its failure (``authentication``, ``rate_limit``...), once it failed.
        final: Seen in a final state (by its log records or the API).
        named_by_log: Its name came from its own log records (the API may still show a provisional one).
        task_run_id: The task run's id.
        started_at: When it started (epoch seconds), when known.
        seconds: Wall time from its start to its final state, once final.
        reported: Its final state was seen in its own log records, and reported (a line, a JSON object) then.
    """

    name: str
    state: str = "Running"
    attempts: int = 1
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    latency_ms: float | None = None
    request_id: str | None = None
    error: str | None = None
    error_class: str | None = None
    final: bool = False
    named_by_log: bool = False
    task_run_id: str | None = None
    started_at: float | None = None
    seconds: float | None = None
    reported: bool = False


def step_name(task_run_name: str) -> str:
    """The step a task run is named after: ``reasoning[investigate-2]`` is ``investigate-2``.

    Examples:
        >>> step_name("reasoning[investigate-2]"), step_name("prompt[summary]"), step_name("cleanup")
        ('investigate-2', 'summary', 'cleanup')
    """
    matched = _STEP_NAME.match(task_run_name)
    return matched.group("step") if matched else task_run_name


def status_of(state_name: str) -> str:
    """A task run's final state as a step status: ``completed``, ``cached`` or ``failed``.

    Examples:
        >>> status_of("Completed"), status_of("Cached"), status_of("Crashed")
        ('completed', 'cached', 'failed')
    """
    return _STATUSES.get(state_name, "failed")


def step_event(step: StepView) -> dict[str, Any]:
    """The JSON object of a step that just finished, from what the tracker saw of it.

    Examples:
        >>> from arcanos_flows.cli._progress import StepView
        >>> step = StepView("reasoning[plan]", state="Completed", input_tokens=71, output_tokens=13, seconds=0.4012)
        >>> step_event(step)["step"], step_event(step)["tokens"], step_event(step)["seconds"]
        ('plan', 84, 0.401)
    """
    status = status_of(step.state)
    event: dict[str, Any] = {
        "event": "step",
        "step": step_name(step.name),
        "status": status,
        "tokens": (step.input_tokens or 0) + (step.output_tokens or 0),
        "input_tokens": step.input_tokens or 0,
        "output_tokens": step.output_tokens or 0,
        "seconds": None if step.seconds is None else round(step.seconds, 3),
        "attempts": step.attempts,
        "model": step.model,
        "request_id": step.request_id,
        "task_run": step.name,
        "task_run_id": step.task_run_id,
    }
    if status == "failed":
        event["error_class"] = step.error_class or "unknown"
        event["error"] = step.error
    return event


def record_event(record: StepRecord) -> dict[str, Any]:
    """The JSON object of a step the tracker did not see finish, from the run's report.

    Examples:
        >>> from arcanos_flows.flows.research.report import StepRecord
        >>> record_event(StepRecord(step="investigate-3", status="skipped"))["tokens"]
        0
    """
    usage = record.usage
    event: dict[str, Any] = {
        "event": "step",
        "step": record.step,
        "status": record.status,
        "tokens": usage.input_tokens + usage.output_tokens,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "seconds": 0.0 if record.status == "skipped" else _seconds(record.latency_ms),
        "attempts": record.attempts if record.attempts is not None else 0,
        "model": record.model,
        "request_id": record.request_id,
        "task_run": None if record.status == "skipped" else f"reasoning[{record.step}]",
        "task_run_id": record.task_run_id,
    }
    if record.status == "failed":
        event["error_class"] = record.error_class or "unknown"
        event["error"] = record.error
    return event


def step_line(step: StepView) -> str:
    """One plain line for a step that finished: name, state, tokens and seconds (and why it failed).

    Examples:
        >>> from arcanos_flows.cli._progress import StepView
        >>> step_line(StepView("reasoning[plan]", state="Completed", input_tokens=71, output_tokens=13,
        ...                    seconds=0.42, request_id="req_1"))
        '  reasoning[plan]: Completed, 84 tokens (71 in / 13 out), 0.42 s, request req_1'
    """
    state = step.state
    if status_of(state) == "failed":
        state += f" ({step.error_class or 'unknown'})"
    line = f"  {step.name}: {state}, {_tokens(step.input_tokens or 0, step.output_tokens or 0)}"
    if step.seconds is not None:
        line += f", {step.seconds:.2f} s"
    if step.attempts > 1:
        line += f", {step.attempts} tries"
    if step.request_id:
        line += f", request {step.request_id}"
    if step.error and status_of(step.state) == "failed":
        line += f": {step.error}"
    return line


def record_line(record: StepRecord) -> str:
    """One plain line for a step of the report that was not seen finishing (a skipped one, mostly).

    Examples:
        >>> from arcanos_flows.flows.research.report import StepRecord
        >>> record_line(StepRecord(step="investigate-3", status="skipped"))
        '  reasoning[investigate-3]: Skipped (budget spent), 0 tokens'
    """
    name = f"reasoning[{record.step}]"
    if record.status == "skipped":
        return f"  {name}: Skipped (budget spent), 0 tokens"
    state = record.status.capitalize()
    if record.status == "failed":
        state += f" ({record.error_class or 'unknown'})"
    line = f"  {name}: {state}, {_tokens(record.usage.input_tokens, record.usage.output_tokens)}"
    seconds = _seconds(record.latency_ms)
    if seconds is not None:
        line += f", {seconds:.2f} s"
    if record.request_id:
        line += f", request {record.request_id}"
    if record.error and record.status == "failed":
        line += f": {' '.join(record.error.split())}"
    return line


def is_batch(step: StepView) -> bool:
    """Whether a tracked task run is a batch of steps (``reasoning-batch[investigations]``), not a step.

    Examples:
        >>> is_batch(StepView("reasoning-batch[investigations]")), is_batch(StepView("reasoning[plan]"))
        (True, False)
    """
    return step.name.startswith("reasoning-batch[")


def unreported(report: ResearchReport | None, steps: Iterable[StepView]) -> list[StepRecord]:
    """The steps of the report that no line or object was given for while the run ran, in the report's order.

    A step of the report was reported when a tracked step with its task run (or, without one, its name) was. The
    task run of a batch (``reasoning-batch[...]``) holds several steps and is never one itself: its steps are reported
    from the report.
    """
    if report is None:
        return []
    seen = [step for step in steps if step.reported and not is_batch(step)]
    task_run_ids = {step.task_run_id for step in seen if step.task_run_id}
    names = {step_name(step.name) for step in seen}
    return [
        record
        for record in report.steps
        if not (record.task_run_id in task_run_ids if record.task_run_id else record.step in names)
    ]


class StepReporter:
    """Writes each finished step once: as a plain line, or as a JSON object on a line of its own.

    Args:
        write: Where a line goes (without its newline); errors writing it (a closed pipe) are ignored.
        as_json: JSON objects (:func:`step_event`) instead of plain lines (:func:`step_line`).

    Examples:
        >>> from arcanos_flows.cli._progress import StepView
        >>> lines = []
        >>> reporter = StepReporter(lines.append, as_json=True)
        >>> reporter.on_step(StepView("reasoning[plan]", state="Cached", seconds=0.01, reported=True))
        >>> json.loads(lines[0])["status"]
        'cached'
    """

    def __init__(self, write: Callable[[str], None], *, as_json: bool) -> None:
        self.write = write
        self.as_json = as_json

    def on_step(self, step: StepView) -> None:
        """Report a step that just finished (called from the thread that ran it); a batch's steps come at the end."""
        if is_batch(step):
            return
        self._emit(json.dumps(step_event(step)) if self.as_json else step_line(step))

    def finish(self, report: ResearchReport | None, steps: Iterable[StepView]) -> None:
        """Report the steps of ``report`` that were not reported while the run ran (see :func:`unreported`)."""
        for record in unreported(report, steps):
            self._emit(json.dumps(record_event(record)) if self.as_json else record_line(record))

    def _emit(self, line: str) -> None:
        # The reader went away (a closed pipe, a closed stream): the run goes on.
        with contextlib.suppress(OSError, ValueError):
            self.write(line)


def _tokens(input_tokens: int, output_tokens: int) -> str:
    total = input_tokens + output_tokens
    return f"{total} tokens ({input_tokens} in / {output_tokens} out)" if total else "0 tokens"


def _seconds(latency_ms: float | None) -> float | None:
    return None if latency_ms is None else round(latency_ms / 1000, 3)
