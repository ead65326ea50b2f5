"""AsyncArcanosClient against the fake OpenAI server, through the real async SDK, for both APIs.

The contract is ArcanosPythonClient's (tests/test_client.py); what is proper to the async client is tested here too:
calls run concurrently on one loop, and neither the rate limiter nor a slow or dead webhook ever blocks the loop.
Each test drives its coroutines with a plain ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import openai
import pytest
from conftest import API_KEY, MODEL, WEBHOOK_SECRET

from arcanos_flows import (
    ArcanosPythonClient,
    ArcanosSettings,
    AsyncArcanosClient,
    ConfigurationError,
    InvalidReasoningInput,
    MaintenanceNotifier,
    ModelEnforcementError,
    ReasoningResult,
    UpstreamResponseError,
)
from arcanos_flows.client import AsyncArcanosClient as ClientFromSubpackage
from arcanos_flows.core.messages import fingerprint
from arcanos_flows.core.upstream import MAX_BODY_BYTES
from arcanos_flows.incidents import attached_incident
from arcanos_flows.testing import FakeOpenAIServer, RecordedRequest, Reply, WebhookReceiver

T = TypeVar("T")
APIS = ["chat", "responses"]
MESSAGES = [
    {"role": "system", "content": "You are the Arcanos maintenance AI."},
    {"role": "user", "content": "List the current confirmation layers."},
]
FAST_RETRY = 0.01  # Retry-After seconds the SDK honours, so a retried call takes milliseconds
TICK = 0.01


@pytest.fixture(params=APIS)
def api(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def make_client(make_settings: Callable[..., ArcanosSettings], api: str) -> Callable[..., AsyncArcanosClient]:
    """Build async clients speaking ``api``, reporting to the receiver with fast notifier backoff.

    Each test enters its client with ``async with`` inside its own ``asyncio.run``: a client's connections
    belong to the loop that opened them.
    """

    def make(*, backoff: float = 0.01, **overrides: Any) -> AsyncArcanosClient:
        settings = make_settings(openai_api=api, **overrides)
        notifier = MaintenanceNotifier(settings, backoff=backoff, source="arcanos_flows.client")
        return AsyncArcanosClient(settings, notifier=notifier)

    return make


def using(client: AsyncArcanosClient, scenario: Callable[[AsyncArcanosClient], Awaitable[T]]) -> T:
    """Run ``scenario(client)`` in a fresh event loop, the client open for its duration."""

    async def main() -> T:
        async with client:
            return await scenario(client)

    return asyncio.run(main())


def failure_of(client: AsyncArcanosClient, call: Callable[[AsyncArcanosClient], Awaitable[Any]]) -> BaseException:
    """The exception ``call(client)`` raised (failing the test if it returned)."""

    async def scenario(client: AsyncArcanosClient) -> BaseException:
        try:
            await call(client)
        except Exception as exc:
            return exc
        raise AssertionError("the call did not fail")

    return using(client, scenario)


def only_request(server: FakeOpenAIServer) -> RecordedRequest:
    (request,) = server.completion_requests
    return request


def incident_classes(receiver: WebhookReceiver) -> list[str]:
    return [delivery.json["incident_class"] for delivery in receiver.deliveries]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Ticker:
    """A coroutine that records when it runs: gaps between its ticks show how long the event loop was blocked."""

    def __init__(self) -> None:
        self.ticks: list[float] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def __enter__(self) -> Ticker:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        while not self._stop.is_set():
            self.ticks.append(time.perf_counter())
            await asyncio.sleep(TICK)

    def longest_gap(self) -> float:
        return max(later - earlier for earlier, later in itertools.pairwise(self.ticks))


# --- success ---------------------------------------------------------------------------------------------


def test_success_returns_a_typed_result(
    make_client: Callable[..., AsyncArcanosClient],
    openai_server: FakeOpenAIServer,
    receiver: WebhookReceiver,
    api: str,
) -> None:
    """Content, model, usage, ids, the metadata sent and one attempt, as the sync client returns them."""
    openai_server.script(Reply.ok("Three layers.", reasoning_tokens=7, headers={"x-request-id": "req_abc123"}))

    result = using(
        make_client(),
        lambda client: client.run_reasoning(MESSAGES, metadata={"intent": "audit", "run": 7, "skip": None}),
    )

    body = only_request(openai_server).json
    assert isinstance(result, ReasoningResult)
    assert result.content == "Three layers."
    assert result.model == MODEL
    assert body["model"] == MODEL
    assert result.response_id == ("chatcmpl-1" if api == "chat" else "resp_1")
    assert result.request_id == "req_abc123"
    assert result.usage.reasoning_tokens == 7
    assert result.usage.output_tokens == 2 + 7
    assert result.usage.input_tokens == 6 + 5
    assert result.usage.total_tokens == result.usage.input_tokens + result.usage.output_tokens
    assert result.metadata == body["metadata"] == {"intent": "audit", "run": "7"}
    assert result.stored is True
    assert result.attempts == 1
    assert result.latency_ms > 0
    assert result.api == api
    assert only_request(openai_server).headers["authorization"] == f"Bearer {API_KEY}"
    assert receiver.deliveries == []


def test_the_async_client_sends_and_returns_what_the_sync_client_does(
    make_settings: Callable[..., ArcanosSettings], openai_server: FakeOpenAIServer, api: str
) -> None:
    """The same call on both clients sends the same body and returns the same result (but for timing and ids)."""
    settings = make_settings(openai_api=api, confirmation_token="ct-7f3a")
    call: dict[str, Any] = {
        "metadata": {"intent": "audit"},
        "reasoning_effort": "high",
        "max_output_tokens": 256,
        "response_format": {"type": "json_object"},
        "identity": {"flow_run_id": "run-1"},
    }
    with ArcanosPythonClient(settings) as sync_client:
        expected = sync_client.run_reasoning(MESSAGES, **call)
    result = using(AsyncArcanosClient(settings), lambda client: client.run_reasoning(MESSAGES, **call))

    sync_body, async_body = (request.json for request in openai_server.completion_requests)
    assert async_body == sync_body
    varying = {"latency_ms", "request_id", "response_id"}
    assert result.model_dump(exclude=varying) == expected.model_dump(exclude=varying)
    assert result.metadata == {"intent": "audit", "confirmation_token": "ct-7f3a", "flow_run_id": "run-1"}


@pytest.mark.parametrize("system", [None, "Be terse."])
def test_run_simple_prompt(
    make_client: Callable[..., AsyncArcanosClient], openai_server: FakeOpenAIServer, system: str | None
) -> None:
    """One user turn, optionally after a system message, with metadata."""
    openai_server.script(Reply.ok("All clear."))

    result = using(
        make_client(), lambda client: client.run_simple_prompt("Status?", system=system, metadata={"intent": "ping"})
    )

    body = only_request(openai_server).json
    expected = [{"role": "user", "content": "Status?"}]
    if system is not None:
        expected.insert(0, {"role": "system", "content": system})
    assert body.get("messages", body.get("input")) == expected
    assert body["metadata"] == {"intent": "ping"}
    assert result.content == "All clear."


def test_gathered_calls_run_concurrently_on_one_sdk_client(
    make_client: Callable[..., AsyncArcanosClient], openai_server: FakeOpenAIServer
) -> None:
    """8 calls to a server that takes 0.2 s each finish together in far less than 8 x 0.2 s."""
    openai_server.latency = 0.2
    client = make_client()
    sdk = client._openai

    async def scenario(client: AsyncArcanosClient) -> tuple[list[ReasoningResult], float]:
        started = time.perf_counter()
        results = await asyncio.gather(*(client.run_simple_prompt(f"Question {n}?") for n in range(8)))
        return list(results), time.perf_counter() - started

    results, elapsed = using(client, scenario)

    assert elapsed < 0.2 * 8 / 2, elapsed
    assert [result.content for result in results] == [f"[fake] Question {n}?" for n in range(8)]
    assert len({result.request_id for result in results}) == 8
    assert len(openai_server.completion_requests) == 8
    assert client._openai is sdk


def test_async_with_closes_the_client_and_aclose_does_too(make_client: Callable[..., AsyncArcanosClient]) -> None:
    """Leaving ``async with`` closes the SDK client and its connections; ``aclose()`` closes a client directly."""
    entered = make_client()

    async def scenario() -> None:
        async with entered as client:
            assert client is entered
            await client.run_simple_prompt("Status?")
            assert not client._openai.is_closed()
        assert entered._openai.is_closed()
        other = make_client()
        await other.aclose()
        assert other._openai.is_closed()

    asyncio.run(scenario())


def test_the_client_is_exported_from_the_package_and_the_client_subpackage(settings: ArcanosSettings) -> None:
    client = AsyncArcanosClient(settings)
    assert ClientFromSubpackage is AsyncArcanosClient
    assert repr(client) == f"AsyncArcanosClient(model={MODEL!r}, api={settings.openai_api!r})"
    assert API_KEY not in repr(client)
    asyncio.run(client.aclose())


# --- model enforcement -----------------------------------------------------------------------------------


def test_another_model_answering_is_refused(
    make_client: Callable[..., AsyncArcanosClient], openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """An answer from another model raises ModelEnforcementError and reports exactly one incident."""
    openai_server.script(Reply.other_model("gpt-4o"))

    error = failure_of(make_client(), lambda client: client.run_reasoning(MESSAGES))

    assert isinstance(error, ModelEnforcementError)
    assert (error.expected_model, error.actual_model) == (MODEL, "gpt-4o")
    assert (error.http_status, error.attempts, error.request_id) == (200, 1, "req_1")
    assert only_request(openai_server).json["model"] == MODEL
    (delivery,) = receiver.deliveries
    assert delivery.json["incident_class"] == "model_enforcement"
    assert delivery.json["model"] == MODEL
    assert delivery.signature_valid is True
    assert attached_incident(error) is not None
    assert str(attached_incident(error).incident_id) == delivery.json["incident_id"]  # type: ignore[union-attr]


def test_a_model_argument_is_refused_before_any_request(
    make_client: Callable[..., AsyncArcanosClient], openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    error = failure_of(make_client(), lambda client: client.run_reasoning(MESSAGES, model="gpt-4o"))  # type: ignore[arg-type]

    assert isinstance(error, ModelEnforcementError)
    assert "does not take model" in str(error)
    assert openai_server.requests == []
    assert incident_classes(receiver) == ["model_enforcement"]


def test_a_dated_snapshot_of_a_bare_alias_is_accepted(
    make_client: Callable[..., AsyncArcanosClient], openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    openai_server.script(Reply.other_model("gpt-5.1-2025-11-13"))

    result = using(make_client(fine_tuned_model="gpt-5.1"), lambda client: client.run_reasoning(MESSAGES))

    assert only_request(openai_server).json["model"] == "gpt-5.1"
    assert result.model == "gpt-5.1-2025-11-13"
    assert receiver.deliveries == []


# --- input checked before any request --------------------------------------------------------------------

INVALID_CALLS: dict[str, Callable[[AsyncArcanosClient], Awaitable[Any]]] = {
    "no messages": lambda client: client.run_reasoning([]),
    "unknown role": lambda client: client.run_reasoning([{"role": "robot", "content": "Hi"}]),
    "blank content": lambda client: client.run_reasoning([{"role": "user", "content": "  "}]),
    "unknown effort": lambda client: client.run_reasoning(MESSAGES, reasoning_effort="maximum"),
    "zero budget": lambda client: client.run_reasoning(MESSAGES, max_output_tokens=0),
    "bad response format": lambda client: client.run_reasoning(MESSAGES, response_format={"type": "yaml"}),
    "negative timeout": lambda client: client.run_reasoning(MESSAGES, timeout=-1),
    "too much metadata": lambda client: client.run_reasoning(MESSAGES, metadata={f"k{n}": "v" for n in range(17)}),
    "blank simple prompt": lambda client: client.run_simple_prompt("   "),
}


@pytest.mark.parametrize("name", INVALID_CALLS)
def test_invalid_input_fails_before_any_request(
    name: str,
    make_client: Callable[..., AsyncArcanosClient],
    openai_server: FakeOpenAIServer,
    receiver: WebhookReceiver,
) -> None:
    """Bad messages, options or metadata raise InvalidReasoningInput, send nothing and report one incident."""
    error = failure_of(make_client(), INVALID_CALLS[name])

    assert isinstance(error, InvalidReasoningInput)
    assert openai_server.requests == []
    assert incident_classes(receiver) == ["invalid_input"]
    assert attached_incident(error) is not None


def test_notify_false_raises_without_reporting(
    make_client: Callable[..., AsyncArcanosClient], openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """With ``notify=False`` the failure is raised with its incident attached, and nothing is delivered."""
    openai_server.always(Reply.error(401))
    client = make_client()

    async def scenario(client: AsyncArcanosClient) -> list[ReasoningResult | BaseException]:
        calls = [
            client.run_reasoning(MESSAGES, notify=False),
            client.run_simple_prompt("", notify=False),
            client.run_reasoning(MESSAGES, notify=False, model="gpt-4o"),  # type: ignore[arg-type]
        ]
        return list(await asyncio.gather(*calls, return_exceptions=True))

    errors = using(client, scenario)

    assert [type(error) for error in errors] == [
        openai.AuthenticationError,
        InvalidReasoningInput,
        ModelEnforcementError,
    ]
    assert all(attached_incident(error) is not None for error in errors)
    assert receiver.deliveries == []
    assert client.notifier.pending() == []


def test_bad_configuration_fails_at_construction_with_a_configuration_incident(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No API key or model in the environment: construction raises, and the incident is printed (no webhook)."""
    with pytest.raises(ConfigurationError, match="Missing required environment"):
        AsyncArcanosClient()

    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["incident_class"] == "configuration"


# --- classified upstream failures ------------------------------------------------------------------------


def test_401_raises_the_sdk_error_scrubbed_with_one_authentication_incident(
    make_client: Callable[..., AsyncArcanosClient],
    openai_server: FakeOpenAIServer,
    receiver: WebhookReceiver,
    api: str,
) -> None:
    """The SDK's AuthenticationError comes through, without the key anywhere, and one incident is delivered."""
    openai_server.always(Reply.error(401, message=f"Incorrect API key provided: {API_KEY}"))

    error = failure_of(make_client(), lambda client: client.run_reasoning(MESSAGES, metadata={"intent": "audit"}))

    assert type(error) is openai.AuthenticationError
    assert (error.status_code, error.request_id) == (401, "req_1")
    for text in (str(error), repr(error), error.message, json.dumps(error.body)):
        assert API_KEY not in text
    assert error.request.headers.get("authorization") in (None, "[REDACTED]")
    assert API_KEY.encode() not in error.response.content
    assert len(openai_server.completion_requests) == 1
    (delivery,) = receiver.deliveries
    incident = delivery.json
    assert delivery.signature_valid is True
    assert API_KEY.encode() not in delivery.body
    assert incident["incident_class"] == "authentication"
    assert (incident["http_status"], incident["request_id"], incident["attempts"]) == (401, "req_1", 1)
    assert incident["metadata"] == {"intent": "audit"}
    assert (incident["message_count"], incident["messages_sha256"]) == fingerprint(MESSAGES)
    assert incident["context"] == {"api": api}
    assert incident["source"] == "arcanos_flows.client"


def test_503_then_200_succeeds_on_the_sdks_retry(
    make_client: Callable[..., AsyncArcanosClient],
    openai_server: FakeOpenAIServer,
    receiver: WebhookReceiver,
) -> None:
    """The SDK retries a 503; the result counts both attempts and names the second request."""
    openai_server.script(Reply.error(503, retry_after=FAST_RETRY), Reply.ok("Second time."))

    result = using(make_client(), lambda client: client.run_reasoning(MESSAGES))

    assert (result.content, result.attempts, result.request_id) == ("Second time.", 2, "req_2")
    assert len(openai_server.completion_requests) == 2
    assert receiver.deliveries == []


def test_retries_that_run_out_report_every_attempt(
    make_client: Callable[..., AsyncArcanosClient], openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    openai_server.always(Reply.error(500, retry_after=FAST_RETRY))

    error = failure_of(make_client(max_retries=2), lambda client: client.run_reasoning(MESSAGES))

    assert type(error) is openai.InternalServerError
    assert len(openai_server.completion_requests) == 3
    (delivery,) = receiver.deliveries
    assert (delivery.json["incident_class"], delivery.json["attempts"]) == ("upstream_error", 3)


def test_an_exhausted_quota_is_not_retried(
    make_client: Callable[..., AsyncArcanosClient], openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """429 insufficient_quota cannot succeed on retry: the async response hook stops the SDK after one attempt."""
    openai_server.always(Reply.error(429, code="insufficient_quota", retry_after=FAST_RETRY))

    error = failure_of(make_client(max_retries=2), lambda client: client.run_reasoning(MESSAGES))

    assert type(error) is openai.RateLimitError
    assert len(openai_server.completion_requests) == 1
    assert incident_classes(receiver) == ["quota_exhausted"]


@pytest.mark.parametrize("api", ["chat"])
def test_a_body_over_the_limit_is_refused_while_it_arrives(
    make_client: Callable[..., AsyncArcanosClient], openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """Without a Content-Length, the async stream stops at MAX_BODY_BYTES; the next call on the client works."""
    filler = json.dumps({"id": "chatcmpl-1", "model": MODEL, "choices": [], "padding": "x" * (MAX_BODY_BYTES + 1)})
    openai_server.script(Reply(body=filler.encode(), omit_content_length=True))

    async def scenario(client: AsyncArcanosClient) -> tuple[BaseException, ReasoningResult]:
        with pytest.raises(UpstreamResponseError) as caught:
            await client.run_reasoning(MESSAGES)
        return caught.value, await client.run_reasoning(MESSAGES)

    error, result = using(make_client(max_retries=0), scenario)

    assert f"a body of more than {MAX_BODY_BYTES} bytes" in str(error)
    assert incident_classes(receiver) == ["invalid_response"]
    assert result.content


def test_a_compressed_answer_is_refused_from_its_headers(
    make_client: Callable[..., AsyncArcanosClient], openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """The body-bounding hook runs on the async client too: requests ask for identity, gzip is refused unread."""
    openai_server.script(dataclasses.replace(Reply.ok(), headers={"Content-Encoding": "gzip"}))

    error = failure_of(make_client(max_retries=0), lambda client: client.run_reasoning(MESSAGES))

    assert isinstance(error, UpstreamResponseError)
    assert "gzip-compressed" in str(error)
    assert only_request(openai_server).headers["accept-encoding"] == "identity"
    assert incident_classes(receiver) == ["invalid_response"]


# --- the notifier never blocks the event loop ------------------------------------------------------------


@pytest.fixture(params=["slow", "unreachable"])
def failing_webhook(request: pytest.FixtureRequest) -> Iterator[tuple[str, float, WebhookReceiver | None]]:
    """A webhook that takes ~0.4 s to deliver to: ``(url, notifier backoff, receiver or None)``.

    ``slow`` answers 200 after 0.4 s; ``unreachable`` refuses connections, so the notifier's three attempts wait
    0.15 + 0.3 s of backoff and leave the incident in the spool.
    """
    if request.param == "slow":
        with WebhookReceiver(secret=WEBHOOK_SECRET, on_delivery=lambda _: time.sleep(0.4)) as slow:
            yield slow.url, 0.01, slow
    else:
        yield f"http://127.0.0.1:{closed_port()}/incidents", 0.15, None


def test_a_slow_or_dead_webhook_never_stalls_other_coroutines(
    make_client: Callable[..., AsyncArcanosClient],
    openai_server: FakeOpenAIServer,
    failing_webhook: tuple[str, float, WebhookReceiver | None],
) -> None:
    """While a failed call delivers its incident, the loop keeps ticking and other calls on the client finish."""
    url, backoff, slow_receiver = failing_webhook
    openai_server.reply_when("Fail now", Reply.error(401))
    client = make_client(maintenance_webhook=url, backoff=backoff)

    async def scenario(client: AsyncArcanosClient) -> tuple[float, float, float, Ticker, BaseException]:
        with Ticker() as ticker:
            started = time.perf_counter()
            failing = asyncio.ensure_future(client.run_simple_prompt("Fail now"))
            await asyncio.sleep(0.05)  # the failed call is delivering its incident by now
            other = await client.run_simple_prompt("Still there?")
            other_done = time.perf_counter() - started
            assert other.content
            with pytest.raises(openai.AuthenticationError) as caught:
                await failing
            failed_after = time.perf_counter() - started
        return other_done, failed_after, started, ticker, caught.value

    other_done, failed_after, started, ticker, error = using(client, scenario)

    assert failed_after >= 0.35, failed_after  # the call awaited the delivery ...
    assert other_done < failed_after - 0.15, (other_done, failed_after)  # ... while another call went through
    during = [tick for tick in ticker.ticks if tick >= started]
    assert len(during) >= 0.35 / TICK / 3, len(during)
    assert ticker.longest_gap() < 0.15, ticker.longest_gap()  # the loop was never held for the delivery
    incident = attached_incident(error)
    assert incident is not None
    assert incident.incident_class.value == "authentication"
    if slow_receiver is not None:
        (delivery,) = slow_receiver.deliveries
        assert delivery.json["incident_id"] == str(incident.incident_id)
    else:
        assert [pending.incident_id for pending in client.notifier.pending()] == [incident.incident_id]


# --- the rate limiter -------------------------------------------------------------------------------------


def test_async_and_sync_clients_share_one_limiter_and_awaiting_it_leaves_the_loop_free(
    make_settings: Callable[..., ArcanosSettings], openai_server: FakeOpenAIServer
) -> None:
    """At 300/min, 3 async calls and 1 sync call (in a thread) take slots 0.2 s apart, and the loop keeps ticking."""
    settings = make_settings(requests_per_minute=300)
    sync_client = ArcanosPythonClient(settings)
    client = AsyncArcanosClient(settings)
    limiter = client.rate_limiter
    assert limiter is not None
    assert limiter is sync_client.rate_limiter
    requests_before, waited_before = limiter.requests, limiter.waited

    async def scenario(client: AsyncArcanosClient) -> Ticker:
        with Ticker() as ticker:
            await asyncio.gather(
                *(client.run_simple_prompt(f"Async {n}?") for n in range(3)),
                asyncio.to_thread(sync_client.run_simple_prompt, "Sync?"),
            )
        return ticker

    with sync_client:
        ticker = using(client, scenario)

    assert limiter.requests - requests_before == 4
    # Four requests asking at once get slots 0, 0.2, 0.4 and 0.6 s away: 1.2 s of waiting in all.
    assert limiter.waited - waited_before >= 1.0
    arrivals = sorted(request.at for request in openai_server.completion_requests)
    assert len(arrivals) == 4
    # Arrivals lag their slots by a connection setup or two, hence the slack.
    assert arrivals[-1] - arrivals[0] >= 0.5, arrivals
    assert all(later - earlier >= 0.1 for earlier, later in itertools.pairwise(arrivals)), arrivals
    assert ticker.longest_gap() < 0.15, ticker.longest_gap()  # awaiting a slot never held the loop


def test_every_async_attempt_waits_for_the_limiter_sdk_retries_included(
    make_client: Callable[..., AsyncArcanosClient], openai_server: FakeOpenAIServer
) -> None:
    """The SDK would retry after 10 ms; at 300/min the retry waits for its own slot, 0.2 s after the first."""
    openai_server.script(Reply.error(500, retry_after=FAST_RETRY), Reply.ok("Second time."))
    client = make_client(requests_per_minute=300, max_retries=1)
    limiter = client.rate_limiter
    assert limiter is not None
    requests_before, waited_before = limiter.requests, limiter.waited

    result = using(client, lambda client: client.run_reasoning(MESSAGES))

    assert (result.content, result.attempts) == ("Second time.", 2)
    assert limiter.requests - requests_before == 2
    assert limiter.waited - waited_before >= 0.1
    first, second = (request.at for request in openai_server.completion_requests)
    assert second - first >= 0.15
