"""Incidents: the documented JSON, classification of every failure, and no prompt or secret in them."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx2
import openai
import pydantic
import pytest
from conftest import API_KEY, MODEL, WEBHOOK_SECRET

from arcanos_flows.client import ArcanosPythonClient
from arcanos_flows.core.errors import (
    TRANSIENT_CLASSES,
    ArcanosError,
    Classification,
    ConfigurationError,
    EmptyCompletionError,
    IncidentClass,
    IncompleteCompletionError,
    InvalidReasoningInput,
    ModelEnforcementError,
    RefusalError,
    UpstreamResponseError,
    classify,
)
from arcanos_flows.core.redaction import REDACTED, register_secret
from arcanos_flows.core.settings import ArcanosSettings
from arcanos_flows.incidents.model import INCIDENT_SCHEMA_VERSION, MAX_REASON_BYTES, Incident
from arcanos_flows.incidents.notifier import MaintenanceNotifier
from arcanos_flows.testing import FakeOpenAIServer, Reply, WebhookReceiver

DOCUMENTED_FIELDS = {
    "type",
    "schema_version",
    "incident_id",
    "incident_class",
    "severity",
    "reason",
    "error_type",
    "occurred_at",
    "source",
    "model",
    "metadata",
    "request_id",
    "http_status",
    "attempts",
    "message_count",
    "messages_sha256",
    "context",
}
PROMPT = [
    {"role": "system", "content": "You are the Arcanos maintenance AI; codeword PELICAN-SYSTEM."},
    {"role": "user", "content": "Summarise ticket 4411 for customer Ada Lovelace, codeword OSPREY-USER."},
]


def sha256_of(messages: list[dict[str, Any]]) -> str:
    canonical = json.dumps(messages, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@pytest.fixture
def client(
    make_settings: Callable[..., ArcanosSettings], notifier: MaintenanceNotifier
) -> Iterator[ArcanosPythonClient]:
    with ArcanosPythonClient(make_settings(max_retries=0), notifier=notifier) as instance:
        yield instance


def failed_call_incident(
    client: ArcanosPythonClient, server: FakeOpenAIServer, receiver: WebhookReceiver, reply: Reply, **kwargs: Any
) -> tuple[BaseException, dict[str, Any], bytes]:
    server.script(reply)
    with pytest.raises(Exception) as caught:  # noqa: PT011 - any failure; its class is asserted by the caller
        client.run_reasoning(PROMPT, **kwargs)
    (delivery,) = receiver.wait_for(1)
    assert len(receiver.deliveries) == 1
    return caught.value, delivery.json, delivery.body


# --- the JSON shape ------------------------------------------------------------------------------


def test_incident_of_a_failed_call_has_every_documented_field(
    client: ArcanosPythonClient, openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """A failed call's incident carries every documented field, with the documented types and values."""
    before = datetime.now(timezone.utc)
    error, incident, _ = failed_call_incident(
        client, openai_server, receiver, Reply.error(500), metadata={"intent": "audit", "run": 3}
    )
    assert isinstance(error, openai.InternalServerError)
    assert set(incident) == DOCUMENTED_FIELDS
    assert incident["type"] == "arcanos.incident"
    assert incident["schema_version"] == INCIDENT_SCHEMA_VERSION == 1
    assert uuid.UUID(incident["incident_id"]).version == 4
    assert incident["incident_class"] == "upstream_error"
    assert incident["severity"] == "error"
    assert isinstance(incident["reason"], str)
    assert incident["reason"]
    assert incident["error_type"] == "openai.InternalServerError"
    assert incident["occurred_at"].endswith(("Z", "+00:00"))
    occurred = datetime.fromisoformat(incident["occurred_at"].replace("Z", "+00:00"))
    assert occurred.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=1) <= occurred <= datetime.now(timezone.utc) + timedelta(seconds=1)
    assert incident["source"] == "arcanos_flows.client"
    assert incident["model"] == MODEL
    assert incident["metadata"] == {"intent": "audit", "run": "3"}
    assert incident["request_id"] == "req_1"
    assert incident["http_status"] == 500
    assert incident["attempts"] == 1
    assert incident["message_count"] == 2
    assert incident["messages_sha256"] == sha256_of(PROMPT)
    assert isinstance(incident["context"], dict)


def test_incident_never_carries_the_prompt(
    client: ArcanosPythonClient, openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """The prompt text is never in an incident: only its count and SHA-256."""
    _, incident, body = failed_call_incident(client, openai_server, receiver, Reply.other_model("gpt-4o"))
    assert incident["incident_class"] == "model_enforcement"
    text = body.decode()
    for message in PROMPT:
        assert message["content"] not in text
    for codeword in ("PELICAN-SYSTEM", "OSPREY-USER", "Ada Lovelace"):
        assert codeword not in text
    assert incident["message_count"] == len(PROMPT)
    assert incident["messages_sha256"] == sha256_of(PROMPT)


def test_incident_of_a_refused_input_carries_no_prompt_either(
    client: ArcanosPythonClient, openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """Even for messages refused by the input contract, the incident holds no message text."""
    bad = [*PROMPT, {"role": "robot", "content": "codeword HERON-ROBOT"}]
    with pytest.raises(InvalidReasoningInput):
        client.run_reasoning(bad)
    (delivery,) = receiver.wait_for(1)
    assert b"HERON-ROBOT" not in delivery.body
    assert b"OSPREY-USER" not in delivery.body
    assert delivery.json["message_count"] == 3
    assert delivery.json["messages_sha256"] == sha256_of(bad)
    assert openai_server.requests == []


def test_incident_round_trips_through_json() -> None:
    """An incident read back from its JSON equals the original."""
    incident = Incident(
        incident_class=IncidentClass.RATE_LIMIT,
        reason="Rate limit reached — réessayez",
        error_type="openai.RateLimitError",
        source="tests",
        model=MODEL,
        metadata={"intent": "audit"},
        request_id="req_9",
        http_status=429,
        attempts=3,
        message_count=2,
        messages_sha256="a" * 64,
        context={"flow_run_id": str(uuid.uuid4()), "step": ["plan", 2, True, None, 1.5], "nested": {"k": "v"}},
    )
    assert Incident.model_validate_json(incident.to_json()) == incident
    minimal = Incident.from_exception(KeyError("missing"))
    assert Incident.model_validate_json(minimal.to_json()) == minimal
    assert json.loads(incident.to_json())["incident_class"] == "rate_limit"


def test_occurred_at_is_always_utc() -> None:
    """Naive times are taken as UTC and other zones are converted to UTC."""
    naive = Incident(incident_class="unknown", reason="x", error_type="E", occurred_at=datetime(2025, 1, 2, 3, 4, 5))
    assert naive.occurred_at == datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    paris = timezone(timedelta(hours=1))
    shifted = Incident(
        incident_class="unknown", reason="x", error_type="E", occurred_at=datetime(2025, 1, 2, 4, 4, 5, tzinfo=paris)
    )
    assert shifted.occurred_at.utcoffset() == timedelta(0)
    assert json.loads(shifted.to_json())["occurred_at"].startswith("2025-01-02T03:04:05")


def test_incidents_are_immutable_and_have_unique_ids() -> None:
    """Incidents are frozen; each gets its own UUID."""
    first = Incident.from_exception(RuntimeError("a"))
    second = Incident.from_exception(RuntimeError("a"))
    assert first.incident_id != second.incident_id
    with pytest.raises(pydantic.ValidationError):
        first.reason = "changed"  # type: ignore[misc]


def test_from_exception_fields_and_class_override() -> None:
    """from_exception takes any field, and an explicit incident class wins over the classification."""
    incident = Incident.from_exception(
        RuntimeError("worker died"), source="prefect", incident_class=IncidentClass.UNKNOWN, model=MODEL, attempts=2
    )
    assert (incident.source, incident.model, incident.attempts) == ("prefect", MODEL, 2)
    assert incident.error_type == "builtins.RuntimeError"
    assert incident.reason == "worker died"
    assert Incident.from_exception(RuntimeError()).reason == "RuntimeError"


def test_a_broken_str_does_not_stop_the_incident() -> None:
    """An exception whose __str__ fails still becomes an incident."""

    class Broken(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no text")

    incident = Incident.from_exception(Broken())
    assert incident.reason == "Broken"
    assert incident.error_type.endswith("Broken")


# --- redaction and bounds ------------------------------------------------------------------------


def test_reason_redacts_registered_secrets_and_key_shapes() -> None:
    """The reason loses registered secrets, sk- keys, whsec_ secrets and Bearer values."""
    register_secret("registered-secret-value-31337")
    reason = (
        "upstream said: Incorrect API key provided: sk-proj-AbCdEf0123456789xyz; "
        f"secret {WEBHOOK_SECRET}; header Authorization: Bearer eyJhbGciOi.payload.sig; "
        "and registered-secret-value-31337 too"
    )
    incident = Incident.from_exception(RuntimeError(reason))
    for secret in ("sk-proj-AbCdEf0123456789xyz", WEBHOOK_SECRET, "eyJhbGciOi.payload.sig", "registered-secret-value"):
        assert secret not in incident.reason
        assert secret not in incident.to_json()
    assert incident.reason.count(REDACTED) == 4
    assert incident.reason.startswith("upstream said: Incorrect API key provided: ")


def test_configured_api_key_is_redacted_from_incidents(make_settings: Callable[..., ArcanosSettings]) -> None:
    """Once settings are loaded, the API key is redacted wherever it would appear, whatever its shape."""
    odd_key = "proxy-key-without-sk-prefix-0042"
    make_settings(openai_api_key=odd_key)
    incident = Incident.from_exception(RuntimeError(f"proxy refused key {odd_key}"), context={"echo": odd_key})
    assert odd_key not in incident.to_json()


def test_upstream_echo_of_the_key_is_redacted_in_the_delivered_incident(
    client: ArcanosPythonClient, openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """A 401 whose message echoes the API key and a Bearer header is delivered redacted."""
    echo = f"Incorrect API key provided: {API_KEY}. Sent Authorization: Bearer {API_KEY}"
    error, incident, body = failed_call_incident(
        client, openai_server, receiver, Reply.error(401, message=echo, code="invalid_api_key")
    )
    assert isinstance(error, openai.AuthenticationError)
    assert incident["incident_class"] == "authentication"
    assert API_KEY.encode() not in body
    assert REDACTED in incident["reason"]


def test_reason_is_capped_at_4_kib_of_utf8() -> None:
    """Reasons are cut at 4 KiB of UTF-8 without splitting a character, and say they were cut."""
    assert MAX_REASON_BYTES == 4096
    for unit in ("x", "é", "€", "🔐"):
        original = unit * 5000
        reason = Incident.from_exception(RuntimeError(original)).reason
        encoded = reason.encode("utf-8")
        assert len(encoded) <= MAX_REASON_BYTES
        assert len(encoded) > MAX_REASON_BYTES - 64
        assert "truncated" in reason
        kept = reason.split(" …[truncated]")[0]
        assert original.startswith(kept)
        assert set(kept) == {unit}


def test_reason_of_exactly_4_kib_is_kept_whole() -> None:
    """A reason of exactly 4096 bytes is not cut; 4097 is."""
    exact = "ab" * 2047 + "zz"
    assert len(exact.encode()) == 4096
    assert Incident.from_exception(RuntimeError(exact)).reason == exact
    assert Incident.from_exception(RuntimeError(exact + "!")).reason != exact + "!"


def test_reason_with_lone_surrogates_still_serialises() -> None:
    """Undecodable text (lone surrogates) cannot break the incident's JSON."""
    incident = Incident.from_exception(RuntimeError("bad byte \udcff here"))
    assert json.loads(incident.to_json())["reason"].startswith("bad byte ")


def test_context_values_are_redacted_and_bounded() -> None:
    """Context is redacted at every depth (keys, bytes and objects too) and each value stays small."""
    incident = Incident.from_exception(
        RuntimeError("x"),
        context={
            "note": "token sk-abcdefghijklmnop0123",
            "nested": {"headers": ["Authorization: Bearer abc.def.ghi"], "tuple": ("whsec_AAAAAAAAAAAAAAAAAAAA",)},
            "raw": b"sk-bytesbytesbytes0123",
            "error": ValueError("sk-inanexception0123"),
            "sk-keyasakey0123456": "v",
            "big": "é" * 5000,
            "many": list(range(500)),
            "wide": {f"k{index}": index for index in range(500)},
            "long_key_" + "k" * 500: 1,
            "numbers": [1, 2.5, True, None],
            "nan": float("nan"),
        },
    )
    text = incident.to_json()
    for secret in (
        "abcdefghijklmnop",
        "abc.def.ghi",
        "AAAAAAAAAAAAAAAAAAAA",
        "bytesbytes",
        "inanexception",
        "keyasakey",
    ):
        assert secret not in text
    context = json.loads(text)["context"]
    assert len(context["big"].encode()) <= 1024
    assert len(context["many"]) <= 64
    assert len(context["wide"]) <= 64
    assert all(len(key) <= 128 for key in context)
    assert context["numbers"] == [1, 2.5, True, None]
    assert len(text.encode()) < 64 * 1024


def test_valid_metadata_is_never_cut_in_an_incident() -> None:
    """Audit metadata within OpenAI's limits (512 characters, even 4-byte ones) appears whole."""
    metadata = {"note": "🔐" * 512, "intent": "audit"}
    incident = Incident.from_exception(RuntimeError("x"), metadata=metadata)
    assert json.loads(incident.to_json())["metadata"] == metadata


def test_metadata_in_incidents_is_redacted() -> None:
    """A secret a caller put into metadata does not reach the incident."""
    incident = Incident.from_exception(RuntimeError("x"), metadata={"auth": "Bearer zzz.yyy.xxx"})
    assert "zzz.yyy.xxx" not in incident.to_json()


# --- classify ------------------------------------------------------------------------------------


def test_incident_classes_are_the_documented_ones() -> None:
    """Every class of the contract exists (later layers may add more); the transient ones are retry-worthy."""
    assert {member.value for member in IncidentClass} >= {
        "configuration",
        "authentication",
        "permission",
        "rate_limit",
        "quota_exhausted",
        "timeout",
        "connection",
        "upstream_error",
        "bad_request",
        "not_found",
        "model_enforcement",
        "empty_completion",
        "incomplete_completion",
        "refusal",
        "invalid_response",
        "invalid_input",
        "unknown",
    }
    assert str(IncidentClass.RATE_LIMIT) == "rate_limit"
    assert {IncidentClass.RATE_LIMIT, IncidentClass.TIMEOUT, IncidentClass.CONNECTION} <= TRANSIENT_CLASSES
    assert IncidentClass.QUOTA_EXHAUSTED not in TRANSIENT_CLASSES
    assert IncidentClass.AUTHENTICATION not in TRANSIENT_CLASSES


@pytest.fixture
def sdk(openai_server: FakeOpenAIServer) -> Iterator[openai.OpenAI]:
    """The real OpenAI SDK pointed at the fake server, without retries."""
    with openai.OpenAI(api_key=API_KEY, base_url=openai_server.base_url, max_retries=0, timeout=5.0) as client:
        yield client


def sdk_error(sdk: openai.OpenAI, server: FakeOpenAIServer, reply: Reply, **kwargs: Any) -> BaseException:
    server.script(reply)
    with pytest.raises(openai.OpenAIError) as caught:
        sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], **kwargs)
    return caught.value


@pytest.mark.parametrize(
    ("reply", "exception_type", "incident_class"),
    [
        (Reply.error(400), openai.BadRequestError, "bad_request"),
        (Reply.error(401), openai.AuthenticationError, "authentication"),
        (Reply.error(403), openai.PermissionDeniedError, "permission"),
        (Reply.error(404, code="model_not_found"), openai.NotFoundError, "not_found"),
        (Reply.error(408), openai.APIStatusError, "timeout"),
        (Reply.error(409), openai.ConflictError, "upstream_error"),
        (Reply.error(422), openai.UnprocessableEntityError, "bad_request"),
        (Reply.error(429), openai.RateLimitError, "rate_limit"),
        (Reply.error(429, code="insufficient_quota"), openai.RateLimitError, "quota_exhausted"),
        (Reply.error(500), openai.InternalServerError, "upstream_error"),
        (Reply.error(502), openai.InternalServerError, "upstream_error"),
        (Reply.error(503), openai.InternalServerError, "upstream_error"),
        (Reply.error(418), openai.APIStatusError, "unknown"),
    ],
    ids=lambda value: str(value.status) if isinstance(value, Reply) else None,
)
def test_classify_sdk_status_errors(
    sdk: openai.OpenAI,
    openai_server: FakeOpenAIServer,
    reply: Reply,
    exception_type: type[BaseException],
    incident_class: str,
) -> None:
    """Each SDK status error maps to its incident class, with the status, request id and one attempt."""
    error = sdk_error(sdk, openai_server, reply)
    assert type(error) is exception_type
    facts = classify(error)
    assert facts.incident_class.value == incident_class
    assert facts.http_status == reply.status
    assert facts.request_id == "req_1"
    assert facts.attempts == 1
    assert Incident.from_exception(error).error_type == f"openai.{exception_type.__name__}"


def test_classify_counts_sdk_retries(openai_server: FakeOpenAIServer) -> None:
    """Attempts include the SDK's retries: 2 retries on a 503 make 3 attempts."""
    fast_503 = dataclasses.replace(Reply.error(503), headers={"retry-after-ms": "5"})
    openai_server.always(fast_503)
    with openai.OpenAI(api_key=API_KEY, base_url=openai_server.base_url, max_retries=2, timeout=5.0) as sdk:
        error = sdk_error(sdk, openai_server, fast_503)
    assert classify(error) == Classification(IncidentClass.UPSTREAM_ERROR, 503, "req_3", 3)
    assert len(openai_server.completion_requests) == 3


def test_classify_timeout(sdk: openai.OpenAI, openai_server: FakeOpenAIServer) -> None:
    """A server slower than the timeout is a `timeout` (APITimeoutError), not a mere connection error."""
    error = sdk_error(sdk, openai_server, Reply.slow(1.0), timeout=0.2)
    assert isinstance(error, openai.APITimeoutError)
    facts = classify(error)
    assert facts.incident_class is IncidentClass.TIMEOUT
    assert facts.http_status is None
    assert facts.attempts == 1


def test_classify_dropped_connection(sdk: openai.OpenAI, openai_server: FakeOpenAIServer) -> None:
    """A hang-up without an answer is a `connection` failure."""
    error = sdk_error(sdk, openai_server, Reply.drop())
    assert type(error) is openai.APIConnectionError
    assert classify(error).incident_class is IncidentClass.CONNECTION


def test_classify_refused_connection() -> None:
    """Nothing listening is a `connection` failure."""
    with FakeOpenAIServer() as gone:
        base_url = gone.base_url
    with (
        openai.OpenAI(api_key=API_KEY, base_url=base_url, max_retries=0, timeout=2.0) as sdk,
        pytest.raises(openai.APIConnectionError) as caught,
    ):
        sdk.models.list()
    assert classify(caught.value).incident_class is IncidentClass.CONNECTION


def test_classify_response_validation_error(openai_server: FakeOpenAIServer) -> None:
    """A 200 the SDK's strict validation rejects is an `invalid_response`, with its status and request id."""
    with openai.OpenAI(
        api_key=API_KEY, base_url=openai_server.base_url, max_retries=0, _strict_response_validation=True
    ) as sdk:
        error = sdk_error(sdk, openai_server, Reply.wrong_shape())
    assert isinstance(error, openai.APIResponseValidationError)
    facts = classify(error)
    assert facts.incident_class is IncidentClass.INVALID_RESPONSE
    assert facts.http_status == 200
    assert facts.request_id == "req_1"


@pytest.mark.parametrize(
    ("reply", "exception_type", "incident_class"),
    [
        (Reply.length("partial"), openai.LengthFinishReasonError, IncidentClass.INCOMPLETE_COMPLETION),
        (Reply(finish_reason="content_filter"), openai.ContentFilterFinishReasonError, IncidentClass.REFUSAL),
    ],
)
def test_classify_parse_finish_reason_errors(
    sdk: openai.OpenAI,
    openai_server: FakeOpenAIServer,
    reply: Reply,
    exception_type: type[BaseException],
    incident_class: IncidentClass,
) -> None:
    """The SDK's structured-output errors: length is incomplete_completion, content filter is refusal."""

    class Plan(pydantic.BaseModel):
        steps: list[str]

    openai_server.script(reply)
    with pytest.raises(exception_type) as caught:
        sdk.chat.completions.parse(model=MODEL, messages=[{"role": "user", "content": "plan"}], response_format=Plan)
    assert classify(caught.value).incident_class is incident_class


def test_classify_quota_signalled_by_error_type_only(sdk: openai.OpenAI, openai_server: FakeOpenAIServer) -> None:
    """A 429 whose `type` (not `code`) says insufficient_quota is still quota_exhausted."""
    body = b'{"error": {"message": "You exceeded your current quota.", "type": "insufficient_quota", "code": null}}'
    error = sdk_error(sdk, openai_server, Reply(status=429, body=body))
    assert isinstance(error, openai.RateLimitError)
    assert classify(error).incident_class is IncidentClass.QUOTA_EXHAUSTED


def test_classify_oauth_error_as_authentication(openai_server: FakeOpenAIServer) -> None:
    """A failed workload-identity token exchange (OAuthError) is `authentication`, whatever its status."""
    openai_server.script(Reply.error(400))
    response = httpx2.post(f"{openai_server.base_url}/chat/completions", json={"model": MODEL, "messages": []})
    assert response.status_code == 400
    error = openai.OAuthError(response=response, body={"error": "invalid_grant", "error_description": "expired"})
    facts = classify(error)
    assert facts.incident_class is IncidentClass.AUTHENTICATION
    assert facts.http_status == 400


def test_classify_closed_websocket_as_connection() -> None:
    """A WebSocket that closed with unsent messages is a `connection` failure."""
    error = openai.WebSocketConnectionClosedError("closed", unsent_messages=["{}"])
    assert classify(error).incident_class is IncidentClass.CONNECTION


def test_classify_other_sdk_errors_as_unknown() -> None:
    """SDK errors without a meaning here (the bare base class) are `unknown`."""
    assert classify(openai.OpenAIError("something")).incident_class is IncidentClass.UNKNOWN
    assert classify(openai.WebSocketQueueFullError("full")).incident_class is IncidentClass.UNKNOWN
    assert classify(openai.InvalidWebhookSignatureError("bad")).incident_class is IncidentClass.UNKNOWN


@pytest.mark.parametrize(
    ("error", "incident_class"),
    [
        (ConfigurationError("Missing required environment variable: OPENAI_API_KEY"), IncidentClass.CONFIGURATION),
        (InvalidReasoningInput("messages[0].role: bad"), IncidentClass.INVALID_INPUT),
        (ModelEnforcementError("gpt-4o answered", expected_model=MODEL, actual_model="gpt-4o"), "model_enforcement"),
        (UpstreamResponseError("not JSON", http_status=200, request_id="req_7", attempts=2), "invalid_response"),
        (EmptyCompletionError("no choices"), IncidentClass.EMPTY_COMPLETION),
        (IncompleteCompletionError("length"), IncidentClass.INCOMPLETE_COMPLETION),
        (RefusalError("refused", refusal="no"), IncidentClass.REFUSAL),
        (ArcanosError("generic"), IncidentClass.UNKNOWN),
    ],
)
def test_classify_project_exceptions(error: ArcanosError, incident_class: IncidentClass | str) -> None:
    """Project exceptions classify as their own incident class, carrying their HTTP facts."""
    facts = classify(error)
    assert facts.incident_class == IncidentClass(incident_class)
    assert facts.incident_class is error.incident_class
    assert (facts.http_status, facts.request_id, facts.attempts) == (
        error.http_status,
        error.request_id,
        error.attempts,
    )
    assert Incident.from_exception(error).error_type == f"arcanos_flows.errors.{type(error).__name__}"


def test_classify_carries_http_facts_of_project_exceptions() -> None:
    """request_id, http_status and attempts of a project exception reach the incident."""
    incident = Incident.from_exception(UpstreamResponseError("not JSON", http_status=200, request_id="r9", attempts=2))
    assert (incident.http_status, incident.request_id, incident.attempts) == (200, "r9", 2)


@pytest.mark.parametrize("error", [KeyError("x"), RuntimeError("boom"), TimeoutError(), ZeroDivisionError()])
def test_classify_unknown_exceptions(error: BaseException) -> None:
    """Anything else is `unknown`, without HTTP facts."""
    assert classify(error) == Classification(IncidentClass.UNKNOWN)


def test_classify_json_decode_error_is_invalid_response() -> None:
    """A JSONDecodeError (a body that is not JSON) is an `invalid_response`."""
    with pytest.raises(json.JSONDecodeError) as caught:
        json.loads("{not json")
    assert classify(caught.value).incident_class is IncidentClass.INVALID_RESPONSE


def test_an_incident_never_exceeds_16_kib_and_keeps_what_finds_the_run() -> None:
    """Oversized context and metadata shrink (marked truncated); the run and step ids survive."""
    from arcanos_flows.incidents.model import MAX_INCIDENT_BYTES

    incident = Incident(
        incident_class=IncidentClass.UNKNOWN,
        reason="r" * 10_000,
        error_type="builtins.RuntimeError",
        metadata={f"key{n}": "\U0001f600" * 512 for n in range(16)},
        context={"flow_run_id": "run-1", "task_run_name": "reasoning[plan]"}
        | {f"note{n}": "n" * 1000 for n in range(60)},
    )

    assert len(incident.to_json().encode()) <= MAX_INCIDENT_BYTES
    assert incident.context == {"flow_run_id": "run-1", "task_run_name": "reasoning[plan]", "truncated": True}
    assert Incident.model_validate_json(incident.to_json()) == incident


def test_a_small_incident_is_left_whole() -> None:
    """Shrinking only happens when needed: an ordinary incident carries its whole context, unmarked."""
    incident = Incident(
        incident_class=IncidentClass.TIMEOUT, reason="slow", error_type="x.Y", context={"note": "n" * 900}
    )
    assert incident.context == {"note": "n" * 900}
