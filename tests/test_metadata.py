"""The audit-metadata contract: OpenAI's limits checked before any request, values coerced, nothing truncated."""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from openapi_schemas import validate

from arcanos_flows.client import ArcanosPythonClient
from arcanos_flows.core.errors import InvalidReasoningInput
from arcanos_flows.core.metadata import MAX_KEY_LENGTH, MAX_KEYS, MAX_VALUE_LENGTH, build_metadata
from arcanos_flows.core.settings import ArcanosSettings
from arcanos_flows.incidents.notifier import MaintenanceNotifier
from arcanos_flows.testing import FakeOpenAIServer, WebhookReceiver

MESSAGES = [{"role": "user", "content": "Report the audit trail."}]


def keys(count: int) -> dict[str, str]:
    return {f"k{index:02d}": f"v{index}" for index in range(count)}


def refused(caller: Any, **kwargs: Any) -> str:
    with pytest.raises(InvalidReasoningInput) as caught:
        build_metadata(caller, **kwargs)
    return str(caught.value)


# --- build_metadata ------------------------------------------------------------------------------


def test_limits_are_openais() -> None:
    """The limits are OpenAI's: 16 keys, 64-character keys, 512-character values."""
    assert (MAX_KEYS, MAX_KEY_LENGTH, MAX_VALUE_LENGTH) == (16, 64, 512)


def test_sixteen_keys_are_accepted() -> None:
    """Exactly 16 keys pass unchanged, in order."""
    assert build_metadata(keys(16)) == keys(16)
    assert list(build_metadata(keys(16))) == list(keys(16))


def test_seventeen_keys_are_refused_naming_the_seventeenth() -> None:
    """A 17th key raises, naming it; nothing is dropped silently."""
    message = refused(keys(17))
    assert "'k16'" in message
    assert "16" in message


def test_none_values_do_not_count_against_the_limit() -> None:
    """None values are dropped before counting, so 16 real keys plus a None one pass."""
    assert build_metadata({**keys(16), "skip": None}) == keys(16)


def test_confirmation_token_counts_against_the_limit() -> None:
    """15 caller keys plus the configured confirmation_token make 16: accepted, token last."""
    merged = build_metadata(keys(15), defaults={"confirmation_token": "ct-1"})
    assert len(merged) == 16
    assert list(merged)[-1] == "confirmation_token"
    assert merged["confirmation_token"] == "ct-1"


def test_sixteen_caller_keys_leave_no_room_for_the_confirmation_token() -> None:
    """16 caller keys plus the token raise; the message says the caller's keys leave no room for it."""
    message = refused(keys(16), defaults={"confirmation_token": "ct-1"})
    assert "'confirmation_token'" in message
    assert "no room" in message
    assert "16 caller keys" in message


def test_caller_confirmation_token_wins_over_the_configured_one() -> None:
    """A caller's confirmation_token replaces the configured one (and adds no key)."""
    merged = build_metadata({"confirmation_token": "mine", **keys(15)}, defaults={"confirmation_token": "configured"})
    assert merged["confirmation_token"] == "mine"
    assert len(merged) == 16


def test_empty_configured_token_is_not_added() -> None:
    """An empty configured token means "not configured": no empty key is sent."""
    assert build_metadata({"a": "b"}, defaults={"confirmation_token": ""}) == {"a": "b"}
    assert build_metadata(None, defaults={"confirmation_token": None}) == {}


def test_identity_keys_override_and_count() -> None:
    """Identity keys (run ids) override same-named caller keys and count against the limit."""
    merged = build_metadata({"flow_run_id": "caller", "a": "1"}, identity={"flow_run_id": "real", "task": "t"})
    assert merged == {"flow_run_id": "real", "a": "1", "task": "t"}
    message = refused(keys(15), identity={"flow_run_id": "r", "task_run_id": "t"})
    assert "'task_run_id'" in message


def test_key_of_64_characters_is_accepted_and_65_refused() -> None:
    """Keys may be 64 characters; a 65-character key is refused, naming it."""
    ok = "k" * 64
    assert build_metadata({ok: "v"}) == {ok: "v"}
    long_key = "audit_" + "x" * 59
    assert len(long_key) == 65
    message = refused({long_key: "v"})
    assert long_key[:64] in message
    assert "65" in message


@pytest.mark.parametrize("key", ["", 7, None, ("a", "b")])
def test_keys_must_be_non_empty_strings(key: Any) -> None:
    """Empty and non-string keys are refused, naming the key."""
    message = refused({key: "v"})
    assert repr(key) in message


def test_value_of_512_characters_is_accepted_and_513_refused() -> None:
    """Values may be 512 characters; 513 is refused naming the key, never truncated."""
    assert build_metadata({"note": "v" * 512}) == {"note": "v" * 512}
    message = refused({"note": "v" * 513})
    assert "'note'" in message
    assert "513" in message


def test_value_limit_counts_characters_not_bytes() -> None:
    """512 multi-byte characters are 512 characters, as OpenAI counts them."""
    value = "é" * 256 + "🔐" * 256
    assert build_metadata({"note": value}) == {"note": value}
    assert "'note'" in refused({"note": value + "é"})


@pytest.mark.parametrize(
    ("value", "sent"),
    [
        (True, "true"),
        (False, "false"),
        (0, "0"),
        (7, "7"),
        (-3, "-3"),
        (1.5, "1.5"),
        (0.1, "0.1"),
        (2.0, "2.0"),
        ("text", "text"),
        ("", ""),
    ],
)
def test_scalars_are_converted_to_strings(value: Any, sent: str) -> None:
    """int, float and bool values become strings (True -> "true"); strings pass unchanged."""
    assert build_metadata({"key": value}) == {"key": sent}


def test_none_values_are_dropped() -> None:
    """None values are left out of the request."""
    assert build_metadata({"a": None, "b": "1"}) == {"b": "1"}


def test_enum_and_subclass_values_send_their_plain_value() -> None:
    """Enum members (int or str based) are sent as their value, not as `Color.RED`."""

    class Level(enum.IntEnum):
        HIGH = 3

    class Kind(str, enum.Enum):
        AUDIT = "audit"

    merged = build_metadata({"level": Level.HIGH, "kind": Kind.AUDIT})
    assert merged == {"level": "3", "kind": "audit"}
    assert type(merged["kind"]) is str


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_refused(value: float) -> None:
    """NaN and infinities are refused, naming the key."""
    assert "'score'" in refused({"score": value})


@pytest.mark.parametrize("value", [["a"], {"a": 1}, b"bytes", object(), ("a",), {"a"}])
def test_other_value_types_are_refused(value: Any) -> None:
    """Lists, dicts, bytes and arbitrary objects are refused, naming the key and the type."""
    message = refused({"payload": value})
    assert "'payload'" in message
    assert type(value).__name__ in message


def test_huge_integers_are_refused_not_crashed_on() -> None:
    """An integer too long for a value raises InvalidReasoningInput, not Python's digit-limit ValueError."""
    assert "'n'" in refused({"n": 10**600})
    assert "'n'" in refused({"n": 10**5000})


@pytest.mark.parametrize("caller", [[("a", "b")], "a=b", 5, {"a", "b"}])
def test_metadata_must_be_a_mapping(caller: Any) -> None:
    """Metadata that is not a mapping is refused outright."""
    assert refused(caller).startswith("metadata: must be a mapping")


def test_no_metadata_is_an_empty_dict() -> None:
    """No metadata at all is fine."""
    assert build_metadata(None) == {}
    assert build_metadata({}) == {}


def test_invalid_metadata_is_a_value_error() -> None:
    """InvalidReasoningInput is a ValueError, so generic handlers catch it too."""
    with pytest.raises(ValueError, match="'x'"):
        build_metadata({"x": object()})


# --- through the client, against the fake server -------------------------------------------------


@pytest.fixture
def make_client(
    make_settings: Callable[..., ArcanosSettings],
) -> Iterator[Callable[..., ArcanosPythonClient]]:
    clients: list[ArcanosPythonClient] = []

    def make(**overrides: Any) -> ArcanosPythonClient:
        settings = make_settings(max_retries=0, **overrides)
        client = ArcanosPythonClient(settings, notifier=MaintenanceNotifier(settings, backoff=0.01))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_sent_metadata_is_exactly_the_result_metadata(
    make_client: Callable[..., ArcanosPythonClient], openai_server: FakeOpenAIServer, api: str
) -> None:
    """The request carries exactly the result's metadata, with store=true, coerced and with the token."""
    client = make_client(confirmation_token="ct-9", openai_api=api)
    caller = {**keys(12), "run": 7, "dry": True, "ratio": 0.25, "skip": None}
    result = client.run_reasoning(MESSAGES, metadata=caller)
    expected = {**keys(12), "run": "7", "dry": "true", "ratio": "0.25", "confirmation_token": "ct-9"}
    assert result.metadata == expected
    assert result.stored is True
    (request,) = openai_server.completion_requests
    assert request.json["metadata"] == expected
    assert request.json["store"] is True
    validate(request.json, "CreateChatCompletionRequest" if api == "chat" else "CreateResponse")


def test_sixteen_keys_of_maximal_size_reach_the_server_whole(
    make_client: Callable[..., ArcanosPythonClient], openai_server: FakeOpenAIServer
) -> None:
    """16 keys of 64 characters with 512-character values are sent untruncated."""
    caller = {f"{index:02d}".ljust(64, "k"): str(index) * 512 for index in range(1, 10)}
    caller.update({f"{index:02d}".ljust(64, "k"): "v" * 512 for index in range(10, 17)})
    assert len(caller) == 16
    result = make_client().run_reasoning(MESSAGES, metadata=caller)
    (request,) = openai_server.completion_requests
    assert request.json["metadata"] == caller == result.metadata


def test_caller_token_wins_in_the_request(
    make_client: Callable[..., ArcanosPythonClient], openai_server: FakeOpenAIServer
) -> None:
    """The caller's confirmation_token is the one sent."""
    result = make_client(confirmation_token="configured").run_reasoning(
        MESSAGES, metadata={"confirmation_token": "caller"}
    )
    (request,) = openai_server.completion_requests
    assert request.json["metadata"] == {"confirmation_token": "caller"} == result.metadata


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_store_false_sends_no_metadata_but_keeps_it_in_the_result(
    make_client: Callable[..., ArcanosPythonClient], openai_server: FakeOpenAIServer, api: str
) -> None:
    """ARCANOS_STORE=false: no metadata and no store=true are sent; result.metadata still holds the audit."""
    client = make_client(store=False, confirmation_token="ct-1", openai_api=api)
    result = client.run_reasoning(MESSAGES, metadata={"intent": "audit", "n": 2})
    (request,) = openai_server.completion_requests
    assert "metadata" not in request.json
    assert request.json.get("store") is not True
    assert result.metadata == {"intent": "audit", "n": "2", "confirmation_token": "ct-1"}
    assert result.stored is False


def test_no_metadata_sends_no_store_flag_on_chat(
    make_client: Callable[..., ArcanosPythonClient], openai_server: FakeOpenAIServer
) -> None:
    """Without any metadata nothing asks the Chat Completions API to store the request."""
    result = make_client().run_reasoning(MESSAGES)
    (request,) = openai_server.completion_requests
    assert "metadata" not in request.json
    assert "store" not in request.json
    assert result.metadata == {}


@pytest.mark.parametrize(
    ("metadata", "named"),
    [
        (keys(17), "'k16'"),
        ({"k" * 65: "v"}, "k" * 64),
        ({"note": "v" * 513}, "'note'"),
        ({"score": math.nan}, "'score'"),
        ({"payload": ["a"]}, "'payload'"),
        ("intent=audit", "metadata: must be a mapping"),
    ],
)
def test_invalid_metadata_makes_no_request_and_reports_invalid_input(
    make_client: Callable[..., ArcanosPythonClient],
    openai_server: FakeOpenAIServer,
    receiver: WebhookReceiver,
    metadata: Any,
    named: str,
) -> None:
    """Invalid metadata raises InvalidReasoningInput before any HTTP request and sends one invalid_input incident."""
    client = make_client()
    with pytest.raises(InvalidReasoningInput) as caught:
        client.run_reasoning(MESSAGES, metadata=metadata)
    assert named in str(caught.value)
    assert openai_server.requests == []
    (delivery,) = receiver.wait_for(1)
    incident = delivery.json
    assert incident["incident_class"] == "invalid_input"
    assert incident["error_type"] == "arcanos_flows.errors.InvalidReasoningInput"
    assert incident["reason"] == str(caught.value)
    assert incident["attempts"] in (None, 0)
    assert len(receiver.deliveries) == 1


def test_sixteen_caller_keys_and_configured_token_make_no_request(
    make_client: Callable[..., ArcanosPythonClient], openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """The configured token counts: 16 caller keys with a token configured fail before any request."""
    with pytest.raises(InvalidReasoningInput, match="no room"):
        make_client(confirmation_token="ct-1").run_reasoning(MESSAGES, metadata=keys(16))
    assert openai_server.requests == []
    assert receiver.wait_for(1)[0].json["incident_class"] == "invalid_input"
