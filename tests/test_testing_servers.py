"""Tests of the shipped test doubles: FakeOpenAIServer and WebhookReceiver, over real HTTP."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pytest
import requests
import standardwebhooks
from openapi_schemas import validate

from arcanos_flows.testing import Delivery, FakeOpenAIServer, RecordedRequest, Reply, WebhookReceiver

REPO_ROOT = Path(__file__).resolve().parents[1]
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Summarize the incident backlog please"},
]


@pytest.fixture(scope="module")
def shared_server() -> Iterator[FakeOpenAIServer]:
    # One server and one SDK client for the module: building an SDK client costs ~0.1 s (TLS setup).
    with FakeOpenAIServer() as fake:
        yield fake


@pytest.fixture
def server(shared_server: FakeOpenAIServer) -> FakeOpenAIServer:
    shared_server.clear()
    shared_server.always(Reply.ok())
    shared_server.latency = 0.0
    shared_server.model_override = None
    return shared_server


@pytest.fixture(scope="module")
def client(shared_server: FakeOpenAIServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=shared_server.base_url, api_key="sk-test", max_retries=0) as sdk:
        yield sdk


def request_number(response: requests.Response) -> int:
    return int(response.headers["x-request-id"].removeprefix("req_"))


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(secret=SECRET) as hook:
        yield hook


def post_chat(server: FakeOpenAIServer, **extra: Any) -> requests.Response:
    body = {"model": "gpt-5.1", "messages": MESSAGES, **extra}
    return requests.post(f"{server.base_url}/chat/completions", json=body, timeout=5)


def post_responses(server: FakeOpenAIServer, **extra: Any) -> requests.Response:
    body = {"model": "gpt-5.1", "input": MESSAGES[1:], "instructions": "Be terse.", **extra}
    return requests.post(f"{server.base_url}/responses", json=body, timeout=5)


# --- FakeOpenAIServer: bodies against the OpenAPI spec -------------------------------------------------

VARIANTS = {
    "ok": Reply.ok(),
    "content": Reply.ok("All clear.", reasoning_tokens=12),
    "refusal": Reply.refusal(),
    "length": Reply.length(),
    "empty_choices": Reply.empty_choices(),
    "other_model": Reply.other_model("gpt-4o"),
}


@pytest.mark.parametrize("name", VARIANTS)
def test_chat_body_is_a_valid_chat_completion(server: FakeOpenAIServer, name: str) -> None:
    server.script(VARIANTS[name])
    response = post_chat(server, metadata={"run": "r1"}, store=True)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    validate(body, "CreateChatCompletionResponse")
    assert body["object"] == "chat.completion"
    assert body["id"] == f"chatcmpl-{request_number(response)}"
    assert body["metadata"] == {"run": "r1"}
    assert body["service_tier"] == "default"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens"] == 8  # words of every input message
    if name == "empty_choices":
        assert body["choices"] == []
        return
    choice = body["choices"][0]
    message = choice["message"]
    assert choice["index"] == 0
    assert choice["logprobs"] is None
    assert message["role"] == "assistant"
    assert message["annotations"] == []
    expected = {
        "ok": ("[fake] Summarize the incident backlog please", None, "stop", "gpt-5.1"),
        "content": ("All clear.", None, "stop", "gpt-5.1"),
        "refusal": (None, "I can't help with that.", "stop", "gpt-5.1"),
        "length": ("", None, "length", "gpt-5.1"),
        "other_model": ("[fake] Summarize the incident backlog please", None, "stop", "gpt-4o"),
    }[name]
    assert (message["content"], message["refusal"], choice["finish_reason"], body["model"]) == expected
    if name == "content":
        assert usage["completion_tokens"] == 2 + 12
        assert usage["completion_tokens_details"]["reasoning_tokens"] == 12


@pytest.mark.parametrize("name", VARIANTS)
def test_responses_body_is_a_valid_response(server: FakeOpenAIServer, name: str) -> None:
    server.script(VARIANTS[name])
    response = post_responses(server, metadata={"run": "r1"}, reasoning={"effort": "high"})

    assert response.status_code == 200
    body = response.json()
    validate(body, "Response")
    assert body["id"] == f"resp_{request_number(response)}"
    assert body["object"] == "response"
    assert body["metadata"] == {"run": "r1"}
    assert body["instructions"] == "Be terse."
    assert body["reasoning"] == {"effort": "high", "summary": None}
    usage = body["usage"]
    assert usage["input_tokens"] == 5 + 2  # the user message plus the instructions
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    if name == "empty_choices":
        assert body["output"] == []
        return
    (item,) = body["output"]
    assert (item["type"], item["role"]) == ("message", "assistant")
    (part,) = item["content"]
    if name == "refusal":
        assert part == {"type": "refusal", "refusal": "I can't help with that."}
    elif name == "length":
        assert body["status"] == "incomplete"
        assert body["incomplete_details"] == {"reason": "max_output_tokens"}
        assert part["text"] == ""
    else:
        assert body["status"] == "completed"
        assert body["incomplete_details"] is None
        assert part["type"] == "output_text"
        assert body["model"] == ("gpt-4o" if name == "other_model" else "gpt-5.1")
    if name == "content":
        assert part["text"] == "All clear."
        assert usage["output_tokens_details"]["reasoning_tokens"] == 12


def test_spec_validation_really_rejects_bad_bodies(server: FakeOpenAIServer) -> None:
    body = post_chat(server).json()
    del body["choices"][0]["message"]["role"]
    with pytest.raises(jsonschema.ValidationError):
        validate(body, "CreateChatCompletionResponse")
    with pytest.raises(jsonschema.ValidationError):
        validate({"ok": True}, "Response")


# --- FakeOpenAIServer: through the real SDK ---------------------------------------------------------------


def test_sdk_parses_chat_and_responses(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    chat = client.chat.completions.create(model="gpt-5.1", messages=MESSAGES, metadata={"k": "v"}, store=True)
    assert chat.choices[0].message.content == "[fake] Summarize the incident backlog please"
    assert chat.model == "gpt-5.1"
    assert chat.metadata == {"k": "v"}
    assert chat.id == f"chatcmpl-{chat._request_id.removeprefix('req_')}"

    response = client.responses.create(model="gpt-5.1", input="Hello there")
    assert response.output_text == "[fake] Hello there"
    assert response.status == "completed"
    assert response.usage is not None
    assert response.usage.total_tokens == 2 + 3
    assert response.id == f"resp_{int(chat.id.removeprefix('chatcmpl-')) + 1}"
    assert response._request_id == f"req_{int(chat.id.removeprefix('chatcmpl-')) + 1}"


def test_model_override_answers_another_model() -> None:
    with FakeOpenAIServer(model_override="gpt-4o-mini") as other:
        assert post_chat(other).json()["model"] == "gpt-4o-mini"
        assert post_responses(other).json()["model"] == "gpt-4o-mini"
        other.model_override = None
        assert post_chat(other).json()["model"] == "gpt-5.1"


def test_scripted_errors_reach_the_sdk_then_the_default_resumes(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    server.script(
        Reply.error(500),
        Reply.error(429, retry_after=7),
        Reply.error(429, code="insufficient_quota"),
        Reply.error(401),
        Reply.error(400, message="bad metadata", type="invalid_request_error"),
    )

    with pytest.raises(openai.InternalServerError) as server_error:
        client.chat.completions.create(model="gpt-5.1", messages=MESSAGES)
    assert server_error.value.status_code == 500
    assert server_error.value.type == "server_error"
    assert server_error.value.request_id == server_error.value.response.headers["x-request-id"]
    assert re.fullmatch(r"req_\d+", server_error.value.request_id or "")

    with pytest.raises(openai.RateLimitError) as rate_limited:
        client.responses.create(model="gpt-5.1", input="hi")
    assert rate_limited.value.response.headers["retry-after"] == "7"
    assert rate_limited.value.code == "rate_limit_exceeded"

    with pytest.raises(openai.RateLimitError) as no_quota:
        client.chat.completions.create(model="gpt-5.1", messages=MESSAGES)
    assert (no_quota.value.code, no_quota.value.type) == ("insufficient_quota", "insufficient_quota")

    with pytest.raises(openai.AuthenticationError) as unauthorized:
        client.chat.completions.create(model="gpt-5.1", messages=MESSAGES)
    assert unauthorized.value.code == "invalid_api_key"

    with pytest.raises(openai.BadRequestError, match="bad metadata"):
        client.chat.completions.create(model="gpt-5.1", messages=MESSAGES)

    assert server.pending == 0
    assert client.chat.completions.create(model="gpt-5.1", messages=MESSAGES).choices[0].message.content


def test_error_bodies_use_the_openai_envelope(server: FakeOpenAIServer) -> None:
    server.script(Reply.error(503), Reply.error(404, code="model_not_found"))
    for expected_type, expected_code in (("server_error", None), ("invalid_request_error", "model_not_found")):
        body = post_chat(server).json()
        validate(body, "ErrorResponse")
        assert (body["error"]["type"], body["error"]["code"], body["error"]["param"]) == (
            expected_type,
            expected_code,
            None,
        )
    assert "gpt-5.1" in body["error"]["message"]


def test_always_sets_the_default_reply(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    server.always(Reply.error(502))
    server.script(Reply.ok("once"))
    assert client.chat.completions.create(model="m", messages=MESSAGES).choices[0].message.content == "once"
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="m", messages=MESSAGES)


def test_requests_are_recorded_with_their_json(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    client.chat.completions.create(model="gpt-5.1", messages=MESSAGES, metadata={"run": "7"}, store=True)
    client.responses.create(model="gpt-5.1", input="Hi", max_output_tokens=64)
    client.models.retrieve("gpt-5.1")

    recorded = server.requests
    assert [(r.method, r.path) for r in recorded] == [
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/responses"),
        ("GET", "/v1/models/gpt-5.1"),
    ]
    chat = recorded[0]
    assert isinstance(chat, RecordedRequest)
    assert chat.json == {"model": "gpt-5.1", "messages": MESSAGES, "metadata": {"run": "7"}, "store": True}
    assert json.loads(chat.body) == chat.json
    assert chat.headers["authorization"] == "Bearer sk-test"
    assert chat.headers["content-type"] == "application/json"
    assert recorded[1].json == {"model": "gpt-5.1", "input": "Hi", "max_output_tokens": 64}
    assert recorded[2].json is None
    assert recorded[0].at <= recorded[1].at <= recorded[2].at
    assert [r.path for r in server.completion_requests] == ["/v1/chat/completions", "/v1/responses"]

    server.script(Reply.error(500))
    server.clear()
    assert server.requests == []
    assert server.pending == 0


def test_every_response_has_a_request_id(server: FakeOpenAIServer) -> None:
    server.script(Reply.error(500), Reply.malformed())
    responses = [
        post_chat(server),
        post_responses(server),
        requests.get(f"{server.base_url}/models", timeout=5),
        requests.get(f"{server.base_url}/no/such/path", timeout=5),
    ]
    first = request_number(responses[0])
    assert [request_number(r) for r in responses] == [first, first + 1, first + 2, first + 3]
    assert [r.status_code for r in responses] == [500, 200, 200, 404]


def test_unknown_paths_answer_404_and_leave_the_script_alone(server: FakeOpenAIServer) -> None:
    server.script(Reply.error(500))
    response = requests.post(f"{server.base_url}/completions", json={"model": "m"}, timeout=5)
    assert response.status_code == 404
    validate(response.json(), "ErrorResponse")
    assert response.json()["error"]["message"] == "Invalid URL (POST /v1/completions)"
    assert server.pending == 1
    assert len(server.requests) == 1


def test_latency_and_slow_replies_are_applied(server: FakeOpenAIServer) -> None:
    session = requests.Session()
    url = f"{server.base_url}/chat/completions"
    body = {"model": "m", "messages": MESSAGES}
    session.post(url, json=body, timeout=5)  # connect once, so the timings below measure only the server

    fast = float("inf")
    for _ in range(5):  # the best of several, so a busy machine does not fail the test
        started = time.monotonic()
        session.post(url, json=body, timeout=5)
        fast = min(fast, time.monotonic() - started)

    server.latency = 0.1
    started = time.monotonic()
    session.post(url, json=body, timeout=5)
    with_latency = time.monotonic() - started

    server.latency = 0.0
    server.script(Reply.slow(0.1))
    started = time.monotonic()
    assert session.post(url, json=body, timeout=5).status_code == 200
    slow = time.monotonic() - started
    session.close()

    assert fast < 0.03  # a Nagle/delayed-ACK stall would cost ~40 ms on every request
    assert with_latency >= 0.1
    assert slow >= 0.1


def test_drop_is_a_connection_error(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    server.script(Reply.drop())
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="gpt-5.1", messages=MESSAGES)
    assert len(server.requests) == 1
    assert server.requests[0].json["model"] == "gpt-5.1"
    assert client.chat.completions.create(model="gpt-5.1", messages=MESSAGES).choices


def test_raw_body_replies(server: FakeOpenAIServer) -> None:
    server.script(Reply.malformed(), Reply.non_json(), Reply.wrong_shape())
    malformed, html, wrong = (post_chat(server) for _ in range(3))
    assert malformed.status_code == 200
    assert malformed.content == b'{"id": "chatcmpl-1", "choices": ['
    assert malformed.headers["content-type"] == "application/json"
    assert html.headers["content-type"].startswith("text/html")
    assert html.content.startswith(b"<html>")
    assert wrong.json() == {"ok": True}


def test_malformed_reply_breaks_the_sdk(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    server.script(Reply.malformed())
    with pytest.raises((json.JSONDecodeError, openai.APIResponseValidationError)):
        client.chat.completions.create(model="gpt-5.1", messages=MESSAGES)


def test_models_lookup(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    fine_tuned = "ft:gpt-5.1-2025-11-13:arcanos::abc123"
    model = client.models.retrieve(fine_tuned)
    assert (model.id, model.object, model.owned_by) == (fine_tuned, "model", "arcanos-fake")
    raw = requests.get(f"{server.base_url}/models/{fine_tuned}", timeout=5).json()
    validate(raw, "Model")

    listing = requests.get(f"{server.base_url}/models", timeout=5).json()
    validate(listing, "ListModelsResponse")
    assert [m["id"] for m in listing["data"]] == [fine_tuned]

    server.script(Reply.error(404, code="model_not_found"))
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("gpt-nope")
    assert missing.value.code == "model_not_found"
    assert "gpt-nope" in missing.value.message


def test_reply_validation() -> None:
    with pytest.raises(ValueError, match="4xx or 5xx"):
        Reply.error(200)
    with pytest.raises(ValueError, match="delay"):
        Reply(delay=-1)
    assert Reply(refusal="no").refusal == "no"
    assert Reply.refusal("no") == Reply.refused("no")
    assert Reply.empty_choices() == Reply.no_choices() == Reply(empty_choices=True)
    assert Reply().empty_choices is False
    assert Reply.error(503, retry_after=1.5).headers == {"Retry-After": "1.5"}


def test_stop_closes_keep_alive_connections_promptly() -> None:
    fake = FakeOpenAIServer().start()
    session = requests.Session()
    assert session.get(f"{fake.base_url}/models", timeout=5).status_code == 200
    fake.latency = 5.0
    # A request stuck in the latency wait must not hold stop() up either.
    stuck = threading.Thread(target=_swallow, args=(session.get, f"{fake.base_url}/models"))
    stuck.start()
    time.sleep(0.05)

    started = time.monotonic()
    fake.stop()
    assert time.monotonic() - started < 1.0
    stuck.join(timeout=1.0)
    assert not stuck.is_alive()
    with pytest.raises(requests.ConnectionError):
        session.get(f"{fake.base_url}/models", timeout=5)
    session.close()


def _swallow(call: Any, *args: Any) -> None:
    with contextlib.suppress(requests.RequestException):
        call(*args, timeout=5)


def test_client_hang_ups_print_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    with FakeOpenAIServer(latency=0.02) as fake:
        body = b'{"model": "m", "messages": []}'
        request = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        with socket.create_connection(("127.0.0.1", fake.port)) as sock:
            sock.sendall(request)
        with socket.create_connection(("127.0.0.1", fake.port)) as sock:
            sock.sendall(request[:20])  # hang up mid-request
        time.sleep(0.08)
        assert len(fake.requests) == 1
    captured = capfd.readouterr()
    assert captured.err == ""


# --- FakeOpenAIServer: replies chosen by request, rate-limit mode, counters ------------------------------


def chat_about(server: FakeOpenAIServer, text: str) -> requests.Response:
    body = {
        "model": "gpt-5.1",
        "messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": text}],
    }
    return requests.post(f"{server.base_url}/chat/completions", json=body, timeout=5)


def test_reply_when_answers_matching_requests_whatever_their_order(server: FakeOpenAIServer) -> None:
    """A marker in the last user message picks the reply, in any arrival order; other requests take the script."""
    server.reply_when("Investigate: alpha", Reply.ok("about alpha"))
    server.reply_when("Investigate: beta", Reply.error(401))
    server.script(Reply.ok("scripted"))

    texts = ["Investigate: beta?", "Something else", "Investigate: alpha?", "Investigate: beta!", "Investigate: alpha"]
    with ThreadPoolExecutor(len(texts)) as pool:
        answers = dict(zip(texts, pool.map(lambda text: chat_about(server, text), texts), strict=True))

    assert [answers[text].status_code for text in texts] == [401, 200, 200, 401, 200]
    assert answers["Investigate: alpha?"].json()["choices"][0]["message"]["content"] == "about alpha"
    assert answers["Investigate: alpha"].json()["choices"][0]["message"]["content"] == "about alpha"
    assert answers["Something else"].json()["choices"][0]["message"]["content"] == "scripted"
    assert server.pending == 0
    # The system message and the JSON around the text are not searched: only the last user message is.
    assert chat_about(server, "Be terse, beta").status_code == 200


def test_reply_when_matches_responses_input_and_predicates_and_counts_times(server: FakeOpenAIServer) -> None:
    """Rules see the Responses API's input too; a predicate gets the RecordedRequest; times= ends a rule."""
    server.reply_when(lambda request: request.json.get("max_completion_tokens") == 7, Reply.length(), times=2)
    server.reply_when("incident backlog", Reply.ok("from the rule"))

    assert post_responses(server).json()["output"][0]["content"][0]["text"] == "from the rule"
    finishes = [post_chat(server, max_completion_tokens=7).json()["choices"][0]["finish_reason"] for _ in range(3)]
    # The first two take the predicate's reply; then that rule is gone and the marker rule matches.
    assert finishes == ["length", "length", "stop"]
    assert post_chat(server).json()["choices"][0]["message"]["content"] == "from the rule"

    server.clear()
    assert post_chat(server).json()["choices"][0]["message"]["content"].startswith("[fake] ")
    with pytest.raises(ValueError, match="non-empty"):
        server.reply_when("", Reply.ok())
    with pytest.raises(ValueError, match="times"):
        server.reply_when("x", Reply.ok(), times=0)


def test_rate_limit_answers_429_with_retry_after_beyond_the_bucket() -> None:
    """Beyond the limit the server answers 429 rate_limit_exceeded, with Retry-After and OpenAI's headers."""
    # One request per 10 s: however slowly this machine sends them, the bucket stays empty for the whole test.
    with FakeOpenAIServer(requests_per_minute=6, burst=2) as fake:
        fake.script(Reply.ok("first"), Reply.ok("second"), Reply.ok("third"))
        admitted = [post_chat(fake) for _ in range(2)]
        refused = post_chat(fake)

        assert [response.status_code for response in admitted] == [200, 200]
        assert admitted[0].headers["x-ratelimit-limit-requests"] == "6"
        assert admitted[0].headers["x-ratelimit-remaining-requests"] == "1"
        assert admitted[1].headers["x-ratelimit-remaining-requests"] == "0"
        assert re.fullmatch(r"\d+(\.\d+)?s", admitted[1].headers["x-ratelimit-reset-requests"])
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == "10"
        assert 9000 <= int(refused.headers["retry-after-ms"]) <= 10000
        body = refused.json()
        validate(body, "ErrorResponse")
        assert (body["error"]["type"], body["error"]["code"]) == ("requests", "rate_limit_exceeded")
        assert "Limit 6," in body["error"]["message"]
        # A refused request takes no scripted reply: the third is still queued.
        assert fake.pending == 1
        assert fake.rate_limited_count == 1
        assert len(fake.completion_requests) == 3

        with (
            openai.OpenAI(base_url=fake.base_url, api_key="sk-test", max_retries=0) as sdk,
            pytest.raises(openai.RateLimitError) as raised,
        ):
            sdk.chat.completions.create(model="gpt-5.1", messages=MESSAGES)
        assert raised.value.code == "rate_limit_exceeded"
        assert fake.rate_limited_count == 2

        fake.set_rate_limit(None)
        assert post_chat(fake).json()["choices"][0]["message"]["content"] == "third"
        assert fake.requests_per_minute is None


def test_rate_limit_admits_requests_at_the_configured_rate() -> None:
    """Requests sent as fast as possible are admitted at the limit's rate, no faster and not much slower."""
    with FakeOpenAIServer(requests_per_minute=1200, burst=1) as fake, requests.Session() as session:
        url = f"{fake.base_url}/models/gpt-5.1"
        statuses: list[int] = []
        started = time.monotonic()
        while time.monotonic() - started < 0.5:
            statuses.append(session.get(url, timeout=5).status_code)
        elapsed = time.monotonic() - started

    admitted = statuses.count(200)
    assert set(statuses) == {200, 429}
    # 20 per second plus the one the full bucket held at the start.
    assert admitted <= 1 + 20 * elapsed + 1
    assert admitted >= 0.5 * 20 * elapsed
    assert statuses.count(429) == fake.rate_limited_count


def test_rate_limit_options_are_checked() -> None:
    with pytest.raises(ValueError, match="requests_per_minute"):
        FakeOpenAIServer(requests_per_minute=0)
    with pytest.raises(ValueError, match="burst"):
        FakeOpenAIServer(requests_per_minute=60, burst=0.5)
    assert FakeOpenAIServer(requests_per_minute=30).requests_per_minute == 30


def test_stats_count_requests_and_answers_and_are_served_over_http() -> None:
    """GET /_stats tells another process what arrived and how it was answered; DELETE resets the counters."""
    with FakeOpenAIServer(requests_per_minute=6, burst=1) as fake:
        fake.script(Reply.error(500))
        post_chat(fake)
        post_chat(fake)
        requests.get(f"{fake.origin}/nowhere", timeout=5)

        stats = requests.get(f"{fake.origin}/_stats", timeout=5).json()
        assert stats == fake.stats()
        assert {key: stats[key] for key in ("requests", "completions", "rate_limited", "statuses", "dropped")} == {
            "requests": 3,
            "completions": 2,
            "rate_limited": 1,
            "statuses": {"404": 1, "429": 1, "500": 1},
            "dropped": 0,
        }
        assert stats["paths"] == {"/nowhere": 1, "/v1/chat/completions": 2}
        assert stats["requests_per_minute"] == 6
        assert stats["first_request_at"] <= stats["last_request_at"] <= time.time()
        # The counters' own endpoint is neither recorded nor counted.
        assert len(fake.requests) == 3

        assert requests.delete(f"{fake.origin}/_stats", timeout=5).status_code == 204
        assert fake.stats()["requests"] == 0
        assert fake.rate_limited_count == 0
        assert len(fake.requests) == 3


# --- WebhookReceiver ------------------------------------------------------------------------------------


def signed_post(url: str, payload: dict[str, Any], *, secret: str = SECRET, tamper: bool = False) -> requests.Response:
    body = json.dumps(payload)
    msg_id = f"msg_{payload.get('id', 'x')}"
    now = datetime.now(tz=timezone.utc)
    signature = standardwebhooks.Webhook(secret).sign(msg_id, now, body)
    headers = {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }
    sent = body.replace("}", ', "tampered": true}') if tamper else body
    return requests.post(url, data=sent.encode(), headers=headers, timeout=5, allow_redirects=False)


def test_receiver_records_and_acknowledges(receiver: WebhookReceiver) -> None:
    assert receiver.url == f"http://127.0.0.1:{receiver.port}/incidents"
    response = signed_post(receiver.url, {"id": 1, "incident_class": "rate_limit"})
    assert response.status_code == 200
    assert response.json() == {"ok": True}

    (delivery,) = receiver.wait_for(1)
    assert isinstance(delivery, Delivery)
    assert delivery.status == 200
    assert delivery.signature_valid is True
    assert delivery.headers["webhook-id"] == "msg_1"
    assert delivery.path == "/incidents"
    assert receiver.incidents == [{"id": 1, "incident_class": "rate_limit"}]


def test_receiver_flags_tampered_and_wrongly_signed_bodies(receiver: WebhookReceiver) -> None:
    signed_post(receiver.url, {"id": 1}, tamper=True)
    signed_post(receiver.url, {"id": 2}, secret="whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=")
    requests.post(receiver.url, data=b"not json", timeout=5)
    assert [d.signature_valid for d in receiver.deliveries] == [False, False, False]
    assert receiver.deliveries[2].json is None


def test_receiver_without_secret_does_not_verify() -> None:
    with WebhookReceiver() as hook:
        requests.post(hook.url, json={"id": 1}, timeout=5)
        assert hook.wait_for(1)[0].signature_valid is None


def test_fail_next_then_success(receiver: WebhookReceiver) -> None:
    receiver.fail_next(2, status=503, retry_after=7)
    answers = [signed_post(receiver.url, {"id": n}) for n in range(3)]
    assert [a.status_code for a in answers] == [503, 503, 200]
    assert answers[0].headers["retry-after"] == "7"
    assert "retry-after" not in answers[2].headers
    assert [d.status for d in receiver.deliveries] == [503, 503, 200]
    assert [d.json["id"] for d in receiver.delivered] == [2]


def test_script_statuses_and_redirect(receiver: WebhookReceiver) -> None:
    receiver.script(503, 410, 302, 204)
    answers = [signed_post(receiver.url, {"id": n}) for n in range(5)]
    assert [a.status_code for a in answers] == [503, 410, 302, 204, 200]
    assert answers[2].headers["location"] == f"http://127.0.0.1:{receiver.port}/elsewhere"
    assert answers[3].content == b""
    assert receiver.incidents == [{"id": 3}, {"id": 4}]
    # Following the redirect the way requests does (as a GET) delivers nothing.
    assert requests.get(answers[2].headers["location"], timeout=5).status_code == 405
    assert len(receiver.deliveries) == 5


def test_close_refuses_connections_and_reopen_uses_the_same_port(receiver: WebhookReceiver) -> None:
    session = requests.Session()
    assert session.post(receiver.url, json={"id": 1}, timeout=5).status_code == 200
    port = receiver.port

    receiver.close()
    with pytest.raises(requests.ConnectionError):
        session.post(receiver.url, json={"id": 2}, timeout=5)
    with pytest.raises(requests.ConnectionError):
        requests.post(receiver.url, json={"id": 2}, timeout=5)

    receiver.reopen()
    assert receiver.port == port
    assert session.post(receiver.url, json={"id": 3}, timeout=5).status_code == 200
    assert receiver.incidents == [{"id": 1}, {"id": 3}]
    session.close()


def test_wait_for_blocks_until_delivered_or_reports_what_arrived(receiver: WebhookReceiver) -> None:
    receiver.fail_next(1, status=500)
    requests.post(receiver.url, json={"id": "failed"}, timeout=5)
    with pytest.raises(AssertionError, match=r"expected 1 successful deliveries.*500"):
        receiver.wait_for(1, timeout=0.05)

    timer = threading.Timer(0.05, lambda: requests.post(receiver.url, json={"id": "late"}, timeout=5))
    timer.start()
    delivered = receiver.wait_for(1, timeout=2.0)
    timer.join()
    assert [d.json for d in delivered] == [{"id": "late"}]

    receiver.clear()
    assert receiver.deliveries == []


def test_invalid_secret_is_rejected() -> None:
    with pytest.raises(ValueError, match="secret"):
        WebhookReceiver(secret="whsec_")


# --- python -m arcanos_flows.testing ----------------------------------------------------------------


def _read_first_line(process: subprocess.Popen[str], timeout: float) -> str:
    lines: queue.Queue[str] = queue.Queue()
    stdout = process.stdout
    assert stdout is not None
    reader = threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True)
    reader.start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        process.kill()
        pytest.fail(f"no READY line within {timeout}s")


def test_module_runs_the_openai_server_until_sigterm() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen(
        [sys.executable, "-m", "arcanos_flows.testing", "openai", "--port", "0", "--model-override", "gpt-4o"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = _read_first_line(process, timeout=15.0)
        assert line.startswith("READY http://127.0.0.1:")
        base_url = line.split()[1]
        assert base_url.endswith("/v1")
        response = requests.post(
            f"{base_url}/chat/completions", json={"model": "gpt-5.1", "messages": MESSAGES}, timeout=5
        )
        assert response.status_code == 200
        assert response.json()["model"] == "gpt-4o"
    finally:
        process.terminate()
        try:
            returncode = process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        _, stderr = process.communicate()
    assert returncode == 0, stderr
    assert "Traceback" not in stderr


def test_module_runs_a_rate_limited_openai_server_with_stats() -> None:
    """--rpm turns on the rate limit of the server process; its counters are read over GET /_stats."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen(
        [sys.executable, "-m", "arcanos_flows.testing", "openai", "--rpm", "6", "--burst", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = _read_first_line(process, timeout=15.0)
        base_url = line.split()[1]
        body = {"model": "gpt-5.1", "messages": MESSAGES}
        statuses = [requests.post(f"{base_url}/chat/completions", json=body, timeout=5).status_code for _ in range(2)]
        stats = requests.get(base_url.removesuffix("/v1") + "/_stats", timeout=5).json()
    finally:
        process.terminate()
        try:
            returncode = process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        _, stderr = process.communicate()
    assert statuses == [200, 429]
    assert (stats["completions"], stats["rate_limited"], stats["requests_per_minute"]) == (2, 1, 6)
    assert returncode == 0, stderr


def test_module_refuses_a_burst_without_a_rate() -> None:
    process = subprocess.run(
        [sys.executable, "-m", "arcanos_flows.testing", "openai", "--burst", "2"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO_ROOT,
        check=False,
    )
    assert process.returncode == 2
    assert "--burst needs --rpm" in process.stderr


def test_vendored_schemas_match_the_official_spec() -> None:
    """The vendored subset is exactly what tests/openapi/vendor.py cuts from the full spec, when one is at hand."""
    import importlib.util
    from pathlib import Path

    full = Path(__file__).resolve().parents[2] / "shared" / "openai-openapi" / "openapi.json"
    if not full.is_file():
        pytest.skip("the full OpenAI spec is not next to this checkout")
    spec = importlib.util.spec_from_file_location("vendor", Path(__file__).parent / "openapi" / "vendor.py")
    assert spec is not None
    assert spec.loader is not None
    vendor = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(vendor)
    official = json.loads(full.read_text(encoding="utf-8"))["components"]["schemas"]
    vendored = json.loads((Path(__file__).parent / "openapi" / "openai-schemas.json").read_text(encoding="utf-8"))
    assert vendored["components"]["schemas"] == vendor.closure(official)
