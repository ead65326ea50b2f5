"""OpenTelemetry spans for model requests, following the GenAI semantic conventions (extra ``arcanos-flows[otel]``).

Every HTTP request a client sends to the model (one ``_send``: a structured-output re-ask is a second request and a
second span) is one ``CLIENT`` span named ``chat {model}``, a child of the current span (a Prefect task run's, a
user's), carrying what the request asked and what came back: models, ids, token counts, finish reasons, the server,
and on failure the error class. Prompts and answers are not recorded unless ``ARCANOS_OTEL_CAPTURE_CONTENT=1``;
everything textual that is recorded goes through :func:`~arcanos_flows.core.redaction.redact` first.

Spans go to the global tracer provider as soon as one is set (``opentelemetry.trace.set_tracer_provider``), or to
the provider given to :func:`instrument`. Nothing of OpenTelemetry is imported by this module: when no one else
imported ``opentelemetry.trace``, no provider can have been set, and a request pays a few dictionary look-ups; when
someone did, the provider is compared by identity with the one seen last.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import threading
import traceback
from collections.abc import Mapping, Sequence
from contextvars import Token
from functools import lru_cache
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import openai

from arcanos_flows._version import __version__
from arcanos_flows.client._base import PreparedRequest
from arcanos_flows.core.errors import ArcanosError, ModelEnforcementError
from arcanos_flows.core.redaction import redact, redact_data
from arcanos_flows.core.results import ReasoningResult

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer, TracerProvider

__all__ = [
    "CAPTURE_CONTENT_ENV",
    "MAX_CONTENT_BYTES",
    "Instrumentation",
    "RequestSpan",
    "bounded_messages",
    "instrument",
    "request_span",
    "uninstrument",
]

CAPTURE_CONTENT_ENV = "ARCANOS_OTEL_CAPTURE_CONTENT"
"""Set to ``1`` (or ``true``) to record the (redacted, bounded) messages sent and the answer on each span."""
MAX_CONTENT_BYTES = 4096
"""The most ``gen_ai.input.messages`` or ``gen_ai.output.messages`` holds, in UTF-8 bytes of JSON."""

TRACER_NAME = "arcanos_flows.client"
_MAX_MESSAGE_CHARS = 1024
_MAX_STACKTRACE_CHARS = 8192
_TRUNCATED = "…[truncated]"
_TRUE = frozenset({"1", "true", "yes", "on"})
_API_TYPES = {"chat": "chat_completions", "responses": "responses"}

logger = logging.getLogger("arcanos_flows.client")

Mode = Literal["global", "provider", "off"]

_lock = threading.Lock()
_mode: Mode = "global"
_provider: TracerProvider | None = None
# The provider last looked at and its tracer (None: a no-op provider, or tracing off); compared by identity, so that
# a provider set after the first request is picked up by the next one.
_seen: tuple[object, Tracer | None] = (object(), None)


class Instrumentation:
    """What :func:`instrument` or :func:`uninstrument` changed; as a context manager, undone when the block ends.

    Called as a statement, the change stays for the rest of the process. Used in a ``with`` statement, the routing
    that was in force before the call is put back on leaving the block (handy in tests and examples). Routing is
    process-wide: every client and thread sees it.

    Examples:
        >>> with uninstrument():
        ...     request_span(PreparedRequest("chat", {"model": "ft:m"}, {}, {}), "https://api.openai.com/v1").recording
        False
    """

    def __init__(self, previous: tuple[Mode, TracerProvider | None]) -> None:
        self._previous = previous

    def __enter__(self) -> Instrumentation:
        return self

    def __exit__(self, *exc_info: object) -> None:
        _route(*self._previous)


def instrument(tracer_provider: TracerProvider | None = None) -> Instrumentation:
    """Trace every model request: on ``tracer_provider``, or on the global provider when it is ``None``.

    Without any call, requests are traced on the global tracer provider as soon as one is set
    (``opentelemetry.trace.set_tracer_provider``, or ``opentelemetry-instrument``); ``instrument()`` with no
    argument returns to that. A provider passed here is used instead of the global one, whether one is set or not
    (a no-op provider records nothing).

    Args:
        tracer_provider: The provider of the spans; ``None`` for the global one.

    Returns:
        The change, which a ``with`` statement undoes when its block ends.

    Examples:
        >>> from opentelemetry.sdk.trace import TracerProvider
        >>> request = PreparedRequest("chat", {"model": "ft:gpt-5.1:arcanos::x"}, {}, {})
        >>> with instrument(tracer_provider=TracerProvider()):
        ...     with request_span(request, "https://api.openai.com/v1") as span:
        ...         span.recording
        True
    """
    return _route("global" if tracer_provider is None else "provider", tracer_provider)


def uninstrument() -> Instrumentation:
    """Trace no request, whatever tracer provider is set, until :func:`instrument` is called.

    Returns:
        The change, which a ``with`` statement undoes when its block ends.

    Examples:
        >>> from opentelemetry.sdk.trace import TracerProvider
        >>> request = PreparedRequest("chat", {"model": "ft:m"}, {}, {})
        >>> with instrument(tracer_provider=TracerProvider()), uninstrument():
        ...     request_span(request, "https://api.openai.com/v1").recording
        False
    """
    return _route("off", None)


def _route(mode: Mode, provider: TracerProvider | None) -> Instrumentation:
    global _mode, _provider, _seen
    with _lock:
        previous = (_mode, _provider)
        _mode, _provider = mode, provider
        _seen = (object(), None)
    return Instrumentation(previous)


def _tracer() -> Tracer | None:
    """The tracer of the spans, or ``None`` when nothing would record them; cheap when tracing is off."""
    global _seen
    mode, provider = _mode, _provider
    if mode == "off":
        return None
    if mode == "global":
        trace = sys.modules.get("opentelemetry.trace")
        if trace is None:
            # Nobody imported the API, so nobody set a provider; but the API builds one from an entry point named
            # by this variable on first use.
            if not os.environ.get("OTEL_PYTHON_TRACER_PROVIDER"):
                return None
            try:
                trace = importlib.import_module("opentelemetry.trace")
            except ImportError:
                return None
        provider = trace.get_tracer_provider()
    seen, tracer = _seen
    if provider is seen:
        return tracer
    tracer = _tracer_of(provider)
    _seen = (provider, tracer)
    return tracer


def _tracer_of(provider: object) -> Tracer | None:
    from opentelemetry import trace

    # The API's stand-ins: a proxy is what get_tracer_provider() answers until a provider is set (it then answers
    # that provider), and the no-op provider records nothing by design.
    if provider is None or isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
        return None
    if not isinstance(provider, trace.TracerProvider):
        return None
    return provider.get_tracer(TRACER_NAME, __version__)


@lru_cache(maxsize=16)
def _server(base_url: str) -> tuple[str | None, int | None]:
    try:
        parts = urlsplit(base_url)
        port = parts.port or {"https": 443, "http": 80}.get(parts.scheme)
    except ValueError:
        return None, None
    return parts.hostname, port


def _capture_content() -> bool:
    return os.environ.get(CAPTURE_CONTENT_ENV, "").strip().lower() in _TRUE


def _qualified_name(cls: type[BaseException]) -> str:
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _error_type(error: BaseException) -> str:
    """``error.type``: the HTTP status of an API status error (as the HTTP conventions do), else the class name."""
    if isinstance(error, openai.APIStatusError):
        return str(error.status_code)
    return _qualified_name(type(error))


def _bounded(text: str, limit: int, *, keep_end: bool = False) -> str:
    if len(text) <= limit:
        return text
    return _TRUNCATED + text[-limit:] if keep_end else text[:limit] + _TRUNCATED


def _encoded_size(value: object) -> tuple[str, int]:
    text = json.dumps(value, ensure_ascii=False)
    return text, len(text.encode("utf-8"))


def bounded_messages(messages: Sequence[Mapping[str, Any]], limit: int = MAX_CONTENT_BYTES) -> str:
    """Messages in the GenAI JSON shape, as a JSON string of at most ``limit`` UTF-8 bytes.

    Secrets are redacted before encoding. Longer texts are cut (marked ``…[truncated]``); if the messages still do
    not fit, the oldest are left out.

    Examples:
        >>> bounded_messages([{"role": "user", "parts": [{"type": "text", "content": "key sk-proj-abcdefghijk"}]}])
        '[{"role": "user", "parts": [{"type": "text", "content": "key [REDACTED]"}]}]'
        >>> text = bounded_messages([{"role": "user", "parts": [{"type": "text", "content": "x" * 9000}]}])
        >>> len(text.encode()), text[-20:]
        (4096, 'xxx…[truncated]"}]}]')
    """
    safe: list[dict[str, Any]] = redact_data([dict(message) for message in messages])
    return _fit(safe, limit)


def _fit(messages: list[dict[str, Any]], limit: int) -> str:
    text, size = _encoded_size(messages)
    if size <= limit:
        return text
    longest = max(
        (len(part.get("content", "")) for message in messages for part in message.get("parts", [])), default=0
    )
    low, high, best = 0, longest, None
    while low <= high:  # the least cut that fits
        cap = (low + high) // 2
        candidate, size = _encoded_size(_cut(messages, cap))
        if size <= limit:
            best, low = candidate, cap + 1
        else:
            high = cap - 1
    if best is not None:
        return best
    # Even cut to nothing they do not fit: leave out the fewest oldest messages, and cut the others least.
    low, high, keep_from = 1, len(messages) - 1, None
    while low <= high:
        dropped = (low + high) // 2
        if _encoded_size(_cut(messages[dropped:], 0))[1] <= limit:
            keep_from, high = dropped, dropped - 1
        else:
            low = dropped + 1
    return "[]" if keep_from is None else _fit(messages[keep_from:], limit)


def _cut(messages: list[dict[str, Any]], cap: int) -> list[dict[str, Any]]:
    def part(entry: dict[str, Any]) -> dict[str, Any]:
        content = entry.get("content")
        if isinstance(content, str) and len(content) > cap:
            return {**entry, "content": content[:cap] + _TRUNCATED}
        return entry

    return [{**message, "parts": [part(entry) for entry in message.get("parts", [])]} for message in messages]


def _input_messages(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages", body.get("input", []))
    return [
        {"role": str(message.get("role")), "parts": [{"type": "text", "content": str(message.get("content", ""))}]}
        for message in messages
        if isinstance(message, Mapping)
    ]


def _output_type(body: Mapping[str, Any]) -> str | None:
    requested = body.get("response_format") or (body.get("text") or {}).get("format")
    if not isinstance(requested, Mapping):
        return None
    return "json" if requested.get("type") in ("json_schema", "json_object") else "text"


class RequestSpan:
    """The span of one model request; entering makes it current, leaving ends it (recording any failure).

    Without a tracer the object records nothing and costs nothing: :func:`request_span` then returns one shared
    instance.

    Args:
        tracer: The tracer to start the span with; ``None`` for a span that records nothing.
        request: The request about to be sent.
        base_url: The base URL the SDK client sends to (for ``server.address`` and ``server.port``).
    """

    __slots__ = ("_capture", "_span", "_token")

    def __init__(
        self, tracer: Tracer | None = None, request: PreparedRequest | None = None, base_url: object = ""
    ) -> None:
        self._span: Span | None = None
        self._token: Token[Context] | None = None
        self._capture = False
        if tracer is None or request is None:
            return
        from opentelemetry.trace import SpanKind

        body = request.body
        model = str(body.get("model", ""))
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.system": "openai",
            "gen_ai.request.model": model,
            "openai.api.type": _API_TYPES.get(request.api, request.api),
        }
        address, port = _server(str(base_url))
        if address:
            attributes["server.address"] = address
        if port is not None:
            attributes["server.port"] = port
        max_tokens = body.get("max_completion_tokens", body.get("max_output_tokens"))
        if isinstance(max_tokens, int):
            attributes["gen_ai.request.max_tokens"] = max_tokens
        output_type = _output_type(body)
        if output_type:
            attributes["gen_ai.output.type"] = output_type
        span = tracer.start_span(f"chat {model}", kind=SpanKind.CLIENT, attributes=attributes)
        self._span = span
        self._capture = span.is_recording() and _capture_content()
        if self._capture:
            try:
                span.set_attribute("gen_ai.input.messages", bounded_messages(_input_messages(body)))
            except Exception as problem:  # telemetry never fails a request
                logger.debug("Could not record the messages on the span: %s", redact(str(problem)))

    @property
    def recording(self) -> bool:
        """Whether a span is being recorded.

        Examples:
            >>> RequestSpan().recording
            False
        """
        return self._span is not None and self._span.is_recording()

    def __enter__(self) -> RequestSpan:
        if self._span is not None:
            from opentelemetry import context, trace

            self._token = context.attach(trace.set_span_in_context(self._span))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        span = self._span
        if span is None:
            return
        try:
            if error is not None and span.is_recording():
                _record_failure(span, error)
        except Exception as problem:  # telemetry never fails a request
            logger.debug("Could not record the failure on the span: %s", redact(str(problem)))
        finally:
            span.end()
            if self._token is not None:
                from opentelemetry import context

                context.detach(self._token)

    def answered(self, result: ReasoningResult) -> None:
        """Record what came back: the answering model, ids, token counts, finish reason, attempts.

        Examples:
            >>> RequestSpan().answered(ReasoningResult(content="Hi", model="ft:m", response_id="chatcmpl-1"))
        """
        span = self._span
        if span is None or not span.is_recording():
            return
        try:
            attributes: dict[str, Any] = {
                "gen_ai.response.model": result.model,
                "gen_ai.response.id": result.response_id,
                "gen_ai.usage.input_tokens": result.usage.input_tokens,
                "gen_ai.usage.output_tokens": result.usage.output_tokens,
                "arcanos.attempts": result.attempts,
            }
            if result.usage.reasoning_tokens:
                attributes["gen_ai.usage.reasoning.output_tokens"] = result.usage.reasoning_tokens
            if result.usage.cached_tokens:
                attributes["gen_ai.usage.cache_read.input_tokens"] = result.usage.cached_tokens
            if result.finish_reason is not None:
                attributes["gen_ai.response.finish_reasons"] = [result.finish_reason]
            if result.request_id is not None:
                attributes["arcanos.request_id"] = result.request_id
            if self._capture:
                output = {
                    "role": "assistant",
                    "parts": [{"type": "text", "content": result.content}],
                    "finish_reason": result.finish_reason or "stop",
                }
                attributes["gen_ai.output.messages"] = bounded_messages([output])
            span.set_attributes(attributes)
        except Exception as problem:  # telemetry never fails a request
            logger.debug("Could not record the answer on the span: %s", redact(str(problem)))


_NO_SPAN = RequestSpan()


def request_span(request: PreparedRequest, base_url: object) -> RequestSpan:
    """Start the span of ``request``; send it inside ``with`` the span, then call :meth:`RequestSpan.answered`.

    Records nothing (the shared no-op instance) when no tracer provider is set or tracing is off; never raises.

    Args:
        request: The request about to be sent.
        base_url: The base URL the SDK client sends to (a string or URL object).

    Returns:
        The span, current inside the ``with`` block and ended when the block ends.

    Examples:
        >>> with request_span(PreparedRequest("chat", {"model": "ft:m"}, {}, {}), "http://127.0.0.1/v1") as span:
        ...     span.answered(ReasoningResult(content="Hi", model="ft:m", response_id="chatcmpl-1"))
    """
    try:
        tracer = _tracer()
        return _NO_SPAN if tracer is None else RequestSpan(tracer, request, base_url)
    except Exception as problem:  # telemetry never fails a request
        logger.debug("Could not start a span: %s", redact(str(problem)))
        return _NO_SPAN


def _record_failure(span: Span, error: BaseException) -> None:
    from opentelemetry.trace import Status, StatusCode

    error_type = _error_type(error)
    message = _bounded(redact(str(error)), _MAX_MESSAGE_CHARS)
    attributes: dict[str, Any] = {"error.type": error_type}
    request_id = getattr(error, "request_id", None)
    if isinstance(request_id, str):
        attributes["arcanos.request_id"] = redact(request_id)
    if isinstance(error, ArcanosError) and error.attempts:
        attributes["arcanos.attempts"] = error.attempts
    if isinstance(error, ModelEnforcementError) and error.actual_model:
        attributes["gen_ai.response.model"] = redact(error.actual_model)
    span.set_attributes(attributes)
    cls = type(error)
    stacktrace = "".join(traceback.format_exception(cls, error, error.__traceback__))
    span.add_event(
        "exception",
        {
            "exception.type": _qualified_name(cls),
            "exception.message": message,
            "exception.stacktrace": _bounded(redact(stacktrace), _MAX_STACKTRACE_CHARS, keep_end=True),
        },
    )
    span.set_status(Status(StatusCode.ERROR, _bounded(f"{error_type}: {message}", 256)))
