"""Typed steps, cost and budgets in real Prefect flow runs against the fake server: one incident per run, no request
after the budget is spent, typed results through Prefect's JSON serializer and the step cache."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect import flow
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, PREFECT_LOCAL_STORAGE_PATH, temporary_settings
from pydantic import BaseModel, Field

from arcanos_flows.core.errors import BudgetExceededError, InvalidReasoningInput
from arcanos_flows.core.settings import ArcanosSettings
from arcanos_flows.flows.research import ResearchReport, research_flow
from arcanos_flows.flows.research.prompts import ResearchPlan
from arcanos_flows.prefect import arcanos_flow, arun_reasoning, run_budget, run_reasoning, with_cache, with_retries
from arcanos_flows.testing import FakeOpenAIServer, RecordedRequest, Reply, WebhookReceiver

pytestmark = pytest.mark.usefixtures("prefect_harness")

MESSAGES = [{"role": "user", "content": "List the current confirmation layers."}]
QUESTIONS = ["Which confirmation layers exist?", "Who confirms each layer?", "What happens on timeout?"]
PLAN = json.dumps({"approach": "Map the layers, then who confirms them.", "questions": QUESTIONS})


class Finding(BaseModel):
    layer: str
    confirmed_by: list[str] = Field(max_length=3)


class Verdict(BaseModel):
    """A synthesis of a declared shape (``synthesis_type``)."""

    summary: str
    risks: list[str]


@pytest.fixture(autouse=True)
def quick_runs(prefect_harness: None, tmp_path: Path) -> Iterator[None]:
    with temporary_settings(
        {PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None, PREFECT_LOCAL_STORAGE_PATH: tmp_path / "results"}
    ):
        yield


def user_text(request: RecordedRequest) -> str:
    return str(request.json["messages"][-1]["content"])


def investigation_requests(server: FakeOpenAIServer) -> list[RecordedRequest]:
    return [request for request in server.completion_requests if user_text(request).startswith("Investigate: ")]


# --- typed steps ----------------------------------------------------------------------------------------------


def test_a_typed_step_returns_its_instance_and_a_cached_rerun_returns_the_same_instance(
    openai_server: FakeOpenAIServer, arcanos_env: dict[str, str]
) -> None:
    """The JSON result serializer and the cache: the second run answers from storage, typed, without a request."""
    step = with_cache(run_reasoning)
    topic = f"layers {uuid.uuid4().hex[:8]}"

    @flow
    def typed() -> Any:
        return step([{"role": "user", "content": topic}], step="finding", output_type=Finding)

    first = typed()
    second = typed()

    assert isinstance(first.output, Finding)
    assert isinstance(second.output, Finding)
    assert second.output == first.output
    assert len(openai_server.completion_requests) == 1


def test_an_async_typed_step_reasks_and_counts_both_attempts(
    openai_server: FakeOpenAIServer, arcanos_env: dict[str, str], receiver: WebhookReceiver
) -> None:
    import asyncio

    openai_server.script(Reply.invalid_json())

    @flow
    async def typed() -> Any:
        return await arun_reasoning(MESSAGES, step="finding", output_type=Finding)

    result = asyncio.run(typed())

    assert isinstance(result.output, Finding)
    assert result.attempts == 2
    assert receiver.incidents == []


def test_a_step_whose_answers_never_validate_is_one_invalid_output_incident(
    openai_server: FakeOpenAIServer, arcanos_env: dict[str, str], receiver: WebhookReceiver
) -> None:
    """Not retried by Prefect (not transient): 2 HTTP attempts (the re-ask), one incident from the task hook."""
    openai_server.always(Reply.invalid_json())
    step = with_retries(run_reasoning, ArcanosSettings())

    @arcanos_flow(name="arcanos-test-typed")
    def typed() -> Any:
        return step(MESSAGES, step="finding", output_type=Finding)

    state = typed(return_state=True)

    assert state.is_failed()
    assert len(openai_server.completion_requests) == 2
    (incident,) = receiver.wait_for(1)
    body = json.loads(incident.body)
    assert body["incident_class"] == "invalid_output"
    assert body["context"]["task_run_name"] == "reasoning[finding]"
    assert len(receiver.incidents) == 1


# --- the research flow: a structured plan, cost, budgets ---------------------------------------------------------


def test_the_plan_step_asks_for_its_questions_as_structured_output(
    openai_server: FakeOpenAIServer, arcanos_env: dict[str, str]
) -> None:
    openai_server.script(Reply.ok(PLAN))

    report: ResearchReport = research_flow("Confirmation layers")

    plan_request = openai_server.completion_requests[0]
    schema = plan_request.json["response_format"]["json_schema"]
    assert schema["strict"] is True
    assert schema["schema"]["properties"]["questions"]["maxItems"] == 8
    assert report.questions == QUESTIONS
    assert report.plan == ResearchPlan.model_validate_json(PLAN).as_text()
    asked = [user_text(request).splitlines()[0] for request in investigation_requests(openai_server)]
    assert sorted(asked) == sorted(f"Investigate: {question}" for question in QUESTIONS)


def test_the_plan_questions_from_the_fake_server_are_distinct_questions(
    openai_server: FakeOpenAIServer, arcanos_env: dict[str, str]
) -> None:
    """Unscripted, the fake answers the plan's schema: the run investigates what it proposed."""
    report: ResearchReport = research_flow("Confirmation layers")

    assert 1 <= len(report.questions) <= 8
    assert len(set(report.questions)) == len(report.questions)
    assert len(investigation_requests(openai_server)) == len(report.questions)


def test_the_report_shows_tokens_and_cost_per_step_and_for_the_run(
    openai_server: FakeOpenAIServer, arcanos_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARCANOS_PRICE_INPUT_PER_MTOK", "2.50")
    monkeypatch.setenv("ARCANOS_PRICE_OUTPUT_PER_MTOK", "10.00")

    report: ResearchReport = research_flow("Confirmation layers", questions=QUESTIONS[:2])

    per_step = [step.usage.cost_usd for step in report.steps]
    assert all(cost is not None and cost > 0 for cost in per_step)
    expected = sum(
        (step.usage.input_tokens * 2.5 + step.usage.output_tokens * 10.0) / 1_000_000 for step in report.steps
    )
    assert report.usage.cost_usd == pytest.approx(expected, abs=1e-6)
    markdown = report.to_markdown()
    assert f"**Usage:** {report.usage.total_tokens} tokens" in markdown
    assert "**Cost:** $" in markdown
    assert json.loads(report.model_dump_json())["usage"]["cost_usd"] == report.usage.cost_usd


def test_a_budget_spent_by_the_plan_stops_the_run_before_any_investigation(
    openai_server: FakeOpenAIServer, arcanos_env: dict[str, str], receiver: WebhookReceiver
) -> None:
    """0 investigation requests, every later step ``skipped``, BudgetExceededError, one incident for the run."""
    state = research_flow("Confirmation layers", questions=QUESTIONS, max_total_tokens=5, return_state=True)

    assert state.is_failed()
    assert len(openai_server.completion_requests) == 1  # the plan only
    assert investigation_requests(openai_server) == []
    error = state.result(raise_on_failure=False)
    assert isinstance(error, BudgetExceededError)
    assert error.limit_name == "max_total_tokens"
    assert error.limit == 5
    assert error.spent > 5
    report: ResearchReport = error.report  # type: ignore[attr-defined]
    assert [step.status for step in report.steps] == ["completed", "skipped", "skipped", "skipped", "skipped"]
    assert report.budget is not None
    assert report.budget["exceeded"] is True
    (incident,) = receiver.wait_for(1)
    body = json.loads(incident.body)
    assert body["incident_class"] == "budget_exceeded"
    assert body["context"]["budget_limit_name"] == "max_total_tokens"
    assert body["context"]["budget_spent"] == error.spent
    assert body["context"]["budget_limit"] == 5
    assert len(receiver.incidents) == 1


def test_a_budget_from_the_environment_applies_when_the_parameter_is_not_given(
    openai_server: FakeOpenAIServer, arcanos_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARCANOS_RUN_MAX_TOKENS", "1")

    state = research_flow("Confirmation layers", questions=QUESTIONS, return_state=True)

    assert state.is_failed()
    assert isinstance(state.result(raise_on_failure=False), BudgetExceededError)
    assert len(openai_server.completion_requests) == 1


def test_a_budget_large_enough_lets_the_run_finish_and_shows_what_it_spent(
    openai_server: FakeOpenAIServer, arcanos_env: dict[str, str]
) -> None:
    report: ResearchReport = research_flow("Confirmation layers", questions=QUESTIONS, max_total_tokens=1_000_000)

    assert report.budget is not None
    assert report.budget["exceeded"] is False
    assert report.budget["spent_tokens"] == report.usage.total_tokens
    assert "**Budget:** max_total_tokens 1000000: within" in report.to_markdown()


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"max_total_tokens": 0}, "max_total_tokens"),
        ({"max_total_tokens": -10}, "max_total_tokens"),
        ({"max_cost_usd": 0.0}, "max_cost_usd"),
        ({"max_cost_usd": -1.0}, "max_cost_usd"),
        ({"max_cost_usd": 5.0}, "costs are unknown without prices"),
        ({"synthesis_type": "no.such.module.Model"}, "synthesis_type"),
    ],
)
def test_a_bad_budget_is_refused_before_any_request(
    openai_server: FakeOpenAIServer, arcanos_env: dict[str, str], options: dict[str, Any], named: str
) -> None:
    state = research_flow("Confirmation layers", questions=QUESTIONS, return_state=True, **options)

    error = state.result(raise_on_failure=False)
    assert isinstance(error, InvalidReasoningInput)
    assert named in str(error)
    assert openai_server.completion_requests == []


def test_a_synthesis_of_a_declared_shape(openai_server: FakeOpenAIServer, arcanos_env: dict[str, str]) -> None:
    report: ResearchReport = research_flow(
        "Confirmation layers", questions=QUESTIONS[:1], synthesis_type=f"{__name__}.Verdict"
    )

    assert isinstance(report.synthesis_output, Verdict)
    synthesis_request = openai_server.completion_requests[-1]
    assert synthesis_request.json["response_format"]["json_schema"]["name"] == "Verdict"


# --- run_budget in a flow of your own ----------------------------------------------------------------------------


def test_run_budget_stops_a_users_flow_with_one_incident(
    openai_server: FakeOpenAIServer, arcanos_env: dict[str, str], receiver: WebhookReceiver
) -> None:
    """The first step spends the budget; the second is refused before its request; one incident for the run."""

    @arcanos_flow(name="arcanos-test-budget")
    def capped() -> list[str]:
        with run_budget(max_total_tokens=5) as budget:
            first = run_reasoning(MESSAGES, step="first")
            assert budget.spent.total_tokens == first.usage.total_tokens
            second = run_reasoning(MESSAGES, step="second")
        return [first.content, second.content]

    state = capped(return_state=True)

    assert state.is_failed()
    assert len(openai_server.completion_requests) == 1
    error = state.result(raise_on_failure=False)
    assert isinstance(error, BudgetExceededError)
    assert "reasoning[second] was not started" in str(error)
    (incident,) = receiver.wait_for(1)
    assert json.loads(incident.body)["incident_class"] == "budget_exceeded"
    assert len(receiver.incidents) == 1


def test_run_budget_counts_mapped_steps_on_the_thread_pool(
    openai_server: FakeOpenAIServer, arcanos_env: dict[str, str]
) -> None:
    @flow
    def mapped() -> int:
        with run_budget(max_total_tokens=10_000_000) as budget:
            results = run_reasoning.map([MESSAGES] * 4, step=[f"s{n}" for n in range(4)]).result()
            return budget.spent.total_tokens - sum(result.usage.total_tokens for result in results)

    assert mapped() == 0


def test_run_budget_refuses_a_bad_limit_before_any_request(
    openai_server: FakeOpenAIServer, arcanos_env: dict[str, str]
) -> None:
    with pytest.raises(InvalidReasoningInput, match="max_total_tokens"), run_budget(max_total_tokens=0):
        pass
    assert openai_server.completion_requests == []
