"""The research flow: a plan, parallel investigations on a bounded thread pool, and a synthesis.

Every OpenAI request of a run carries the flow's ``audit`` parameter, its ``confirmation_token`` and the Prefect
identity of the run (``prefect.flow_run_id``, ``prefect.task_run_id``, ``prefect.flow``, ``prefect.deployment``).
A failed step is reported once, by the task hook, after its last retry; the flow then fails without a second
incident. Each run publishes a markdown report and a table of its steps as Prefect artifacts
(:mod:`arcanos_flows.artifacts`).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any, Literal, ParamSpec, TypeVar

from prefect import Task, unmapped
from prefect.context import FlowRunContext
from prefect.futures import wait
from prefect.logging import get_run_logger
from prefect.states import State
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, Field

from arcanos_flows.credentials import resolve_settings
from arcanos_flows.errors import ArcanosError, IncidentClass, InvalidReasoningInput, classify
from arcanos_flows.flow_decorator import arcanos_flow
from arcanos_flows.incidents import attached_incident
from arcanos_flows.metadata import build_metadata
from arcanos_flows.prompts import MAX_PLANNED_QUESTIONS, investigation_messages, plan_messages, synthesis_messages
from arcanos_flows.redaction import redact
from arcanos_flows.results import ReasoningResult, Usage
from arcanos_flows.runs import incident_id_for, request_identity
from arcanos_flows.tasks import run_reasoning, with_cache, with_retries

__all__ = [
    "MAX_PARALLEL",
    "MAX_PLANNED_QUESTIONS",
    "MAX_QUESTIONS",
    "ResearchReport",
    "ResearchStepsFailed",
    "StepRecord",
    "parse_questions",
    "research_flow",
]

P = ParamSpec("P")
R = TypeVar("R")

MAX_QUESTIONS = 1000
"""At most this many questions may be given explicitly (``max_parallel`` of them run at once)."""

MAX_PARALLEL = 32
"""Upper bound of ``max_parallel``."""

MAX_TOPIC_LENGTH = 2000

_LIST_ITEM = re.compile(r"^\s*(?:\d{1,3}\s*[.)]|[-*\u2022])\s+(?P<text>\S.*?)\s*$")
_ERROR_TEXT_LIMIT = 500


class StepRecord(BaseModel):
    """One reasoning step of a research run, as the report and the steps table show it.

    Attributes:
        step: The step's name: ``plan``, ``investigate-<n>`` or ``synthesis``.
        question: The question an investigation answered; ``None`` for plan and synthesis.
        status: ``completed``, ``cached`` (answered from the step cache, without a request) or ``failed``.
        content: The model's answer (``None`` when the step failed).
        model: The model that answered.
        usage: Tokens the step spent (zero when it failed or was cached).
        latency_ms: Wall time of the successful call (``None`` when cached).
        request_id: Upstream ``x-request-id`` (also for a failure that got an HTTP answer; for a cached step, the
            request that first got the answer).
        attempts: Tries the step took (Prefect task runs; 0 when cached).
        error_class: The incident class of a failure (``authentication``, ``rate_limit``...).
        error: The failure's redacted message.
        incident_id: The incident the task hook reported for the failure.
        task_run_id: The Prefect task run of the step.
    """

    step: str
    question: str | None = None
    status: Literal["completed", "cached", "failed"]
    content: str | None = None
    model: str | None = None
    usage: Usage = Field(default_factory=Usage)
    latency_ms: float | None = None
    request_id: str | None = None
    attempts: int | None = None
    error_class: str | None = None
    error: str | None = None
    incident_id: str | None = None
    task_run_id: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the step has an answer (completed or cached)."""
        return self.status != "failed"


class ResearchReport(BaseModel):
    """What a research run found, step by step; JSON-serialisable (``model_dump_json``).

    Attributes:
        topic: The researched topic.
        questions: The questions investigated (given, or parsed from the plan).
        audit: The run's audit metadata (the confirmation token is not repeated here).
        plan: The plan step's answer.
        steps: Every step: ``plan``, ``investigate-1``..., ``synthesis``.
        synthesis: The synthesis; ``None`` when it could not run.
        usage: Tokens of all completed steps.
        flow_run_id: The Prefect flow run that produced the report.
    """

    topic: str
    questions: list[str] = Field(default_factory=list)
    audit: dict[str, str] = Field(default_factory=dict)
    plan: str | None = None
    steps: list[StepRecord] = Field(default_factory=list)
    synthesis: str | None = None
    usage: Usage = Field(default_factory=Usage)
    flow_run_id: str | None = None

    @property
    def failed_steps(self) -> list[StepRecord]:
        """The steps that failed."""
        return [step for step in self.steps if not step.ok]

    def to_markdown(self) -> str:
        """The report as Markdown: synthesis, questions, a steps table and each step's findings.

        Example:
            >>> report = ResearchReport(topic="Confirmation layers", questions=["Which layers exist?"],
            ...                         synthesis="Three layers.")
            >>> report.to_markdown().splitlines()[0]
            '# Research: Confirmation layers'
        """
        failed = self.failed_steps
        status = "completed" if not failed else f"{len(failed)} of {len(self.steps)} steps failed"
        usage = self.usage
        lines = [
            f"# Research: {_one_line(self.topic)}",
            "",
            f"**Status:** {status}  ",
            f"**Usage:** {usage.input_tokens} input / {usage.output_tokens} output "
            f"({usage.reasoning_tokens} reasoning) tokens",
        ]
        if self.flow_run_id:
            lines.append(f"  \n**Flow run:** `{self.flow_run_id}`")
        lines += ["", "## Synthesis", "", self.synthesis if self.synthesis is not None else "_No synthesis._"]
        if self.questions:
            lines += ["", "## Questions", ""]
            lines += [f"{number}. {_one_line(question)}" for number, question in enumerate(self.questions, 1)]
        lines += [
            "",
            "## Steps",
            "",
            "| Step | Status | Model | Input | Output | Reasoning | Latency (ms) | Request id | Attempts |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: | --- | ---: |",
        ]
        for step in self.steps:
            status_cell = step.status if step.ok else f"**failed** ({step.error_class})"
            cells = [
                step.step,
                status_cell,
                step.model or "",
                str(step.usage.input_tokens),
                str(step.usage.output_tokens),
                str(step.usage.reasoning_tokens),
                "" if step.latency_ms is None else str(round(step.latency_ms)),
                step.request_id or "",
                "" if step.attempts is None else str(step.attempts),
            ]
            lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
        lines += ["", "## Findings"]
        for step in self.steps:
            title = step.step + (f": {_one_line(step.question)}" if step.question else "")
            lines += ["", f"### {title}", ""]
            if step.ok:
                lines.append(step.content or "")
            else:
                incident = f" (incident `{step.incident_id}`)" if step.incident_id else ""
                lines.append(f"**Failed** with `{step.error_class}`{incident}: {step.error or ''}")
        return "\n".join(lines) + "\n"


class ResearchStepsFailed(ArcanosError):
    """Some investigations of a research run failed; the report was still synthesised from the others.

    ``__cause__`` is the first step's error, which the task hook already reported, so the flow's hook sends
    no second incident.

    Attributes:
        report: The (partial) report, with the failed steps marked.
        failed: How many steps failed.
    """

    incident_class = IncidentClass.FLOW_FAILED

    def __init__(self, message: str, *, report: ResearchReport, failed: int) -> None:
        super().__init__(message)
        self.report = report
        self.failed = failed

    def __reduce__(self) -> tuple[Any, ...]:
        # Prefect may pickle a flow's exception with its state; keyword-only arguments need this.
        return (_rebuild_steps_failed, (self.message, self.report, self.failed))


def _rebuild_steps_failed(message: str, report: ResearchReport, failed: int) -> ResearchStepsFailed:
    return ResearchStepsFailed(message, report=report, failed=failed)


def parse_questions(plan: str, limit: int = MAX_PLANNED_QUESTIONS) -> list[str]:
    r"""The research questions of a plan: its numbered or bulleted lines, at most ``limit``, duplicates dropped.

    Example:
        >>> plan = "Plan:", "1. Which layers exist?", "2) Who confirms?", "- Which layers exist?", "Done."
        >>> parse_questions("\n".join(plan))
        ['Which layers exist?', 'Who confirms?']
    """
    questions: list[str] = []
    for line in plan.splitlines():
        match = _LIST_ITEM.match(line)
        if match is None:
            continue
        question = match.group("text").strip().strip("*_").strip()
        if question and question not in questions:
            questions.append(question)
        if len(questions) >= limit:
            break
    return questions


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _cell(text: str) -> str:
    return _one_line(text).replace("|", "\\|")


def _validate(
    topic: object, questions: object, audit: object, confirmation_token: object, max_parallel: object
) -> tuple[str, list[str] | None]:
    if not isinstance(topic, str) or not topic.strip():
        raise InvalidReasoningInput("research_flow(topic=...): the topic must be a non-empty string")
    if len(topic) > MAX_TOPIC_LENGTH:
        raise InvalidReasoningInput(
            f"research_flow(topic=...): the topic is {len(topic)} characters; at most {MAX_TOPIC_LENGTH} are allowed"
        )
    checked: list[str] | None = None
    if questions is not None:
        if isinstance(questions, str) or not isinstance(questions, Sequence):
            raise InvalidReasoningInput("research_flow(questions=...): must be a list of strings, or None")
        if not questions or len(questions) > MAX_QUESTIONS:
            raise InvalidReasoningInput(
                f"research_flow(questions=...): {len(questions)} questions given; give 1 to {MAX_QUESTIONS}, "
                "or None to let the plan step propose them"
            )
        checked = []
        for number, question in enumerate(questions, 1):
            if not isinstance(question, str) or not question.strip():
                raise InvalidReasoningInput(f"research_flow(questions=...): question {number} is empty")
            checked.append(question.strip())
    if isinstance(max_parallel, bool) or not isinstance(max_parallel, int) or not 1 <= max_parallel <= MAX_PARALLEL:
        raise InvalidReasoningInput(f"research_flow(max_parallel=...): must be an integer from 1 to {MAX_PARALLEL}")
    if confirmation_token is not None and not isinstance(confirmation_token, str):
        raise InvalidReasoningInput("research_flow(confirmation_token=...): must be a string")
    if audit is not None and not isinstance(audit, Mapping):
        raise InvalidReasoningInput("research_flow(audit=...): must be a mapping of metadata keys to strings")
    for key in audit or {}:
        if isinstance(key, str) and key.startswith("prefect."):
            raise InvalidReasoningInput(
                f"research_flow(audit=...): the key {key!r} is reserved; arcanos-flows sets the prefect.* keys"
            )
    return topic.strip(), checked


def _request_metadata(audit: Mapping[str, Any] | None, confirmation_token: str | None) -> dict[str, Any]:
    metadata = dict(audit or {})
    if confirmation_token:
        metadata["confirmation_token"] = confirmation_token
    return metadata


def _check_metadata_fits(metadata: Mapping[str, Any], default_token: str | None) -> dict[str, str]:
    # The same check every request makes, done once before the first one: the audit keys, the token and the
    # identity keys the tasks add (a placeholder task run id stands for the ones to come) must fit OpenAI's limits.
    identity = {**request_identity(), "prefect.task_run_id": str(uuid.UUID(int=0))}
    try:
        build_metadata(metadata, defaults={"confirmation_token": default_token}, identity=identity)
    except InvalidReasoningInput as exc:
        raise InvalidReasoningInput(f"research_flow(audit=...): {exc.message}") from None
    return {key: value for key, value in build_metadata(metadata).items() if key != "confirmation_token"}


def _completed(
    step: str, question: str | None, result: ReasoningResult, task_run_id: Any, state: State | None = None
) -> StepRecord:
    if state is not None and state.name == "Cached":
        # Answered from the step cache: no request was made and nothing was spent in this run.
        return StepRecord(
            step=step,
            question=question,
            status="cached",
            content=result.content,
            model=result.model,
            request_id=result.request_id,
            attempts=0,
            task_run_id=str(task_run_id) if task_run_id else None,
        )
    return StepRecord(
        step=step,
        question=question,
        status="completed",
        content=result.content,
        model=result.model,
        usage=result.usage,
        latency_ms=result.latency_ms,
        request_id=result.request_id,
        attempts=result.attempts,
        task_run_id=str(task_run_id) if task_run_id else None,
    )


def _failed(
    step: str, question: str | None, state: State, error: BaseException, task_run_id: Any, flow_run_id: str | None
) -> StepRecord:
    incident = attached_incident(error)
    facts = classify(error)
    incident_class = incident.incident_class if incident is not None else facts.incident_class
    return StepRecord(
        step=step,
        question=question,
        status="failed",
        request_id=facts.request_id,
        attempts=(incident.attempts if incident is not None else None) or facts.attempts or None,
        error_class=incident_class.value,
        error=redact(f"{type(error).__name__}: {error}")[:_ERROR_TEXT_LIMIT],
        # The task hook reported a Failed step under this id; a Crashed one gets no hook (the flow's reports it).
        incident_id=(
            str(incident_id_for(flow_run_id, task_run_id, incident_class.value))
            if task_run_id and state.is_failed()
            else None
        ),
        task_run_id=str(task_run_id) if task_run_id else None,
    )


def _error_of(state: State) -> BaseException:
    outcome = state.result(raise_on_failure=False)
    if isinstance(outcome, BaseException):
        return outcome
    return RuntimeError(state.message or f"step ended in state {state.name}")


def _run_step(
    step_task: Task[..., ReasoningResult],
    step: str,
    messages: list[dict[str, str]],
    metadata: dict[str, Any],
    flow_run_id: str | None,
) -> tuple[StepRecord, BaseException | None]:
    state = step_task(messages, metadata, step, return_state=True)
    task_run_id = state.state_details.task_run_id
    if state.is_completed():
        return _completed(step, None, state.result(), task_run_id, state), None
    error = _error_of(state)
    return _failed(step, None, state, error, task_run_id, flow_run_id), error


def _investigate(
    step_task: Task[..., ReasoningResult],
    topic: str,
    plan: str,
    questions: list[str],
    metadata: dict[str, Any],
    max_parallel: int,
) -> tuple[list[StepRecord], list[BaseException]]:
    # A task runner of this run's size, so at most `max_parallel` investigations run at once whatever the flow's
    # own task runner is (`Task.map` would use the flow's). Every future is resolved inside the block: leaving it
    # cancels what has not started, and a failed future never resolved would leave the flow Completed.
    with ThreadPoolTaskRunner(max_workers=max_parallel) as runner:
        futures = runner.map(
            step_task,
            {
                "messages": [investigation_messages(topic, plan, question) for question in questions],
                "metadata": unmapped(metadata),
                "step": [f"investigate-{number}" for number in range(1, len(questions) + 1)],
            },
        )
        wait(list(futures))
    flow_context = FlowRunContext.get()
    flow_run_id = str(flow_context.flow_run.id) if flow_context and flow_context.flow_run else None
    records: list[StepRecord] = []
    errors: list[BaseException] = []
    for number, (question, future) in enumerate(zip(questions, futures, strict=True), 1):
        step = f"investigate-{number}"
        if future.state.is_completed():
            records.append(_completed(step, question, future.result(), future.task_run_id, future.state))
        else:
            error = _error_of(future.state)
            errors.append(error)
            records.append(_failed(step, question, future.state, error, future.task_run_id, flow_run_id))
    return records, errors


def _publish(report: ResearchReport) -> None:
    from arcanos_flows.artifacts import publish_research_artifacts

    try:
        publish_research_artifacts(report)
    except Exception as exc:  # the report is the run's result; a lost artifact must not hide it
        get_run_logger().warning("Could not publish the research artifacts: %s", redact(str(exc)))


@arcanos_flow(name="arcanos-research")
def research_flow(
    topic: str,
    questions: list[str] | None = None,
    audit: dict[str, str] | None = None,
    confirmation_token: str | None = None,
    max_parallel: int = 4,
    cache: bool = False,
) -> ResearchReport:
    """Research a topic on the enforced model: plan, investigate each question in parallel, synthesise.

    Args:
        topic: What to research.
        questions: The questions to investigate; ``None`` lets the plan step propose up to
            :data:`MAX_PLANNED_QUESTIONS` (a numbered list parsed from its answer).
        audit: Audit metadata sent with every request of the run (shown as a parameter in the UI).
        confirmation_token: Sent as ``confirmation_token`` in every request's metadata, over one in ``audit``
            (default: ``ARCANOS_CONFIRMATION_TOKEN``).
        max_parallel: How many investigations run at once (a bounded thread pool).
        cache: Answer steps asked before (same model, API, messages and options) from Prefect's result storage,
            without a request, for ``ARCANOS_STEP_CACHE_EXPIRATION`` seconds (:func:`arcanos_flows.tasks.with_cache`).
            Cached steps show as ``Cached`` in the UI and ``cached``, with 0 tokens, in the report.

    Returns:
        The :class:`ResearchReport`; also published as the artifacts ``arcanos-research-report`` and
        ``arcanos-research-steps``.

    Raises:
        InvalidReasoningInput: A parameter is invalid (checked before any request).
        ConfigurationError: Settings are missing or invalid (checked before any request).
        ResearchStepsFailed: Some investigations failed (after the synthesis of the others and the artifacts).

    Example:
        Run it ad hoc (the run is tagged ``arcanos``)::

            from arcanos_flows.research import research_flow

            report = research_flow(
                "Confirmation layers of the Arcanos backend",
                audit={"ticket": "OPS-7", "requested_by": "maintenance"},
                confirmation_token="ct-2025-11",
                max_parallel=4,
            )
            print(report.to_markdown())
    """
    topic, given = _validate(topic, questions, audit, confirmation_token, max_parallel)
    if not isinstance(cache, bool):
        raise InvalidReasoningInput("research_flow(cache=...): must be true or false")
    settings = resolve_settings()
    metadata = _request_metadata(audit, confirmation_token)
    shown_audit = _check_metadata_fits(metadata, settings.confirmation_token)
    logger = get_run_logger()
    step_task = with_retries(run_reasoning, settings)
    if cache:
        step_task = with_cache(step_task, expiration=timedelta(seconds=settings.step_cache_expiration))
    flow_context = FlowRunContext.get()
    flow_run_id = str(flow_context.flow_run.id) if flow_context and flow_context.flow_run else None
    report = ResearchReport(topic=topic, questions=list(given or []), audit=shown_audit, flow_run_id=flow_run_id)

    plan_record, plan_error = _run_step(step_task, "plan", plan_messages(topic, given), metadata, flow_run_id)
    report.steps.append(plan_record)
    if plan_error is not None:
        _finish(report, logger)
        raise plan_error
    plan = plan_record.content or ""
    report.plan = plan
    if given is None:
        report.questions = parse_questions(plan) or [topic]
        if report.questions == [topic]:
            logger.warning("The plan listed no questions; investigating the topic itself")

    investigations, errors = _investigate(step_task, topic, plan, report.questions, metadata, max_parallel)
    report.steps.extend(investigations)

    if errors and len(errors) == len(investigations):
        _finish(report, logger)
        raise ResearchStepsFailed(
            f"all {len(errors)} investigations failed; no synthesis was attempted "
            f"(first: {investigations[0].error_class})",
            report=report,
            failed=len(errors),
        ) from errors[0]

    findings = [(record.question or "", record.content if record.ok else None) for record in investigations]
    synthesis_record, synthesis_error = _run_step(
        step_task, "synthesis", synthesis_messages(topic, plan, findings), metadata, flow_run_id
    )
    report.steps.append(synthesis_record)
    report.synthesis = synthesis_record.content
    _finish(report, logger)
    if synthesis_error is not None:
        raise synthesis_error
    if errors:
        failed = [record for record in investigations if not record.ok]
        names = ", ".join(f"{record.step}: {record.error_class}" for record in failed)
        raise ResearchStepsFailed(
            f"{len(failed)} of {len(investigations)} investigations failed ({names}); "
            f"the synthesis used the {len(investigations) - len(failed)} that completed",
            report=report,
            failed=len(failed),
        ) from errors[0]
    return report


def _finish(report: ResearchReport, logger: Any) -> None:
    report.usage = sum((step.usage for step in report.steps), Usage())
    usage = report.usage
    logger.info(
        "Research used %d input / %d output (%d reasoning, %d cached) tokens, %d total, in %d steps (%d failed)",
        usage.input_tokens,
        usage.output_tokens,
        usage.reasoning_tokens,
        usage.cached_tokens,
        usage.total_tokens,
        len(report.steps),
        len(report.failed_steps),
    )
    _publish(report)
