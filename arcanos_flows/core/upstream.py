"""The wire protocol: request bodies for both OpenAI APIs, and strict reading of what comes back.

The SDK's own parsing is lenient (a wrong-shape 200 becomes a half-filled object) or too strict
(``_strict_response_validation`` rejects bodies that merely lack a newer optional field), so bodies
are read here against the few fields arcanos-flows relies on, and anything else is an
:class:`~arcanos_flows.errors.UpstreamResponseError`, never a bare ``JSONDecodeError``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

import httpx2
from pydantic import BaseModel, ConfigDict, ValidationError

from arcanos_flows.core.errors import (
    EmptyCompletionError,
    IncompleteCompletionError,
    RefusalError,
    UpstreamResponseError,
)
from arcanos_flows.core.messages import Message, plain_json
from arcanos_flows.core.redaction import redact
from arcanos_flows.core.results import Usage

__all__ = [
    "IDENTITY_ENCODING",
    "MAX_BODY_BYTES",
    "Completion",
    "Exchange",
    "bound_response_body",
    "bound_response_body_async",
    "read_chat",
    "read_responses",
    "request_body",
    "request_id_of",
]

MAX_BODY_BYTES = 16 * 1024 * 1024
"""Larger bodies are refused while they arrive: no reasoning answer is that big, and memory must stay bounded."""

IDENTITY_ENCODING = {"Accept-Encoding": "identity"}
"""Request headers asking for uncompressed answers, so that :data:`MAX_BODY_BYTES` bounds memory too
(a 200 KB gzip body can inflate to gigabytes; answers are small enough not to need compression)."""


class _BoundedStream(httpx2.SyncByteStream, httpx2.AsyncByteStream):
    """The raw response stream, failing as soon as more than ``limit`` bytes have arrived.

    It wraps the stream of a sync or of an async client alike; only the side the wrapped stream has is used.
    """

    def __init__(self, stream: Any, limit: int, error: Callable[[], Exception]) -> None:
        self._stream = stream
        self._limit = limit
        self._error = error
        self._received = 0

    def _counted(self, chunk: bytes) -> bytes:
        self._received += len(chunk)
        if self._received > self._limit:
            raise self._error()
        return chunk

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._stream:
            yield self._counted(chunk)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield self._counted(chunk)

    def close(self) -> None:
        self._stream.close()

    async def aclose(self) -> None:
        await self._stream.aclose()


def bound_response_body(response: httpx2.Response) -> None:
    """An httpx response event hook that keeps every body under :data:`MAX_BODY_BYTES` before it is buffered.

    A 2xx announcing a larger ``Content-Length``, or compressed although identity was asked for, is
    refused at once; any body (whatever its status, with a lying or absent ``Content-Length``) fails
    as soon as more than the limit has arrived. Refusals raise :class:`UpstreamResponseError`, which
    the SDK lets through unchanged (it only wraps transport errors) without another attempt.

    Examples:
        >>> import httpx2
        >>> response = httpx2.Response(200, headers={"content-length": str(MAX_BODY_BYTES + 1)},
        ...                            request=httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions"))
        >>> bound_response_body(response)  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        arcanos_flows.errors.UpstreamResponseError: upstream answered HTTP 200 with a body announced as ...
    """
    status = response.status_code
    try:
        retries = int(response.request.headers.get("x-stainless-retry-count", "0"))
    except (RuntimeError, ValueError):
        retries = 0
    facts: _Facts = {"request_id": request_id_of(response.headers), "http_status": status, "attempts": retries + 1}

    def refuse(problem: str) -> UpstreamResponseError:
        return UpstreamResponseError(
            f"upstream answered HTTP {status} with {problem}; arcanos-flows reads at most {MAX_BODY_BYTES} bytes",
            **facts,
        )

    encodings = [
        value.strip().lower()
        for value in response.headers.get_list("content-encoding", split_commas=True)
        if value.strip().lower() not in ("", "identity")
    ]
    success = 200 <= status < 300
    if encodings and success:
        raise UpstreamResponseError(
            f"upstream answered HTTP {status} with a {'+'.join(encodings)}-compressed body although "
            "arcanos-flows asks for identity (Accept-Encoding: identity); a proxy in between may be rewriting it",
            **facts,
        )
    if encodings:
        # An error body is read only for its message: read the bytes as sent rather than inflate them.
        del response.headers["content-encoding"]
    try:
        announced = int(response.headers.get("content-length", "0"))
    except ValueError:
        announced = 0
    if success and announced > MAX_BODY_BYTES:
        raise refuse(f"a body announced as {announced} bytes")
    response.stream = _BoundedStream(
        response.stream, MAX_BODY_BYTES, lambda: refuse(f"a body of more than {MAX_BODY_BYTES} bytes")
    )


async def bound_response_body_async(response: httpx2.Response) -> None:
    """:func:`bound_response_body` as an ``httpx2.AsyncClient`` response hook (whose hooks must be coroutines).

    The checks are the same and read no body; the stream it wraps is then bounded as it is read asynchronously.

    Examples:
        >>> import asyncio, httpx2
        >>> response = httpx2.Response(200, headers={"content-encoding": "gzip"},
        ...                            request=httpx2.Request("POST", "http://127.0.0.1/v1/responses"))
        >>> asyncio.run(bound_response_body_async(response))  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        arcanos_flows.errors.UpstreamResponseError: upstream answered HTTP 200 with a gzip-compressed body ...
    """
    bound_response_body(response)


Api = Literal["chat", "responses"]


def request_id_of(headers: Mapping[str, str]) -> str | None:
    """The upstream's ``x-request-id``, redacted: a proxy may echo anything there, the API key included.

    Behind a LiteLLM proxy the upstream's id arrives as ``llm_provider-x-request-id`` (LiteLLM prefixes the
    provider's headers); it wins, since it is the id the provider's support knows.

    Examples:
        >>> request_id_of({"x-request-id": "req_123"})
        'req_123'
        >>> request_id_of({"llm_provider-x-request-id": "req_456", "x-request-id": "proxy-1"})
        'req_456'
        >>> request_id_of({"x-request-id": "sk-proj-abcdefghijkl"})
        '[REDACTED]'
    """
    value = headers.get("llm_provider-x-request-id") or headers.get("x-request-id")
    return redact(value) if value is not None else None


class _Facts(TypedDict):
    """The keyword arguments every :class:`~arcanos_flows.errors.ArcanosError` raised here carries."""

    request_id: str | None
    http_status: int
    attempts: int


@dataclass(frozen=True)
class Exchange:
    """The HTTP facts of one call, attached to every error raised while reading it."""

    request_id: str | None
    http_status: int
    attempts: int


@dataclass(frozen=True)
class Completion:
    """What a valid body says, in API-neutral names."""

    content: str
    model: str
    response_id: str
    finish_reason: str | None
    usage: Usage


def request_body(
    api: Api,
    *,
    model: str,
    messages: Sequence[Message],
    metadata: Mapping[str, str] | None,
    reasoning_effort: str | None,
    max_output_tokens: int | None,
    response_format: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Build the keyword arguments of ``chat.completions.create`` or ``responses.create``.

    Args:
        api: Which API to speak.
        model: The enforced model.
        messages: Checked messages.
        metadata: Audit metadata to send, or ``None`` to send none (``ARCANOS_STORE=false``).
        reasoning_effort: Optional reasoning effort.
        max_output_tokens: Optional output budget (``max_completion_tokens`` for Chat Completions).
        response_format: Optional response format in the Chat Completions shape.

    Returns:
        The request body; Chat Completions requests carry ``store=true`` whenever they carry metadata,
        because the API rejects metadata otherwise.

    Examples:
        >>> request_body("chat", model="ft:m", messages=[{"role": "user", "content": "Hi"}],
        ...              metadata={"run": "1"}, reasoning_effort=None, max_output_tokens=None,
        ...              response_format=None)
        {'model': 'ft:m', 'messages': [{'role': 'user', 'content': 'Hi'}], 'metadata': {'run': '1'}, 'store': True}
    """
    body: dict[str, Any] = {"model": model}
    if api == "chat":
        body["messages"] = [dict(message) for message in messages]
    else:
        # Responses input messages have no `name`; the API rejects unknown fields, so it is not sent.
        body["input"] = [{"role": message["role"], "content": message["content"]} for message in messages]
    if metadata:
        body["metadata"] = dict(metadata)
        body["store"] = True
    elif api == "responses":
        # The Responses API stores by default; without metadata nothing is meant to be kept.
        body["store"] = False
    if api == "chat":
        if reasoning_effort is not None:
            body["reasoning_effort"] = reasoning_effort
        if max_output_tokens is not None:
            body["max_completion_tokens"] = max_output_tokens
        if response_format is not None:
            body["response_format"] = plain_json(response_format)
    else:
        if reasoning_effort is not None:
            body["reasoning"] = {"effort": reasoning_effort}
        if max_output_tokens is not None:
            body["max_output_tokens"] = max_output_tokens
        if response_format is not None:
            body["text"] = {"format": _responses_format(response_format)}
    return body


def _responses_format(response_format: Mapping[str, Any]) -> dict[str, Any]:
    if response_format["type"] != "json_schema":
        return {"type": str.__str__(response_format["type"])}
    return {"type": "json_schema", **plain_json(response_format["json_schema"])}


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _PromptDetails(_Wire):
    cached_tokens: int | None = None


class _CompletionDetails(_Wire):
    reasoning_tokens: int | None = None


class _ChatUsage(_Wire):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: _PromptDetails | None = None
    completion_tokens_details: _CompletionDetails | None = None


class _ChatMessage(_Wire):
    content: str | None = None
    refusal: str | None = None


class _ChatChoice(_Wire):
    finish_reason: str | None = None
    message: _ChatMessage


class _ChatBody(_Wire):
    id: str
    model: str
    choices: list[_ChatChoice]
    usage: _ChatUsage | None = None


class _ResponsesUsage(_Wire):
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    input_tokens_details: _PromptDetails | None = None
    output_tokens_details: _CompletionDetails | None = None


class _ContentPart(_Wire):
    type: str
    text: str | None = None
    refusal: str | None = None


class _OutputItem(_Wire):
    type: str
    content: list[_ContentPart] | None = None


class _Problem(_Wire):
    message: str | None = None
    reason: str | None = None


class _ResponsesBody(_Wire):
    id: str
    model: str
    status: str | None = None
    output: list[_OutputItem]
    usage: _ResponsesUsage | None = None
    incomplete_details: _Problem | None = None
    error: _Problem | None = None


def _load(raw: bytes | Mapping[str, Any], content_type: str, exchange: Exchange, what: str, model: type[_Wire]) -> Any:
    facts: _Facts = {
        "request_id": exchange.request_id,
        "http_status": exchange.http_status,
        "attempts": exchange.attempts,
    }
    if isinstance(raw, Mapping):  # a batch row's body, decoded with the row (its file's size was bounded)
        return _validated(raw, exchange, what, model, facts)
    if len(raw) > MAX_BODY_BYTES:
        raise UpstreamResponseError(
            f"upstream answered HTTP {exchange.http_status} with a {len(raw)}-byte body; "
            f"more than the {MAX_BODY_BYTES}-byte limit for {what}",
            **facts,
        )
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        kind = "malformed JSON" if "json" in content_type else f"a non-JSON body ({content_type or 'no content-type'})"
        raise UpstreamResponseError(
            f"upstream answered HTTP {exchange.http_status} with {kind} instead of {what}", **facts
        ) from None
    return _validated(data, exchange, what, model, facts)


def _validated(data: Any, exchange: Exchange, what: str, model: type[_Wire], facts: _Facts) -> Any:
    try:
        return model.model_validate(data)
    except (ValidationError, RecursionError) as exc:
        problems = (
            "; ".join(
                f"{'.'.join(str(part) for part in detail['loc']) or 'body'}: {detail['msg']}"
                for detail in exc.errors(include_input=False, include_url=False)[:3]
            )
            if isinstance(exc, ValidationError)
            else "nested too deeply"
        )
        raise UpstreamResponseError(
            f"upstream answered HTTP {exchange.http_status} with JSON that is not {what} ({problems})", **facts
        ) from None


def read_chat(
    raw: bytes | Mapping[str, Any], content_type: str, exchange: Exchange
) -> tuple[str, Completion | Exception]:
    """Read a Chat Completions body (the raw bytes, or a batch row's body already decoded).

    Returns:
        The answering model, and either the completion or the error its content amounts to (empty,
        incomplete, refused). The caller checks the model first: another model is the graver fault.

    Raises:
        UpstreamResponseError: The body is not a chat completion.
    """
    body: _ChatBody = _load(raw, content_type, exchange, "a chat completion", _ChatBody)
    facts: _Facts = {
        "request_id": exchange.request_id,
        "http_status": exchange.http_status,
        "attempts": exchange.attempts,
    }
    if not body.choices:
        return body.model, EmptyCompletionError(f"completion {body.id} has no choices", **facts)
    choice = body.choices[0]
    if choice.finish_reason == "length":
        return body.model, IncompleteCompletionError(
            f"completion {body.id} stopped at the output-token budget (finish_reason=length); "
            "raise max_output_tokens or lower reasoning_effort",
            **facts,
        )
    if choice.message.refusal or choice.finish_reason == "content_filter":
        reason = "the model refused" if choice.message.refusal else "the content filter withheld the answer"
        return body.model, RefusalError(f"completion {body.id}: {reason}", refusal=choice.message.refusal, **facts)
    if not choice.message.content or not choice.message.content.strip():
        return body.model, EmptyCompletionError(f"completion {body.id} has empty content", **facts)
    usage = body.usage or _ChatUsage()
    return body.model, Completion(
        content=choice.message.content,
        model=body.model,
        response_id=body.id,
        finish_reason=choice.finish_reason,
        usage=Usage(
            input_tokens=usage.prompt_tokens,
            output_tokens=usage.completion_tokens,
            reasoning_tokens=(usage.completion_tokens_details and usage.completion_tokens_details.reasoning_tokens)
            or 0,
            cached_tokens=(usage.prompt_tokens_details and usage.prompt_tokens_details.cached_tokens) or 0,
            total_tokens=usage.total_tokens,
        ),
    )


def read_responses(
    raw: bytes | Mapping[str, Any], content_type: str, exchange: Exchange
) -> tuple[str, Completion | Exception]:
    """Read a Responses API body; same contract as :func:`read_chat`.

    Raises:
        UpstreamResponseError: The body is not a response object, or the response failed.
    """
    body: _ResponsesBody = _load(raw, content_type, exchange, "a response object", _ResponsesBody)
    facts: _Facts = {
        "request_id": exchange.request_id,
        "http_status": exchange.http_status,
        "attempts": exchange.attempts,
    }
    if body.status == "incomplete":
        reason = (body.incomplete_details and body.incomplete_details.reason) or "unknown"
        if reason == "content_filter":
            # The same event Chat Completions reports as finish_reason=content_filter: a refusal, not a budget.
            return body.model, RefusalError(
                f"response {body.id}: the content filter withheld the answer", refusal=None, **facts
            )
        return body.model, IncompleteCompletionError(
            f"response {body.id} is incomplete ({reason}); raise max_output_tokens or lower reasoning_effort",
            **facts,
        )
    if body.status == "failed":
        detail = (body.error and body.error.message) or "no error message"
        return body.model, UpstreamResponseError(f"response {body.id} failed upstream: {detail}", **facts)
    parts = [part for item in body.output if item.type == "message" for part in (item.content or [])]
    refusals = [part.refusal for part in parts if part.type == "refusal"]
    if refusals:
        return body.model, RefusalError(f"response {body.id}: the model refused", refusal=refusals[0], **facts)
    text = "".join(part.text or "" for part in parts if part.type == "output_text")
    if not text.strip():
        return body.model, EmptyCompletionError(f"response {body.id} has empty output_text", **facts)
    usage = body.usage or _ResponsesUsage()
    return body.model, Completion(
        content=text,
        model=body.model,
        response_id=body.id,
        finish_reason="stop",
        usage=Usage(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            reasoning_tokens=(usage.output_tokens_details and usage.output_tokens_details.reasoning_tokens) or 0,
            cached_tokens=(usage.input_tokens_details and usage.input_tokens_details.cached_tokens) or 0,
            total_tokens=usage.total_tokens,
        ),
    )
