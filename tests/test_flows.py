"""The bundled flows on a real Prefect test server, over loopback HTTP: research and maintenance check."""

from __future__ import annotations

import json
import socket
import uuid
from typing import Any

import openai
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
)

from arcanos_flows.core.errors import InvalidReasoningInput, ModelEnforcementError
from arcanos_flows.flows.maintenance import CHECK_MESSAGES, maintenance_check_flow
from arcanos_flows.flows.research import (
    MAX_PLANNED_QUESTIONS,
    ResearchReport,
    ResearchStepsFailed,
    parse_questions,
    research_flow,
)
from arcanos_flows.testing import FakeOpenAIServer, RecordedRequest, Reply, WebhookReceiver
from tests.conftest import MODEL

pytestmark = pytest.mark.usefixtures("prefect_harness")

AUDIT = {"ticket": "OPS-7", "requested_by": "maintenance"}
TOKEN = "ct-2025-11"
QUESTIONS = ["Which confirmation layers exist?", "Who confirms each layer?", "What happens on timeout?"]
PLAN = json.dumps({"approach": "Map the layers, then who confirms them.", "questions": QUESTIONS})
"""The plan step's structured answer (a ResearchPlan) when the questions are the model's to propose."""


def user_text(request: RecordedRequest) -> str:
    return request.json["messages"][-1]["content"]


def investigation_requests(server: FakeOpenAIServer) -> list[RecordedRequest]:
    return [request for request in server.completion_requests if user_text(request).startswith("Investigate: ")]


def max_concurrency(requests: list[RecordedRequest], latency: float) -> int:
    """How many requests were in flight at once: each is open from its arrival until the server answers."""
    starts = [request.at for request in requests]
    return max(sum(1 for start in starts if start <= moment < start + latency) for moment in starts)


def artifacts_of(flow_run_id: Any, key: str) -> list[Any]:
    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[key]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[uuid.UUID(str(flow_run_id))]),
            )
        )


def test_parse_questions_takes_numbered_and_bulleted_lines_up_to_the_cap() -> None:
    """The plan's numbered or bulleted lines become the questions, without duplicates, at most eight."""
    plan = "Intro.\n" + "\n".join(f"{n}) Question {n}?" for n in range(1, 12)) + "\n- Question 1?\n* **Bold?**"
    assert parse_questions(plan) == [f"Question {n}?" for n in range(1, MAX_PLANNED_QUESTIONS + 1)]
    assert parse_questions("- **Bold?**\n\u2022 Dot?\nno list here") == ["Bold?", "Dot?"]
    assert parse_questions("No list at all.") == []


def test_research_metadata_reaches_every_request(openai_server: FakeOpenAIServer, arcanos_env: dict) -> None:
    """Audit parameters, the confirmation token and the Prefect ids travel with every request of a research run."""
    openai_server.script(Reply.ok(PLAN))

    state = research_flow("Confirmation layers", audit=AUDIT, confirmation_token=TOKEN, return_state=True)

    assert state.is_completed(), state.message
    report: ResearchReport = state.result()
    flow_run_id = str(state.state_details.flow_run_id)
    assert report.flow_run_id == flow_run_id
    assert report.questions == QUESTIONS
    assert [step.step for step in report.steps] == [
        "plan",
        "investigate-1",
        "investigate-2",
        "investigate-3",
        "synthesis",
    ]
    assert all(step.status == "completed" and step.model == MODEL for step in report.steps)
    assert report.synthesis
    assert report.synthesis.startswith("[fake] Synthesize the research findings on:")
    assert report.usage.total_tokens == sum(step.usage.total_tokens for step in report.steps) > 0
    assert report.audit == AUDIT

    requests = openai_server.completion_requests
    assert len(requests) == 5
    task_run_ids = set()
    for request in requests:
        metadata = request.json["metadata"]
        assert metadata["ticket"] == "OPS-7"
        assert metadata["requested_by"] == "maintenance"
        assert metadata["confirmation_token"] == TOKEN
        assert metadata["prefect.flow_run_id"] == flow_run_id
        assert metadata["prefect.flow"] == "arcanos-research"
        assert "prefect.deployment" not in metadata  # an ad-hoc run has no deployment
        task_run_ids.add(metadata["prefect.task_run_id"])
    assert task_run_ids == {step.task_run_id for step in report.steps}
    assert {user_text(request).removeprefix("Investigate: ").split("\n")[0] for request in requests[1:4]} == set(
        QUESTIONS
    )

    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(state.state_details.flow_run_id)
        this_run = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        read_back = client.read_task_runs(flow_run_filter=this_run)
        task_runs = {str(task_run.id): task_run.name for task_run in read_back}
    assert flow_run.parameters["audit"] == AUDIT
    assert flow_run.parameters["confirmation_token"] == "**********"  # a secret parameter: masked in the API
    assert "arcanos" in flow_run.tags
    # Only the flow run is tagged: a tagged task run would cost a tag-concurrency lease per step.
    assert [task_run.tags for task_run in read_back] == [[]] * 5
    assert {task_runs[step.task_run_id] for step in report.steps} == {
        "reasoning[plan]",
        "reasoning[investigate-1]",
        "reasoning[investigate-2]",
        "reasoning[investigate-3]",
        "reasoning[synthesis]",
    }


def test_given_questions_are_framed_by_the_plan_not_replaced(
    openai_server: FakeOpenAIServer, arcanos_env: dict
) -> None:
    """Explicit questions are investigated as given; the plan step still runs and sees them."""
    openai_server.script(Reply.ok("1. Something else entirely?"))

    report = research_flow("Confirmation layers", questions=["Who confirms?", "When?"])

    assert report.questions == ["Who confirms?", "When?"]
    plan_request = openai_server.completion_requests[0]
    assert "1. Who confirms?\n2. When?" in user_text(plan_request)
    assert sorted(user_text(request).split("\n")[0] for request in investigation_requests(openai_server)) == [
        "Investigate: When?",
        "Investigate: Who confirms?",
    ]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("max_parallel", "questions"), [(2, 5), (4, 8)])
def test_investigations_run_at_most_max_parallel_at_once_and_reach_it(
    openai_server: FakeOpenAIServer, arcanos_env: dict, max_parallel: int, questions: int
) -> None:
    """max_parallel bounds the investigations in flight, and that many really run together."""
    # Each investigation takes a second upstream: ample time for its siblings to start, even on a loaded machine.
    latency = 1.0
    openai_server.reply_when("Investigate: ", Reply.slow(latency))

    report = research_flow(
        "Parallelism", questions=[f"Question {n}?" for n in range(1, questions + 1)], max_parallel=max_parallel
    )

    assert [step.status for step in report.steps] == ["completed"] * (questions + 2)
    requests = investigation_requests(openai_server)
    assert len(requests) == questions
    arrivals = [round(request.at - requests[0].at, 3) for request in requests]
    assert max_concurrency(requests, latency) == max_parallel, arrivals


def test_invalid_parameters_fail_before_any_request(
    openai_server: FakeOpenAIServer, receiver: WebhookReceiver, arcanos_env: dict
) -> None:
    """Bad parameters fail the run with a message naming the problem, before anything is sent to OpenAI."""
    crowded = {f"key{n}": "v" for n in range(13)}

    state = research_flow("Topic", audit=crowded, confirmation_token=TOKEN, return_state=True)

    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, InvalidReasoningInput)
    assert "research_flow(audit=...)" in str(error)
    assert "limit of 16" in str(error)
    assert "prefect.task_run_id" in str(error)
    assert openai_server.completion_requests == []
    assert [incident["incident_class"] for incident in receiver.incidents] == ["flow_failed"]

    checks = [
        ({"topic": "   "}, "topic"),
        ({"topic": "t", "audit": {"ticket": "x" * 600}}, "'ticket'"),
        ({"topic": "t", "audit": {"prefect.flow": "mine"}}, "reserved"),
        ({"topic": "t", "questions": []}, "questions"),
        ({"topic": "t", "max_parallel": 0}, "max_parallel"),
    ]
    for arguments, named in checks:
        with pytest.raises(InvalidReasoningInput, match=named):
            research_flow.fn(**arguments)
    assert openai_server.completion_requests == []


def test_one_failed_investigation_reports_one_incident_and_fails_the_run_after_the_synthesis(
    openai_server: FakeOpenAIServer, receiver: WebhookReceiver, arcanos_env: dict
) -> None:
    """A step failing with 401 sends exactly one incident; the others are synthesised, published, and the run fails."""
    openai_server.script(Reply.ok(PLAN))
    openai_server.reply_when("Investigate: Who confirms each layer?", Reply.error(401))

    state = research_flow("Confirmation layers", audit=AUDIT, return_state=True)

    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, ResearchStepsFailed)
    assert str(error).startswith("1 of 3 investigations failed (investigate-2: authentication)")
    assert isinstance(error.__cause__, openai.AuthenticationError)
    report = error.report
    failed = [step for step in report.steps if step.status == "failed"]
    assert [(step.step, step.error_class, step.attempts) for step in failed] == [("investigate-2", "authentication", 1)]
    assert report.synthesis is not None
    assert report.steps[-1].step == "synthesis"
    synthesis_request = openai_server.completion_requests[-1]
    assert "## Who confirms each layer?\n(not investigated: the step failed)" in user_text(synthesis_request)

    incidents = receiver.incidents
    assert len(incidents) == 1, incidents
    assert incidents[0]["incident_class"] == "authentication"
    assert incidents[0]["context"]["task_run_name"] == "reasoning[investigate-2]"
    assert incidents[0]["incident_id"] == failed[0].incident_id
    assert incidents[0]["metadata"]["ticket"] == "OPS-7"

    [markdown] = artifacts_of(state.state_details.flow_run_id, "arcanos-research-report")
    assert "| investigate-2 | **failed** (authentication) |" in markdown.data
    assert f"**Failed** with `authentication` (incident `{failed[0].incident_id}`, delivered)" in markdown.data
    assert failed[0].incident_delivery == "delivered"
    # The table is updated while the run runs; its last version is the final one.
    table = max(artifacts_of(state.state_details.flow_run_id, "arcanos-research-steps"), key=lambda row: row.created)
    rows = json.loads(table.data)
    assert [(row["step"], row["status"]) for row in rows] == [
        ("plan", "completed"),
        ("investigate-1", "completed"),
        ("investigate-2", "failed"),
        ("investigate-3", "completed"),
        ("synthesis", "completed"),
    ]


def test_a_failed_plan_fails_the_run_with_one_incident(
    openai_server: FakeOpenAIServer, receiver: WebhookReceiver, arcanos_env: dict
) -> None:
    """When the plan step fails, the run fails with that error, reported once, and nothing else is asked."""
    openai_server.script(Reply.error(401))

    state = research_flow("Confirmation layers", return_state=True)

    assert state.is_failed()
    assert isinstance(state.result(raise_on_failure=False), openai.AuthenticationError)
    assert len(openai_server.completion_requests) == 1
    incidents = receiver.incidents
    assert [(incident["incident_class"], incident["context"]["task_run_name"]) for incident in incidents] == [
        ("authentication", "reasoning[plan]")
    ]


def test_a_failed_synthesis_fails_the_run_with_one_incident_and_still_publishes(
    openai_server: FakeOpenAIServer, receiver: WebhookReceiver, arcanos_env: dict
) -> None:
    """A synthesis that fails (here: refused) fails the run with its error; the report shows the failed step."""
    openai_server.reply_when("Synthesize the research findings", Reply.refused("No."))

    state = research_flow("Confirmation layers", questions=["Who confirms?"], return_state=True)

    assert state.is_failed()
    assert type(state.result(raise_on_failure=False)).__name__ == "RefusalError"
    assert [incident["incident_class"] for incident in receiver.incidents] == ["refusal"]
    # The table is updated while the run runs; its last version is the final one.
    table = max(artifacts_of(state.state_details.flow_run_id, "arcanos-research-steps"), key=lambda row: row.created)
    assert [row["status"] for row in json.loads(table.data)] == ["completed", "completed", "failed"]


def test_maintenance_check_asks_the_sample_prompt_and_publishes_its_answer(
    openai_server: FakeOpenAIServer, receiver: WebhookReceiver, arcanos_env: dict
) -> None:
    """The check sends the original module's sample prompt to the enforced model and publishes the outcome."""
    openai_server.script(Reply.ok("1. Token\n2. Signature\n3. Human review"))

    state = maintenance_check_flow(return_state=True)

    assert state.is_completed(), state.message
    result = state.result()
    assert result.model == MODEL
    assert result.content.startswith("1. Token")
    [request] = openai_server.completion_requests
    assert request.json["messages"] == [dict(message) for message in CHECK_MESSAGES]
    assert request.json["metadata"]["prefect.flow"] == "arcanos-maintenance-check"
    assert request.json["metadata"]["prefect.flow_run_id"] == str(state.state_details.flow_run_id)
    assert receiver.incidents == []
    [artifact] = artifacts_of(state.state_details.flow_run_id, "arcanos-maintenance-check")
    assert artifact.data.startswith("# Maintenance check: ok")
    assert f"| {MODEL} |" in artifact.data


def test_maintenance_check_answered_by_another_model_sends_one_model_enforcement_incident(
    openai_server: FakeOpenAIServer, receiver: WebhookReceiver, arcanos_env: dict
) -> None:
    """Another model answering fails the check at once (no retry) with exactly one model_enforcement incident."""
    openai_server.model_override = "gpt-4o-2024-08-06"

    state = maintenance_check_flow(return_state=True)

    assert state.is_failed()
    assert isinstance(state.result(raise_on_failure=False), ModelEnforcementError)
    assert len(openai_server.completion_requests) == 1
    incidents = receiver.incidents
    assert [(incident["incident_class"], incident["context"]["task_run_name"]) for incident in incidents] == [
        ("model_enforcement", "reasoning[maintenance-check]")
    ]
    [artifact] = artifacts_of(state.state_details.flow_run_id, "arcanos-maintenance-check")
    assert artifact.data.startswith("# Maintenance check: failed (model_enforcement)")


def test_maintenance_check_that_cannot_reach_the_model_sends_one_incident_after_its_retries(
    receiver: WebhookReceiver, arcanos_env: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unreachable model is retried by Prefect, then reported once as a connection incident."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{closed_port}/v1")
    monkeypatch.setenv("ARCANOS_TASK_RETRIES", "1")

    state = maintenance_check_flow(return_state=True)

    assert state.is_failed()
    assert isinstance(state.result(raise_on_failure=False), openai.APIConnectionError)
    incidents = receiver.incidents
    assert [(incident["incident_class"], incident["context"]["attempts"]) for incident in incidents] == [
        ("connection", 2)
    ]
