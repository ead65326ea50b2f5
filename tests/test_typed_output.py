"""Structured output and cost, through the real SDK against the fake server: typed answers, re-asks, prices."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Literal

import pytest
from openapi_schemas import validate
from pydantic import BaseModel, Field

from arcanos_flows import ArcanosPythonClient, AsyncArcanosClient
from arcanos_flows.core.errors import InvalidOutputError, InvalidReasoningInput
from arcanos_flows.core.results import ReasoningResult, Usage
from arcanos_flows.core.settings import ArcanosSettings
from arcanos_flows.incidents.notifier import MaintenanceNotifier
from arcanos_flows.testing import FakeOpenAIServer, Reply, WebhookReceiver

REQUEST_SCHEMA = {"chat": "CreateChatCompletionRequest", "responses": "CreateResponse"}
MESSAGES = [
    {"role": "system", "content": "You are the Arcanos maintenance AI."},
    {"role": "user", "content": "List the current confirmation layers."},
]


class Layer(BaseModel):
    name: str
    owner: str
    severity: Literal["low", "high"]


class LayerAudit(BaseModel):
    """A nested model: the strict schema carries $defs."""

    summary: str
    layers: list[Layer] = Field(min_length=1, max_length=4)
    reviewed: bool


class FreeForm(BaseModel):
    scores: dict[str, int]


@pytest.fixture(params=["chat", "responses"])
def api(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def client(
    make_settings: Callable[..., ArcanosSettings], notifier: MaintenanceNotifier, api: str
) -> ArcanosPythonClient:
    with ArcanosPythonClient(make_settings(openai_api=api, max_retries=0), notifier=notifier) as typed_client:
        yield typed_client  # type: ignore[misc]


def sent_format(body: dict[str, object], api: str) -> dict[str, object]:
    if api == "chat":
        return body["response_format"]  # type: ignore[return-value]
    text = body["text"]
    assert isinstance(text, dict)
    return {"type": "json_schema", "json_schema": {k: v for k, v in text["format"].items() if k != "type"}}


def test_a_typed_answer_is_the_validated_instance_and_the_request_asks_for_a_strict_schema(
    client: ArcanosPythonClient, openai_server: FakeOpenAIServer, api: str
) -> None:
    """``output_type=Model`` sends a strict json_schema (valid for OpenAI's spec) and returns a Model in ``output``."""
    result = client.run_reasoning(MESSAGES, output_type=LayerAudit)

    assert isinstance(result.output, LayerAudit)
    assert result.output == LayerAudit.model_validate_json(result.content)  # content stays the raw text
    assert result.output_type == f"{__name__}.LayerAudit"
    assert result.attempts == 1
    (request,) = openai_server.completion_requests
    validate(request.json, REQUEST_SCHEMA[api])
    response_format = sent_format(request.json, api)
    assert response_format["type"] == "json_schema"
    schema = response_format["json_schema"]
    assert isinstance(schema, dict)
    assert schema["strict"] is True
    assert schema["name"] == "LayerAudit"
    assert schema["schema"]["additionalProperties"] is False
    assert set(schema["schema"]["required"]) == {"summary", "layers", "reviewed"}


def test_a_non_object_type_is_sent_wrapped_and_returned_unwrapped(
    client: ArcanosPythonClient, openai_server: FakeOpenAIServer, api: str
) -> None:
    """``list[str]`` (any type pydantic validates) travels as ``{"result": [...]}``: the caller gets the list."""
    result = client.run_reasoning(MESSAGES, output_type=list[str])

    assert isinstance(result.output, list)
    assert all(isinstance(item, str) for item in result.output)
    assert json.loads(result.content)["result"] == result.output
    schema = sent_format(openai_server.completion_requests[0].json, api)["json_schema"]
    assert isinstance(schema, dict)
    assert schema["schema"]["required"] == ["result"]


def test_an_answer_that_does_not_validate_is_asked_again_with_the_problem_and_both_attempts_are_billed(
    client: ArcanosPythonClient, openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """Not JSON, then valid: one re-ask carrying the validation problem; usage and attempts count both calls."""
    openai_server.script(Reply.invalid_json())

    result = client.run_reasoning(MESSAGES, output_type=LayerAudit)

    assert isinstance(result.output, LayerAudit)
    _first, second = openai_server.completion_requests
    assert result.attempts == 2
    reask = second.json.get("messages") or second.json.get("input")
    assert isinstance(reask, list)
    assert reask[-2]["role"] == "assistant"
    assert "does not match the required JSON schema" in json.dumps(reask[-1])
    assert "Invalid JSON" in json.dumps(reask[-1])
    assert receiver.incidents == []


def test_usage_of_a_reasked_answer_is_the_sum_of_both_answers(
    make_settings: Callable[..., ArcanosSettings], notifier: MaintenanceNotifier, openai_server: FakeOpenAIServer
) -> None:
    """Each attempt's tokens count: the result's usage equals the two answers' usage, as a plain call reports it."""
    settings = make_settings(max_retries=0)
    with ArcanosPythonClient(settings, notifier=notifier) as plain:
        openai_server.script(Reply.ok("not json at all"), Reply.ok('{"result": ["a", "b"]}'))
        typed = plain.run_reasoning(MESSAGES, output_type=list[str])
        openai_server.script(Reply.ok("not json at all"))
        first = plain.run_reasoning(MESSAGES)
        reask = openai_server.completion_requests[1].json["messages"]
        openai_server.script(Reply.ok('{"result": ["a", "b"]}'))
        second = plain.run_reasoning(reask)

    assert typed.output == ["a", "b"]
    assert typed.usage == first.usage + second.usage
    assert typed.attempts == first.attempts + second.attempts == 2


def test_invalid_twice_raises_invalid_output_once_reported(
    client: ArcanosPythonClient, openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """Invalid, and invalid again on the re-ask: ``InvalidOutputError``, one ``invalid_output`` incident."""
    openai_server.script(Reply.invalid_json(), Reply.schema_mismatch())

    with pytest.raises(InvalidOutputError) as caught:
        client.run_reasoning(MESSAGES, output_type=LayerAudit)

    error = caught.value
    assert error.incident_class.value == "invalid_output"
    assert error.attempts == 2
    assert error.output_type == f"{__name__}.LayerAudit"
    assert error.usage_tokens > 0
    assert "summary" in (error.problem or "")  # what was missing, not what the answer said
    assert len(openai_server.completion_requests) == 2
    (incident,) = receiver.wait_for(1)
    body = json.loads(incident.body)
    assert body["incident_class"] == "invalid_output"
    assert body["attempts"] == 2


def test_output_retries_zero_gives_up_at_the_first_invalid_answer(
    client: ArcanosPythonClient, openai_server: FakeOpenAIServer
) -> None:
    openai_server.script(Reply.invalid_json())

    with pytest.raises(InvalidOutputError):
        client.run_reasoning(MESSAGES, output_type=LayerAudit, output_retries=0)

    assert len(openai_server.completion_requests) == 1


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"output_type": FreeForm}, "free-form keys"),
        ({"output_type": object()}, "not a type pydantic can validate"),
        ({"output_type": LayerAudit, "response_format": {"type": "json_object"}}, "give one of them"),
        ({"output_type": LayerAudit, "output_retries": -1}, "output_retries"),
        ({"output_type": LayerAudit, "output_retries": True}, "output_retries"),
    ],
)
def test_an_output_type_that_cannot_be_sent_strictly_fails_before_any_request(
    client: ArcanosPythonClient,
    openai_server: FakeOpenAIServer,
    receiver: WebhookReceiver,
    options: dict[str, object],
    named: str,
) -> None:
    with pytest.raises(InvalidReasoningInput, match=named):
        client.run_reasoning(MESSAGES, **options)  # type: ignore[arg-type]

    assert openai_server.completion_requests == []
    (incident,) = receiver.wait_for(1)
    assert json.loads(incident.body)["incident_class"] == "invalid_input"


def test_the_async_client_returns_the_same_typed_answer(
    make_settings: Callable[..., ArcanosSettings], notifier: MaintenanceNotifier, openai_server: FakeOpenAIServer
) -> None:
    openai_server.script(Reply.schema_mismatch())

    async def ask() -> ReasoningResult:
        async with AsyncArcanosClient(make_settings(max_retries=0), notifier=notifier) as client:
            return await client.run_simple_prompt("List the layers.", output_type=LayerAudit)

    result = asyncio.run(ask())

    assert isinstance(result.output, LayerAudit)
    assert result.attempts == 2


def test_a_result_read_back_from_json_is_the_typed_instance_again(client: ArcanosPythonClient) -> None:
    """What Prefect's JSON result serializer and the step cache do: dump, then validate the JSON again."""
    result = client.run_reasoning(MESSAGES, output_type=LayerAudit)

    again = ReasoningResult.model_validate_json(result.model_dump_json())

    assert isinstance(again.output, LayerAudit)
    assert again == result


# --- cost --------------------------------------------------------------------------------------------------------


def test_cost_is_computed_to_the_cent_from_the_prices_and_the_tokens_counted(
    make_settings: Callable[..., ArcanosSettings], notifier: MaintenanceNotifier, openai_server: FakeOpenAIServer
) -> None:
    """The fake counts words as tokens: 11 input, 4 output at $2.50 / $10.00 per million: $0.0000675."""
    settings = make_settings(price_input_per_mtok=2.5, price_output_per_mtok=10.0, max_retries=0)
    openai_server.script(Reply.ok("one two three four"))
    with ArcanosPythonClient(settings, notifier=notifier) as priced:
        result = priced.run_reasoning(MESSAGES)

    assert (result.usage.input_tokens, result.usage.output_tokens) == (11, 4)
    assert result.usage.cost_usd == pytest.approx(0.0000675, abs=1e-9)


def test_cost_of_a_million_tokens_splits_cached_input_and_counts_reasoning_as_output() -> None:
    """A known split, to the cent: 1 M input of which 400 k cached, 300 k output (100 k of it reasoning)."""
    from arcanos_flows.core.pricing import Pricing

    usage = Usage(input_tokens=1_000_000, cached_tokens=400_000, output_tokens=300_000, reasoning_tokens=100_000)
    prices = Pricing(input_per_mtok=1.25, cached_input_per_mtok=0.125, output_per_mtok=10.0)

    assert usage.priced(prices).cost_usd == 0.75 + 0.05 + 3.0
    assert usage.priced(None).cost_usd is None
    total = usage.priced(prices) + usage.priced(prices)
    assert round(total.cost_usd or 0, 2) == 7.60


def test_without_prices_the_cost_is_none_never_a_guess(client: ArcanosPythonClient) -> None:
    assert client.run_reasoning(MESSAGES).usage.cost_usd is None


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"ARCANOS_PRICE_INPUT_PER_MTOK": "2.5"}, "ARCANOS_PRICE_OUTPUT_PER_MTOK is missing"),
        ({"ARCANOS_PRICE_OUTPUT_PER_MTOK": "10"}, "ARCANOS_PRICE_INPUT_PER_MTOK is missing"),
        ({"ARCANOS_PRICE_INPUT_PER_MTOK": "-1", "ARCANOS_PRICE_OUTPUT_PER_MTOK": "1"}, "ARCANOS_PRICE_INPUT_PER_MTOK"),
        ({"ARCANOS_RUN_MAX_COST_USD": "5"}, "ARCANOS_RUN_MAX_COST_USD needs the prices"),
        ({"ARCANOS_RUN_MAX_TOKENS": "0"}, "ARCANOS_RUN_MAX_TOKENS"),
    ],
)
def test_bad_prices_and_budgets_in_the_environment_are_named(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], named: str
) -> None:
    from conftest import API_KEY, MODEL

    from arcanos_flows.core.errors import ConfigurationError

    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv("ARCANOS_FINE_TUNED_MODEL", MODEL)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=named):
        ArcanosSettings()
