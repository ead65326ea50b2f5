"""The research flow: a plan, parallel investigations (a bounded thread pool, or the flow's task runner), a synthesis.

Every OpenAI request of a run carries the flow's ``audit`` parameter, its ``confirmation_token`` and the Prefect
identity of the run (``prefect.flow_run_id``, ``prefect.task_run_id``, ``prefect.flow``, ``prefect.deployment``).
A failed step is reported once, by the task hook, after its last retry; the flow then fails without a second
incident. Each run publishes a markdown report and a table of its steps as Prefect artifacts
(:mod:`arcanos_flows.flows.research.artifacts`).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Literal, ParamSpec, TypeVar, cast

from prefect import Task
from prefect.blocks.system import Secret
from prefect.client.schemas.objects import State
from prefect.context import FlowRunContext
from prefect.futures import PrefectFuture, wait
from prefect.logging import get_run_logger
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from pydantic import ImportString, SecretStr, TypeAdapter, ValidationError

from arcanos_flows.client import output_spec
from arcanos_flows.core.errors import BudgetExceededError, InvalidReasoningInput, classify
from arcanos_flows.core.redaction import redact, register_token
from arcanos_flows.core.results import ReasoningResult, Usage
from arcanos_flows.flows.research.artifacts import ResearchProgress, publish_research_artifacts
from arcanos_flows.flows.research.batched import investigate_in_batch
from arcanos_flows.flows.research.inputs import (
    check_metadata_fits,
    request_metadata,
    validate_parameters,
)
from arcanos_flows.flows.research.prompts import (
    ResearchPlan,
    investigation_messages,
    plan_messages,
    synthesis_messages,
)
from arcanos_flows.flows.research.report import ResearchReport, ResearchStepsFailed, StepRecord, format_cost
from arcanos_flows.incidents.model import attached_incident
from arcanos_flows.prefect.budget import RunBudget
from arcanos_flows.prefect.credentials import resolve_settings
from arcanos_flows.prefect.decorator import arcanos_flow
from arcanos_flows.prefect.hooks import delivery_of
from arcanos_flows.prefect.runs import incident_id_for
from arcanos_flows.prefect.tasks import run_reasoning, with_cache, with_retries

__all__ = ["research_flow"]

P = ParamSpec("P")
R = TypeVar("R")

_ERROR_TEXT_LIMIT = 500


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
    return StepRecord.answered(step, question, result, task_run_id)


def _failed(
    step: str, question: str | None, state: State, error: BaseException, task_run_id: Any, flow_run_id: str | None
) -> StepRecord:
    incident = attached_incident(error)
    facts = classify(error)
    incident_class = incident.incident_class if incident is not None else facts.incident_class
    incident_id = (
        str(incident_id_for(flow_run_id, task_run_id, incident_class.value))
        if task_run_id and state.is_failed()
        else None
    )
    return StepRecord(
        step=step,
        question=question,
        status="failed",
        request_id=facts.request_id,
        attempts=(incident.attempts if incident is not None else None) or facts.attempts or None,
        error_class=incident_class.value,
        error=redact(f"{type(error).__name__}: {error}")[:_ERROR_TEXT_LIMIT],
        # The task hook reported a Failed step under this id; a Crashed one gets no hook (the flow's reports it).
        incident_id=incident_id,
        incident_delivery=delivery_of(incident_id),
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
    budget: RunBudget,
    output_type: Any = None,
) -> tuple[StepRecord, BaseException | None, ReasoningResult | None]:
    if budget.exceeded:
        return _skipped(step, None), None, None
    options = {"output_type": output_type} if output_type is not None else {}
    state = step_task(messages, metadata, step, return_state=True, **options)
    task_run_id = state.state_details.task_run_id
    if state.is_completed():
        result: ReasoningResult = state.result()
        record = _completed(step, None, result, task_run_id, state)
        budget.record(record.usage)
        return record, None, result
    error = _error_of(state)
    return _failed(step, None, state, error, task_run_id, flow_run_id), error, None


def _skipped(step: str, question: str | None) -> StepRecord:
    return StepRecord(step=step, question=question, status="skipped")


def _chosen_task_runner() -> TaskRunner[Any] | None:
    """The running flow's task runner when one was chosen for it; ``None`` under Prefect's default.

    Prefect gives a flow without ``task_runner=`` an unbounded ``ThreadPoolTaskRunner()`` (its size from
    ``PREFECT_TASKS_RUNNER_THREAD_POOL_MAX_WORKERS``, else unlimited); its runs' task runner is a copy of the flow's,
    and thread pools compare equal by size. A runner equal to a fresh default is the default (or the same thing asked
    for explicitly); any other (``DaskTaskRunner``, a sized thread pool, a process pool) was chosen.
    """
    flow_context = FlowRunContext.get()
    if flow_context is None or flow_context.task_runner is None:
        return None
    runner: TaskRunner[Any] = flow_context.task_runner
    return None if runner == ThreadPoolTaskRunner() else runner


def _submit_bounded(
    submit: Callable[[dict[str, Any]], PrefectFuture[ReasoningResult]],
    calls: list[dict[str, Any]],
    max_parallel: int,
    budget: RunBudget,
    on_done: Callable[[int, PrefectFuture[ReasoningResult]], None] | None = None,
) -> list[PrefectFuture[ReasoningResult]]:
    """Submit the calls, never more than ``max_parallel`` unfinished at once; return the futures in call order.

    A call is submitted when an earlier one finishes (a slot frees in the future's done callback, after the step's
    usage is counted in ``budget``), so the runner's own capacity (a Dask cluster's workers) never lets more than
    ``max_parallel`` steps reach the upstream together. Once ``budget`` is spent, no further call is submitted: the
    futures returned are those of the calls started, in order.
    """
    slots = threading.BoundedSemaphore(max_parallel)
    futures: list[PrefectFuture[ReasoningResult]] = []

    def finished(index: int, future: PrefectFuture[ReasoningResult]) -> None:
        try:
            if budget.limited or on_done is not None:
                future.wait(0)  # done: this sets the future's final state, without asking the API for it
            if budget.limited:
                state = future.state
                if state.is_completed() and state.name != "Cached":
                    budget.record(state.result().usage)
            if on_done is not None:
                on_done(index, future)
        finally:  # counting must never keep a slot
            slots.release()

    for index, parameters in enumerate(calls):
        slots.acquire()
        if budget.exceeded:
            slots.release()
            break
        try:
            future = submit(parameters)
        except BaseException:
            slots.release()
            raise
        future.add_done_callback(functools.partial(finished, index))
        futures.append(future)
    return futures


def _investigate(
    step_task: Task[..., ReasoningResult],
    topic: str,
    plan: str,
    questions: list[str],
    metadata: dict[str, Any],
    max_parallel: int,
    budget: RunBudget,
    progress: ResearchProgress,
) -> tuple[list[StepRecord], list[BaseException]]:
    # At most `max_parallel` investigations run at once. On the flow's own task runner when one was chosen (on a
    # DaskTaskRunner: on the cluster's workers), submitted as earlier ones finish; else on a thread pool of this
    # run's size. Every future is resolved before the records are read: leaving the pool's block cancels what has not
    # started, and a failed future never resolved would leave the flow Completed.
    calls = [
        {
            "messages": investigation_messages(topic, plan, question),
            "metadata": metadata,
            "step": f"investigate-{number}",
        }
        for number, question in enumerate(questions, 1)
    ]
    flow_context = FlowRunContext.get()
    flow_run_id = str(flow_context.flow_run.id) if flow_context and flow_context.flow_run else None

    def record_of(number: int, question: str, future: PrefectFuture[ReasoningResult]) -> StepRecord:
        step = f"investigate-{number}"
        if future.state.is_completed():
            return _completed(step, question, future.result(), future.task_run_id, future.state)
        return _failed(step, question, future.state, _error_of(future.state), future.task_run_id, flow_run_id)

    def done(index: int, future: PrefectFuture[ReasoningResult]) -> None:
        progress.finished(record_of(index + 1, questions[index], future))

    flow_runner = _chosen_task_runner()
    if flow_runner is not None:
        # Task.submit goes to the flow run's task runner (the one its context started), with Prefect's bookkeeping.
        futures = _submit_bounded(lambda parameters: step_task.submit(**parameters), calls, max_parallel, budget, done)
        wait(futures)
    else:
        pool: ThreadPoolTaskRunner[ReasoningResult] = ThreadPoolTaskRunner(max_workers=max_parallel)
        with pool as runner:
            futures = _submit_bounded(
                lambda parameters: runner.submit(step_task, parameters), calls, max_parallel, budget, done
            )
            wait(futures)
    records: list[StepRecord] = []
    errors: list[BaseException] = []
    for number, question in enumerate(questions, 1):
        if number > len(futures):
            records.append(_skipped(f"investigate-{number}", question))
            progress.finished(records[-1])
            continue
        future = futures[number - 1]
        records.append(record_of(number, question, future))
        if not future.state.is_completed():
            errors.append(_error_of(future.state))
    return records, errors


def _publish(report: ResearchReport) -> None:
    try:
        publish_research_artifacts(report)
    except Exception as exc:  # the report is the run's result; a lost artifact must not hide it
        get_run_logger().warning("Could not publish the research artifacts: %s", redact(str(exc)))


@arcanos_flow(name="arcanos-research")
def research_flow(
    topic: str,
    questions: list[str] | None = None,
    audit: dict[str, str] | None = None,
    confirmation_token: SecretStr | None = None,
    max_parallel: int = 4,
    cache: bool = False,
    max_total_tokens: int | None = None,
    max_cost_usd: float | None = None,
    synthesis_type: str | None = None,
    confirmation_token_secret: str | None = None,
    mode: Literal["direct", "batch"] = "direct",
    batch_poll_interval: float = 60.0,
    batch_max_wait: float = 25 * 3600.0,
) -> ResearchReport:
    """Research a topic on the enforced model: plan, investigate each question in parallel, synthesise.

    Args:
        topic: What to research.
        questions: The questions to investigate; ``None`` lets the plan step propose up to
            :data:`MAX_PLANNED_QUESTIONS`, asked for as structured output (:class:`ResearchPlan`).
        audit: Audit metadata sent with every request of the run (shown as a parameter in the UI).
        confirmation_token: Sent in full as ``confirmation_token`` in every request's metadata, over one in ``audit``.
            A secret: Prefect masks it in the UI and API (a plain string is accepted too), and arcanos-flows masks it
            in incidents, events, artifacts and logs. A deployment's runs receive it masked, and refuse it: give them
            ``confirmation_token_secret`` or ``ARCANOS_CONFIRMATION_TOKEN`` instead (the default when not given).
        max_parallel: How many investigations run at once: on a thread pool of this size, or, when the flow is given
            a task runner (``research_flow.with_options(task_runner=DaskTaskRunner(...))``), on that runner (on Dask:
            the cluster's workers), never more than this many at a time.
        cache: Answer steps asked before (same model, API, messages and options) from Prefect's result storage,
            without a request, for ``ARCANOS_STEP_CACHE_EXPIRATION`` seconds
            (:func:`arcanos_flows.prefect.tasks.with_cache`).
            Cached steps show as ``Cached`` in the UI and ``cached``, with 0 tokens, in the report.
        max_total_tokens: Token budget of the run (default ``ARCANOS_RUN_MAX_TOKENS``): once spent, no further step
            starts (the steps not started are ``skipped`` in the report) and the run fails with
            :class:`~arcanos_flows.errors.BudgetExceededError`, one ``budget_exceeded`` incident for the run.
        max_cost_usd: Cost budget in USD (default ``ARCANOS_RUN_MAX_COST_USD``; needs the ``ARCANOS_PRICE_*``
            prices), enforced the same way.
        confirmation_token_secret: The name of a Prefect ``Secret`` block holding the confirmation token: how a
            deployment's runs get it (the "Schedule research" how-to shows a ``prefect.yaml``).
        synthesis_type: The import path (``package.module.Model``) of a pydantic model the synthesis is asked for
            as structured output; the report's ``synthesis_output`` is then that model's instance.
        mode: ``direct`` (every step a request), or ``batch``: the plan and the synthesis direct, the investigations
            as one OpenAI Batch API batch (:func:`arcanos_flows.prefect.batch.run_reasoning_batch`), at half the
            price and up to 24 h of latency. The report's ``batch`` shows its id, status history and usage.
        batch_poll_interval: With ``mode="batch"``, the longest wait in seconds between two polls of the batch.
        batch_max_wait: With ``mode="batch"``, how long the run waits for the batch before it fails with
            ``batch_timeout`` (the batch keeps running; a rerun of the flow run re-attaches to it).

    Returns:
        The :class:`ResearchReport`; also published as the artifacts ``arcanos-research-report`` and
        ``arcanos-research-steps``.

    Raises:
        InvalidReasoningInput: A parameter is invalid (checked before any request).
        ConfigurationError: Settings are missing or invalid (checked before any request).
        ResearchStepsFailed: Some investigations failed (after the synthesis of the others and the artifacts).
        BudgetExceededError: The run spent its budget before its last step (after the artifacts); ``report`` is
            attached to it.

    Examples:
        Run it ad hoc (the run is tagged ``arcanos``)::

            from arcanos_flows.flows.research.flow import research_flow

            report = research_flow(
                "Confirmation layers of the Arcanos backend",
                audit={"ticket": "OPS-7", "requested_by": "maintenance"},
                confirmation_token="ct-2025-11",
                max_parallel=4,
            )
            print(report.to_markdown())
    """
    token = _confirmation_token(confirmation_token, confirmation_token_secret)
    topic, given = validate_parameters(topic, questions, audit, token, max_parallel)
    if not isinstance(cache, bool):
        raise InvalidReasoningInput("research_flow(cache=...): must be true or false")
    _check_batch_options(mode, batch_poll_interval, batch_max_wait)
    settings = resolve_settings()
    budget = RunBudget.from_settings(settings, max_total_tokens=max_total_tokens, max_cost_usd=max_cost_usd)
    synthesis_output_type = _synthesis_type(synthesis_type)
    metadata = request_metadata(audit, token)
    shown_audit = check_metadata_fits(metadata, settings.confirmation_token)
    logger = get_run_logger()
    step_task = with_retries(run_reasoning, settings)
    if cache:
        step_task = with_cache(step_task, expiration=timedelta(seconds=settings.step_cache_expiration))
    flow_context = FlowRunContext.get()
    flow_run_id = str(flow_context.flow_run.id) if flow_context and flow_context.flow_run else None
    report = ResearchReport(
        topic=topic,
        questions=list(given or []),
        audit=shown_audit,
        confirmation_token_sent=bool(metadata.get("confirmation_token") or settings.confirmation_token),
        flow_run_id=flow_run_id,
        mode=mode,
    )
    if budget.limited:
        report.budget = {"max_total_tokens": budget.max_total_tokens, "max_cost_usd": budget.max_cost_usd}
    with ResearchProgress(report) as progress:
        if given is not None:
            progress.expect(2 + len(given))

        plan_record, plan_error, plan_result = _run_step(
            step_task,
            "plan",
            plan_messages(topic, given),
            metadata,
            flow_run_id,
            budget,
            output_type=ResearchPlan if given is None else None,
        )
        report.steps.append(plan_record)
        progress.finished(plan_record)
        if plan_error is not None:
            _finish(report, logger, budget, progress)
            raise plan_error
        plan = plan_record.content or ""
        if given is None and plan_result is not None and isinstance(plan_result.output, ResearchPlan):
            plan = plan_result.output.as_text()
            report.questions = _distinct(plan_result.output.questions) or [topic]
            if report.questions == [topic]:
                logger.warning("The plan listed no questions; investigating the topic itself")
        report.plan = plan
        progress.expect(2 + len(report.questions))

        if mode == "batch" and budget.exceeded:
            investigations = [_skipped(f"investigate-{n}", question) for n, question in enumerate(report.questions, 1)]
            errors: list[BaseException] = []
            for record in investigations:
                progress.finished(record)
        elif mode == "batch":
            investigations, errors, report.batch = investigate_in_batch(
                topic,
                plan,
                report.questions,
                metadata,
                flow_run_id,
                poll_interval=batch_poll_interval,
                max_wait=batch_max_wait,
            )
            budget.record(report.batch.usage)
            for record in investigations:
                progress.finished(record)
        else:
            investigations, errors = _investigate(
                step_task, topic, plan, report.questions, metadata, max_parallel, budget, progress
            )
        report.steps.extend(investigations)
        started = [record for record in investigations if record.status != "skipped"]

        if errors and len(errors) == len(started):
            _finish(report, logger, budget, progress)
            raise ResearchStepsFailed(
                f"all {len(errors)} investigations failed; no synthesis was attempted "
                f"(first: {investigations[0].error_class})",
                report=report,
                failed=len(errors),
            ) from errors[0]

        findings = [(record.question or "", record.content if record.ok else None) for record in investigations]
        synthesis_record, synthesis_error, synthesis_result = _run_step(
            step_task,
            "synthesis",
            synthesis_messages(topic, plan, findings),
            metadata,
            flow_run_id,
            budget,
            output_type=synthesis_output_type,
        )
        report.steps.append(synthesis_record)
        progress.finished(synthesis_record)
        report.synthesis = synthesis_record.content
        if synthesis_result is not None and synthesis_output_type is not None:
            report.synthesis_output = synthesis_result.output
        _finish(report, logger, budget, progress)
        if synthesis_error is not None:
            raise synthesis_error
        if report.skipped_steps:
            _over_budget(report, budget)
        if errors:
            failed = [record for record in investigations if not record.ok]
            names = ", ".join(f"{record.step}: {record.error_class}" for record in failed)
            raise ResearchStepsFailed(
                f"{len(failed)} of {len(investigations)} investigations failed ({names}); "
                f"the synthesis used the {len(investigations) - len(failed)} that completed; incidents: "
                + ", ".join(record.incident_id or "none" for record in failed),
                report=report,
                failed=len(failed),
            ) from errors[0]
        return report


def _finish(report: ResearchReport, logger: Any, budget: RunBudget, progress: ResearchProgress) -> None:
    progress.close()
    report.usage = sum((step.usage for step in report.steps), Usage())
    if report.budget is not None:
        report.budget.update(
            spent_tokens=budget.spent.total_tokens,
            spent_cost_usd=budget.spent.cost_usd,
            exceeded=bool(report.skipped_steps),
        )
    usage = report.usage
    logger.info(
        "Research used %d input / %d output (%d reasoning, %d cached) tokens, %d total, cost %s, in %d steps "
        "(%d failed, %d skipped)",
        usage.input_tokens,
        usage.output_tokens,
        usage.reasoning_tokens,
        usage.cached_tokens,
        usage.total_tokens,
        format_cost(usage.cost_usd, empty="unknown (no prices set)"),
        len(report.steps),
        len(report.failed_steps),
        len(report.skipped_steps),
    )
    _publish(report)


def _over_budget(report: ResearchReport, budget: RunBudget) -> None:
    """Fail the run on its budget: the error names the limit and what was spent, and carries the report."""
    skipped = ", ".join(step.step for step in report.skipped_steps)
    try:
        budget.check(skipped)
    except BudgetExceededError as exc:
        exc.report = report  # type: ignore[attr-defined]
        raise
    raise BudgetExceededError(f"the run stopped on its budget: {skipped} were not started")  # pragma: no cover


MASKED = "**********"
"""What Prefect stores (and a deployment's worker receives) for a ``SecretStr`` parameter."""


def _confirmation_token(given: SecretStr | str | None, secret_block: str | None) -> str | None:
    """The run's confirmation token: the parameter (a secret, masked in the UI and API), else the named Secret block.

    Raises:
        InvalidReasoningInput: The token reached the run masked (a deployment run: Prefect stores ``SecretStr``
            parameters as ``**********``), or both sources were given, or the block cannot be loaded.
    """
    token = given.get_secret_value() if isinstance(given, SecretStr) else given
    if token is not None and secret_block is not None:
        raise InvalidReasoningInput("research_flow: give confirmation_token or confirmation_token_secret, not both")
    if token is not None and token.strip("*") == "" and token:
        raise InvalidReasoningInput(
            "research_flow(confirmation_token=...): the token reached this run masked ('**********'): Prefect stores "
            "secret parameters masked, so a deployment's run never sees them. Give deployments the token through "
            "confirmation_token_secret (the name of a Prefect Secret block) or ARCANOS_CONFIRMATION_TOKEN in the "
            "work pool's environment"
        )
    if secret_block is not None:
        if not isinstance(secret_block, str) or not secret_block.strip():
            raise InvalidReasoningInput(
                "research_flow(confirmation_token_secret=...): must name a Prefect Secret block"
            )
        try:
            block = cast(Secret[Any], Secret.load(secret_block.strip()))  # sync code: the block, not a coroutine
            loaded = block.get()
        except (ValueError, TypeError) as exc:
            raise InvalidReasoningInput(
                f"research_flow(confirmation_token_secret={secret_block!r}): the Secret block could not be loaded "
                f"({type(exc).__name__})"
            ) from None
        token = str(loaded)
    register_token(token)
    return token


def _check_batch_options(mode: object, poll_interval: object, max_wait: object) -> None:
    if mode not in ("direct", "batch"):
        raise InvalidReasoningInput(f"research_flow(mode={mode!r}): must be 'direct' or 'batch'")
    for name, value in (("batch_poll_interval", poll_interval), ("batch_max_wait", max_wait)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise InvalidReasoningInput(f"research_flow({name}={value!r}): must be a positive number of seconds")


def _distinct(questions: list[str]) -> list[str]:
    seen: dict[str, str] = {}
    for question in questions:
        text = " ".join(question.split())
        if text and text.casefold() not in seen:
            seen[text.casefold()] = text
    return list(seen.values())


def _synthesis_type(path: str | None) -> Any:
    """The model class named by ``synthesis_type`` (checked before any request)."""
    if path is None:
        return None
    if not isinstance(path, str) or not path.strip():
        raise InvalidReasoningInput("research_flow(synthesis_type=...): must be the import path of a pydantic model")
    try:
        found = TypeAdapter(ImportString).validate_python(path.strip())
    except ValidationError:
        raise InvalidReasoningInput(
            f"research_flow(synthesis_type=...): {path!r} cannot be imported (give package.module.Model)"
        ) from None
    output_spec(found)  # a type that cannot be sent strictly fails here, before the plan's request
    return found
