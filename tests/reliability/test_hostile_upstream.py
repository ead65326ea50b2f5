"""Hostile 200s (and worse) through the real SDK: the client fails classified or returns bounded data.

The bound is ``MAX_BODY_BYTES`` (16 MiB), enforced by an httpx response hook while the body arrives:
a 2xx announcing more, or compressed although ``Accept-Encoding: identity`` was asked for, is refused
from its headers alone; any body with a lying or absent ``Content-Length`` fails once 16 MiB have
arrived. Peak memory is measured with ``tracemalloc`` (the hostile bodies are built before measuring).
Every failure is delivered as one signed incident of less than 16 KiB.
"""

from __future__ import annotations

import gzip
import json
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest
from conftest import MODEL

from arcanos_flows.client import ArcanosPythonClient
from arcanos_flows.core.errors import UpstreamResponseError
from arcanos_flows.core.settings import ArcanosSettings
from arcanos_flows.core.upstream import MAX_BODY_BYTES
from arcanos_flows.incidents.model import attached_incident
from arcanos_flows.incidents.notifier import MaintenanceNotifier
from arcanos_flows.testing import FakeOpenAIServer, Reply, WebhookReceiver

MiB = 1024 * 1024
MAX_INCIDENT_BYTES = 16 * 1024
MESSAGES = [{"role": "user", "content": "Summarise the maintenance log."}]


@pytest.fixture
def client(make_settings: Callable[..., ArcanosSettings]) -> Iterator[ArcanosPythonClient]:
    """A client without SDK retries (one attempt per call keeps the counts exact), reporting to the receiver."""
    configured = make_settings(max_retries=0, request_timeout=20)
    with ArcanosPythonClient(configured, notifier=MaintenanceNotifier(configured, backoff=0.01)) as built:
        yield built


@dataclass
class Run:
    error: BaseException | None
    result: Any
    peak: int
    seconds: float


def run(client: ArcanosPythonClient, **arguments: Any) -> Run:
    """One call, measuring the peak of Python allocations during it (server thread included)."""
    tracemalloc.start()
    started = time.perf_counter()
    error: BaseException | None = None
    result = None
    try:
        result = client.run_reasoning(MESSAGES, **arguments)
    except Exception as exc:
        error = exc
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return Run(error, result, peak, seconds)


def padded_completion(size: int) -> bytes:
    """A valid chat completion padded with an unused field to ``size`` bytes."""
    head = json.dumps(
        {
            "id": "chatcmpl-huge",
            "object": "chat.completion",
            "created": 0,
            "model": MODEL,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "padding": "",
        }
    ).encode()
    return head[:-2] + b"x" * (size - len(head)) + head[-2:]


def completion_with_content(content: str) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-long",
            "object": "chat.completion",
            "created": 0,
            "model": MODEL,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14},
        }
    ).encode()


def the_incident(receiver: WebhookReceiver, expected_class: str) -> dict[str, Any]:
    """Exactly one incident was delivered: signed, of the expected class, below 16 KiB on the wire."""
    [delivery] = receiver.deliveries
    assert delivery.ok
    assert delivery.signature_valid is True
    assert len(delivery.body) < MAX_INCIDENT_BYTES, len(delivery.body)
    assert delivery.json["incident_class"] == expected_class
    return delivery.json


def assert_invalid_response(outcome: Run, receiver: WebhookReceiver, fragment: str) -> dict[str, Any]:
    assert isinstance(outcome.error, UpstreamResponseError), repr(outcome.error)
    assert fragment in str(outcome.error)
    assert outcome.error.http_status == 200
    assert outcome.error.attempts == 1
    assert attached_incident(outcome.error) is not None
    incident = the_incident(receiver, "invalid_response")
    assert incident["reason"] == str(outcome.error)
    return incident


# --- huge bodies ------------------------------------------------------------------------------------


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_a_40_mib_body_is_refused_from_its_content_length_before_it_is_read(
    make_settings: Callable[..., ArcanosSettings],
    openai_server: FakeOpenAIServer,
    receiver: WebhookReceiver,
    api: str,
) -> None:
    """A 2xx announcing 40 MiB is refused from its headers: memory stays far below the body size."""
    body = padded_completion(40 * MiB)
    configured = make_settings(max_retries=0, openai_api=api)
    with ArcanosPythonClient(configured, notifier=MaintenanceNotifier(configured, backoff=0.01)) as client:
        openai_server.script(Reply(body=body))
        outcome = run(client)

        assert_invalid_response(outcome, receiver, f"a body announced as {len(body)} bytes")
        assert outcome.peak < 4 * MiB, outcome.peak
        assert len(openai_server.completion_requests) == 1
        # The refused connection is not reused half-read: the next call works.
        assert client.run_reasoning(MESSAGES).content


def test_a_64_mib_body_without_content_length_fails_once_16_mib_have_arrived(
    client: ArcanosPythonClient, openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """With no Content-Length the body is read only up to the limit: peak memory ~16 MiB, not 64."""
    body = padded_completion(64 * MiB)
    openai_server.script(Reply(body=body, omit_content_length=True))
    outcome = run(client)

    assert_invalid_response(outcome, receiver, f"a body of more than {MAX_BODY_BYTES} bytes")
    assert outcome.peak < MAX_BODY_BYTES + 8 * MiB < len(body) // 2, outcome.peak
    assert client.run_reasoning(MESSAGES).content


def test_a_content_length_that_understates_the_body_reads_only_what_was_announced(
    client: ArcanosPythonClient, openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """A 40 MiB body announced as 100 bytes: 100 bytes are read (malformed JSON), the rest never buffered."""
    openai_server.script(Reply(body=padded_completion(40 * MiB), content_length=100))
    outcome = run(client)

    assert_invalid_response(outcome, receiver, "malformed JSON")
    assert outcome.peak < 4 * MiB, outcome.peak
    # The unread 40 MiB must not be taken for the next response on a reused connection.
    assert client.run_reasoning(MESSAGES).content


def test_a_content_length_that_overstates_the_body_is_a_connection_failure(
    client: ArcanosPythonClient, openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """A server that announces 1 MiB, sends 80 bytes and hangs up: a classified connection error, at once."""
    openai_server.script(Reply(body=completion_with_content("x")[:80], content_length=MiB))
    outcome = run(client)

    assert isinstance(outcome.error, openai.APIConnectionError), repr(outcome.error)
    assert outcome.seconds < 5
    the_incident(receiver, "connection")


def test_an_error_body_over_the_limit_is_refused_while_it_arrives(
    client: ArcanosPythonClient, openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """A 500 whose body is 40 MiB: reading its message stops at the limit, memory stays bounded."""
    openai_server.script(Reply(status=500, body=b'{"error": {"message": "' + b"e" * (40 * MiB) + b'"}}'))
    outcome = run(client)

    assert isinstance(outcome.error, UpstreamResponseError), repr(outcome.error)
    assert outcome.error.http_status == 500
    assert outcome.peak < MAX_BODY_BYTES + 8 * MiB, outcome.peak
    the_incident(receiver, "invalid_response")


# --- compression ------------------------------------------------------------------------------------


def test_requests_ask_for_identity_and_a_gzip_bomb_is_refused_unread(
    client: ArcanosPythonClient, openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """64 KB of gzip that would inflate to 64 MiB (4x the bound) is refused from its headers: nothing is inflated."""
    bomb = gzip.compress(b"0" * (64 * MiB), compresslevel=9)
    assert len(bomb) < MiB
    openai_server.script(Reply(body=bomb, headers={"Content-Encoding": "gzip"}))
    outcome = run(client)

    assert_invalid_response(outcome, receiver, "gzip-compressed body although arcanos-flows asks for identity")
    assert outcome.peak < 4 * MiB, outcome.peak
    [request] = openai_server.completion_requests
    assert request.headers["accept-encoding"] == "identity"


def test_a_compressed_error_body_keeps_its_status_class_and_stays_bounded(
    client: ArcanosPythonClient, openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """A gzip 503 is still an upstream_error (its bytes are read as sent, never inflated)."""
    bomb = gzip.compress(b"0" * (64 * MiB), compresslevel=9)
    openai_server.script(Reply(status=503, body=bomb, headers={"Content-Encoding": "gzip"}))
    outcome = run(client)

    assert isinstance(outcome.error, openai.InternalServerError), repr(outcome.error)
    assert outcome.peak < 8 * MiB, outcome.peak
    the_incident(receiver, "upstream_error")


# --- malformed structure ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected_class", "expected_type"),
    [
        (200, "invalid_response", UpstreamResponseError),
        (400, "bad_request", openai.BadRequestError),
        (429, "rate_limit", openai.RateLimitError),
        (500, "upstream_error", openai.InternalServerError),
    ],
)
def test_json_nested_100000_levels_deep_is_a_classified_failure_not_a_recursion_error(
    client: ArcanosPythonClient,
    openai_server: FakeOpenAIServer,
    receiver: WebhookReceiver,
    status: int,
    expected_class: str,
    expected_type: type[BaseException],
) -> None:
    """100k levels of nesting never escape as RecursionError, whatever the status."""
    nested = b'{"error":' * 100_000 + b"1" + b"}" * 100_000
    openai_server.script(Reply(status=status, body=nested))
    outcome = run(client)

    assert isinstance(outcome.error, expected_type), repr(outcome.error)
    assert outcome.seconds < 10
    the_incident(receiver, expected_class)


@pytest.mark.parametrize(
    "body",
    [
        b'{"id": "chatcmpl-1", "model": "\xff\xfe\xfd", "choices": []}',
        b"\xc3\x28" * 1000,
        b'{"id": "chatcmpl-1", "choices": [{"message": {"content": "caf\xe9"}}]}',
    ],
    ids=["invalid-bytes-in-a-string", "overlong-garbage", "latin-1-in-utf-8"],
)
def test_invalid_utf8_in_a_200_is_an_invalid_response(
    client: ArcanosPythonClient, openai_server: FakeOpenAIServer, receiver: WebhookReceiver, body: bytes
) -> None:
    """Bytes that are not UTF-8 give UpstreamResponseError, and the incident is valid UTF-8 JSON."""
    openai_server.script(Reply(body=body))
    outcome = run(client)

    incident = assert_invalid_response(outcome, receiver, "instead of a chat completion")
    json.dumps(incident, ensure_ascii=False).encode("utf-8")


def test_invalid_utf8_in_an_error_body_keeps_the_status_class(
    client: ArcanosPythonClient, openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """A 400 whose message is not UTF-8 is still bad_request, with a readable reason."""
    openai_server.script(Reply(status=400, body=b'{"error": {"message": "bad \xff\xfe request"}}'))
    outcome = run(client)

    assert isinstance(outcome.error, openai.BadRequestError), repr(outcome.error)
    incident = the_incident(receiver, "bad_request")
    assert "bad" in incident["reason"]


# --- big but valid ----------------------------------------------------------------------------------


def test_a_content_of_8_mib_is_returned_whole(
    client: ArcanosPythonClient, openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """A valid completion with 8 MiB of content is under the bound: returned exactly, no incident."""
    content = "lorem ipsum " * (8 * MiB // 12)
    openai_server.script(Reply(body=completion_with_content(content)))
    result = client.run_reasoning(MESSAGES)

    assert result.content == content
    assert result.usage.total_tokens == 14
    assert receiver.deliveries == []


def test_a_content_of_20_mib_is_refused_as_over_the_bound(
    client: ArcanosPythonClient, openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """A valid completion bigger than the bound is refused rather than returned: the bound always holds."""
    openai_server.script(Reply(body=completion_with_content("y" * (20 * MiB))))
    outcome = run(client)

    assert_invalid_response(outcome, receiver, "a body announced as")
    assert outcome.peak < 4 * MiB


# --- hostile headers --------------------------------------------------------------------------------


def test_a_huge_request_id_header_cannot_bloat_the_incident(
    client: ArcanosPythonClient, openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """A 60 KB x-request-id on an error: the incident keeps at most 256 bytes of it and stays < 16 KiB."""
    openai_server.script(Reply(status=400, headers={"x-request-id": "req_" + "r" * 60_000}, error_message="m" * 20_000))
    outcome = run(client)

    assert isinstance(outcome.error, openai.BadRequestError)
    incident = the_incident(receiver, "bad_request")
    assert incident["request_id"].startswith("req_rrrr")
    assert len(incident["request_id"].encode()) <= 256
    assert len(incident["reason"].encode()) <= 4096
