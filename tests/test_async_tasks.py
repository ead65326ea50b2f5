"""Async reasoning tasks in real async Prefect flow runs: results, identity, concurrency, retries, dispatch, tags."""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import API_KEY, MODEL
from prefect import Task, flow, tags, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import State, TaskRun
from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, PREFECT_LOCAL_STORAGE_PATH, temporary_settings

from arcanos_flows.core.results import ReasoningResult
from arcanos_flows.core.settings import CREDENTIALS_BLOCK_VARIABLE, ArcanosSettings
from arcanos_flows.prefect import (
    arcanos_flow,
    arun_reasoning,
    arun_simple_prompt,
    run_reasoning,
    shared_async_client,
    with_cache,
    with_retries,
)
from arcanos_flows.prefect.credentials import ArcanosCredentials, resolve_settings
from arcanos_flows.prefect.runs import incident_id_for
from arcanos_flows.testing import FakeOpenAIServer, Reply, WebhookReceiver

pytestmark = pytest.mark.usefixtures("prefect_harness")

FLOW_NAME = "arcanos-test-async-tasks"
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
def configured(arcanos_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> ArcanosSettings:
    """The environment's settings with the configured retry policy: 2 retries, no delay."""
    monkeypatch.setenv("ARCANOS_TASK_RETRIES", str(TASK_RETRIES))
    return ArcanosSettings()


@pytest.fixture
def astep(configured: ArcanosSettings) -> Task[..., Any]:
    """``arun_reasoning`` with the configured policy."""
    return with_retries(arun_reasoning, configured)


def in_async_flow(body: Callable[[], Awaitable[Any]], name: str = FLOW_NAME) -> State:
    """Await ``body`` as the whole of an async flow run; return the run's final state."""

    @flow(name=name)
    async def probe() -> Any:
        return await body()

    state: State = asyncio.run(probe(return_state=True))
    return state


def read_task_run(task_run_id: str, timeout: float = 15) -> TaskRun:
    """The task run, once the server has recorded it (from the events the task emits; under load, after the flow)."""
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            try:
                return client.read_task_run(uuid.UUID(task_run_id))
            except (ObjectNotFound, PrefectHTTPStatusError):
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.2)


def task_run_name(task_run_id: str) -> str | None:
    """The task run's name, or ``None`` while the server has not recorded the run yet."""
    try:
        return read_task_run(task_run_id).name
    except (ObjectNotFound, PrefectHTTPStatusError):
        return None


def sent_metadata(server: FakeOpenAIServer) -> list[dict[str, str]]:
    return [request.json.get("metadata", {}) for request in server.completion_requests]


# --- the async tasks --------------------------------------------------------------------------------------------


def test_an_awaited_step_returns_its_result_with_the_run_identity_and_logs_its_usage(
    astep: Task[..., Any], openai_server: FakeOpenAIServer, caplog: pytest.LogCaptureFixture
) -> None:
    """``await arun_reasoning(...)``: the typed result, a ``reasoning[<step>]`` run, Prefect ids in the metadata."""
    caplog.set_level(logging.INFO)
    openai_server.script(Reply.ok("Three layers: token, audit, human sign-off."))
    state = in_async_flow(lambda: astep(MESSAGES, {"ticket": "OPS-7"}, step="plan"))

    result = state.result()
    assert isinstance(result, ReasoningResult)
    assert (result.content, result.model, result.attempts) == ("Three layers: token, audit, human sign-off.", MODEL, 1)
    (metadata,) = sent_metadata(openai_server)
    assert metadata == {
        "ticket": "OPS-7",
        "prefect.flow_run_id": str(state.state_details.flow_run_id),
        "prefect.task_run_id": metadata["prefect.task_run_id"],
        "prefect.flow": FLOW_NAME,
    }
    assert result.metadata == metadata
    task_run = read_task_run(metadata["prefect.task_run_id"])
    assert task_run.name == "reasoning[plan]"
    assert str(task_run.flow_run_id) == str(state.state_details.flow_run_id)
    (usage,) = [record.getMessage() for record in caplog.records if "reasoning[plan] answered" in record.getMessage()]
    assert f"request {result.request_id}, 1 attempt(s)" in usage
    assert API_KEY not in caplog.text


def test_arun_simple_prompt_sends_one_user_turn_in_a_prompt_run(
    arcanos_env: dict[str, str], openai_server: FakeOpenAIServer
) -> None:
    """``arun_simple_prompt`` asks the system message and the question, in a run named ``prompt[<step>]``."""
    state = in_async_flow(
        lambda: arun_simple_prompt("Status of the layers?", {"intent": "status"}, "status", system="Be brief.")
    )

    assert isinstance(state.result(), ReasoningResult)
    (request,) = openai_server.completion_requests
    assert request.json["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Status of the layers?"},
    ]
    assert request.json["metadata"]["intent"] == "status"
    task_run_id = request.json["metadata"]["prefect.task_run_id"]
    deadline = time.monotonic() + 15
    # The server records the run (and its name) from the events the task emits; under load they may land a moment
    # after the flow ends, and until then the API answers 404 for the task run.
    while (name := task_run_name(task_run_id)) != "prompt[status]" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert name == "prompt[status]"


def test_gathered_steps_run_at_once_on_one_client_closed_with_the_loop(
    astep: Task[..., Any], openai_server: FakeOpenAIServer
) -> None:
    """``asyncio.gather`` of awaited steps: the requests overlap, all on the loop's one client, closed at its end."""
    count, latency = 6, 0.4
    openai_server.latency = latency

    async def gathered() -> tuple[list[ReasoningResult], Any]:
        results = await asyncio.gather(*(astep(MESSAGES, step=f"q{index}") for index in range(count)))
        return list(results), await shared_async_client(resolve_settings())

    state = in_async_flow(gathered)

    results, client = state.result()
    assert sorted(result.metadata["prefect.task_run_id"] for result in results) == sorted(
        metadata["prefect.task_run_id"] for metadata in sent_metadata(openai_server)
    )
    arrivals = sorted(request.at for request in openai_server.completion_requests)
    # One after the other, each request would arrive after the previous one was answered (`latency` later).
    assert arrivals[-1] - arrivals[0] < latency, arrivals
    assert client._openai.is_closed()  # the loop's clients are closed when asyncio.run ends it


def test_a_failure_reported_to_a_webhook_that_does_not_answer_never_stalls_the_other_steps(
    astep: Task[..., Any],
    openai_server: FakeOpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
    spool: Path,
) -> None:
    """The task hook delivers in a worker thread in async runs: while it waits on the webhook, the loop runs on."""
    timeout = 0.8
    with socket.create_server(("127.0.0.1", 0), backlog=16) as silent:  # accepts connections, never answers
        monkeypatch.setenv("ARCANOS_MAINTENANCE_WEBHOOK", f"http://127.0.0.1:{silent.getsockname()[1]}/hook")
        monkeypatch.setenv("ARCANOS_WEBHOOK_TIMEOUT", str(timeout))
        openai_server.always(Reply.error(401))
        ticks: list[float] = []
        reported: list[float] = []

        async def failing_step_and_a_ticker() -> None:
            async def failing() -> None:
                try:
                    await astep(MESSAGES, step="denied")
                finally:
                    reported.append(time.monotonic())

            async def ticker() -> None:
                while not reported:
                    ticks.append(time.monotonic())
                    await asyncio.sleep(0.02)
                ticks.append(time.monotonic())

            await asyncio.gather(failing(), ticker(), return_exceptions=True)

        started = time.monotonic()
        state = in_async_flow(failing_step_and_a_ticker)

    assert state.is_completed()
    assert reported[0] - started >= timeout  # the hook waited on the webhook (then spooled) before the step ended
    gaps = [later - earlier for earlier, later in itertools.pairwise(ticks)]
    assert max(gaps) < timeout / 2, max(gaps)  # ... and the event loop kept serving the ticker all along
    (spooled,) = spool.glob("*.json")  # kept for the next delivery: nothing lost
    assert "authentication" in spooled.read_text()


def test_submitted_async_steps_return_futures(astep: Task[..., Any], openai_server: FakeOpenAIServer) -> None:
    """``.submit()`` of the async task gives futures; each step runs on an event loop of its own, in a thread."""

    async def submitted() -> list[str]:
        futures = [astep.submit(MESSAGES, step=f"s{index}") for index in range(3)]
        return sorted(future.result().metadata["prefect.task_run_id"] for future in futures)

    task_run_ids = in_async_flow(submitted).result()
    assert sorted(read_task_run(run_id).name for run_id in task_run_ids) == [
        "reasoning[s0]",
        "reasoning[s1]",
        "reasoning[s2]",
    ]
    assert len(openai_server.completion_requests) == 3


def test_transient_failures_are_retried_one_attempt_per_try_and_reported_once(
    astep: Task[..., Any], openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """A 503 every time: ``task_retries + 1`` tries of one HTTP attempt each, one incident counting them."""
    openai_server.always(Reply.error(503))
    state = in_async_flow(lambda: astep(MESSAGES, step="flaky"))

    assert state.is_failed()
    assert len(openai_server.completion_requests) == TRIES
    (incident,) = receiver.incidents  # the task's; the flow failing on it sends no second one
    assert incident["incident_class"] == "upstream_error"
    assert incident["attempts"] == incident["context"]["attempts"] == TRIES
    assert incident["context"]["task_run_name"] == "reasoning[flaky]"
    assert incident["incident_id"] == str(
        incident_id_for(incident["context"]["flow_run_id"], incident["context"]["task_run_id"], "upstream_error")
    )


def test_a_step_that_recovers_counts_its_tries_and_other_failures_are_not_retried(
    astep: Task[..., Any], openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """A drop then an answer: 2 attempts, no incident. A 401: one attempt, one ``authentication`` incident."""
    openai_server.script(Reply.drop(), Reply.ok("Recovered."))
    result = in_async_flow(lambda: astep(MESSAGES, step="recovering")).result()
    assert (result.content, result.attempts) == ("Recovered.", 2)
    assert receiver.deliveries == []

    openai_server.clear()
    openai_server.always(Reply.error(401))
    assert in_async_flow(lambda: astep(MESSAGES, step="denied")).is_failed()
    assert len(openai_server.completion_requests) == 1
    (incident,) = receiver.incidents
    assert (incident["incident_class"], incident["attempts"]) == ("authentication", 1)


def test_with_cache_answers_an_async_step_from_what_a_sync_step_stored(
    arcanos_env: dict[str, str], openai_server: FakeOpenAIServer
) -> None:
    """The sync and the async task share the cache key: the async step asks nothing the sync one answered."""
    question = [{"role": "user", "content": f"Confirmation layers {uuid.uuid4().hex[:8]}?"}]

    @flow(name=FLOW_NAME)
    def sync_probe() -> ReasoningResult:
        return with_cache(run_reasoning)(question, step="stored")

    stored = sync_probe()
    cached = with_cache(arun_reasoning)
    first, second = in_async_flow(
        lambda: asyncio.gather(cached(question, step="a"), cached(question, step="b"))
    ).result()

    assert len(openai_server.completion_requests) == 1
    assert first.content == second.content == stored.content


def test_settings_from_the_named_credentials_block_are_loaded_off_the_event_loop(
    arcanos_env: dict[str, str], openai_server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``ARCANOS_CREDENTIALS_BLOCK`` set, gathered steps ask the block's model (the block loads in a thread)."""
    block_model = "ft:gpt-5.1-2025-11-13:arcanos::from-block"
    name = f"arcanos-{uuid.uuid4().hex[:10]}"
    ArcanosCredentials(openai_api_key=API_KEY, fine_tuned_model=block_model).save(name)
    monkeypatch.setenv(CREDENTIALS_BLOCK_VARIABLE, name)

    state = in_async_flow(lambda: asyncio.gather(*(arun_reasoning(MESSAGES, step=f"b{index}") for index in range(2))))

    assert [result.model for result in state.result()] == [block_model, block_model]
    assert [request.json["model"] for request in openai_server.completion_requests] == [block_model, block_model]


# --- the sync task awaited in an async flow -----------------------------------------------------------------------


def test_awaiting_the_sync_task_in_an_async_flow_runs_its_async_twin(
    configured: ArcanosSettings, openai_server: FakeOpenAIServer
) -> None:
    """``await run_reasoning(...)`` works, with the sync task's options; nothing is sent before it is awaited."""
    step = with_retries(run_reasoning, configured)
    openai_server.script(Reply.error(503), Reply.ok("Answered by the twin."))

    async def body() -> tuple[int, ReasoningResult]:
        pending = step(MESSAGES, {"intent": "audit"}, step="dispatched")
        sent_before_await = len(openai_server.completion_requests)
        return sent_before_await, await pending

    sent_before_await, result = in_async_flow(body).result()
    assert sent_before_await == 0
    assert (result.content, result.attempts) == ("Answered by the twin.", 2)  # the retries of with_retries
    assert read_task_run(result.metadata["prefect.task_run_id"]).name == "reasoning[dispatched]"
    assert len(openai_server.completion_requests) == 2


def test_the_sync_task_still_blocks_where_no_event_loop_runs_it(
    configured: ArcanosSettings, openai_server: FakeOpenAIServer
) -> None:
    """In an async flow, ``.submit()`` runs the sync task in a thread, and so does a sync task's own call of it."""
    step = with_retries(run_reasoning, configured)

    @task
    def outer() -> str:
        return step(MESSAGES, step="nested").content  # a sync task: not dispatched

    async def body() -> list[str]:
        return [step.submit(MESSAGES, step="submitted").result().content, outer()]

    assert len(in_async_flow(body).result()) == 2
    assert len(openai_server.completion_requests) == 2


# --- @arcanos_flow on async flows ---------------------------------------------------------------------------------


@arcanos_flow(name="arcanos-test-async-decorated")
async def decorated_audit(fail: bool = False) -> str:
    """An async arcanos flow with one async step."""
    result = await arun_reasoning(MESSAGES, step="audit")
    if fail:
        raise RuntimeError("the audit found the layers inconsistent")
    return result.content


def flow_run_tags(state: State) -> tuple[list[str], list[list[str]]]:
    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(run_id)
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
    return sorted(flow_run.tags), [sorted(task_run.tags) for task_run in task_runs]


def test_an_async_arcanos_flow_run_carries_the_tag_and_its_task_runs_do_not(
    arcanos_env: dict[str, str], openai_server: FakeOpenAIServer
) -> None:
    """The tags are read back from the API: ``arcanos`` (and the caller's) on the flow run, the caller's on tasks."""

    async def tagged() -> State:
        with tags("nightly"):
            state: State = await decorated_audit(return_state=True)
            return state

    state = asyncio.run(tagged())

    assert state.is_completed()
    assert flow_run_tags(state) == (["arcanos", "nightly"], [["nightly"]])


def test_an_async_arcanos_flow_that_fails_reports_once_with_its_event(
    arcanos_env: dict[str, str], openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """Its failure hook sends one ``flow_failed`` incident, emitted as an event related to the tagged flow run."""
    state = asyncio.run(decorated_audit(fail=True, return_state=True))

    assert state.is_failed()
    flow_run_id = str(state.state_details.flow_run_id)
    (incident,) = receiver.incidents
    assert incident["incident_class"] == "flow_failed"
    assert incident["context"]["flow_run_id"] == flow_run_id
    assert "the audit found the layers inconsistent" in incident["reason"]
    assert flow_run_tags(state)[0] == ["arcanos"]
    event_filter = EventFilter(
        event=EventNameFilter(prefix=["arcanos.incident."]),
        related=EventRelatedFilter(id=[f"prefect.flow-run.{flow_run_id}"]),
    )
    deadline = time.monotonic() + 20
    while True:
        with get_client(sync_client=True) as client:
            events = client.read_events(filter=event_filter, limit=10).events
        if events or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert [event.resource.id for event in events] == [f"arcanos.incident.{incident['incident_id']}"]
