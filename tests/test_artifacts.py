"""Artifacts of the bundled flows: the research report, the steps table and the check, read back through Prefect."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

from arcanos_flows.core.errors import ModelEnforcementError
from arcanos_flows.core.results import ReasoningResult, Usage
from arcanos_flows.flows.maintenance import maintenance_check_flow
from arcanos_flows.flows.research import ResearchReport, StepRecord, research_flow
from arcanos_flows.flows.research.artifacts import REPORT_KEY, STEPS_COLUMNS, STEPS_KEY, steps_table
from arcanos_flows.prefect.artifacts import CHECK_KEY, check_markdown
from arcanos_flows.testing import FakeOpenAIServer, Reply
from tests.conftest import API_KEY, MODEL

harness = pytest.mark.usefixtures("prefect_harness")


def artifacts_of(flow_run_id: Any) -> dict[str, Any]:
    """The run's artifacts by key, the last version of each (the steps table is updated while a run runs)."""
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[REPORT_KEY, STEPS_KEY, CHECK_KEY]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[uuid.UUID(str(flow_run_id))]),
            )
        )
    by_key = {artifact.key: artifact for artifact in sorted(found, key=lambda artifact: artifact.created)}
    assert [artifact.key for artifact in found].count(REPORT_KEY) <= 1  # the report is published once, at the end
    return by_key


def words(text: str) -> int:
    return len(text.split())


def test_steps_table_has_one_row_per_step_with_the_documented_columns() -> None:
    """Each step is a row: step, status, model, tokens, whole-millisecond latency, request id, attempts."""
    report = ResearchReport(
        topic="Layers",
        steps=[
            StepRecord(
                step="plan",
                status="completed",
                content="1. Who?",
                model=MODEL,
                usage=Usage(input_tokens=12, output_tokens=30, reasoning_tokens=20, total_tokens=42),
                latency_ms=812.6,
                request_id="req_1",
                attempts=2,
            ),
            StepRecord(
                step="investigate-1",
                question="Who?",
                status="failed",
                request_id="req_3",
                attempts=1,
                error_class="authentication",
            ),
        ],
    )

    assert steps_table(report) == [
        {
            "step": "plan",
            "status": "completed",
            "input_tokens": 12,
            "cached_tokens": 0,
            "output_tokens": 30,
            "reasoning_tokens": 20,
            "cost_usd": None,
            "latency_ms": 813,
            "attempts": 2,
            "error_class": None,
        },
        {
            "step": "investigate-1",
            "status": "failed",
            "input_tokens": 0,
            "cached_tokens": 0,
            "output_tokens": 0,
            "reasoning_tokens": 0,
            "cost_usd": None,
            "latency_ms": None,
            "attempts": 1,
            "error_class": "authentication",
        },
    ]
    assert tuple(steps_table(report)[0]) == STEPS_COLUMNS
    markdown = report.to_markdown()
    assert "| plan | completed | 12 | 0 | 30 | 20 |  | 813 | 2 | req_1 |" in markdown
    assert "| investigate-1 | **failed** (authentication) | 0 | 0 | 0 | 0 |  |  | 1 | req_3 |" in markdown
    assert f"**Model:** `{MODEL}`" in markdown
    assert "**Status:** 1 of 2 steps failed" in markdown


def test_check_markdown_shows_the_answer_or_the_failure_without_secrets() -> None:
    """The check's artifact shows model, usage and answer, or the failure's class; never the key."""
    result = ReasoningResult(
        content="Three layers.",
        model=MODEL,
        response_id="chatcmpl-1",
        request_id="req_9",
        usage=Usage(input_tokens=5, output_tokens=3, total_tokens=8),
        latency_ms=41.2,
    )
    assert f"| {MODEL} | 5 | 3 | 0 | 41 | req_9 | 1 |" in check_markdown(result)
    error = ModelEnforcementError(f"{MODEL} was requested but gpt-4o answered; key {API_KEY}", request_id="req_2")
    failed = check_markdown(None, error)
    assert failed.startswith("# Maintenance check: failed (model_enforcement)")
    assert "**Request id:** req_2" in failed
    assert API_KEY not in failed


@harness
def test_research_run_publishes_the_report_and_the_exact_steps_table(
    openai_server: FakeOpenAIServer, arcanos_env: dict
) -> None:
    """A research run publishes its Markdown report and its steps table under stable keys, linked to the run."""
    openai_server.always(Reply(reasoning_tokens=3))
    questions = ["Which layers exist?", "Who confirms them?"]

    state = research_flow("Confirmation layers", questions=questions, return_state=True)

    assert state.is_completed(), state.message
    report: ResearchReport = state.result()
    artifacts = artifacts_of(state.state_details.flow_run_id)
    assert set(artifacts) == {REPORT_KEY, STEPS_KEY}
    table, markdown = artifacts[STEPS_KEY], artifacts[REPORT_KEY]
    assert (table.type, markdown.type) == ("table", "markdown")

    rows = json.loads(table.data)
    assert rows == steps_table(report)
    assert [row["step"] for row in rows] == ["plan", "investigate-1", "investigate-2", "synthesis"]
    assert {row["status"] for row in rows} == {"completed"}
    assert {step.model for step in report.steps} == {MODEL}  # in the report's header, not in every row
    assert {row["reasoning_tokens"] for row in rows} == {3}
    assert {row["attempts"] for row in rows} == {1}
    steps = report.steps
    assert (steps[0].request_id, steps[-1].request_id) == ("req_1", "req_4")
    assert {steps[1].request_id, steps[2].request_id} == {"req_2", "req_3"}
    assert all(isinstance(row["latency_ms"], int) and row["latency_ms"] >= 0 for row in rows)
    # Tokens as the upstream counted them: words of the prompt in, words of the answer plus reasoning out.
    by_request = {f"req_{number}": request for number, request in enumerate(openai_server.completion_requests, 1)}
    for row, step in zip(rows, report.steps, strict=True):
        sent = by_request[step.request_id or ""].json["messages"]
        assert row["input_tokens"] == sum(words(message["content"]) for message in sent)
        assert row["output_tokens"] == words(step.content or "") + 3

    assert markdown.data == report.to_markdown()
    assert markdown.data.startswith("# Research: Confirmation layers\n")
    assert "1. Which layers exist?\n2. Who confirms them?" in markdown.data
    assert markdown.description == "Research report: Confirmation layers (4 steps)"


@harness
def test_artifacts_never_contain_the_api_key(openai_server: FakeOpenAIServer, arcanos_env: dict) -> None:
    """Answers and errors that echo the API key are published redacted: the key never reaches an artifact."""
    leaking = Reply.ok(f"The key in use is {API_KEY}.")
    openai_server.script(
        leaking,
        Reply.error(401, message=f"Incorrect API key provided: {API_KEY}."),
        leaking,
    )

    state = research_flow(f"Why is {API_KEY} rejected?", questions=["Which key?", "Why?"], return_state=True)
    assert state.is_failed()
    openai_server.always(leaking)
    check_state = maintenance_check_flow(return_state=True)
    assert check_state.is_completed()

    published = [*artifacts_of(state.state_details.flow_run_id).values()]
    published += artifacts_of(check_state.state_details.flow_run_id).values()
    assert len(published) == 3
    for artifact in published:
        assert API_KEY not in (artifact.data or "")
        assert API_KEY not in (artifact.description or "")
    assert "[REDACTED]" in artifacts_of(state.state_details.flow_run_id)[REPORT_KEY].data
