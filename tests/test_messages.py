"""The input contract: messages and options checked before any request, each error naming index and field."""

from __future__ import annotations

import hashlib
import json
from collections import UserList
from collections.abc import Callable, Iterator
from types import MappingProxyType
from typing import Any

import pytest

from arcanos_flows.client import ArcanosPythonClient
from arcanos_flows.core.errors import ArcanosError, InvalidReasoningInput, ModelEnforcementError
from arcanos_flows.core.messages import ROLES, check_messages, check_options, fingerprint
from arcanos_flows.core.settings import ArcanosSettings
from arcanos_flows.incidents.notifier import MaintenanceNotifier
from arcanos_flows.testing import FakeOpenAIServer, WebhookReceiver

USER = {"role": "user", "content": "What changed in the last deploy?"}


def refused(messages: Any) -> str:
    with pytest.raises(InvalidReasoningInput) as caught:
        check_messages(messages)
    return str(caught.value)


# --- check_messages ------------------------------------------------------------------------------


def test_valid_messages_come_back_as_plain_dicts() -> None:
    """Every role is accepted; the result is a list of fresh dicts, with `name` kept when given."""
    messages = [{"role": role, "content": f"{role} says hi"} for role in ROLES]
    messages.append({"role": "user", "content": "hi", "name": "ops"})
    checked = check_messages(tuple(messages))
    assert checked == messages
    assert all(type(item) is dict for item in checked)
    assert checked[0] is not messages[0]
    assert set(ROLES) == {"system", "developer", "user", "assistant"}


def test_any_sequence_of_mappings_is_accepted() -> None:
    """Tuples, list-likes and read-only mappings are fine."""
    assert check_messages(UserList([MappingProxyType(USER)])) == [USER]


@pytest.mark.parametrize(
    "messages",
    ["hello", b"hello", bytearray(b"hello"), USER, None, 42, (item for item in [USER]), {USER["content"]}],
    ids=["str", "bytes", "bytearray", "dict", "None", "int", "generator", "set"],
)
def test_messages_must_be_a_list(messages: Any) -> None:
    """A string, a single dict, None or a generator is refused: messages must be a list."""
    message = refused(messages)
    assert message.startswith("messages: ")
    assert "list" in message


def test_messages_must_not_be_empty() -> None:
    """An empty list is refused."""
    assert refused([]).startswith("messages: ")
    assert refused(()).startswith("messages: ")


@pytest.mark.parametrize("item", ["hello", ["user", "hi"], None, 3])
def test_each_message_must_be_a_mapping(item: Any) -> None:
    """A non-mapping item is refused, naming its index."""
    assert refused([USER, item]).startswith("messages[1]: ")


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({"content": "hi"}, "role"),
        ({"role": "robot", "content": "hi"}, "role"),
        ({"role": "User", "content": "hi"}, "role"),
        ({"role": "tool", "content": "hi"}, "role"),
        ({"role": None, "content": "hi"}, "role"),
        ({"role": ["user"], "content": "hi"}, "role"),
        ({"role": "user"}, "content"),
        ({"role": "user", "content": ""}, "content"),
        ({"role": "user", "content": "  \n\t "}, "content"),
        ({"role": "user", "content": None}, "content"),
        ({"role": "user", "content": 42}, "content"),
        ({"role": "user", "content": [{"type": "text", "text": "hi"}]}, "content"),
        ({"role": "user", "content": b"hi"}, "content"),
        ({"role": "user", "content": "hi", "name": ""}, "name"),
        ({"role": "user", "content": "hi", "name": 5}, "name"),
        ({"role": "user", "content": "hi", "tool_calls": []}, "tool_calls"),
        ({"role": "user", "content": "hi", "model": "gpt-4o"}, "model"),
    ],
)
def test_errors_name_the_index_and_field(message: dict[str, Any], field: str) -> None:
    """A bad role, missing or blank content, or an unknown field names `messages[i].field`."""
    text = refused([{"role": "system", "content": "be brief"}, message])
    assert text.startswith(f"messages[1].{field}: ")


def test_missing_fields_say_missing() -> None:
    """A missing role or content is reported as missing, not as a strange value."""
    assert "missing" in refused([{"content": "hi"}])
    assert "missing" in refused([{"role": "user"}])


def test_bad_role_lists_the_allowed_roles() -> None:
    """The error says which roles are accepted."""
    text = refused([{"role": "robot", "content": "hi"}])
    assert all(role in text for role in ROLES)
    assert "'robot'" in text


def test_first_bad_message_is_reported() -> None:
    """With several problems, the first offending index is named."""
    assert refused([USER, {"role": "user", "content": ""}, {"role": "x"}]).startswith("messages[1].content")


def test_invalid_reasoning_input_is_a_value_error_and_an_arcanos_error() -> None:
    """InvalidReasoningInput is both a ValueError and an ArcanosError of class invalid_input."""
    with pytest.raises(InvalidReasoningInput) as caught:
        check_messages([])
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, ArcanosError)
    assert caught.value.incident_class.value == "invalid_input"


# --- check_options -------------------------------------------------------------------------------

VALID_OPTIONS: dict[str, Any] = {
    "reasoning_effort": None,
    "max_output_tokens": None,
    "response_format": None,
    "timeout": None,
}


@pytest.mark.parametrize(
    "options",
    [
        {"reasoning_effort": "none"},
        {"reasoning_effort": "minimal"},
        {"reasoning_effort": "xhigh"},
        {"max_output_tokens": 1},
        {"response_format": {"type": "text"}},
        {"response_format": {"type": "json_object"}},
        {"response_format": {"type": "json_schema", "json_schema": {"name": "plan", "schema": {"type": "object"}}}},
        {"timeout": 0.5},
        {"timeout": 3600},
    ],
)
def test_valid_options_pass(options: dict[str, Any]) -> None:
    """Documented option values are accepted."""
    check_options(**{**VALID_OPTIONS, **options})


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("reasoning_effort", "maximum"),
        ("reasoning_effort", "HIGH"),
        ("reasoning_effort", 3),
        ("max_output_tokens", 0),
        ("max_output_tokens", -1),
        ("max_output_tokens", True),
        ("max_output_tokens", 1.5),
        ("max_output_tokens", "100"),
        ("response_format", "json"),
        ("response_format", {"type": "yaml"}),
        ("response_format", {}),
        ("response_format", {"type": "json_schema"}),
        ("response_format", {"type": "json_schema", "json_schema": "plan"}),
        ("response_format", {"type": "json_schema", "json_schema": {"schema": {}}}),
        ("timeout", 0),
        ("timeout", -1),
        ("timeout", True),
        ("timeout", "30"),
        ("timeout", float("nan")),
        ("timeout", float("inf")),
    ],
)
def test_invalid_options_are_refused_naming_the_option(option: str, value: Any) -> None:
    """Each invalid option raises InvalidReasoningInput naming the option."""
    with pytest.raises(InvalidReasoningInput) as caught:
        check_options(**{**VALID_OPTIONS, option: value})
    assert str(caught.value).startswith(option)


# --- fingerprint ---------------------------------------------------------------------------------


def test_fingerprint_is_the_count_and_sha256_of_canonical_json() -> None:
    """The fingerprint is the message count and the SHA-256 of sorted-key, compact, UTF-8 JSON."""
    messages = [{"role": "user", "content": "Grüße"}, {"content": "ok", "role": "assistant"}]
    canonical = json.dumps(messages, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    assert fingerprint(messages) == (2, hashlib.sha256(canonical.encode()).hexdigest())
    assert fingerprint(list(reversed(messages)))[1] != fingerprint(messages)[1]


def test_fingerprint_of_unusable_input_is_empty() -> None:
    """Input that is not a list of JSON values has no fingerprint, and no error."""
    assert fingerprint("text") == (None, None)
    assert fingerprint(None) == (None, None)
    assert fingerprint([object()]) == (None, None)


# --- through the client: nothing reaches the network --------------------------------------------


@pytest.fixture
def client(make_settings: Callable[..., ArcanosSettings]) -> Iterator[ArcanosPythonClient]:
    settings = make_settings(max_retries=0)
    with ArcanosPythonClient(settings, notifier=MaintenanceNotifier(settings, backoff=0.01)) as instance:
        yield instance


@pytest.mark.parametrize(
    ("messages", "named"),
    [
        ("What changed?", "messages: "),
        (USER, "messages: "),
        ([], "messages: "),
        ([USER, "hi"], "messages[1]: "),
        ([{"role": "robot", "content": "hi"}], "messages[0].role: "),
        ([USER, {"role": "user", "content": " "}], "messages[1].content: "),
        ([{"role": "user", "content": "hi", "temperature": 2}], "messages[0].temperature: "),
    ],
)
def test_client_refuses_bad_messages_without_a_request(
    client: ArcanosPythonClient,
    openai_server: FakeOpenAIServer,
    receiver: WebhookReceiver,
    messages: Any,
    named: str,
) -> None:
    """Bad messages raise InvalidReasoningInput, make no HTTP request, and report one invalid_input incident."""
    with pytest.raises(InvalidReasoningInput) as caught:
        client.run_reasoning(messages)
    assert str(caught.value).startswith(named)
    assert openai_server.requests == []
    (delivery,) = receiver.wait_for(1)
    assert delivery.json["incident_class"] == "invalid_input"
    assert delivery.json["reason"] == str(caught.value)


@pytest.mark.parametrize(
    "options",
    [
        {"reasoning_effort": "maximum"},
        {"max_output_tokens": 0},
        {"max_output_tokens": -1},
        {"max_output_tokens": True},
        {"max_output_tokens": 1.5},
        {"response_format": {"type": "yaml"}},
        {"response_format": {"type": "json_schema"}},
        {"timeout": 0},
        {"timeout": -1},
    ],
)
def test_client_refuses_bad_options_without_a_request(
    client: ArcanosPythonClient, openai_server: FakeOpenAIServer, receiver: WebhookReceiver, options: dict[str, Any]
) -> None:
    """Bad options are refused before any request, naming the option."""
    with pytest.raises(InvalidReasoningInput) as caught:
        client.run_reasoning([USER], **options)
    assert str(caught.value).startswith(next(iter(options)))
    assert openai_server.requests == []
    assert receiver.wait_for(1)[0].json["incident_class"] == "invalid_input"


@pytest.mark.parametrize("model", ["gpt-4o", "ft:gpt-5.1:arcanos::t1"])
def test_model_argument_is_refused_without_a_request(
    client: ArcanosPythonClient, openai_server: FakeOpenAIServer, receiver: WebhookReceiver, model: str
) -> None:
    """`model=` is refused with ModelEnforcementError, even naming the configured model, and nothing is sent."""
    with pytest.raises(ModelEnforcementError) as caught:
        client.run_reasoning([USER], model=model)  # type: ignore[arg-type]
    assert caught.value.actual_model == model
    assert caught.value.expected_model == client.model
    assert openai_server.requests == []
    assert receiver.wait_for(1)[0].json["incident_class"] == "model_enforcement"


@pytest.mark.parametrize("text", ["", "   ", None, 42])
def test_simple_prompt_refuses_empty_text(
    client: ArcanosPythonClient, openai_server: FakeOpenAIServer, receiver: WebhookReceiver, text: Any
) -> None:
    """run_simple_prompt with empty or non-string text is refused before any request."""
    with pytest.raises(InvalidReasoningInput, match=r"^text: "):
        client.run_simple_prompt(text)
    assert openai_server.requests == []
    assert receiver.wait_for(1)[0].json["incident_class"] == "invalid_input"


def test_simple_prompt_refuses_a_blank_system_message(
    client: ArcanosPythonClient, openai_server: FakeOpenAIServer
) -> None:
    """A blank system message is caught like any other message."""
    with pytest.raises(InvalidReasoningInput, match=r"^messages\[0\]\.content: "):
        client.run_simple_prompt("Status?", system="")
    assert openai_server.requests == []


def test_valid_messages_are_sent_as_given(client: ArcanosPythonClient, openai_server: FakeOpenAIServer) -> None:
    """Valid messages reach the server unchanged, in order."""
    messages = [{"role": "developer", "content": "Answer in one line."}, USER]
    client.run_reasoning(messages)
    (request,) = openai_server.completion_requests
    assert request.json["messages"] == messages
