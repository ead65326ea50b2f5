"""The failure table: every way a call can fail, its incident, its attempts, and the original exception."""

from __future__ import annotations

import json
import socket
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
from conftest import API_KEY, MODEL

from arcanos_flows import (
    ArcanosError,
    ArcanosPythonClient,
    ArcanosSettings,
    EmptyCompletionError,
    IncompleteCompletionError,
    MaintenanceNotifier,
    ModelEnforcementError,
    RefusalError,
    UpstreamResponseError,
)
from arcanos_flows.core.messages import fingerprint
from arcanos_flows.incidents.model import Incident
from arcanos_flows.testing import FakeOpenAIServer, Reply, WebhookReceiver

MESSAGES = [
    {"role": "system", "content": "You are the Arcanos maintenance AI."},
    {"role": "user", "content": "List the current confirmation layers."},
]
METADATA = {"intent": "audit", "run_id": "r-42"}
FAST = 0.01  # Retry-After seconds the SDK honours, so retried rows take milliseconds


@pytest.fixture(params=["chat", "responses"])
def api(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def make_client(
    make_settings: Callable[..., ArcanosSettings], api: str
) -> Iterator[Callable[..., ArcanosPythonClient]]:
    clients: list[ArcanosPythonClient] = []

    def make(**overrides: Any) -> ArcanosPythonClient:
        settings = make_settings(openai_api=api, **overrides)
        notifier = MaintenanceNotifier(settings, backoff=0.01, source="arcanos_flows.client")
        client = ArcanosPythonClient(settings, notifier=notifier)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def assert_one_incident(
    receiver: WebhookReceiver,
    spool: Path,
    *,
    incident_class: str,
    http_status: int | None,
    request_id: str | None,
    attempts: int,
    api: str,
    model: str = MODEL,
) -> dict[str, Any]:
    """Exactly one signed delivery with these facts, and nothing left waiting in the spool."""
    (delivery,) = receiver.deliveries
    assert delivery.ok
    assert delivery.signature_valid is True
    incident = delivery.json
    assert incident["type"] == "arcanos.incident"
    assert incident["incident_class"] == incident_class
    assert incident["http_status"] == http_status
    assert incident["request_id"] == request_id
    assert incident["attempts"] == attempts
    assert incident["model"] == model
    assert incident["metadata"] == METADATA
    assert (incident["message_count"], incident["messages_sha256"]) == fingerprint(MESSAGES)
    assert incident["context"] == {"api": api}
    assert delivery.headers["webhook-id"] == incident["incident_id"]
    for message in MESSAGES:
        assert message["content"].encode() not in delivery.body
    assert not spool.exists() or list(spool.iterdir()) == []
    return incident


def assert_original(error: BaseException) -> None:
    """The exception is the one raised where the failure happened, with no wrapping by arcanos-flows."""
    assert error.__traceback__ is not None
    assert error.__cause__ is None or not type(error.__cause__).__module__.startswith("arcanos_flows")
    innermost = traceback.extract_tb(error.__traceback__)[-1].filename
    if isinstance(error, openai.OpenAIError):
        assert "/openai/" in innermost  # raised by the SDK itself, not rebuilt here
    else:
        assert "/arcanos_flows/" in innermost


# --- the table ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One row of the failure table: what the server does and what the caller and the webhook see."""

    reply: Reply | None
    error: type[BaseException]
    incident_class: str
    attempts: int
    http_status: int | None
    settings: dict[str, Any] = field(default_factory=dict)
    call: dict[str, Any] = field(default_factory=dict)
    closed: bool = False  # the base URL points at a port nobody listens on


ROWS = {
    "401": Row(Reply.error(401), openai.AuthenticationError, "authentication", 1, 401),
    "403": Row(Reply.error(403), openai.PermissionDeniedError, "permission", 1, 403),
    "404 model_not_found": Row(Reply.error(404, code="model_not_found"), openai.NotFoundError, "not_found", 1, 404),
    "400": Row(Reply.error(400), openai.BadRequestError, "bad_request", 1, 400),
    "422": Row(Reply.error(422), openai.UnprocessableEntityError, "bad_request", 1, 422),
    "429 always": Row(Reply.error(429, retry_after=FAST), openai.RateLimitError, "rate_limit", 3, 429),
    "429 insufficient_quota": Row(
        Reply.error(429, code="insufficient_quota", retry_after=FAST), openai.RateLimitError, "quota_exhausted", 1, 429
    ),
    "500 always": Row(Reply.error(500, retry_after=FAST), openai.InternalServerError, "upstream_error", 3, 500),
    "503 always": Row(Reply.error(503, retry_after=FAST), openai.InternalServerError, "upstream_error", 3, 503),
    "slower than the timeout": Row(
        Reply.slow(2), openai.APITimeoutError, "timeout", 1, None, settings={"request_timeout": 0.3, "max_retries": 0}
    ),
    "slower than the per-call timeout, retried": Row(
        Reply.slow(2), openai.APITimeoutError, "timeout", 2, None, settings={"max_retries": 1}, call={"timeout": 0.2}
    ),
    "connection refused": Row(
        None, openai.APIConnectionError, "connection", 1, None, settings={"max_retries": 0}, closed=True
    ),
    "dropped connection": Row(
        Reply.drop(), openai.APIConnectionError, "connection", 2, None, settings={"max_retries": 1}
    ),
    "another model": Row(Reply.other_model("gpt-4o"), ModelEnforcementError, "model_enforcement", 1, 200),
    "malformed JSON": Row(Reply.malformed(), UpstreamResponseError, "invalid_response", 1, 200),
    "non-JSON": Row(Reply.non_json(), UpstreamResponseError, "invalid_response", 1, 200),
    "wrong shape": Row(Reply.wrong_shape(), UpstreamResponseError, "invalid_response", 1, 200),
    "empty choices": Row(Reply.no_choices(), EmptyCompletionError, "empty_completion", 1, 200),
    "empty content": Row(Reply.ok(""), EmptyCompletionError, "empty_completion", 1, 200),
    "length, empty content": Row(Reply.length(), IncompleteCompletionError, "incomplete_completion", 1, 200),
    "length, partial content": Row(
        Reply.length("Layer one"), IncompleteCompletionError, "incomplete_completion", 1, 200
    ),
    "refusal": Row(Reply.refused("I can't help with that."), RefusalError, "refusal", 1, 200),
    "content filter": Row(Reply(finish_reason="content_filter"), RefusalError, "refusal", 1, 200),
}


@pytest.mark.parametrize("name", ROWS)
def test_failure_table(
    name: str,
    make_client: Callable[..., ArcanosPythonClient],
    openai_server: FakeOpenAIServer,
    receiver: WebhookReceiver,
    spool: Path,
    api: str,
) -> None:
    """Each failure raises the original exception and delivers exactly one signed incident."""
    row = ROWS[name]
    settings = dict(row.settings)
    if row.closed:
        settings["openai_base_url"] = f"http://127.0.0.1:{closed_port()}/v1"
    client = make_client(**settings)
    if row.reply is not None:
        openai_server.always(row.reply)

    with pytest.raises(row.error) as caught:
        client.run_reasoning(MESSAGES, metadata=METADATA, **row.call)

    error = caught.value
    assert type(error) is row.error
    assert_original(error)
    recorded = openai_server.completion_requests
    assert len(recorded) == (0 if row.closed else row.attempts)
    assert all(request.json["model"] == MODEL for request in recorded)
    request_id = f"req_{len(openai_server.requests)}" if row.http_status is not None else None
    incident = assert_one_incident(
        receiver,
        spool,
        incident_class=row.incident_class,
        http_status=row.http_status,
        request_id=request_id,
        attempts=row.attempts,
        api=api,
    )
    assert incident["error_type"] == f"{row.error.__module__}.{row.error.__qualname__}"
    if isinstance(error, openai.APIStatusError):
        assert error.status_code == row.http_status
        assert error.request_id == request_id
        if row.reply is not None and row.reply.error_code is not None:
            assert error.code == row.reply.error_code  # e.g. insufficient_quota, model_not_found
    if isinstance(error, ArcanosError):
        assert (error.http_status, error.request_id, error.attempts) == (row.http_status, request_id, row.attempts)
        assert error.incident_class.value == row.incident_class
    assert not isinstance(error, json.JSONDecodeError)
    if isinstance(error, RefusalError):
        assert error.refusal == row.reply.refusal  # the model's own words, or None for a content filter


def test_rate_limit_waits_for_retry_after_then_succeeds(
    make_client: Callable[..., ArcanosPythonClient],
    openai_server: FakeOpenAIServer,
    receiver: WebhookReceiver,
    spool: Path,
) -> None:
    """429 with ``Retry-After: 1`` then 200: the answer arrives after the wait, with no incident."""
    client = make_client()
    openai_server.script(Reply.error(429, retry_after=1), Reply.ok("After the wait."))

    started = time.monotonic()
    result = client.run_reasoning(MESSAGES, metadata=METADATA)
    elapsed = time.monotonic() - started

    assert result.content == "After the wait."
    assert elapsed >= 0.95
    assert result.attempts == 2
    assert result.request_id == "req_2"
    requests = openai_server.completion_requests
    assert len(requests) == 2
    assert requests[1].at - requests[0].at >= 0.95
    assert receiver.deliveries == []
    assert not spool.exists() or list(spool.iterdir()) == []


# --- secrets echoed by the upstream -------------------------------------------------------------------------


@pytest.mark.parametrize("printing", [False, True], ids=["webhook", "stdout"])
def test_an_echoed_api_key_is_scrubbed_everywhere(
    make_client: Callable[..., ArcanosPythonClient],
    openai_server: FakeOpenAIServer,
    receiver: WebhookReceiver,
    capsys: pytest.CaptureFixture[str],
    printing: bool,
) -> None:
    """An error message that echoes the API key reaches nobody with the key in it."""
    overrides = {"maintenance_webhook": None, "webhook_secret": None} if printing else {}
    client = make_client(**overrides)
    openai_server.always(Reply.error(401, message=f"Incorrect API key provided: {API_KEY}"))

    with pytest.raises(openai.AuthenticationError) as caught:
        client.run_reasoning(MESSAGES, metadata=METADATA)

    error = caught.value
    assert type(error) is openai.AuthenticationError
    assert error.status_code == 401
    assert_original(error)
    for text in (str(error), repr(error), error.message, json.dumps(error.body), "".join(map(str, error.args))):
        assert API_KEY not in text
        assert "sk-test-arcanos" not in text
    assert "[REDACTED]" in error.message
    assert error.body["code"] == "invalid_api_key"
    captured = capsys.readouterr()
    assert API_KEY not in captured.out
    assert API_KEY not in captured.err
    if printing:
        (line,) = captured.out.splitlines()
        incident = json.loads(line)
        assert receiver.deliveries == []
    else:
        (delivery,) = receiver.deliveries
        assert API_KEY.encode() not in delivery.body
        incident = delivery.json
        assert captured.out == ""
    assert incident["incident_class"] == "authentication"
    assert "[REDACTED]" in incident["reason"]


class ExplodingNotifier(MaintenanceNotifier):
    """A notifier replaced by a caller, broken in a way MaintenanceNotifier itself never is."""

    def notify(self, error: BaseException | Incident, /, **context: Any) -> Incident:
        raise RuntimeError("notifier exploded")


def test_a_failing_notifier_never_hides_the_original_error(
    make_settings: Callable[..., ArcanosSettings], openai_server: FakeOpenAIServer
) -> None:
    """Even if reporting fails, the caller gets the upstream's exception, not the reporter's."""
    settings = make_settings()
    openai_server.always(Reply.error(401))

    client = ArcanosPythonClient(settings, notifier=ExplodingNotifier(settings))
    with client, pytest.raises(openai.AuthenticationError) as caught:
        client.run_reasoning(MESSAGES)

    assert_original(caught.value)
