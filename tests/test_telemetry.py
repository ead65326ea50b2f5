"""OpenTelemetry GenAI spans of model requests (arcanos_flows.client._telemetry), against the fake OpenAI server.

Spans are exported in memory by an SDK ``TracerProvider`` handed to ``instrument(tracer_provider=...)`` for the
test only: the global provider can be set once per process, and the tests of this worker share the process. What
depends on the global provider (picked up when set, nothing imported when not) runs in a fresh interpreter.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import openai
import pytest
from conftest import API_KEY, MODEL
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracerProvider, SpanKind, StatusCode, Tracer
from pydantic import BaseModel

from arcanos_flows import (
    ArcanosPythonClient,
    ArcanosSettings,
    AsyncArcanosClient,
    MaintenanceNotifier,
    ModelEnforcementError,
)
from arcanos_flows.client._telemetry import (
    CAPTURE_CONTENT_ENV,
    MAX_CONTENT_BYTES,
    bounded_messages,
    instrument,
    uninstrument,
)
from arcanos_flows.core.redaction import redact
from arcanos_flows.testing import FakeOpenAIServer, Reply

MESSAGES = [
    {"role": "system", "content": "You are the Arcanos maintenance AI."},
    {"role": "user", "content": "List the current confirmation layers."},
]
LEAKED_KEY = "sk-proj-LEAKEDabcdefghijklmnop0123"


class Plan(BaseModel):
    questions: list[str]


@pytest.fixture
def provider() -> Iterator[TracerProvider]:
    """An SDK provider the client's spans go to during the test (the global provider is left alone)."""
    tracer_provider = TracerProvider()
    with instrument(tracer_provider=tracer_provider):
        yield tracer_provider
    tracer_provider.shutdown()


@pytest.fixture
def exporter(provider: TracerProvider) -> InMemorySpanExporter:
    """The spans the client ended during the test, in memory."""
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return memory


@pytest.fixture
def make_client(
    make_settings: Callable[..., ArcanosSettings], notifier: MaintenanceNotifier
) -> Iterator[Callable[..., ArcanosPythonClient]]:
    clients: list[ArcanosPythonClient] = []

    def make(**overrides: Any) -> ArcanosPythonClient:
        client = ArcanosPythonClient(make_settings(**overrides), notifier=notifier)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def _port(server: FakeOpenAIServer) -> int | None:
    return urlsplit(server.base_url).port


def _only(exporter: InMemorySpanExporter) -> ReadableSpan:
    spans = exporter.get_finished_spans()
    assert len(spans) == 1, [span.name for span in spans]
    return spans[0]


def _texts(span: ReadableSpan) -> list[str]:
    """Every text the span carries: its name, status, event names, and attribute and event attribute values."""
    texts = [span.name, span.status.description or "", *(event.name for event in span.events)]
    for attributes in [span.attributes or {}, *((event.attributes or {}) for event in span.events)]:
        for value in attributes.values():
            texts.extend(str(item) for item in (value if isinstance(value, (list, tuple)) else [value]))
    return texts


def test_chat_request_is_one_client_span_with_the_genai_attributes(
    make_client: Callable[..., ArcanosPythonClient], openai_server: FakeOpenAIServer, exporter: InMemorySpanExporter
) -> None:
    openai_server.script(Reply(reasoning_tokens=7))
    result = make_client().run_reasoning(MESSAGES, max_output_tokens=500)

    span = _only(exporter)
    assert span.name == f"chat {MODEL}"
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.UNSET
    assert span.parent is None
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == "arcanos_flows.client"
    assert dict(span.attributes or {}) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.system": "openai",
        "gen_ai.request.model": MODEL,
        "openai.api.type": "chat_completions",
        "server.address": "127.0.0.1",
        "server.port": _port(openai_server),
        "gen_ai.request.max_tokens": 500,
        "gen_ai.response.model": MODEL,
        "gen_ai.response.id": result.response_id,
        "gen_ai.usage.input_tokens": result.usage.input_tokens,
        "gen_ai.usage.output_tokens": result.usage.output_tokens,
        "gen_ai.usage.reasoning.output_tokens": 7,
        "gen_ai.response.finish_reasons": ("stop",),
        "arcanos.request_id": result.request_id,
        "arcanos.attempts": 1,
    }
    assert result.request_id
    assert result.response_id.startswith("chatcmpl-")
    assert not span.events


def test_responses_api_request_is_a_chat_span_of_the_responses_api_type(
    make_client: Callable[..., ArcanosPythonClient], openai_server: FakeOpenAIServer, exporter: InMemorySpanExporter
) -> None:
    result = make_client(openai_api="responses").run_reasoning(MESSAGES, max_output_tokens=300)

    span = _only(exporter)
    attributes = dict(span.attributes or {})
    assert span.name == f"chat {MODEL}"
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["openai.api.type"] == "responses"
    assert attributes["gen_ai.request.max_tokens"] == 300
    assert attributes["gen_ai.response.id"] == result.response_id
    assert result.response_id.startswith("resp_")
    assert attributes["gen_ai.usage.input_tokens"] == result.usage.input_tokens
    assert attributes["gen_ai.usage.output_tokens"] == result.usage.output_tokens
    assert attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert attributes["arcanos.request_id"] == result.request_id
    assert "gen_ai.output.type" not in attributes


def test_sdk_retries_are_one_request_and_one_span(
    make_client: Callable[..., ArcanosPythonClient], openai_server: FakeOpenAIServer, exporter: InMemorySpanExporter
) -> None:
    openai_server.script(Reply.error(500, retry_after=0.01))
    result = make_client().run_reasoning(MESSAGES)

    span = _only(exporter)
    assert result.attempts == 2
    assert span.status.status_code is StatusCode.UNSET
    assert (span.attributes or {})["arcanos.attempts"] == 2


def test_async_client_spans_are_siblings_under_the_callers_span(
    make_settings: Callable[..., ArcanosSettings],
    notifier: MaintenanceNotifier,
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    tracer = provider.get_tracer("test")

    async def ask_twice() -> None:
        async with AsyncArcanosClient(make_settings(), notifier=notifier) as client:
            with tracer.start_as_current_span("step"):
                await asyncio.gather(client.run_reasoning(MESSAGES), client.run_reasoning(MESSAGES))

    asyncio.run(ask_twice())

    spans = exporter.get_finished_spans()
    (step,) = [span for span in spans if span.name == "step"]
    requests = [span for span in spans if span.name != "step"]
    assert [span.name for span in requests] == [f"chat {MODEL}"] * 2
    for request in requests:
        assert request.kind is SpanKind.CLIENT
        assert request.parent is not None
        assert request.parent.span_id == step.context.span_id
        assert request.context.trace_id == step.context.trace_id
        assert (request.attributes or {})["gen_ai.response.model"] == MODEL
    assert len({request.context.span_id for request in requests}) == 2


def test_request_span_is_a_child_of_the_current_span(
    make_client: Callable[..., ArcanosPythonClient], provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracer: Tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("research step") as parent:
        make_client().run_reasoning(MESSAGES)

    (request,) = [span for span in exporter.get_finished_spans() if span.name != "research step"]
    assert request.parent is not None
    assert request.parent.span_id == parent.get_span_context().span_id
    assert request.context.trace_id == parent.get_span_context().trace_id


def test_failed_request_is_an_error_span_without_secrets(
    make_client: Callable[..., ArcanosPythonClient], openai_server: FakeOpenAIServer, exporter: InMemorySpanExporter
) -> None:
    openai_server.script(Reply.error(401, message=f"Incorrect API key provided: {API_KEY} (also {LEAKED_KEY})"))
    with pytest.raises(openai.AuthenticationError):
        make_client().run_reasoning(MESSAGES)

    span = _only(exporter)
    attributes = dict(span.attributes or {})
    assert span.status.status_code is StatusCode.ERROR
    assert attributes["error.type"] == "401"
    assert attributes["gen_ai.request.model"] == MODEL
    assert "gen_ai.response.model" not in attributes
    (event,) = span.events
    assert event.name == "exception"
    assert (event.attributes or {})["exception.type"] == "openai.AuthenticationError"
    assert "Incorrect API key provided: [REDACTED]" in str((event.attributes or {})["exception.message"])
    texts = _texts(span)
    for text in texts:
        assert API_KEY not in text
        assert LEAKED_KEY not in text
        assert "sk-" not in text
    assert not any(message["content"] in text for message in MESSAGES for text in texts)


def test_a_refused_model_is_a_failure_of_that_request(
    make_client: Callable[..., ArcanosPythonClient], openai_server: FakeOpenAIServer, exporter: InMemorySpanExporter
) -> None:
    """ModelEnforcementError raised while reading the answer fails the request's span, naming who answered."""
    openai_server.script(Reply.other_model("gpt-4o-mini"))
    with pytest.raises(ModelEnforcementError):
        make_client().run_reasoning(MESSAGES)

    span = _only(exporter)
    attributes = dict(span.attributes or {})
    assert span.status.status_code is StatusCode.ERROR
    assert attributes["error.type"] == "arcanos_flows.errors.ModelEnforcementError"
    assert attributes["gen_ai.response.model"] == "gpt-4o-mini"
    assert attributes["arcanos.attempts"] == 1
    assert str(attributes["arcanos.request_id"]).startswith("req_")


def test_structured_output_reask_is_a_second_span(
    make_client: Callable[..., ArcanosPythonClient], openai_server: FakeOpenAIServer, exporter: InMemorySpanExporter
) -> None:
    openai_server.script(Reply.invalid_json())
    result = make_client().run_reasoning(MESSAGES, output_type=Plan)

    spans = exporter.get_finished_spans()
    assert isinstance(result.output, Plan)
    assert [span.name for span in spans] == [f"chat {MODEL}"] * 2
    assert all(span.status.status_code is StatusCode.UNSET for span in spans)
    assert all((span.attributes or {})["gen_ai.output.type"] == "json" for span in spans)
    first, second = spans
    assert (first.attributes or {})["gen_ai.response.id"] != (second.attributes or {})["gen_ai.response.id"]
    assert second.start_time is not None
    assert first.end_time is not None
    assert second.start_time >= first.end_time


def test_no_content_is_recorded_by_default(
    make_client: Callable[..., ArcanosPythonClient], exporter: InMemorySpanExporter
) -> None:
    result = make_client().run_reasoning(MESSAGES)

    span = _only(exporter)
    attributes = dict(span.attributes or {})
    assert "gen_ai.input.messages" not in attributes
    assert "gen_ai.output.messages" not in attributes
    texts = _texts(span)
    assert not any(message["content"] in text for message in MESSAGES for text in texts)
    assert not any(result.content in text for text in texts)


def test_content_is_recorded_redacted_when_opted_in(
    make_client: Callable[..., ArcanosPythonClient],
    exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(CAPTURE_CONTENT_ENV, "1")
    question = f"Rotate the key {LEAKED_KEY} and {API_KEY}."
    result = make_client().run_simple_prompt(question, system="Be terse.")

    attributes = dict(_only(exporter).attributes or {})
    sent = json.loads(str(attributes["gen_ai.input.messages"]))
    answered = json.loads(str(attributes["gen_ai.output.messages"]))
    assert sent == [
        {"role": "system", "parts": [{"type": "text", "content": "Be terse."}]},
        {"role": "user", "parts": [{"type": "text", "content": "Rotate the key [REDACTED] and [REDACTED]."}]},
    ]
    assert LEAKED_KEY in result.content  # the fake echoes the question: the answer holds a key too
    assert answered == [
        {"role": "assistant", "parts": [{"type": "text", "content": redact(result.content)}], "finish_reason": "stop"}
    ]
    assert "sk-" not in json.dumps(attributes)


def test_recorded_content_is_bounded(
    make_client: Callable[..., ArcanosPythonClient],
    openai_server: FakeOpenAIServer,
    exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(CAPTURE_CONTENT_ENV, "1")
    openai_server.script(Reply.ok("y" * 20_000))
    make_client().run_simple_prompt("x" * 20_000, system="Be terse.")

    attributes = dict(_only(exporter).attributes or {})
    for name in ("gen_ai.input.messages", "gen_ai.output.messages"):
        text = str(attributes[name])
        assert len(text.encode("utf-8")) <= MAX_CONTENT_BYTES
        parts = [part for message in json.loads(text) for part in message["parts"]]
        assert parts[-1]["content"].endswith("…[truncated]")
    assert json.loads(str(attributes["gen_ai.input.messages"]))[0]["parts"][0]["content"] == "Be terse."


def test_bounded_messages_leaves_out_the_oldest_messages_when_cutting_is_not_enough() -> None:
    many = [{"role": "user", "parts": [{"type": "text", "content": f"question {index}"}]} for index in range(500)]
    text = bounded_messages(many)
    kept = json.loads(text)
    assert len(text.encode("utf-8")) <= MAX_CONTENT_BYTES
    assert 0 < len(kept) < 500
    assert kept == many[-len(kept) :]  # the latest messages, whole


def test_uninstrument_and_no_op_providers_record_nothing(
    make_client: Callable[..., ArcanosPythonClient], exporter: InMemorySpanExporter
) -> None:
    client = make_client()
    with uninstrument():
        client.run_reasoning(MESSAGES)
    with instrument(tracer_provider=NoOpTracerProvider()):
        client.run_reasoning(MESSAGES)
    assert exporter.get_finished_spans() == ()
    client.run_reasoning(MESSAGES)  # the provider of the test again, once the blocks ended
    assert len(exporter.get_finished_spans()) == 1


def test_a_broken_tracer_provider_never_fails_a_request(make_client: Callable[..., ArcanosPythonClient]) -> None:
    class Broken(TracerProvider):
        def get_tracer(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("exporter misconfigured")

    with instrument(tracer_provider=Broken()):
        assert make_client().run_reasoning(MESSAGES).content


def _run(script: str, env: Mapping[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        check=False,
        env=dict(env),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout.strip()


@pytest.fixture
def child_env(openai_server: FakeOpenAIServer) -> dict[str, str]:
    """The environment of a fresh interpreter whose client talks to the fake server."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(("ARCANOS_", "OPENAI_", "OTEL_"))}
    env.update(
        {
            "OPENAI_API_KEY": API_KEY,
            "ARCANOS_FINE_TUNED_MODEL": MODEL,
            "OPENAI_BASE_URL": openai_server.base_url,
            "ARCANOS_MAINTENANCE_WEBHOOK": "",
        }
    )
    return env


def test_without_a_provider_nothing_of_opentelemetry_is_imported(child_env: dict[str, str]) -> None:
    out = _run(
        """
        import sys
        from arcanos_flows import ArcanosPythonClient
        with ArcanosPythonClient() as client:
            client.run_simple_prompt("Status?")
        print(sorted(name for name in sys.modules if name.split(".")[0] == "opentelemetry"))
        """,
        child_env,
    )
    assert out == "[]"


def test_the_global_provider_is_picked_up_when_set_after_the_first_request(child_env: dict[str, str]) -> None:
    out = _run(
        """
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from arcanos_flows import ArcanosPythonClient

        memory = InMemorySpanExporter()
        with ArcanosPythonClient() as client:
            client.run_simple_prompt("Before any provider")
            before = len(memory.get_finished_spans())
            provider = TracerProvider()
            provider.add_span_processor(SimpleSpanProcessor(memory))
            trace.set_tracer_provider(provider)
            client.run_simple_prompt("After")
        print(before, [span.name for span in memory.get_finished_spans()])
        """,
        child_env,
    )
    assert out == f"0 ['chat {MODEL}']"
