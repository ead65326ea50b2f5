"""The research run's report: its steps, the Markdown a reader sees, and the partial-failure exception."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from arcanos_flows.client.batch_client import BatchStatus
from arcanos_flows.core.errors import ArcanosError, IncidentClass
from arcanos_flows.core.results import ReasoningResult, Usage

__all__ = ["BatchSummary", "ResearchReport", "ResearchStepsFailed", "StepRecord", "format_cost"]


class BatchSummary(BaseModel):
    """The batch that ran a research run's investigations (``mode="batch"``).

    Attributes:
        batch_id: The batch's id (``None`` when it was never created: its input was refused).
        status: Its final status (``completed``, ``expired``, ``cancelled``, ``failed``).
        created: Whether this run created it (``False``: the run re-attached to the batch an earlier try created).
        status_history: The statuses it went through, with their times.
        steps: How many investigations it held.
        failed: How many of them failed.
        usage: Tokens of its answered rows, priced at the batch prices.

    Examples:
        >>> BatchSummary(batch_id="batch_1", status="completed", steps=3).failed
        0
    """

    batch_id: str | None = None
    status: str
    created: bool = True
    status_history: list[BatchStatus] = Field(default_factory=list)
    steps: int = 0
    failed: int = 0
    usage: Usage = Field(default_factory=Usage)


class StepRecord(BaseModel):
    """One reasoning step of a research run, as the report and the steps table show it.

    Attributes:
        step: The step's name: ``plan``, ``investigate-<n>`` or ``synthesis``.
        question: The question an investigation answered; ``None`` for plan and synthesis.
        status: ``completed``, ``cached`` (answered from the step cache, without a request), ``failed``, or
            ``skipped`` (not started: the run had spent its budget).
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
        incident_delivery: What became of it: ``delivered``, ``spooled`` or ``stdout`` (``None`` when another process
            reported it, e.g. a Dask worker).
        task_run_id: The Prefect task run of the step.
    """

    step: str
    question: str | None = None
    status: Literal["completed", "cached", "failed", "skipped"]
    content: str | None = None
    model: str | None = None
    usage: Usage = Field(default_factory=Usage)
    latency_ms: float | None = None
    request_id: str | None = None
    attempts: int | None = None
    error_class: str | None = None
    error: str | None = None
    incident_id: str | None = None
    incident_delivery: str | None = None
    task_run_id: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the step has an answer (completed or cached)."""
        return self.status in ("completed", "cached")

    @classmethod
    def answered(
        cls, step: str, question: str | None, result: ReasoningResult, task_run_id: object, *, timed: bool = True
    ) -> StepRecord:
        """The record of a step the model answered (``timed``: the result's latency is the step's own, not a batch's).

        Examples:
            >>> result = ReasoningResult(content="Three.", model="ft:m", response_id="r", latency_ms=12.5)
            >>> StepRecord.answered("plan", None, result, None).latency_ms
            12.5
        """
        return cls(
            step=step,
            question=question,
            status="completed",
            content=result.content,
            model=result.model,
            usage=result.usage,
            latency_ms=result.latency_ms if timed else None,
            request_id=result.request_id,
            attempts=result.attempts,
            task_run_id=str(task_run_id) if task_run_id else None,
        )


class ResearchReport(BaseModel):
    """What a research run found, step by step; JSON-serialisable (``model_dump_json``).

    Attributes:
        topic: The researched topic.
        questions: The questions investigated (given, or parsed from the plan).
        audit: The run's audit metadata (the confirmation token is not repeated here).
        confirmation_token_sent: Whether the requests carried a confirmation token (shown masked in the report).
        plan: The plan step's answer.
        steps: Every step: ``plan``, ``investigate-1``..., ``synthesis``.
        synthesis: The synthesis; ``None`` when it could not run.
        synthesis_output: With ``synthesis_type``, the synthesis validated as that model.
        usage: Tokens of all completed steps, and their cost when prices are set (``usage.cost_usd``).
        budget: The run's budget and what it spent, when it had one (``max_total_tokens``, ``max_cost_usd``,
            ``exceeded``).
        flow_run_id: The Prefect flow run that produced the report.
        mode: ``direct`` (one request per step) or ``batch`` (the investigations as one Batch API batch).
        batch: With ``mode="batch"``, the batch: its id, status history and usage.
    """

    topic: str
    questions: list[str] = Field(default_factory=list)
    audit: dict[str, str] = Field(default_factory=dict)
    confirmation_token_sent: bool = False
    plan: str | None = None
    steps: list[StepRecord] = Field(default_factory=list)
    synthesis: str | None = None
    synthesis_output: Any = None
    usage: Usage = Field(default_factory=Usage)
    budget: dict[str, float | int | bool | None] | None = None
    flow_run_id: str | None = None
    mode: Literal["direct", "batch"] = "direct"
    batch: BatchSummary | None = None

    @property
    def failed_steps(self) -> list[StepRecord]:
        """The steps that failed."""
        return [step for step in self.steps if step.status == "failed"]

    @property
    def skipped_steps(self) -> list[StepRecord]:
        """The steps not started because the run had spent its budget."""
        return [step for step in self.steps if step.status == "skipped"]

    def to_markdown(self) -> str:
        """The report as Markdown: synthesis, questions, a steps table and each step's findings.

        Examples:
            >>> report = ResearchReport(topic="Confirmation layers", questions=["Which layers exist?"],
            ...                         synthesis="Three layers.")
            >>> report.to_markdown().splitlines()[0]
            '# Research: Confirmation layers'
        """
        failed, skipped = self.failed_steps, self.skipped_steps
        problems = [f"{len(failed)} of {len(self.steps)} steps failed"] if failed else []
        if skipped:
            problems.append(f"{len(skipped)} skipped (budget spent)")
        status = "; ".join(problems) or "completed"
        usage = self.usage
        lines = [
            f"# Research: {_one_line(self.topic)}",
            "",
            f"**Status:** {status}  ",
            f"**Usage:** {usage.total_tokens} tokens: {usage.input_tokens} input ({usage.cached_tokens} cached) / "
            f"{usage.output_tokens} output ({usage.reasoning_tokens} reasoning)  ",
            f"**Cost:** {format_cost(usage.cost_usd)}",
        ]
        if self.budget:
            limits = [
                f"{name} {self.budget[name]}" for name in ("max_total_tokens", "max_cost_usd") if self.budget.get(name)
            ]
            state = "**spent**" if self.budget.get("exceeded") else "within"
            lines[-1] += "  "
            lines.append(f"**Budget:** {', '.join(limits)}: {state}")
        models = sorted({step.model for step in self.steps if step.model})
        lines[-1] += "  "
        lines.append(f"**Model:** {', '.join(f'`{model}`' for model in models) or '_none answered_'}  ")
        audit = [f"{_one_line(key)} `{_one_line(value)}`" for key, value in sorted(self.audit.items())]
        if self.confirmation_token_sent:
            audit.append("confirmation_token `**********`")
        lines.append(f"**Audit:** {' · '.join(_cell(item) for item in audit) or '_none_'}")
        if self.flow_run_id:
            lines.append(f"  \n**Flow run:** `{self.flow_run_id}`")
        if self.batch is not None:
            lines += ["", *_batch_lines(self.batch)]
        lines += ["", "## Synthesis", "", self.synthesis if self.synthesis is not None else "_No synthesis._"]
        if self.questions:
            lines += ["", "## Questions", ""]
            lines += [f"{number}. {_one_line(question)}" for number, question in enumerate(self.questions, 1)]
        lines += [
            "",
            "## Steps",
            "",
            "| Step | Status | Input | Cached | Output | Reasoning | Cost | ms | Tries | Request id |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for step in self.steps:
            status_cell = step.status if step.status != "failed" else f"**failed** ({step.error_class})"
            cells = [
                step.step,
                status_cell,
                str(step.usage.input_tokens),
                str(step.usage.cached_tokens),
                str(step.usage.output_tokens),
                str(step.usage.reasoning_tokens),
                "" if step.status in ("skipped", "cached") else format_cost(step.usage.cost_usd, empty=""),
                "" if step.latency_ms is None else str(round(step.latency_ms)),
                "" if step.attempts is None else str(step.attempts),
                step.request_id or "",
            ]
            lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
        lines += ["", "## Findings"]
        for step in self.steps:
            title = step.step + (f": {_one_line(step.question)}" if step.question else "")
            lines += ["", f"### {title}", ""]
            if step.ok:
                lines.append(step.content or "")
            elif step.status == "skipped":
                lines.append("_Not started: the run had spent its budget._")
            else:
                delivery = f", {step.incident_delivery}" if step.incident_delivery else ""
                incident = f" (incident `{step.incident_id}`{delivery})" if step.incident_id else ""
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


def format_cost(cost: float | None, *, empty: str = "n/a (no prices set: `ARCANOS_PRICE_*`)") -> str:
    """A cost in USD as the report shows it: to the cent above a dollar, to a millionth below.

    Examples:
        >>> format_cost(12.3456), format_cost(0.001234), format_cost(None, empty="")
        ('$12.35', '$0.001234', '')
    """
    if cost is None:
        return empty
    return f"${cost:,.2f}" if cost >= 1 else f"${cost:.6f}".rstrip("0").rstrip(".") if cost else "$0"


def _batch_lines(batch: BatchSummary) -> list[str]:
    origin = "created by this run" if batch.created else "re-attached: created by an earlier try of this run"
    history = " → ".join(f"{entry.status} {entry.at:%Y-%m-%d %H:%M:%S}Z" for entry in batch.status_history)
    usage = batch.usage
    return [
        "## Batch",
        "",
        f"**Batch:** `{batch.batch_id or 'not created'}`, {batch.status} ({origin})  ",
        f"**Rows:** {batch.steps - batch.failed} of {batch.steps} answered; {usage.total_tokens} tokens at batch "
        f"prices, cost {format_cost(usage.cost_usd)}  ",
        f"**Status history:** {history or '_none_'}",
    ]


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _cell(text: str) -> str:
    return _one_line(text).replace("|", "\\|")
