"""What a run shows while and after it runs, read back from the Prefect API: progress, incidents named where the
failure is read, the confirmation token masked, and each incident naming the hook that caught it."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect import flow
from prefect.blocks.system import Secret
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    LogFilter,
    LogFilterTaskRunId,
)
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, PREFECT_LOCAL_STORAGE_PATH, temporary_settings

from arcanos_flows.core.errors import InvalidReasoningInput
from arcanos_flows.flows.research import ResearchReport, research_flow
from arcanos_flows.flows.research.artifacts import PROGRESS_KEY, STEPS_KEY
from arcanos_flows.prefect import arcanos_flow, run_reasoning
from arcanos_flows.testing import FakeOpenAIServer, Reply, WebhookReceiver

pytestmark = pytest.mark.usefixtures("prefect_harness")

MESSAGES = [{"role": "user", "content": "List the current confirmation layers."}]
QUESTIONS = ["Which confirmation layers exist?", "Who confirms each layer?", "What happens on timeout?"]
TOKEN = "ct-2026-12-very-secret-token"


@pytest.fixture(autouse=True)
def quick_runs(prefect_harness: None, tmp_path: Path) -> Iterator[None]:
    with temporary_settings(
        {PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None, PREFECT_LOCAL_STORAGE_PATH: tmp_path / "results"}
    ):
        yield


def artifacts(flow_run_id: Any, key: str) -> list[Any]:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[key]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[uuid.UUID(str(flow_run_id))]),
            )
        )
    return sorted(found, key=lambda artifact: artifact.created)


def flow_run_ids_named(name: str) -> set[str]:
    with get_client(sync_client=True) as client:
        return {str(run.id) for run in client.read_flow_runs() if run.name == name}


# --- progress while the run runs -----------------------------------------------------------------------------------


def test_the_progress_artifact_and_the_steps_table_grow_while_the_run_runs(
    openai_server: FakeOpenAIServer, arcanos_env: dict[str, str]
) -> None:
    """Steps of 0.7 s, one at a time: mid-run, the API shows a progress between 0 and 100 and a partial table."""
    openai_server.latency = 0.7
    run_name = f"progress-{uuid.uuid4().hex[:8]}"
    finished: list[ResearchReport] = []
    runner = threading.Thread(
        target=lambda: finished.append(
            research_flow.with_options(flow_run_name=run_name)(
                "Confirmation layers", questions=QUESTIONS, max_parallel=1
            )
        )
    )
    runner.start()
    seen_progress: list[float] = []
    seen_rows: list[int] = []
    deadline = time.monotonic() + 60
    while runner.is_alive() and time.monotonic() < deadline:
        for flow_run_id in flow_run_ids_named(run_name):
            for artifact in artifacts(flow_run_id, PROGRESS_KEY):
                seen_progress.append(float(artifact.data))
            tables = artifacts(flow_run_id, STEPS_KEY)
            if tables:
                seen_rows.append(len(json.loads(tables[-1].data)))
        time.sleep(0.3)
    runner.join(timeout=30)

    assert finished, "the run did not finish"
    assert any(0 < progress < 100 for progress in seen_progress), seen_progress
    assert any(0 < rows < 5 for rows in seen_rows), seen_rows  # a partial table, before the 5 steps were done
    (flow_run_id,) = flow_run_ids_named(run_name)
    (progress,) = artifacts(flow_run_id, PROGRESS_KEY)
    assert float(progress.data) == 100
    assert progress.description == "5 of 5 steps finished"
    assert len(json.loads(artifacts(flow_run_id, STEPS_KEY)[-1].data)) == 5


# --- incidents where the failure is read ------------------------------------------------------------------------------


def test_a_failed_task_run_names_its_incident_in_its_state_message_and_logs_its_delivery(
    openai_server: FakeOpenAIServer, arcanos_env: dict[str, str], receiver: WebhookReceiver
) -> None:
    openai_server.always(Reply.error(401))

    @arcanos_flow(name="arcanos-test-observe")
    def denied() -> Any:
        return run_reasoning(MESSAGES, step="denied")

    state = denied(return_state=True)

    assert state.is_failed()
    (incident,) = receiver.wait_for(1)
    body = json.loads(incident.body)
    incident_id = body["incident_id"]
    assert body["source"] == "arcanos_flows.hooks.task_on_failure"  # where it was caught, not the client
    task_run_id = uuid.UUID(body["context"]["task_run_id"])
    deadline = time.monotonic() + 20
    with get_client(sync_client=True) as client:
        while True:
            task_run = client.read_task_run(task_run_id)
            logs = [
                log.message
                for log in client.read_logs(log_filter=LogFilter(task_run_id=LogFilterTaskRunId(any_=[task_run_id])))
            ]
            done = task_run.state is not None and task_run.state.is_failed()
            if (done and any("delivered" in line for line in logs)) or time.monotonic() > deadline:
                break
            time.sleep(0.3)
    assert task_run.state is not None
    assert f"[incident {incident_id} (authentication)]" in (task_run.state.message or "")
    assert f"Incident {incident_id} (authentication) delivered" in logs
    assert f"[incident {incident_id} (authentication)]" in (state.message or "")  # the flow run says it too
    assert task_run.empirical_policy.retry_delay == 2  # a number: the UI no longer shows NaN


def test_a_failed_flow_run_message_lists_every_incident_its_run_raised_with_its_delivery(
    openai_server: FakeOpenAIServer, arcanos_env: dict[str, str], receiver: WebhookReceiver
) -> None:
    """Two steps fail on different causes: the flow run's message counts both incidents, with class and delivery."""
    openai_server.script(Reply.error(401), Reply.other_model("gpt-4o-mini"))

    @arcanos_flow(name="arcanos-test-observe-two")
    def two_failures() -> Any:
        first = run_reasoning.submit(MESSAGES, step="one")
        first.wait()
        second = run_reasoning.submit(MESSAGES, step="two")
        second.wait()
        return first.result(), second.result()

    state = two_failures(return_state=True)

    assert state.is_failed()
    incidents = [json.loads(delivery.body) for delivery in receiver.wait_for(2)]
    time.sleep(0.5)
    assert len(receiver.deliveries) == 2  # and none from the flow
    message = state.message or ""
    assert "[2 incidents raised: " in message
    for incident in incidents:
        assert f"{incident['incident_id']} ({incident['incident_class']}, delivered)" in message
    assert {incident["incident_class"] for incident in incidents} == {"authentication", "model_enforcement"}


def test_a_flow_failing_on_its_own_names_the_flow_hook_as_the_source(
    arcanos_env: dict[str, str], receiver: WebhookReceiver
) -> None:
    @arcanos_flow(name="arcanos-test-observe-flow")
    def broken() -> None:
        raise RuntimeError("the flow itself failed")

    assert broken(return_state=True).is_failed()
    (incident,) = receiver.wait_for(1)
    assert json.loads(incident.body)["source"] == "arcanos_flows.hooks.flow_on_failure"


# --- the confirmation token as a secret ---------------------------------------------------------------------------


def test_the_confirmation_token_is_masked_in_the_api_and_every_artifact_but_sent_in_full(
    openai_server: FakeOpenAIServer, arcanos_env: dict[str, str], receiver: WebhookReceiver
) -> None:
    """A plain string still works; Prefect stores it masked; the requests carry it; nothing shown holds it."""
    openai_server.reply_when("Investigate: Who confirms each layer?", Reply.error(401))

    state = research_flow("Confirmation layers", questions=QUESTIONS, confirmation_token=TOKEN, return_state=True)

    assert state.is_failed()
    assert {request.json["metadata"]["confirmation_token"] for request in openai_server.completion_requests} == {TOKEN}
    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        parameters = client.read_flow_run(flow_run_id).parameters
    assert parameters["confirmation_token"] == "**********"
    shown = [
        artifact.data
        for key in (STEPS_KEY, PROGRESS_KEY, "arcanos-research-report")
        for artifact in artifacts(flow_run_id, key)
    ]
    shown += [delivery.body.decode() for delivery in receiver.wait_for(1)]
    assert all(TOKEN not in str(text) for text in shown)
    report = artifacts(flow_run_id, "arcanos-research-report")[-1].data
    assert "confirmation_token `**********`" in report


def test_a_masked_token_reaching_a_run_is_refused_before_any_request(
    openai_server: FakeOpenAIServer, arcanos_env: dict[str, str]
) -> None:
    """What a deployment's run receives for a SecretStr parameter: refused, never sent as the token."""
    state = research_flow(
        "Confirmation layers", questions=QUESTIONS, confirmation_token="**********", return_state=True
    )

    error = state.result(raise_on_failure=False)
    assert isinstance(error, InvalidReasoningInput)
    assert "confirmation_token_secret" in str(error)
    assert openai_server.completion_requests == []


def test_deployment_runs_take_the_token_from_a_secret_block(
    openai_server: FakeOpenAIServer, arcanos_env: dict[str, str]
) -> None:
    name = f"arcanos-token-{uuid.uuid4().hex[:8]}"
    Secret(value=TOKEN).save(name)

    report = research_flow("Confirmation layers", questions=QUESTIONS[:1], confirmation_token_secret=name)

    assert report.confirmation_token_sent
    assert {request.json["metadata"]["confirmation_token"] for request in openai_server.completion_requests} == {TOKEN}
    with pytest.raises(InvalidReasoningInput, match="not both"):
        flow(
            lambda: research_flow.fn("t", questions=["q?"], confirmation_token=TOKEN, confirmation_token_secret=name)
        )()
