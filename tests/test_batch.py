"""The Batch API path against the fake server's Files and Batch APIs, through the real SDK and real Prefect runs.

Every request line is the body a direct request would send (checked against OpenAI's spec); every row is checked like
a direct answer; a batch is created once per input, whatever is retried or killed; failed rows make one incident per
class; bad input is refused before anything is uploaded.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.exceptions import ParameterTypeError
from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
from prefect.states import Scheduled
from pydantic import BaseModel

from arcanos_flows.client.batch import (
    BATCH_PRICE_FACTOR,
    FINGERPRINT_KEY,
    MAX_BATCH_REQUESTS,
    BatchStep,
    build_batch_input,
    read_batch_row,
)
from arcanos_flows.client.batch_client import BatchClient
from arcanos_flows.core.errors import BatchError, ConfigurationError, InvalidReasoningInput
from arcanos_flows.core.pricing import Pricing
from arcanos_flows.flows.batch import ROWS_KEY, reasoning_batch_flow
from arcanos_flows.flows.research import ResearchStepsFailed, research_flow
from arcanos_flows.prefect.batch import PROGRESS_KEY as BATCH_PROGRESS_KEY
from arcanos_flows.prefect.batch import BatchRun, run_reasoning_batch
from arcanos_flows.testing import FakeOpenAIServer, WebhookReceiver
from tests.conftest import API_KEY, MODEL
from tests.openapi_schemas import validate

pytestmark = pytest.mark.usefixtures("prefect_harness")

TOKEN = "confirm-7f3a9c21"


def steps(count: int, prefix: str = "q") -> list[dict[str, Any]]:
    return [
        {"step": f"{prefix}-{index}", "messages": [{"role": "user", "content": f"Question {index} on the layers"}]}
        for index in range(1, count + 1)
    ]


@pytest.fixture(autouse=True)
def quick(prefect_harness: None, openai_server: FakeOpenAIServer) -> Iterator[None]:
    openai_server.batches.delay = 0.4
    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


@flow(name="arcanos-test-batch")
def batch_flow(count: int, prefix: str = "q", output_type: Any = None, **options: Any) -> BatchRun:
    return run_reasoning_batch(
        steps(count, prefix),
        name="nightly",
        metadata={"source": "test-batch", "confirmation_token": TOKEN},
        output_type=output_type,
        poll_interval=0.05,
        max_poll_interval=0.2,
        **options,
    )


def sdk(server: FakeOpenAIServer) -> openai.OpenAI:
    return openai.OpenAI(api_key=API_KEY, base_url=server.base_url, max_retries=0)


def input_lines(server: FakeOpenAIServer, batch_id: str) -> list[dict[str, Any]]:
    with sdk(server) as client:
        batch = client.batches.retrieve(batch_id)
    stored = server.files.get(batch.input_file_id)
    assert stored is not None
    return [json.loads(line) for line in stored.data.decode().splitlines()]


def no_more_incidents(receiver: WebhookReceiver, count: int) -> list[dict[str, Any]]:
    receiver.wait_for(count, timeout=10)
    time.sleep(0.5)  # anything more would have arrived by now: the hooks deliver before the run ends
    incidents = receiver.incidents
    assert len(incidents) == count, [incident["incident_class"] for incident in incidents]
    return incidents


# --- end to end ---------------------------------------------------------------------------------------------------


def test_a_20_step_batch_end_to_end(
    openai_server: FakeOpenAIServer, arcanos_env: dict[str, str], receiver: WebhookReceiver
) -> None:
    run = batch_flow(20)

    assert run.status == "completed"
    assert run.created
    assert run.ok
    assert list(run.results) == [f"q-{index}" for index in range(1, 21)]
    assert run.results["q-7"].content == "[fake] Question 7 on the layers"
    assert all(result.model == MODEL for result in run.results.values())
    assert [entry.status for entry in run.status_history] == ["validating", "in_progress", "finalizing", "completed"]
    assert run.usage.total_tokens == sum(result.usage.total_tokens for result in run.results.values()) > 0
    assert openai_server.batches.created == 1
    assert receiver.incidents == []

    lines = input_lines(openai_server, run.batch_id)
    assert [line["custom_id"] for line in lines] == list(run.results)
    for line in lines:
        assert line["method"] == "POST"
        assert line["url"] == "/v1/chat/completions"
        validate(line["body"], "CreateChatCompletionRequest")
        assert line["body"]["model"] == MODEL  # the enforced model in every body
        metadata = line["body"]["metadata"]
        assert metadata["source"] == "test-batch"
        assert metadata["confirmation_token"] == TOKEN
        assert {"prefect.flow_run_id", "prefect.task_run_id", "prefect.flow"} <= set(metadata)
        assert line["body"]["store"] is True
    with sdk(openai_server) as client:
        raw = client.batches.with_raw_response.retrieve(run.batch_id)
    validate(json.loads(raw.http_response.content), "Batch")
    batch = raw.parse()
    assert batch.metadata is not None
    assert batch.metadata[FINGERPRINT_KEY] == run.fingerprint
    assert batch.metadata["prefect.flow_run_id"] == lines[0]["body"]["metadata"]["prefect.flow_run_id"]
    assert batch.metadata["arcanos.steps"] == "20"
    assert batch.completion_window == "24h"
    # Results serialise with the token masked (result storage, --json), while what was sent kept it.
    assert TOKEN not in run.model_dump_json()
    assert run.results["q-1"].metadata["confirmation_token"] == TOKEN


def test_the_responses_api_batches_too(
    openai_server: FakeOpenAIServer, arcanos_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARCANOS_OPENAI_API", "responses")
    run = batch_flow(3)

    assert run.endpoint == "/v1/responses"
    assert run.ok
    assert run.results["q-2"].api == "responses"
    assert run.results["q-2"].content == "[fake] Question 2 on the layers"
    for line in input_lines(openai_server, run.batch_id):
        validate(line["body"], "CreateResponse")


def test_a_row_costs_the_batch_price(
    openai_server: FakeOpenAIServer, arcanos_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARCANOS_PRICE_INPUT_PER_MTOK", "2.0")
    monkeypatch.setenv("ARCANOS_PRICE_OUTPUT_PER_MTOK", "8.0")
    run = batch_flow(2)

    direct = Pricing(input_per_mtok=2.0, output_per_mtok=8.0)
    usage = run.results["q-1"].usage
    full = direct.cost(input_tokens=usage.input_tokens, cached_tokens=0, output_tokens=usage.output_tokens)
    assert usage.cost_usd == pytest.approx(full * BATCH_PRICE_FACTOR)
    assert usage.cost_usd > 0
    assert run.usage.cost_usd == pytest.approx(sum(r.usage.cost_usd or 0 for r in run.results.values()))


class Finding(BaseModel):
    layer: str
    confirmed: bool


def test_typed_rows_validate_and_a_row_that_does_not_is_invalid_output(
    openai_server: FakeOpenAIServer, arcanos_env: dict[str, str], receiver: WebhookReceiver
) -> None:
    openai_server.batches.answer_invalid_json(["q-2"])
    run = batch_flow(3, output_type=Finding)

    assert isinstance(run.results["q-1"].output, Finding)
    assert run.failures["q-2"].incident_class == "invalid_output"
    line = input_lines(openai_server, run.batch_id)[0]
    assert line["body"]["response_format"]["type"] == "json_schema"
    (incident,) = no_more_incidents(receiver, 1)
    assert incident["incident_class"] == "invalid_output"
    assert incident["context"]["custom_ids"] == ["q-2"]


# --- nothing billed twice -------------------------------------------------------------------------------------------


def test_the_same_input_in_the_same_flow_run_re_attaches_instead_of_creating_a_second_batch(
    openai_server: FakeOpenAIServer, arcanos_env: dict[str, str]
) -> None:
    @flow(name="arcanos-test-batch-twice")
    def twice() -> tuple[BatchRun, BatchRun]:
        first = run_reasoning_batch(steps(4), name="a", poll_interval=0.05)
        again = run_reasoning_batch(steps(4), name="a", poll_interval=0.05)
        return first, again

    first, again = twice()

    assert first.created
    assert not again.created
    assert again.batch_id == first.batch_id
    assert again.results.keys() == first.results.keys()
    assert openai_server.batches.created == 1
    assert len(openai_server.files.ids) == 2  # one input, one output: nothing uploaded twice


KILLED_RUN = textwrap.dedent(
    """
    import json, sys, uuid
    from prefect.flow_engine import load_flow_run, run_flow
    from tests.test_batch import batch_flow

    flow_run = load_flow_run(uuid.UUID(sys.argv[1]))
    run = run_flow(batch_flow, flow_run=flow_run, parameters={"count": 20, "prefix": "k"})
    print(json.dumps({"batch_id": run.batch_id, "created": run.created, "steps": sorted(run.results)}))
    """
)


def test_a_run_killed_after_creating_its_batch_re_attaches_when_run_again(
    openai_server: FakeOpenAIServer, arcanos_env: dict[str, str], tmp_path: Path
) -> None:
    """The flow run's process is killed once its batch exists; the same flow run, run again, creates nothing new."""
    openai_server.batches.delay = 6.0
    with get_client(sync_client=True) as client:
        flow_run = client.create_flow_run(batch_flow, parameters={"count": 20, "prefix": "k"})
    script = tmp_path / "killed_run.py"
    script.write_text(KILLED_RUN)
    environment = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "PYTHONPATH": os.getcwd()}

    first = subprocess.Popen(
        [sys.executable, str(script), str(flow_run.id)], env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 60
    while openai_server.batches.created == 0 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    assert openai_server.batches.created == 1, first.stderr.read().decode()[-3000:] if first.stderr else ""

    with get_client(sync_client=True) as client:  # what a retry from the UI does: the run is scheduled again
        client.set_flow_run_state(flow_run.id, Scheduled(), force=True)
    again = subprocess.run(
        [sys.executable, str(script), str(flow_run.id)], env=environment, capture_output=True, text=True, timeout=120
    )

    assert again.returncode == 0, again.stderr[-3000:]
    outcome = json.loads(again.stdout.strip().splitlines()[-1])
    assert outcome["created"] is False
    assert outcome["steps"] == sorted(f"k-{index}" for index in range(1, 21))
    assert openai_server.batches.created == 1  # exactly one batch, whose rows were delivered once
    assert len(openai_server.files.ids) == 2


# --- failed rows, failed and expired batches ------------------------------------------------------------------------


def test_failed_rows_make_one_incident_per_class_with_their_count_and_ids(
    openai_server: FakeOpenAIServer, arcanos_env: dict[str, str], receiver: WebhookReceiver
) -> None:
    openai_server.batches.fail_rows({"q-3": 500, "q-7": 503, "q-9": 500})
    openai_server.batches.answer_with_model({"q-5": "gpt-4o-mini"})
    run = batch_flow(10)

    assert set(run.results) == {f"q-{index}" for index in (1, 2, 4, 6, 8, 10)}
    assert {step: failure.incident_class for step, failure in run.failures.items()} == {
        "q-3": "upstream_error",
        "q-7": "upstream_error",
        "q-9": "upstream_error",
        "q-5": "model_enforcement",
    }
    incidents = {incident["incident_class"]: incident for incident in no_more_incidents(receiver, 2)}
    upstream = incidents["upstream_error"]
    assert upstream["context"]["row_count"] == 3
    assert upstream["context"]["custom_ids"] == ["q-3", "q-7", "q-9"]
    assert upstream["context"]["batch_id"] == run.batch_id
    assert upstream["source"] == "arcanos_flows.batch"
    enforcement = incidents["model_enforcement"]
    assert "gpt-4o-mini answered" in enforcement["reason"]
    assert enforcement["context"]["custom_ids"] == ["q-5"]
    assert run.failures["q-5"].incident_id == enforcement["incident_id"]
    assert sorted(run.incidents) == sorted(incident["incident_id"] for incident in incidents.values())
    assert all(TOKEN not in json.dumps(incident) for incident in incidents.values())


def test_an_expired_batch_keeps_the_rows_that_finished_and_fails_the_rest_in_one_incident(
    openai_server: FakeOpenAIServer, arcanos_env: dict[str, str], receiver: WebhookReceiver
) -> None:
    openai_server.batches.expire_next(finished=5)
    run = batch_flow(12)

    assert run.status == "expired"
    assert run.status_history[-1].status == "expired"
    assert list(run.results) == [f"q-{index}" for index in range(1, 6)]
    assert sorted(run.failures, key=lambda step: int(step[2:])) == [f"q-{index}" for index in range(6, 13)]
    assert {failure.incident_class for failure in run.failures.values()} == {"batch_expired"}
    (incident,) = no_more_incidents(receiver, 1)
    assert incident["incident_class"] == "batch_expired"
    assert incident["context"]["row_count"] == 7
    assert openai_server.batches.created == 1  # not resubmitted


def test_a_cancelled_batch_keeps_its_finished_rows(
    openai_server: FakeOpenAIServer, arcanos_env: dict[str, str], receiver: WebhookReceiver
) -> None:
    openai_server.batches.stall_next(finished=2)
    with BatchClient() as client:
        batch_input = client.prepare(steps(4))
        batch, created = client.submit(batch_input)
        deadline = time.monotonic() + 10
        while (batch.request_counts is None or batch.request_counts.completed < 2) and time.monotonic() < deadline:
            time.sleep(0.05)
            batch = client.retrieve(batch.id)  # the batch stalls after two rows
        client.cancel(batch.id)
        batch = client.wait(batch.id, poll_interval=0.05)
        rows = client.rows(batch, batch_input)

    assert created
    assert batch.status == "cancelled"
    assert [row.ok for row in rows] == [True, True, False, False]
    assert {row.error.incident_class.value for row in rows if row.error is not None} == {"batch_cancelled"}


def test_a_failed_batch_fails_the_task_with_one_batch_failed_incident(
    openai_server: FakeOpenAIServer, arcanos_env: dict[str, str], receiver: WebhookReceiver
) -> None:
    openai_server.batches.fail_next_validation(code="invalid_request", message="Missing custom_id", line=3)
    state = batch_flow(5, return_state=True)

    assert state.is_failed()
    (incident,) = no_more_incidents(receiver, 1)
    assert incident["incident_class"] == "batch_failed"
    assert "line 3: Missing custom_id" in incident["reason"]
    assert incident["context"]["batch_id"].startswith("batch_")
    assert incident["context"]["batch_status"] == "failed"
    assert incident["source"] == "arcanos_flows.hooks.task_on_failure"


def test_a_refused_upload_is_one_batch_failed_incident(
    openai_server: FakeOpenAIServer, arcanos_env: dict[str, str], receiver: WebhookReceiver
) -> None:
    openai_server.files.max_batch_bytes = 200  # the endpoint refuses the file; the task's own limit is the API's
    state = batch_flow(5, return_state=True)

    assert state.is_failed()
    with pytest.raises(BatchError, match="refused at upload"):
        state.result()
    (incident,) = no_more_incidents(receiver, 1)
    assert incident["incident_class"] == "batch_failed"
    assert incident["http_status"] == 400
    assert openai_server.batches.created == 0


# --- bad input, refused before any upload ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "options", "named"),
    [
        ([], {}, "steps: a batch needs at least one step"),
        ([{"step": "q", "messages": [{"role": "user", "content": "x"}]}] * (MAX_BATCH_REQUESTS + 1), {}, "50001 steps"),
        ([*steps(2), {"step": "q-1", "messages": [{"role": "user", "content": "again"}]}], {}, "used twice"),
        ([{"step": "q 1", "messages": [{"role": "user", "content": "x"}]}], {}, "steps[0].step"),
        ([{"step": "q-1", "messages": [{"role": "robot", "content": "x"}]}], {}, "steps[0] ('q-1'): messages[0].role"),
        ([{"step": "q-1", "messages": [{"role": "user", "content": "x" * 5000}]}], {"max_file_bytes": 4096}, "4096"),
        ([{"step": "q-1", "messages": [{"role": "user", "content": "x"}], "metadata": {"k": "v" * 600}}], {}, "512"),
    ],
    ids=["empty", "over-50000", "duplicate", "bad-name", "bad-message", "too-large", "metadata"],
)
def test_bad_input_is_refused_before_any_upload(
    openai_server: FakeOpenAIServer,
    arcanos_env: dict[str, str],
    receiver: WebhookReceiver,
    given: list[dict[str, Any]],
    options: dict[str, Any],
    named: str,
) -> None:
    @flow(name="arcanos-test-batch-bad")
    def bad() -> BatchRun:
        return run_reasoning_batch(given, poll_interval=0.05, **options)

    state = bad(return_state=True)

    with pytest.raises(InvalidReasoningInput) as raised:
        state.result()
    assert named in str(raised.value)
    assert openai_server.files.ids == []
    assert openai_server.batches.created == 0
    assert openai_server.requests == []
    (incident,) = no_more_incidents(receiver, 1)
    assert incident["incident_class"] == "invalid_input"


# --- the pure parts -------------------------------------------------------------------------------------------------


def test_the_fingerprint_ignores_the_submitting_task_run_but_not_the_flow_run_or_the_content() -> None:
    def fingerprint(task_run: str, flow_run: str = "f1", content: str = "Hi") -> str:
        built = build_batch_input(
            [BatchStep(step="a", messages=[{"role": "user", "content": content}])],
            model=MODEL,
            api="chat",
            store=True,
            identity={"prefect.flow_run_id": flow_run, "prefect.task_run_id": task_run},
        )
        return built.fingerprint

    assert fingerprint("t1") == fingerprint("t2")
    assert fingerprint("t1") != fingerprint("t1", flow_run="f2")
    assert fingerprint("t1") != fingerprint("t1", content="Hello")


def test_a_malformed_row_is_refused_and_a_refusal_is_classed_as_a_direct_one() -> None:
    refusal = {
        "custom_id": "q-1",
        "response": {
            "status_code": 200,
            "request_id": "req_1",
            "body": {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1,
                "model": MODEL,
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": None, "refusal": "I can't help with that."},
                    }
                ],
            },
        },
        "error": None,
    }
    row = read_batch_row(json.dumps(refusal), api="chat", model=MODEL)
    assert row.error is not None
    assert row.error.incident_class.value == "refusal"
    assert row.error.request_id == "req_1"
    with pytest.raises(Exception, match="not a batch output row"):
        read_batch_row("not json", api="chat", model=MODEL)


def test_a_batch_run_round_trips_through_json(openai_server: FakeOpenAIServer, arcanos_env: dict[str, str]) -> None:
    run = batch_flow(2)
    again = BatchRun.model_validate_json(run.model_dump_json())
    assert again.results["q-1"].content == run.results["q-1"].content
    assert again.status_history == run.status_history


def test_outside_prefect_the_client_submits_and_reads_a_batch(
    openai_server: FakeOpenAIServer, arcanos_env: dict[str, str]
) -> None:
    with BatchClient() as client:
        batch_input = client.prepare(steps(3), metadata={"run": str(uuid.uuid4())})
        batch, created = client.submit(batch_input)
        again, created_again = client.submit(batch_input)
        rows = client.rows(client.wait(batch.id, poll_interval=0.05), batch_input)

    assert created
    assert not created_again
    assert again.id == batch.id
    assert [row.custom_id for row in rows] == ["q-1", "q-2", "q-3"]
    assert all(row.ok for row in rows)


# --- research_flow(mode="batch") ------------------------------------------------------------------------------------


def test_research_in_batch_mode_plans_and_synthesises_directly_and_investigates_in_one_batch(
    openai_server: FakeOpenAIServer, arcanos_env: dict[str, str], receiver: WebhookReceiver
) -> None:
    openai_server.batches.answer_with_model({"investigate-2": "gpt-4o-mini"})
    state = research_flow(
        "Confirmation layers",
        questions=["Which layers exist?", "Who confirms each?", "What on timeout?"],
        audit={"ticket": "OPS-9"},
        mode="batch",
        batch_poll_interval=0.1,
        return_state=True,
    )

    with pytest.raises(ResearchStepsFailed) as raised:
        state.result()
    report = raised.value.report
    assert report.mode == "batch"
    assert report.batch is not None
    assert report.batch.batch_id == "batch_1"
    assert report.batch.status == "completed"
    assert [entry.status for entry in report.batch.status_history][-1] == "completed"
    assert (report.batch.steps, report.batch.failed) == (3, 1)
    by_step = {step.step: step for step in report.steps}
    assert [by_step[f"investigate-{n}"].status for n in (1, 2, 3)] == ["completed", "failed", "completed"]
    assert by_step["investigate-1"].request_id == "req_batch_1_1"
    assert by_step["investigate-1"].usage.total_tokens > 0
    assert by_step["synthesis"].status == "completed"
    assert len(openai_server.completion_requests) == 2  # the plan and the synthesis; the rest went as one batch
    (incident,) = no_more_incidents(receiver, 1)  # the failed row's class, and no second one from the flow
    assert incident["incident_class"] == "model_enforcement"
    assert by_step["investigate-2"].incident_id == incident["incident_id"]
    assert by_step["investigate-2"].incident_delivery == "delivered"
    markdown = report.to_markdown()
    assert "## Batch" in markdown
    assert "`batch_1`, completed (created by this run)" in markdown
    assert "2 of 3 answered" in markdown
    for line in input_lines(openai_server, "batch_1"):
        assert line["body"]["metadata"]["ticket"] == "OPS-9"


def test_research_in_batch_mode_when_the_batch_fails_reports_one_incident(
    openai_server: FakeOpenAIServer, arcanos_env: dict[str, str], receiver: WebhookReceiver
) -> None:
    openai_server.batches.fail_next_validation(message="Invalid input", line=1)
    state = research_flow(
        "Layers", questions=["Which?", "Who?"], mode="batch", batch_poll_interval=0.1, return_state=True
    )

    with pytest.raises(ResearchStepsFailed) as raised:
        state.result()
    report = raised.value.report
    assert report.batch is not None
    assert report.batch.status == "failed"
    assert {step.error_class for step in report.steps if step.step.startswith("investigate")} == {"batch_failed"}
    (incident,) = no_more_incidents(receiver, 1)
    assert incident["incident_class"] == "batch_failed"
    assert len(openai_server.completion_requests) == 1  # the plan; no synthesis without findings


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"mode": "bulk"}, "mode: Input should be 'direct' or 'batch'"),  # Prefect checks the Literal itself
        ({"mode": "batch", "batch_poll_interval": 0}, "batch_poll_interval"),
        ({"mode": "batch", "batch_max_wait": -1}, "batch_max_wait"),
    ],
)
def test_research_batch_options_are_checked_before_any_request(
    openai_server: FakeOpenAIServer, arcanos_env: dict[str, str], options: dict[str, Any], named: str
) -> None:
    state = research_flow("Layers", questions=["Which?"], return_state=True, **options)
    with pytest.raises((InvalidReasoningInput, ParameterTypeError), match=re.escape(named)):
        state.result()
    assert openai_server.requests == []


@pytest.mark.parametrize("gateway", ["litellm", "azure"])
def test_an_explicit_gateway_refuses_the_batch_path_before_any_request(
    openai_server: FakeOpenAIServer, arcanos_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, gateway: str
) -> None:
    monkeypatch.setenv("ARCANOS_GATEWAY", gateway)
    with pytest.raises(ConfigurationError, match=f"ARCANOS_GATEWAY={gateway}"):
        BatchClient()
    assert openai_server.requests == []


@pytest.mark.parametrize(
    ("step", "named"),
    [
        ({"step": "q-1", "messages": [{"role": "user", "content": "x"}], "model": "gpt-4o"}, "unknown key 'model'"),
        ({"step": "q-1", "messages": [{"role": "user", "content": "x"}], "metadata": "ticket"}, "steps[0].metadata"),
        ({"step": 7, "messages": [{"role": "user", "content": "x"}]}, "steps[0].step"),
        ({"step": "q-1"}, "steps[0].messages"),
        ({"step": "q-1", "messages": "hello"}, "messages: must be a non-empty list"),
        ({"step": "q-1", "messages": [{"role": "user", "content": "x"}], "max_output_tokens": -5}, "max_output_tokens"),
    ],
    ids=["model", "metadata", "step-type", "no-messages", "messages-type", "options"],
)
def test_a_malformed_step_is_named_before_anything_is_built(step: dict[str, Any], named: str) -> None:
    with pytest.raises(InvalidReasoningInput, match=re.escape(named)):
        build_batch_input([step], model=MODEL, api="chat", store=True)


# --- the deployable batch flow --------------------------------------------------------------------------------------


def rows_artifact(flow_run_id: uuid.UUID) -> list[dict[str, Any]]:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    (table,) = [artifact for artifact in found if artifact.key == ROWS_KEY]
    return json.loads(table.data) if isinstance(table.data, str) else table.data


def test_the_batch_flow_returns_its_rows_and_publishes_them(
    openai_server: FakeOpenAIServer, arcanos_env: dict[str, str], receiver: WebhookReceiver
) -> None:
    state = reasoning_batch_flow(steps(3), audit={"ticket": "OPS-3"}, poll_interval=0.1, return_state=True)

    run = state.result()
    assert list(run.results) == ["q-1", "q-2", "q-3"]
    rows = rows_artifact(state.state_details.flow_run_id)
    assert [(row["step"], row["status"]) for row in rows] == [
        ("q-1", "completed"),
        ("q-2", "completed"),
        ("q-3", "completed"),
    ]
    assert all(row["input_tokens"] > 0 for row in rows)
    for line in input_lines(openai_server, run.batch_id):
        assert line["body"]["metadata"]["ticket"] == "OPS-3"
        assert line["body"]["metadata"]["prefect.flow"] == "arcanos-reasoning-batch"
    assert receiver.incidents == []


def test_the_batch_flow_fails_on_failed_rows_with_one_incident_per_class_and_none_from_the_flow(
    openai_server: FakeOpenAIServer, arcanos_env: dict[str, str], receiver: WebhookReceiver
) -> None:
    openai_server.batches.answer_with_model({"q-2": "gpt-4o-mini"})
    state = reasoning_batch_flow(steps(3), poll_interval=0.1, return_state=True)

    assert state.is_failed()
    assert "1 of 3 rows of batch batch_1 failed (model_enforcement: q-2)" in (state.message or "")
    (incident,) = no_more_incidents(receiver, 1)
    assert incident["incident_class"] == "model_enforcement"
    rows = {row["step"]: row for row in rows_artifact(state.state_details.flow_run_id)}
    assert rows["q-2"]["status"] == "failed"
    assert rows["q-2"]["incident_id"] == incident["incident_id"]


def test_the_batch_shows_its_progress_while_the_task_waits(
    openai_server: FakeOpenAIServer, arcanos_env: dict[str, str]
) -> None:
    openai_server.batches.delay = 1.5
    state = batch_flow(6, return_state=True)

    assert state.is_completed()
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        )
    (progress,) = [artifact for artifact in found if artifact.key == BATCH_PROGRESS_KEY]
    assert float(progress.data) == 100
    assert progress.description == "Batch batch_1: 6 of 6 rows (completed)"


# --- async flows ----------------------------------------------------------------------------------------------------


def test_in_an_async_flow_the_batch_is_awaited_and_the_event_loop_runs_on_while_it_waits(
    openai_server: FakeOpenAIServer, arcanos_env: dict[str, str]
) -> None:
    """`await run_reasoning_batch(...)` runs the async twin: a ticker keeps ticking while the batch takes 1.5 s."""
    openai_server.batches.delay = 1.5

    @flow(name="arcanos-test-batch-async")
    async def nightly() -> tuple[BatchRun, float, int]:
        ticks: list[float] = []
        done = asyncio.Event()

        async def ticker() -> None:
            while not done.is_set():
                ticks.append(time.monotonic())
                await asyncio.sleep(0.05)

        ticking = asyncio.create_task(ticker())
        run = await run_reasoning_batch(steps(4), name="async", poll_interval=0.05, max_poll_interval=0.2)
        done.set()
        await ticking
        gaps = [later - earlier for earlier, later in itertools.pairwise(ticks)]
        return run, max(gaps), len(ticks)

    state = asyncio.run(nightly(return_state=True))
    run, longest_gap, ticks = state.result()

    assert list(run.results) == ["q-1", "q-2", "q-3", "q-4"]
    assert ticks > 15  # the loop ticked through the 1.5 s the batch took
    assert longest_gap < 0.5, longest_gap
    assert openai_server.batches.created == 1
    assert input_lines(openai_server, run.batch_id)[0]["body"]["metadata"]["prefect.flow"] == "arcanos-test-batch-async"
    with get_client(sync_client=True) as client:  # the progress artifact, written from the worker thread
        found = client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        )
    (progress,) = [artifact for artifact in found if artifact.key == BATCH_PROGRESS_KEY]
    assert progress.description == "Batch batch_1: 4 of 4 rows (completed)"
