"""ArcanosPythonClient against the fake OpenAI server, through the real SDK, for both APIs."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest
from conftest import API_KEY, MODEL
from openapi_schemas import validate

from arcanos_flows import (
    ArcanosPythonClient,
    ArcanosSettings,
    InvalidReasoningInput,
    MaintenanceNotifier,
    ModelEnforcementError,
    ReasoningResult,
    Usage,
)
from arcanos_flows.testing import FakeOpenAIServer, RecordedRequest, Reply, WebhookReceiver
from arcanos_flows.testing.openai_server import _OpenAIHandler

APIS = ["chat", "responses"]
REQUEST_SCHEMA = {"chat": "CreateChatCompletionRequest", "responses": "CreateResponse"}
RESPONSE_SCHEMA = {"chat": "CreateChatCompletionResponse", "responses": "Response"}
MESSAGES = [
    {"role": "system", "content": "You are the Arcanos maintenance AI."},
    {"role": "user", "content": "List the current confirmation layers."},
]
PLAN_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "plan",
        "schema": {
            "type": "object",
            "properties": {"steps": {"type": "array", "items": {"type": "string"}}},
            "required": ["steps"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}


@pytest.fixture(params=APIS)
def api(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def make_client(
    make_settings: Callable[..., ArcanosSettings], api: str
) -> Iterator[Callable[..., ArcanosPythonClient]]:
    """Build clients speaking ``api``, reporting to the receiver with fast notifier backoff."""
    clients: list[ArcanosPythonClient] = []

    def make(*, printing: bool = False, **overrides: Any) -> ArcanosPythonClient:
        if printing:
            overrides.update(maintenance_webhook=None, webhook_secret=None)
        settings = make_settings(openai_api=api, **overrides)
        notifier = None if printing else MaintenanceNotifier(settings, backoff=0.01, source="arcanos_flows.client")
        client = ArcanosPythonClient(settings, notifier=notifier)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def client(make_client: Callable[..., ArcanosPythonClient]) -> ArcanosPythonClient:
    return make_client()


def sent(server: FakeOpenAIServer) -> list[dict[str, Any]]:
    """The JSON bodies of the completion requests the server received."""
    return [request.json for request in server.completion_requests]


def only_request(server: FakeOpenAIServer) -> RecordedRequest:
    (request,) = server.completion_requests
    return request


def prompt_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    return body["messages"] if "messages" in body else body["input"]


# --- success -------------------------------------------------------------------------------------------


def test_success_returns_a_typed_result(
    client: ArcanosPythonClient, openai_server: FakeOpenAIServer, receiver: WebhookReceiver, api: str
) -> None:
    """A successful call returns content, ids, usage, the metadata sent, timing and the API used."""
    openai_server.script(Reply.ok("Three layers.", reasoning_tokens=7, headers={"x-request-id": "req_abc123"}))

    result = client.run_reasoning(MESSAGES, metadata={"intent": "audit", "run": 7, "dry": True, "skip": None})

    body = only_request(openai_server).json
    assert isinstance(result, ReasoningResult)
    assert result.content == "Three layers."
    assert result.model == MODEL
    assert result.response_id == ("chatcmpl-1" if api == "chat" else "resp_1")
    assert result.request_id == "req_abc123"
    assert result.finish_reason == "stop"
    assert result.usage.reasoning_tokens == 7
    assert result.usage.output_tokens == 2 + 7  # "Three layers." plus the reasoning tokens
    assert result.usage.input_tokens == 6 + 5  # words of both messages
    assert result.usage.total_tokens == result.usage.input_tokens + result.usage.output_tokens
    assert result.metadata == {"intent": "audit", "run": "7", "dry": "true"}
    assert result.metadata == body["metadata"]
    assert result.stored is True
    assert result.latency_ms > 0
    assert result.attempts == 1
    assert result.api == api
    assert receiver.deliveries == []


def test_result_reads_like_the_original_dict(client: ArcanosPythonClient, openai_server: FakeOpenAIServer) -> None:
    """``result["content"]``, ``result.get`` and ``in`` work as with the original module's dict."""
    openai_server.script(Reply.ok("Three layers."))

    result = client.run_reasoning(MESSAGES)

    assert result["content"] == "Three layers."
    assert result["model"] == MODEL
    assert result.get("content") == "Three layers."
    assert result.get("no_such_field") is None
    assert result.get("no_such_field", "fallback") == "fallback"
    assert "content" in result
    assert "no_such_field" not in result
    with pytest.raises(KeyError, match="no_such_field"):
        result["no_such_field"]


def test_result_survives_a_json_round_trip(client: ArcanosPythonClient, api: str) -> None:
    """The result's JSON form reads back into an equal result."""
    result = client.run_reasoning(MESSAGES, metadata={"intent": "audit"})

    text = result.model_dump_json()
    again = ReasoningResult.model_validate_json(text)

    assert again == result
    assert isinstance(again.usage, Usage)
    assert json.loads(text)["api"] == api
    assert set(json.loads(text)) == set(ReasoningResult.model_fields)


def test_usage_is_exactly_what_the_server_sent(
    client: ArcanosPythonClient, openai_server: FakeOpenAIServer, api: str
) -> None:
    """Usage numbers, cached and reasoning tokens included, are copied from the response body."""
    if api == "chat":
        body = {
            "id": "chatcmpl-usage",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Done.", "refusal": None, "annotations": []},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": 31,
                "completion_tokens": 17,
                "total_tokens": 48,
                "prompt_tokens_details": {"cached_tokens": 5, "audio_tokens": 0},
                "completion_tokens_details": {
                    "reasoning_tokens": 11,
                    "audio_tokens": 0,
                    "accepted_prediction_tokens": 0,
                    "rejected_prediction_tokens": 0,
                },
            },
        }
    else:
        body = {
            "id": "resp_usage",
            "object": "response",
            "created_at": 1_700_000_000,
            "status": "completed",
            "error": None,
            "incomplete_details": None,
            "instructions": None,
            "model": MODEL,
            "output": [
                {
                    "type": "message",
                    "id": "msg_1",
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "Done.", "annotations": [], "logprobs": []}],
                }
            ],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "temperature": 1.0,
            "top_p": 1.0,
            "metadata": {},
            "usage": {
                "input_tokens": 31,
                "input_tokens_details": {"cached_tokens": 5, "cache_write_tokens": 0},
                "output_tokens": 17,
                "output_tokens_details": {"reasoning_tokens": 11},
                "total_tokens": 48,
            },
        }
    validate(body, RESPONSE_SCHEMA[api])
    openai_server.script(Reply(body=json.dumps(body).encode()))

    result = client.run_reasoning(MESSAGES)

    assert result.usage == Usage(
        input_tokens=31, output_tokens=17, reasoning_tokens=11, cached_tokens=5, total_tokens=48
    )
    assert result.response_id == body["id"]
    assert result.content == "Done."


# --- request bodies --------------------------------------------------------------------------------------


def test_request_body_is_valid_for_the_official_schema(
    client: ArcanosPythonClient, openai_server: FakeOpenAIServer, api: str
) -> None:
    """Requests with every option validate against OpenAI's spec and name the configured model."""
    metadata = {"intent": "audit", "run_id": "r-42"}

    client.run_reasoning(
        MESSAGES, metadata=metadata, reasoning_effort="high", max_output_tokens=256, response_format=PLAN_FORMAT
    )

    body = only_request(openai_server).json
    validate(body, REQUEST_SCHEMA[api])
    validate(body["metadata"], "Metadata")
    assert body["model"] == MODEL
    assert body["metadata"] == metadata
    assert body["store"] is True
    assert prompt_of(body) == MESSAGES
    if api == "chat":
        assert body["reasoning_effort"] == "high"
        assert body["max_completion_tokens"] == 256
        assert body["response_format"] == PLAN_FORMAT
    else:
        assert body["reasoning"] == {"effort": "high"}
        assert body["max_output_tokens"] == 256
        assert body["text"] == {"format": {"type": "json_schema", **PLAN_FORMAT["json_schema"]}}
        assert "response_format" not in body


@pytest.mark.parametrize("response_format", [None, {"type": "text"}, {"type": "json_object"}])
def test_minimal_request_bodies_are_valid(
    client: ArcanosPythonClient, openai_server: FakeOpenAIServer, api: str, response_format: dict[str, Any] | None
) -> None:
    """Without metadata or options the body is still valid, and names only the configured model."""
    client.run_reasoning([{"role": "user", "content": "Status?"}], response_format=response_format)

    body = only_request(openai_server).json
    validate(body, REQUEST_SCHEMA[api])
    assert body["model"] == MODEL
    assert "metadata" not in body
    assert body.get("store") is not True
    if response_format is not None:
        shown = body["response_format"] if api == "chat" else body["text"]["format"]
        assert shown == response_format


def test_chat_requests_carry_store_whenever_they_carry_metadata(
    make_client: Callable[..., ArcanosPythonClient], openai_server: FakeOpenAIServer, api: str
) -> None:
    """Requests ask to store exactly when they carry metadata, and ``result.stored`` says which happened."""
    client = make_client()
    results = [
        client.run_reasoning(MESSAGES, metadata={"intent": "audit"}),
        client.run_reasoning(MESSAGES),
        client.run_reasoning(MESSAGES, metadata={"gone": None}),
    ]

    with_metadata, without, only_none = sent(openai_server)
    assert (with_metadata["metadata"], with_metadata["store"]) == ({"intent": "audit"}, True)
    for body in (without, only_none):
        assert "metadata" not in body
        assert body.get("store") is not True
    for body in sent(openai_server):
        assert "metadata" not in body or body["store"] is True
    assert [result.stored for result in results] == [True, False, False]


def test_store_false_keeps_metadata_local(
    make_client: Callable[..., ArcanosPythonClient], openai_server: FakeOpenAIServer
) -> None:
    """With ARCANOS_STORE=false no metadata is sent and nothing is stored; the result still has it."""
    client = make_client(store=False, confirmation_token="ct-7f3a")

    result = client.run_reasoning(MESSAGES, metadata={"intent": "audit"})

    body = only_request(openai_server).json
    assert "metadata" not in body
    assert body.get("store") is not True
    assert result.metadata == {"intent": "audit", "confirmation_token": "ct-7f3a"}
    assert result.stored is False


def test_message_names_are_sent_only_where_the_api_has_them(
    client: ArcanosPythonClient, openai_server: FakeOpenAIServer, api: str
) -> None:
    """Chat messages keep ``name``; Responses input messages, which have no such field, drop it."""
    client.run_reasoning([{"role": "user", "content": "Status?", "name": "ops"}])

    body = only_request(openai_server).json
    validate(body, REQUEST_SCHEMA[api])
    if api == "chat":
        assert body["messages"] == [{"role": "user", "content": "Status?", "name": "ops"}]
    else:
        assert body["input"] == [{"role": "user", "content": "Status?"}]


def test_confirmation_token_is_added_to_the_metadata(
    make_client: Callable[..., ArcanosPythonClient], openai_server: FakeOpenAIServer
) -> None:
    """ARCANOS_CONFIRMATION_TOKEN reaches every request's metadata, with or without caller metadata."""
    client = make_client(confirmation_token="ct-7f3a")

    first = client.run_reasoning(MESSAGES, metadata={"intent": "audit"})
    second = client.run_reasoning(MESSAGES)

    bodies = sent(openai_server)
    assert bodies[0]["metadata"] == {"intent": "audit", "confirmation_token": "ct-7f3a"}
    assert bodies[1]["metadata"] == {"confirmation_token": "ct-7f3a"}
    assert all(body["store"] is True for body in bodies)
    assert first.metadata == bodies[0]["metadata"]
    assert second.metadata == bodies[1]["metadata"]


# --- one SDK client, reused ------------------------------------------------------------------------------


class _ConnectionCountingHandler(_OpenAIHandler):
    def setup(self) -> None:
        super().setup()
        self.server.owner.connections.append(self.client_address)


class ConnectionCountingServer(FakeOpenAIServer):
    """The fake server, also recording every TCP connection it accepts."""

    handler_class = _ConnectionCountingHandler

    def __init__(self) -> None:
        super().__init__()
        self.connections: list[tuple[str, int]] = []


def test_one_sdk_client_and_one_connection_serve_every_call(
    make_client: Callable[..., ArcanosPythonClient],
) -> None:
    """A client builds one SDK client and reuses it, and its keep-alive connection, across calls."""
    with ConnectionCountingServer() as counting:
        client = make_client(openai_base_url=counting.base_url)
        sdk = client._openai

        for _ in range(3):
            client.run_reasoning(MESSAGES)
        client.run_simple_prompt("Status?")

        assert client._openai is sdk
        assert len(counting.completion_requests) == 4
        assert len(counting.connections) == 1
        other = make_client(openai_base_url=counting.base_url)
        assert other._openai is not sdk


# --- run_simple_prompt -----------------------------------------------------------------------------------


@pytest.mark.parametrize("system", [None, "Be terse."])
def test_run_simple_prompt(
    client: ArcanosPythonClient, openai_server: FakeOpenAIServer, api: str, system: str | None
) -> None:
    """One user turn, optionally after a system message, with metadata, returns the answer."""
    openai_server.script(Reply.ok("All clear."))

    result = client.run_simple_prompt("Status?", system=system, metadata={"intent": "ping"})

    body = only_request(openai_server).json
    expected = [{"role": "user", "content": "Status?"}]
    if system is not None:
        expected.insert(0, {"role": "system", "content": system})
    assert prompt_of(body) == expected
    assert body["metadata"] == {"intent": "ping"}
    assert body["model"] == MODEL
    assert result["content"] == "All clear."
    assert result.api == api


def test_run_simple_prompt_refuses_empty_text(
    client: ArcanosPythonClient, openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """Empty text fails before any request, with one invalid_input incident."""
    with pytest.raises(InvalidReasoningInput, match="text"):
        client.run_simple_prompt("   ")

    assert openai_server.requests == []
    (delivery,) = receiver.deliveries
    assert delivery.json["incident_class"] == "invalid_input"


# --- secrets ---------------------------------------------------------------------------------------------


def test_api_key_goes_only_into_the_authorization_header(
    client: ArcanosPythonClient, openai_server: FakeOpenAIServer
) -> None:
    """The server sees ``Authorization: Bearer <key>``; the result and its JSON never show the key."""
    result = client.run_reasoning(MESSAGES, metadata={"intent": "audit"})

    request = only_request(openai_server)
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert API_KEY.encode() not in request.body
    assert API_KEY not in result.model_dump_json()
    assert API_KEY not in repr(result)
    assert API_KEY not in repr(client)


# --- model enforcement -----------------------------------------------------------------------------------


def test_another_model_answering_is_refused(
    client: ArcanosPythonClient, openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """An answer from another model raises ModelEnforcementError and reports one incident."""
    openai_server.script(Reply.other_model("gpt-4o"))

    with pytest.raises(ModelEnforcementError) as caught:
        client.run_reasoning(MESSAGES)

    assert caught.value.expected_model == MODEL
    assert caught.value.actual_model == "gpt-4o"
    assert only_request(openai_server).json["model"] == MODEL
    (delivery,) = receiver.deliveries
    assert delivery.json["incident_class"] == "model_enforcement"
    assert delivery.json["model"] == MODEL


def test_dated_snapshot_of_a_bare_alias_is_accepted(
    make_client: Callable[..., ArcanosPythonClient], openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """Configured ``gpt-5.1``, an answer from ``gpt-5.1-2025-11-13`` is the same model."""
    client = make_client(fine_tuned_model="gpt-5.1")
    openai_server.script(Reply.other_model("gpt-5.1-2025-11-13"))

    result = client.run_reasoning(MESSAGES)

    assert only_request(openai_server).json["model"] == "gpt-5.1"
    assert result.model == "gpt-5.1-2025-11-13"
    assert receiver.deliveries == []


@pytest.mark.parametrize(
    ("configured", "answered"),
    [
        ("ft:gpt-5.1:arcanos::abc", "ft:gpt-5.1:arcanos::abc-2025-11-13"),
        ("gpt-5.1-2025-11-13", "gpt-5.1-2025-11-13-2025-12-01"),
        ("gpt-5.1-2025-11-13", "gpt-5.1"),
        ("gpt-5.1", "gpt-5.1-mini"),
        ("gpt-5.1", "gpt-5.1-mini-2025-11-13"),
        ("gpt-5.1", "gpt-5.1-2025-11"),
        ("gpt-5", "gpt-5.1-2025-11-13"),
    ],
)
def test_other_ids_are_not_snapshots(
    make_client: Callable[..., ArcanosPythonClient],
    openai_server: FakeOpenAIServer,
    receiver: WebhookReceiver,
    configured: str,
    answered: str,
) -> None:
    """Fine-tuned or already dated ids must match exactly; near misses of an alias are other models."""
    client = make_client(fine_tuned_model=configured)
    openai_server.script(Reply.other_model(answered))

    with pytest.raises(ModelEnforcementError) as caught:
        client.run_reasoning(MESSAGES)

    assert (caught.value.expected_model, caught.value.actual_model) == (configured, answered)
    assert [delivery.json["incident_class"] for delivery in receiver.deliveries] == ["model_enforcement"]


def test_a_model_argument_is_refused_before_any_request(
    client: ArcanosPythonClient, openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """``model=`` cannot choose another model: it raises and nothing is sent."""
    with pytest.raises(ModelEnforcementError, match="does not take model"):
        client.run_reasoning(MESSAGES, model="gpt-4o")  # type: ignore[arg-type]

    assert openai_server.requests == []
    assert [delivery.json["incident_class"] for delivery in receiver.deliveries] == ["model_enforcement"]


def test_no_fallback_when_the_model_is_not_found(
    client: ArcanosPythonClient, openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """On 404 model_not_found exactly one request is made, naming the configured model."""
    openai_server.always(Reply.error(404, code="model_not_found"))

    with pytest.raises(openai.NotFoundError):
        client.run_reasoning(MESSAGES)

    assert [body["model"] for body in sent(openai_server)] == [MODEL]
    assert [delivery.json["incident_class"] for delivery in receiver.deliveries] == ["not_found"]


# --- where incidents go ----------------------------------------------------------------------------------


@pytest.mark.parametrize("printing", [False, True], ids=["webhook", "stdout"])
def test_notify_false_raises_without_reporting(
    make_client: Callable[..., ArcanosPythonClient],
    openai_server: FakeOpenAIServer,
    receiver: WebhookReceiver,
    capsys: pytest.CaptureFixture[str],
    printing: bool,
) -> None:
    """With ``notify=False`` the failure is raised to the caller and nothing is delivered or printed."""
    client = make_client(printing=printing)
    openai_server.always(Reply.error(401))

    with pytest.raises(openai.AuthenticationError):
        client.run_reasoning(MESSAGES, notify=False)
    with pytest.raises(InvalidReasoningInput):
        client.run_simple_prompt("", notify=False)
    with pytest.raises(ModelEnforcementError):
        client.run_reasoning(MESSAGES, notify=False, model="gpt-4o")  # type: ignore[arg-type]

    assert receiver.deliveries == []
    assert client.notifier.pending() == []
    assert capsys.readouterr().out == ""


def test_without_a_webhook_each_failure_is_one_json_line_on_stdout(
    make_client: Callable[..., ArcanosPythonClient],
    openai_server: FakeOpenAIServer,
    receiver: WebhookReceiver,
    capsys: pytest.CaptureFixture[str],
    api: str,
) -> None:
    """No webhook configured: one incident JSON line per failure on stdout, and nothing else."""
    client = make_client(printing=True)
    assert client.notifier.webhook_url is None
    openai_server.script(Reply.error(401), Reply.other_model("gpt-4o"), Reply.ok("fine"))

    with pytest.raises(openai.AuthenticationError):
        client.run_reasoning(MESSAGES)
    with pytest.raises(ModelEnforcementError):
        client.run_reasoning(MESSAGES, metadata={"intent": "audit"})
    with pytest.raises(InvalidReasoningInput):
        client.run_reasoning([])
    assert client.run_reasoning(MESSAGES)["content"] == "fine"

    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert captured.out.endswith("\n")
    incidents = [json.loads(line) for line in lines]
    assert [incident["incident_class"] for incident in incidents] == [
        "authentication",
        "model_enforcement",
        "invalid_input",
    ]
    assert all(incident["type"] == "arcanos.incident" for incident in incidents)
    assert incidents[1]["metadata"] == {"intent": "audit"}
    assert all(incident["context"] == {"api": api} for incident in incidents)
    assert captured.err == ""
    assert API_KEY not in captured.out
    assert receiver.deliveries == []
