"""Opt-in step caching: the key, cached re-runs that send nothing, failures never cached, what is stored."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import TaskRun
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

from arcanos_flows.core.results import Usage
from arcanos_flows.flows.research import ResearchStepsFailed, research_flow
from arcanos_flows.prefect.caching import KEY_PREFIX, REASONING_CACHE, reasoning_cache_key
from arcanos_flows.prefect.credentials import ArcanosCredentials
from arcanos_flows.prefect.tasks import DEFAULT_STEP_CACHE_EXPIRATION, run_reasoning, run_simple_prompt, with_cache
from arcanos_flows.testing import FakeOpenAIServer, Reply
from tests.conftest import API_KEY, MODEL

pytestmark = pytest.mark.usefixtures("prefect_harness")

QUESTION = [
    {"role": "system", "content": "You are the Arcanos maintenance AI."},
    {"role": "user", "content": "List the current confirmation layers."},
]


@pytest.fixture
def result_storage(tmp_path: Path) -> Iterator[Path]:
    """Prefect's result storage for this test only: cached answers never leak between tests or into ~/.prefect."""
    storage = tmp_path / "results"
    with temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: storage}):
        yield storage


def unique_topic() -> str:
    return f"Confirmation layers {uuid.uuid4().hex[:8]}"


def task_runs_of(flow_run_id: Any, expected: int, timeout: float = 20.0) -> list[TaskRun]:
    """The flow run's task runs as the API records them, once all ``expected`` have a final state."""
    flow_runs = FlowRunFilter(id=FlowRunFilterId(any_=[uuid.UUID(str(flow_run_id))]))
    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(flow_run_filter=flow_runs)
        if len(runs) == expected and all(run.state is not None and run.state.is_final() for run in runs):
            return runs
        if time.monotonic() > deadline:
            raise AssertionError(f"task runs not final within {timeout}s: {[(r.name, r.state_name) for r in runs]}")
        time.sleep(0.05)


def compute(inputs: dict[str, Any]) -> str | None:
    return REASONING_CACHE.compute_key(task_ctx=None, inputs=inputs, flow_parameters={})  # type: ignore[arg-type]


# --- the key ------------------------------------------------------------------------------------------------


def test_key_covers_model_api_messages_and_options_and_nothing_else(
    arcanos_env: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Metadata, step name, credentials, timeout and run ids never change the key; the question always does."""
    base = {"messages": QUESTION, "metadata": {"ticket": "OPS-1"}, "step": "layers"}
    key = compute(base)
    assert key is not None
    assert key.startswith(KEY_PREFIX)
    assert key == reasoning_cache_key(MODEL, "chat", QUESTION)

    same = [
        {**base, "metadata": {"ticket": "OPS-2", "confirmation_token": "ct-other", "prefect.flow_run_id": "x"}},
        {**base, "step": "another-step"},
        {**base, "timeout": 3.0},
        {**base, "credentials": ArcanosCredentials(openai_api_key="sk-other-key-0000", fine_tuned_model=MODEL)},
        {**base, "messages": [dict(message) for message in QUESTION]},
    ]
    assert [compute(inputs) for inputs in same] == [key] * len(same)

    different = [
        {**base, "messages": [*QUESTION[:1], {"role": "user", "content": "List the layers."}]},
        {**base, "messages": QUESTION[1:]},
        {**base, "reasoning_effort": "high"},
        {**base, "max_output_tokens": 512},
        {**base, "response_format": {"type": "json_object"}},
        {**base, "credentials": ArcanosCredentials(openai_api_key=API_KEY, fine_tuned_model="ft:gpt-5.1:other::x")},
    ]
    keys = [compute(inputs) for inputs in different]
    assert key not in keys
    assert len(set(keys)) == len(keys)

    monkeypatch.setenv("ARCANOS_OPENAI_API", "responses")
    assert compute(base) not in (key, None)
    monkeypatch.setenv("ARCANOS_OPENAI_API", "chat")
    monkeypatch.setenv("ARCANOS_FINE_TUNED_MODEL", "ft:gpt-5.1:arcanos::other")
    assert compute(base) not in (key, None)


def test_simple_prompts_share_the_key_of_the_same_messages(arcanos_env: dict) -> None:
    """run_simple_prompt(text, system=...) asks the same question as run_reasoning with those two messages."""
    prompt = {"text": QUESTION[1]["content"], "system": QUESTION[0]["content"], "step": "prompt"}
    assert compute(prompt) == compute({"messages": QUESTION})
    assert compute({"text": "Status?"}) == reasoning_cache_key(MODEL, "chat", [{"role": "user", "content": "Status?"}])


def test_no_key_when_settings_or_inputs_are_invalid(arcanos_env: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """Invalid inputs or settings give no key: nothing is cached and the step fails as it would anyway."""
    assert compute({"messages": [{"role": "robot", "content": "Hi"}]}) is None
    assert compute({"messages": QUESTION, "reasoning_effort": "extreme"}) is None
    monkeypatch.delenv("ARCANOS_FINE_TUNED_MODEL")
    assert compute({"messages": QUESTION}) is None


def test_with_cache_sets_the_policy_persistence_and_expiration() -> None:
    """with_cache() is run_reasoning.with_options(cache_policy=..., persist_result=True, cache_expiration=...)."""
    cached = with_cache(run_reasoning)
    assert (cached.cache_policy, cached.persist_result, cached.cache_expiration) == (
        REASONING_CACHE,
        True,
        DEFAULT_STEP_CACHE_EXPIRATION,
    )
    assert with_cache(run_simple_prompt, expiration=None).cache_expiration is None
    assert cached.name == run_reasoning.name
    assert (run_reasoning.persist_result, type(run_reasoning.cache_policy).__name__) == (False, "_None")


# --- the research flow --------------------------------------------------------------------------------------


def test_rerun_with_cache_sends_nothing_and_reports_cached_steps_with_zero_tokens(
    openai_server: FakeOpenAIServer, arcanos_env: dict, result_storage: Path
) -> None:
    """Re-running an identical research with cache=True asks nothing; its steps show Cached and spend 0 tokens."""
    topic = unique_topic()
    questions = ["Which layers exist?", "Who confirms each layer?"]

    first = research_flow(topic, questions=questions, audit={"ticket": "OPS-1"}, cache=True)
    assert len(openai_server.completion_requests) == 4
    assert [step.status for step in first.steps] == ["completed"] * 4
    assert first.usage.total_tokens > 0

    state = research_flow(
        topic,
        questions=questions,
        audit={"ticket": "OPS-2"},
        confirmation_token="ct-new",
        cache=True,
        return_state=True,
    )

    assert state.is_completed(), state.message
    second = state.result()
    assert len(openai_server.completion_requests) == 4  # nothing new reached the server
    assert [(step.step, step.status) for step in second.steps] == [
        ("plan", "cached"),
        ("investigate-1", "cached"),
        ("investigate-2", "cached"),
        ("synthesis", "cached"),
    ]
    assert all(step.usage == Usage() and step.attempts == 0 for step in second.steps)
    assert second.usage == Usage()
    assert second.synthesis == first.synthesis
    assert [step.content for step in second.steps] == [step.content for step in first.steps]
    assert [step.request_id for step in second.steps] == [step.request_id for step in first.steps]
    assert "| plan | cached |" in second.to_markdown()

    runs = task_runs_of(state.state_details.flow_run_id, expected=4)
    assert sorted((run.name, run.state_name) for run in runs) == [
        ("reasoning[investigate-1]", "Cached"),
        ("reasoning[investigate-2]", "Cached"),
        ("reasoning[plan]", "Cached"),
        ("reasoning[synthesis]", "Cached"),
    ]
    with get_client(sync_client=True) as client:
        tables = [
            artifact
            for artifact in client.read_artifacts()
            if artifact.key == "arcanos-research-steps" and artifact.flow_run_id == state.state_details.flow_run_id
        ]
    table = max(tables, key=lambda artifact: artifact.created)  # updated while the run ran; the last is final
    rows = json.loads(table.data)
    assert [(row["status"], row["input_tokens"], row["output_tokens"]) for row in rows] == [("cached", 0, 0)] * 4


def test_caching_is_off_unless_asked(openai_server: FakeOpenAIServer, arcanos_env: dict, result_storage: Path) -> None:
    """Without cache=True every run asks every question again and nothing is written to result storage."""
    topic = unique_topic()
    research_flow(topic, questions=["Q?"])
    report = research_flow(topic, questions=["Q?"], cache=False)
    assert len(openai_server.completion_requests) == 6
    assert [step.status for step in report.steps] == ["completed"] * 3
    assert not list(result_storage.glob(f"{KEY_PREFIX}*"))


def test_failed_steps_are_never_cached(
    openai_server: FakeOpenAIServer, receiver: Any, arcanos_env: dict, result_storage: Path
) -> None:
    """A step that failed is asked again by the next cached run; the steps that completed are not."""
    topic = unique_topic()
    openai_server.reply_when("Investigate: Who confirms?", Reply.error(401), times=1)

    with pytest.raises(ResearchStepsFailed):
        research_flow(topic, questions=["Which layers?", "Who confirms?"], cache=True)
    assert len(openai_server.completion_requests) == 4
    openai_server.clear()

    report = research_flow(topic, questions=["Which layers?", "Who confirms?"], cache=True)

    assert [(step.step, step.status) for step in report.steps] == [
        ("plan", "cached"),
        ("investigate-1", "cached"),
        ("investigate-2", "completed"),
        # The findings changed (investigate-2 has an answer now), so the synthesis is a new question.
        ("synthesis", "completed"),
    ]
    asked = [request.json["messages"][-1]["content"].split("\n")[0] for request in openai_server.completion_requests]
    assert asked == ["Investigate: Who confirms?", f"Synthesize the research findings on: {topic}"]


def test_stored_answer_is_the_result_json_under_the_key_and_expires_as_configured(
    openai_server: FakeOpenAIServer, arcanos_env: dict, result_storage: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The result record holds the ReasoningResult JSON (metadata included, no API key) and its expiration."""
    monkeypatch.setenv("ARCANOS_STEP_CACHE_EXPIRATION", "3600")
    topic = unique_topic()
    before = time.time()

    report = research_flow(topic, questions=["Which layers?"], audit={"ticket": "OPS-9"}, cache=True)

    plan_request = openai_server.completion_requests[0]
    key = reasoning_cache_key(MODEL, "chat", plan_request.json["messages"])
    record_file = result_storage / key
    assert record_file.is_file()
    text = record_file.read_text(encoding="utf-8")
    assert API_KEY not in text
    record = json.loads(text)
    expiration = record["metadata"]["expiration"]
    assert expiration is not None
    expires = datetime.fromisoformat(expiration.replace("Z", "+00:00")).timestamp()
    assert before + 3600 - 60 <= expires <= time.time() + 3600 + 60
    stored = json.loads(record["result"])
    assert stored["data"]["content"] == report.plan
    assert stored["data"]["metadata"]["ticket"] == "OPS-9"
    assert stored["data"]["metadata"]["prefect.flow"] == "arcanos-research"
    assert len(list(result_storage.glob(f"{KEY_PREFIX}*"))) == 3


def test_with_cache_answers_simple_prompts_from_the_cache_until_it_expires(
    openai_server: FakeOpenAIServer, arcanos_env: dict, result_storage: Path
) -> None:
    """with_cache() works on run_simple_prompt in your own flows; an expired answer is asked for again."""
    cached_prompt = with_cache(run_simple_prompt, expiration=timedelta(seconds=1))
    text = f"Status of the layers {uuid.uuid4().hex[:8]}?"

    @flow
    def status_checks() -> list[tuple[str, str]]:
        outcomes = []
        for step in ("first", "second", "after-expiry"):
            if step == "after-expiry":
                time.sleep(1.1)
            state = cached_prompt(text, metadata={"step": step}, step=step, return_state=True)
            outcomes.append((state.name, state.result().content))
        return outcomes

    (first, answer), second, third = status_checks()

    assert (first, second, third[0]) == ("Completed", ("Cached", answer), "Completed")
    assert len(openai_server.completion_requests) == 2
