"""Reasoning tasks inside real Prefect flow runs: results, run identity in metadata, one retry layer, usage logs."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from conftest import API_KEY, MODEL, WEBHOOK_SECRET
from prefect import Task, flow, task
from prefect.cache_policies import INPUTS
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import State, TaskRun
from prefect.flow_engine import run_flow_sync
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, PREFECT_LOCAL_STORAGE_PATH, temporary_settings

from arcanos_flows.core.errors import InvalidReasoningInput
from arcanos_flows.core.metadata import MAX_KEYS
from arcanos_flows.core.results import ReasoningResult
from arcanos_flows.core.settings import ArcanosSettings
from arcanos_flows.incidents.model import Incident
from arcanos_flows.prefect.credentials import resolve_settings
from arcanos_flows.prefect.runs import incident_id_for, request_identity
from arcanos_flows.prefect.tasks import (
    DEFAULT_TASK_RETRIES,
    notify_maintenance,
    retry_transient_failures,
    run_reasoning,
    run_simple_prompt,
    shared_client,
    with_retries,
)
from arcanos_flows.testing import FakeOpenAIServer, Reply, WebhookReceiver

pytestmark = pytest.mark.usefixtures("prefect_harness")

FLOW_NAME = "arcanos-test-tasks"
MESSAGES = [
    {"role": "system", "content": "You are the Arcanos maintenance AI."},
    {"role": "user", "content": "List the current confirmation layers."},
]
TASK_RETRIES = 2
TRIES = TASK_RETRIES + 1


@pytest.fixture(autouse=True)
def quick_runs(prefect_harness: None, tmp_path: Path) -> Iterator[None]:
    """No heartbeat thread (its join costs ~1 s per flow run) and results stored under the test's tmp folder."""
    with temporary_settings(
        {PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None, PREFECT_LOCAL_STORAGE_PATH: tmp_path / "results"}
    ):
        yield


@pytest.fixture
def step(arcanos_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Task[..., ReasoningResult]:
    """``run_reasoning`` with the configured policy: 2 retries, no delay."""
    monkeypatch.setenv("ARCANOS_TASK_RETRIES", str(TASK_RETRIES))
    return with_retries(run_reasoning, ArcanosSettings())


def in_flow(body: Callable[[], Any]) -> State:
    """Run ``body`` as the whole of a flow run; return the run's final state."""

    @flow(name=FLOW_NAME)
    def probe() -> Any:
        return body()

    return probe(return_state=True)


def flow_run_id_of(state: State) -> str:
    return str(state.state_details.flow_run_id)


def eventually(read: Callable[[], Any], check: Callable[[Any], bool], timeout: float = 10.0) -> Any:
    """Poll the API until ``check`` holds: task-run states reach the server through events, asynchronously."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if check(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; last value: {value!r}")
        time.sleep(0.1)


def read_task_run(task_run_id: str, check: Callable[[TaskRun], bool] = lambda run: True) -> TaskRun:
    def read() -> TaskRun | None:
        with get_client(sync_client=True) as client:
            try:
                return client.read_task_run(uuid.UUID(task_run_id))
            except Exception:
                return None

    return eventually(read, lambda run: run is not None and check(run))


def sent_metadata(server: FakeOpenAIServer) -> list[dict[str, str]]:
    return [request.json.get("metadata", {}) for request in server.completion_requests]


def test_run_reasoning_returns_a_reasoning_result_in_a_task_run_named_after_the_step(
    step: Task[..., ReasoningResult], openai_server: FakeOpenAIServer
) -> None:
    """A reasoning step returns the typed result, and its task run is called ``reasoning[<step>]``."""
    openai_server.script(Reply.ok("Three layers: token, audit, human sign-off."))
    state = in_flow(lambda: step(MESSAGES, {"intent": "audit"}, step="plan"))

    result = state.result()
    assert isinstance(result, ReasoningResult)
    assert result.content == "Three layers: token, audit, human sign-off."
    assert result.model == MODEL
    assert result.attempts == 1
    assert result.request_id == "req_1"
    task_run = read_task_run(result.metadata["prefect.task_run_id"])
    assert task_run.name == "reasoning[plan]"
    assert str(task_run.flow_run_id) == flow_run_id_of(state)


def test_request_metadata_carries_caller_keys_confirmation_token_and_prefect_identity(
    step: Task[..., ReasoningResult], openai_server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each request's metadata is the caller's audit keys, the confirmation token and the run's Prefect ids."""
    monkeypatch.setenv("ARCANOS_CONFIRMATION_TOKEN", "ct-from-settings")
    state = in_flow(lambda: [step(MESSAGES, {"ticket": "OPS-7", "reviewed": True}, step=name) for name in ("a", "b")])

    results = state.result()
    sent = sent_metadata(openai_server)
    assert len(sent) == 2
    task_run_ids = {metadata["prefect.task_run_id"] for metadata in sent}
    assert len(task_run_ids) == 2
    for metadata, result in zip(sent, results, strict=True):
        assert metadata == {
            "ticket": "OPS-7",
            "reviewed": "true",
            "confirmation_token": "ct-from-settings",
            "prefect.flow_run_id": flow_run_id_of(state),
            "prefect.task_run_id": metadata["prefect.task_run_id"],
            "prefect.flow": FLOW_NAME,
        }
        uuid.UUID(metadata["prefect.task_run_id"])
        assert result.metadata == metadata
    # A caller's own confirmation token wins over the configured one.
    openai_server.clear()
    in_flow(lambda: step(MESSAGES, {"confirmation_token": "ct-from-caller"}, step="c"))
    assert sent_metadata(openai_server)[0]["confirmation_token"] == "ct-from-caller"


def test_run_simple_prompt_returns_a_reasoning_result_with_the_run_identity(
    arcanos_env: dict[str, str], openai_server: FakeOpenAIServer
) -> None:
    """``run_simple_prompt`` sends one user turn (and the system message) and names its run ``prompt[<step>]``."""
    state = in_flow(
        lambda: run_simple_prompt(
            "Status of the confirmation layers?", {"intent": "status"}, "status", system="Be brief."
        )
    )

    result = state.result()
    assert isinstance(result, ReasoningResult)
    (request,) = openai_server.completion_requests
    assert request.json["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Status of the confirmation layers?"},
    ]
    metadata = request.json["metadata"]
    assert metadata["intent"] == "status"
    assert metadata["prefect.flow_run_id"] == flow_run_id_of(state)
    assert metadata["prefect.flow"] == FLOW_NAME
    assert read_task_run(metadata["prefect.task_run_id"]).name == "prompt[status]"


@flow(name="arcanos-test-deployed")
def deployed_audit() -> ReasoningResult:
    """A flow run from a deployment: its requests name the deployment."""
    return with_retries(run_reasoning, resolve_settings())(MESSAGES, step="deployed")


def test_a_run_of_a_deployment_adds_the_deployment_name(
    arcanos_env: dict[str, str], openai_server: FakeOpenAIServer
) -> None:
    """Inside a deployment's flow run, requests also carry ``prefect.deployment``."""
    name = f"audit-{uuid.uuid4().hex[:8]}"
    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name("arcanos-test-deployed")
        deployment_id = client.create_deployment(
            flow_id=flow_id, name=name, entrypoint="tests/test_tasks.py:deployed_audit"
        )
        flow_run = client.create_flow_run_from_deployment(deployment_id)

    result = run_flow_sync(deployed_audit, flow_run=flow_run)

    assert isinstance(result, ReasoningResult)
    (metadata,) = sent_metadata(openai_server)
    assert metadata["prefect.deployment"] == name
    assert metadata["prefect.flow_run_id"] == str(flow_run.id)
    assert metadata["prefect.flow"] == "arcanos-test-deployed"


# Prefect warns that run logs without a flow run cannot go to its API; the usage line still reaches the console.
@pytest.mark.filterwarnings("ignore:Logger 'prefect.task_runs' attempted to send logs:UserWarning")
def test_a_step_called_outside_any_flow_still_names_its_task_run(
    step: Task[..., ReasoningResult], openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """Prefect runs a task called on its own as a task run: its id is sent, and its failure reported with it."""
    result = step(MESSAGES, {"intent": "adhoc"}, step="adhoc")

    assert isinstance(result, ReasoningResult)
    assert set(result.metadata) == {"intent", "prefect.task_run_id"}
    assert read_task_run(result.metadata["prefect.task_run_id"]).name == "reasoning[adhoc]"

    openai_server.always(Reply.error(401))
    with pytest.raises(openai.AuthenticationError):
        step(MESSAGES, step="adhoc-denied")
    (incident,) = receiver.incidents
    assert incident["context"]["task_run_name"] == "reasoning[adhoc-denied]"
    assert "flow_run_id" not in incident["context"]
    assert incident["incident_id"] == str(incident_id_for(None, incident["context"]["task_run_id"], "authentication"))


def test_request_identity_is_empty_outside_prefect() -> None:
    """Outside any run there is nothing to add."""
    assert request_identity() == {}


def test_identity_keys_count_against_the_16_key_limit(
    step: Task[..., ReasoningResult], openai_server: FakeOpenAIServer
) -> None:
    """13 caller keys plus the 3 Prefect keys make exactly the 16 OpenAI accepts."""
    caller = {f"k{index:02d}": "v" for index in range(MAX_KEYS - 3)}
    state = in_flow(lambda: step(MESSAGES, caller, step="full"))

    assert state.is_completed()
    (metadata,) = sent_metadata(openai_server)
    assert len(metadata) == MAX_KEYS
    assert {"prefect.flow_run_id", "prefect.task_run_id", "prefect.flow"} <= set(metadata)


@pytest.mark.parametrize(
    ("caller_keys", "explanation"),
    [
        (MAX_KEYS - 2, "14 caller keys leave room for only 2 for the 3 key(s)"),
        (MAX_KEYS, "16 caller keys leave no room"),
    ],
)
def test_caller_keys_leaving_no_room_fail_before_any_request_and_without_retries(
    step: Task[..., ReasoningResult],
    openai_server: FakeOpenAIServer,
    receiver: WebhookReceiver,
    caller_keys: int,
    explanation: str,
) -> None:
    """Too many caller keys fail the step at once, naming the limit and the keys arcanos-flows adds."""
    caller = {f"k{index:02d}": "v" for index in range(caller_keys)}
    state = in_flow(lambda: step(MESSAGES, caller, step="crowded"))

    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, InvalidReasoningInput)
    assert f"OpenAI's limit of {MAX_KEYS}" in str(error)
    assert explanation in str(error)
    assert "prefect.flow_run_id, prefect.task_run_id, prefect.flow" in str(error)
    assert openai_server.completion_requests == []
    (incident,) = receiver.incidents
    assert incident["incident_class"] == "invalid_input"
    assert incident["context"]["attempts"] == 1  # one try: invalid input is not transient


TRANSIENT = {
    "http-500": (Reply.error(500), "upstream_error"),
    "http-503": (Reply.error(503), "upstream_error"),
    "rate-limit-429": (Reply.error(429), "rate_limit"),
    "timeout": (Reply.slow(5), "timeout"),
    "connection": (Reply.drop(), "connection"),
}
NOT_TRANSIENT = {
    "http-401": (Reply.error(401), "authentication"),
    "http-404": (Reply.error(404), "not_found"),
    "http-400": (Reply.error(400), "bad_request"),
    "quota-429": (Reply.error(429, code="insufficient_quota"), "quota_exhausted"),
    "other-model": (Reply.other_model("gpt-4o"), "model_enforcement"),
    "refusal": (Reply.refused(), "refusal"),
    "malformed": (Reply.malformed(), "invalid_response"),
}


def failing_step_state(step: Task[..., ReasoningResult], server: FakeOpenAIServer, reply: Reply) -> State:
    server.always(reply)
    return in_flow(lambda: step(MESSAGES, {"intent": "audit"}, step="probe", timeout=0.3))


@pytest.mark.parametrize(("reply", "incident_class"), TRANSIENT.values(), ids=TRANSIENT.keys())
def test_transient_failures_are_retried_by_prefect_one_http_attempt_per_try(
    step: Task[..., ReasoningResult],
    openai_server: FakeOpenAIServer,
    receiver: WebhookReceiver,
    reply: Reply,
    incident_class: str,
) -> None:
    """A transient failure is tried ``task_retries + 1`` times, one HTTP attempt each, then reported once."""
    state = failing_step_state(step, openai_server, reply)

    assert state.is_failed()
    assert len(openai_server.completion_requests) == TRIES
    assert [request.headers.get("x-stainless-retry-count") for request in openai_server.completion_requests] == [
        "0"
    ] * TRIES
    (incident,) = receiver.incidents
    assert incident["incident_class"] == incident_class
    assert incident["context"]["attempts"] == TRIES
    assert incident["attempts"] == TRIES


@pytest.mark.parametrize(("reply", "incident_class"), NOT_TRANSIENT.values(), ids=NOT_TRANSIENT.keys())
def test_other_failures_fail_at_once_with_exactly_one_http_attempt(
    step: Task[..., ReasoningResult],
    openai_server: FakeOpenAIServer,
    receiver: WebhookReceiver,
    reply: Reply,
    incident_class: str,
) -> None:
    """Authentication, quota, enforcement, refusal and malformed answers are never retried."""
    state = failing_step_state(step, openai_server, reply)

    assert state.is_failed()
    assert len(openai_server.completion_requests) == 1
    (incident,) = receiver.incidents
    assert incident["incident_class"] == incident_class
    assert incident["context"]["attempts"] == 1
    assert incident["attempts"] == 1


def test_a_step_that_succeeds_on_retry_sends_no_incident_and_counts_its_tries(
    step: Task[..., ReasoningResult], openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """Retried attempts are not incidents; the result says how many tries the step took."""
    openai_server.script(Reply.error(503), Reply.drop(), Reply.ok("Recovered."))
    state = in_flow(lambda: step(MESSAGES, step="flaky"))

    result = state.result()
    assert result.content == "Recovered."
    assert result.attempts == TRIES
    assert len(openai_server.completion_requests) == TRIES
    assert receiver.deliveries == []
    # Task-run states reach the server as events, so wait for the final one, not only the last run count.
    task_run = read_task_run(
        result.metadata["prefect.task_run_id"],
        lambda run: run.run_count == TRIES and run.state is not None and run.state.is_final(),
    )
    assert task_run.state is not None
    assert task_run.state.is_completed()


def test_retry_transient_failures_also_decides_for_your_own_async_tasks(
    arcanos_env: dict[str, str], openai_server: FakeOpenAIServer
) -> None:
    """As ``retry_condition_fn`` of an async task: connection drops and 503s are retried, a 401 is not."""

    @task(retries=2, retry_delay_seconds=0, retry_condition_fn=retry_transient_failures)
    async def ask() -> str:
        return shared_client(resolve_settings()).run_simple_prompt("Status?", notify=False).content

    @flow(name=FLOW_NAME)
    async def probe() -> str:
        return await ask()

    openai_server.script(Reply.drop(), Reply.error(503), Reply.ok("All layers up."))
    assert asyncio.run(probe()) == "All layers up."
    assert len(openai_server.completion_requests) == 3

    openai_server.clear()
    openai_server.always(Reply.error(401))
    assert asyncio.run(probe(return_state=True)).is_failed()
    assert len(openai_server.completion_requests) == 1


def test_with_retries_applies_the_configured_retry_policy(make_settings: Callable[..., ArcanosSettings]) -> None:
    """``ARCANOS_TASK_RETRIES`` and ``ARCANOS_TASK_RETRY_DELAY`` become Prefect retries from a base delay."""
    configured = with_retries(run_reasoning, make_settings(task_retries=4, task_retry_delay=1.5))

    assert configured.retries == 4
    assert configured.retry_delay_seconds == 1.5  # a number: the UI shows a list of delays as NaN
    assert configured.retry_jitter_factor == 0.5
    assert configured.retry_condition_fn is retry_transient_failures
    assert configured.task_run_name == "reasoning[{step}]"
    assert configured.on_failure_hooks == run_reasoning.on_failure_hooks
    assert with_retries(run_reasoning, make_settings(task_retries=0)).retries == 0
    assert run_reasoning.retries == DEFAULT_TASK_RETRIES


def test_tasks_share_one_client_per_settings_without_sdk_retries(step: Task[..., ReasoningResult]) -> None:
    """Every task of a process uses the same SDK client for the same settings; the SDK itself never retries."""

    @task
    def client_id() -> int:
        return id(shared_client(resolve_settings()))

    state = in_flow(lambda: [step(MESSAGES, step="one"), client_id(), client_id()])
    _, first, second = state.result()

    client = shared_client(ArcanosSettings())
    assert first == second == id(client)
    assert client._openai.max_retries == 0
    assert shared_client(ArcanosSettings(max_retries=5)) is client


def test_each_step_logs_its_usage_through_the_run_logger_without_the_api_key(
    step: Task[..., ReasoningResult], caplog: pytest.LogCaptureFixture
) -> None:
    """The run log shows model, tokens, latency and request id; never the key."""
    caplog.set_level(logging.INFO)
    state = in_flow(lambda: step(MESSAGES, step="usage"))

    result = state.result()
    usage_lines = [
        record
        for record in caplog.records
        if record.name == "prefect.task_runs" and record.getMessage().startswith("reasoning[usage] answered")
    ]
    assert len(usage_lines) == 1
    line = usage_lines[0].getMessage()
    assert MODEL in line
    assert f"{result.usage.input_tokens} input / {result.usage.output_tokens} output" in line
    assert f"{result.latency_ms:.0f} ms" in line
    assert f"request {result.request_id}" in line
    assert API_KEY not in caplog.text
    assert WEBHOOK_SECRET not in caplog.text


def test_identical_calls_are_neither_cached_nor_persisted_by_default(
    step: Task[..., ReasoningResult], openai_server: FakeOpenAIServer
) -> None:
    """Each call is a fresh, billed question: two identical steps in one run make two requests; nothing is stored."""

    def twice() -> tuple[ReasoningResult, ReasoningResult]:
        return step(MESSAGES, {"intent": "audit"}, step="same"), step(MESSAGES, {"intent": "audit"}, step="same")

    first, second = in_flow(twice).result()
    assert len(openai_server.completion_requests) == 2
    assert first.request_id != second.request_id
    task_run = read_task_run(
        second.metadata["prefect.task_run_id"], lambda run: run.state is not None and run.state.is_completed()
    )
    assert task_run.state is not None
    assert task_run.state.data is None or not getattr(task_run.state.data, "storage_key", None)


def test_the_result_is_persisted_as_json_and_reads_back_typed(step: Task[..., ReasoningResult], tmp_path: Path) -> None:
    """Opted into persistence, the result is stored with Prefect's JSON serializer and loads back typed."""
    persisted = step.with_options(persist_result=True, cache_policy=INPUTS)
    state = in_flow(lambda: persisted(MESSAGES, {"intent": "audit"}, step="stored"))
    result = state.result()

    task_run = read_task_run(
        result.metadata["prefect.task_run_id"], lambda run: run.state is not None and run.state.is_completed()
    )
    assert task_run.state is not None
    record = task_run.state.data
    assert record.serializer.type == "json"
    stored = Path(record.storage_key)
    assert stored.is_relative_to(tmp_path)
    assert result.content in json.dumps(json.loads(stored.read_text()))
    assert task_run.state.result() == result
    assert ReasoningResult.model_validate_json(result.model_dump_json()) == result


def test_notify_maintenance_delivers_an_explicit_incident_with_the_run_context(
    arcanos_env: dict[str, str], receiver: WebhookReceiver
) -> None:
    """A flow can declare its results degraded; the signed incident names the run and returns to the flow."""
    state = in_flow(lambda: notify_maintenance("2 of 5 investigations failed", context={"failed": 2}))

    incident = state.result()
    assert isinstance(incident, Incident)
    (delivery,) = receiver.delivered
    assert delivery.signature_valid is True
    assert delivery.json == json.loads(incident.to_json())
    assert incident.incident_class.value == "degraded"
    assert incident.reason == "2 of 5 investigations failed"
    context = incident.context
    assert context["failed"] == 2
    assert context["flow_run_id"] == flow_run_id_of(state)
    assert context["flow_name"] == FLOW_NAME
    assert context["task_run_name"] == "notify[degraded]"
    assert incident.incident_id == incident_id_for(context["flow_run_id"], context["task_run_id"], "degraded")
    assert delivery.headers["webhook-id"] == str(incident.incident_id)


def test_retries_back_off_exponentially_and_the_task_run_shows_a_numeric_retry_delay(
    arcanos_env: dict[str, str], openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """Prefect waits the base delay (0.3 s, with jitter), the task the rest: 0.3, 0.6, 1.2 s before tries 2 to 4."""
    base = 0.3
    openai_server.script(Reply.error(503), Reply.error(503), Reply.error(503))
    step = run_reasoning.with_options(retries=3, retry_delay_seconds=base)

    @flow
    def backoff() -> ReasoningResult:
        return step(MESSAGES, step="backoff")

    result = backoff()

    assert result.attempts == 4
    arrivals = [request.at for request in openai_server.completion_requests]
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    # Prefect's jitter (factor 0.5) may shorten its part to half the base; the backoff's rest is exact.
    assert gaps[0] >= base * 0.5
    assert gaps[1] >= base * 0.5 + base
    assert gaps[2] >= base * 0.5 + 3 * base
    task_run = read_task_run(result.metadata["prefect.task_run_id"])
    assert task_run.empirical_policy.retry_delay == base
    assert receiver.incidents == []
