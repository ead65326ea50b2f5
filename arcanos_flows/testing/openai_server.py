"""A fake OpenAI API on 127.0.0.1: Chat Completions, Responses and Models, with scripted failures.

Answers are deterministic (derived from the request) and shaped like the real API's bodies, so the
real ``openai`` SDK talks to it unchanged; :class:`Reply` scripts what the next requests get
instead: HTTP errors, malformed bodies, refusals, truncation, another model, delays, hang-ups.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, cast
from urllib.parse import unquote, urlsplit

from arcanos_flows.testing._http import BackgroundServer, QuietHandler, format_seconds, parse_json

__all__ = ["DEFAULT_MODEL", "FakeOpenAIServer", "RecordedRequest", "Reply"]

DEFAULT_MODEL = "gpt-5.1"
"""The model ``GET /v1/models`` lists before any request has named one."""

_COMPLETION_PATHS = frozenset({"/v1/chat/completions", "/v1/responses"})
_MODEL_CREATED = 1_700_000_000
_Route = Literal["chat", "responses", "model", "models"]


@dataclass(frozen=True)
class Reply:
    """What the fake server answers to one request.

    The default ``Reply()`` is a normal, successful answer for whatever endpoint is hit. Fields
    override parts of it; ``body`` replaces the whole body. Use the class-method factories for the
    common cases (``ok``, ``error``, ``malformed``, ``non_json``, ``wrong_shape``, ``empty_choices``,
    ``length``, ``refusal``, ``other_model``, ``slow``, ``drop``) and :func:`dataclasses.replace` to
    combine them (e.g. a delayed error). ``Reply.refusal(...)`` and ``Reply.empty_choices()`` share
    their names with fields: called on the class they are factories (also spelled ``refused`` and
    ``no_choices``), read on an instance they are the field values.

    Attributes:
        status: HTTP status; anything outside 2xx answers the OpenAI error envelope.
        headers: Extra response headers (they replace same-named defaults).
        delay: Seconds to wait before answering, on top of the server-wide latency.
        content: The assistant text; ``None`` derives it from the last user message.
        model: The answering model; ``None`` echoes the requested one (or the server's override).
        finish_reason: Chat ``finish_reason``; ``"length"``/``"content_filter"`` make a Responses
            answer ``incomplete``.
        refusal: A refusal text; the answer then carries the refusal instead of content.
        empty_choices: Answer ``choices: []`` (Chat) or ``output: []`` (Responses).
        body: Raw body sent as-is, replacing everything generated.
        content_type: ``Content-Type`` of the answer; ``None`` means ``application/json``.
        drop_connection: Close the socket without answering at all.
        reasoning_tokens: Reasoning tokens reported in usage (counted in the output tokens).
        error_code: ``error.code`` of a non-2xx answer.
        error_type: ``error.type`` of a non-2xx answer (``None`` picks one from the status).
        error_message: ``error.message`` of a non-2xx answer (``None`` picks one from the status).
        content_length: ``Content-Length`` to announce instead of the real one (a lying server: the
            whole body is still sent, then the connection is closed if it was shorter than announced).
        omit_content_length: Announce no length: the body ends when the server closes the connection.

    Example:
        >>> Reply.error(429, retry_after=2).headers
        {'Retry-After': '2'}
        >>> Reply.length().finish_reason
        'length'
    """

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    content: str | None = None
    model: str | None = None
    finish_reason: str = "stop"
    refusal: str | None = None
    empty_choices: bool = False
    body: bytes | None = None
    content_type: str | None = None
    drop_connection: bool = False
    reasoning_tokens: int = 0
    error_code: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    content_length: int | None = None
    omit_content_length: bool = False

    def __post_init__(self) -> None:
        if not 100 <= self.status <= 599:
            raise ValueError(f"status must be an HTTP status code, got {self.status}")
        if self.delay < 0:
            raise ValueError(f"delay must be >= 0, got {self.delay}")
        if self.reasoning_tokens < 0:
            raise ValueError(f"reasoning_tokens must be >= 0, got {self.reasoning_tokens}")
        if self.content_length is not None and self.content_length < 0:
            raise ValueError(f"content_length must be >= 0, got {self.content_length}")

    @property
    def is_success(self) -> bool:
        """Whether the status is 2xx."""
        return 200 <= self.status < 300

    @classmethod
    def ok(cls, content: str | None = None, **kw: Any) -> Reply:
        """A normal 200 answer.

        Args:
            content: The assistant text; ``None`` derives it from the request.
            **kw: Any other :class:`Reply` field.

        Returns:
            The reply.
        """
        return cls(content=content, **kw)

    @classmethod
    def error(
        cls,
        status: int,
        *,
        code: str | None = None,
        type: str | None = None,
        message: str | None = None,
        retry_after: float | None = None,
    ) -> Reply:
        """An HTTP error with the OpenAI error envelope.

        Args:
            status: HTTP status (400-599).
            code: ``error.code``; 401 defaults to ``"invalid_api_key"``, 429 to ``"rate_limit_exceeded"``.
            type: ``error.type``; defaults from the status and code (``"server_error"`` for 5xx,
                ``"insufficient_quota"`` for 429 with that code, ``"invalid_request_error"`` for 4xx).
            message: ``error.message``; defaults to a realistic text for the status.
            retry_after: Seconds for a ``Retry-After`` header.

        Returns:
            The reply.

        Raises:
            ValueError: ``status`` is not an error status.
        """
        if not 400 <= status <= 599:
            raise ValueError(f"an error reply needs a 4xx or 5xx status, got {status}")
        headers: dict[str, str] = {}
        if retry_after is not None:
            headers["Retry-After"] = format_seconds(retry_after)
        return cls(status=status, headers=headers, error_code=code, error_type=type, error_message=message)

    @classmethod
    def malformed(cls) -> Reply:
        """A 200 whose JSON body is cut off mid-way."""
        return cls(body=b'{"id": "chatcmpl-1", "choices": [')

    @classmethod
    def non_json(cls) -> Reply:
        """A 200 with an HTML body, as a misconfigured proxy would answer."""
        return cls(
            body=b"<html><body><h1>It works!</h1></body></html>",
            content_type="text/html; charset=utf-8",
        )

    @classmethod
    def wrong_shape(cls) -> Reply:
        """A 200 with valid JSON that is not a completion."""
        return cls(body=b'{"ok": true}')

    @classmethod
    def no_choices(cls) -> Reply:
        """A 200 with no choices (Chat) or no output items (Responses); also ``Reply.empty_choices()``."""
        return cls(empty_choices=True)

    @classmethod
    def length(cls, content: str = "") -> Reply:
        """A 200 truncated at the output-token budget (Responses: ``status: "incomplete"``).

        Args:
            content: The partial text produced before the budget ran out.

        Returns:
            The reply.
        """
        return cls(content=content, finish_reason="length")

    @classmethod
    def refused(cls, text: str = "I can't help with that.") -> Reply:
        """A 200 where the model refuses: ``message.refusal`` (Chat) or a ``refusal`` content item.

        Also spelled ``Reply.refusal(text)``.

        Args:
            text: The refusal text.

        Returns:
            The reply.
        """
        return cls(refusal=text)

    @classmethod
    def other_model(cls, name: str) -> Reply:
        """A normal 200 answered by model ``name`` whatever was requested.

        Args:
            name: The answering model.

        Returns:
            The reply.
        """
        return cls(model=name)

    @classmethod
    def slow(cls, seconds: float) -> Reply:
        """A normal 200 sent after ``seconds``.

        Args:
            seconds: The delay.

        Returns:
            The reply.
        """
        return cls(delay=seconds)

    @classmethod
    def drop(cls) -> Reply:
        """Hang up without answering: the client sees a connection error."""
        return cls(drop_connection=True)


class _FactoryOrField:
    """On the class, a factory; on an instance, the dataclass field of the same name.

    ``Reply.refusal(...)`` and ``Reply.empty_choices()`` are factories named like fields. Being a
    non-data descriptor, this loses to the instance ``__dict__``, where the frozen dataclass keeps
    the field values, so ``reply.refusal`` still reads the field.
    """

    def __init__(self, name: str, factory: Any) -> None:
        self._name = name
        self._factory = factory

    def __get__(self, instance: object | None, owner: type | None = None) -> Any:
        if instance is None:
            return self._factory
        return instance.__dict__[self._name]


# Installed after the dataclass is built, so the fields' defaults stay None and False.
for _name, _factory in (("refusal", Reply.refused), ("empty_choices", Reply.no_choices)):
    setattr(Reply, _name, _FactoryOrField(_name, _factory))
del _name, _factory


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake server received, recorded before it was answered.

    Attributes:
        method: HTTP method.
        path: Request target as sent, query string included.
        headers: Request headers, names lower-cased.
        body: Raw body bytes.
        json: The body parsed as JSON, or ``None`` when it is empty or not JSON.
        at: ``time.monotonic()`` when the request was recorded.

    Example:
        >>> request = RecordedRequest("POST", "/v1/responses", {}, b'{"model": "m"}', {"model": "m"}, 0.0)
        >>> request.json["model"]
        'm'
    """

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any
    at: float


class _OpenAIHandler(QuietHandler):
    def do_GET(self) -> None:
        """Serve a GET."""
        self._serve()

    def do_POST(self) -> None:
        """Serve a POST."""
        self._serve()

    def do_PUT(self) -> None:
        """Serve a PUT (always 404, as the real API has none)."""
        self._serve()

    def do_PATCH(self) -> None:
        """Serve a PATCH (always 404)."""
        self._serve()

    def do_DELETE(self) -> None:
        """Serve a DELETE (always 404)."""
        self._serve()

    def _serve(self) -> None:
        fake = cast("FakeOpenAIServer", self.server.owner)
        raw = self.read_body()
        request = RecordedRequest(
            method=self.command,
            path=self.path,
            headers=self.lowercase_headers(),
            body=raw,
            json=parse_json(raw),
            at=time.monotonic(),
        )
        number = fake._record(request)
        route, model_id = _route(self.command, _normalized_path(self.path))
        headers = {"x-request-id": f"req_{number}"}
        if route is None:
            # Unknown paths are not API calls: they leave the script alone and always answer 404.
            message = f"Invalid URL ({self.command} {urlsplit(self.path).path})"
            payload = _error_body(message, "invalid_request_error", None)
            self.send_payload(404, payload, headers=headers)
            return
        reply, latency, override = fake._take_reply()
        if not self.pause(latency + reply.delay):
            self.drop_connection()
            return
        if reply.drop_connection:
            self.drop_connection()
            return
        status, payload = _render(route, model_id, reply, request, number, override, fake)
        self.send_payload(
            status,
            payload,
            content_type=reply.content_type or "application/json",
            headers={**headers, **reply.headers},
            content_length=reply.content_length,
            close_delimited=reply.omit_content_length,
        )


class FakeOpenAIServer(BackgroundServer):
    """An OpenAI-compatible HTTP server for offline tests, answering from a script.

    Each request to an endpoint takes the next scripted :class:`Reply`, or the default reply when
    the script is empty; requests to unknown paths get a 404 and leave the script alone. Every
    answer carries ``x-request-id: req_<n>``, ``n`` counting requests from 1 over the server's life
    (:meth:`clear` does not reset it), and completion ids reuse ``n`` (``chatcmpl-<n>``, ``resp_<n>``).
    A models lookup answers the id it was asked for; ``model_override`` and ``Reply.model`` change
    only which model answers completions. ``stream=true`` requests get a 400.

    Args:
        host: Interface to bind.
        port: Port to bind; 0 picks a free one.
        latency: Seconds added before every answer.
        model_override: Model that answers every completion instead of the requested one.

    Example:
        >>> import json, urllib.request
        >>> with FakeOpenAIServer() as server:
        ...     server.script(Reply.ok("hello"))
        ...     request = urllib.request.Request(
        ...         server.base_url + "/chat/completions",
        ...         data=json.dumps({"model": "gpt-5.1", "messages": []}).encode(),
        ...         headers={"Content-Type": "application/json"},
        ...     )
        ...     with urllib.request.urlopen(request) as response:
        ...         json.load(response)["choices"][0]["message"]["content"]
        'hello'
    """

    handler_class = _OpenAIHandler

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        model_override: str | None = None,
    ) -> None:
        super().__init__(host=host, port=port)
        self._lock = threading.Lock()
        self._latency = latency
        self._model_override = model_override
        self._script: deque[Reply] = deque()
        self._default = Reply.ok()
        self._requests: list[RecordedRequest] = []
        self._counter = 0
        self._last_model: str | None = None

    @property
    def base_url(self) -> str:
        """The URL to give the SDK, e.g. ``http://127.0.0.1:PORT/v1``."""
        return f"{self.origin}/v1"

    @property
    def latency(self) -> float:
        """Seconds added before every answer (settable)."""
        with self._lock:
            return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        with self._lock:
            self._latency = seconds

    @property
    def model_override(self) -> str | None:
        """Model that answers every completion instead of the requested one (settable)."""
        with self._lock:
            return self._model_override

    @model_override.setter
    def model_override(self, model: str | None) -> None:
        with self._lock:
            self._model_override = model

    def script(self, *replies: Reply) -> None:
        """Queue replies for the next requests, after any already queued.

        Args:
            *replies: One reply per request, in order.
        """
        with self._lock:
            self._script.extend(replies)

    def always(self, reply: Reply) -> None:
        """Set the reply used when the script is empty (initially ``Reply.ok()``).

        Args:
            reply: The default reply.
        """
        with self._lock:
            self._default = reply

    @property
    def pending(self) -> int:
        """How many scripted replies are still queued."""
        with self._lock:
            return len(self._script)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, oldest first (a snapshot copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def completion_requests(self) -> list[RecordedRequest]:
        """The POSTs to ``/v1/chat/completions`` and ``/v1/responses`` (a snapshot copy)."""
        return [
            request
            for request in self.requests
            if request.method == "POST" and _normalized_path(request.path) in _COMPLETION_PATHS
        ]

    def clear(self) -> None:
        """Forget recorded requests and any pending scripted replies (the default reply stays)."""
        with self._lock:
            self._requests.clear()
            self._script.clear()

    def _record(self, request: RecordedRequest) -> int:
        with self._lock:
            self._counter += 1
            self._requests.append(request)
            return self._counter

    def _take_reply(self) -> tuple[Reply, float, str | None]:
        with self._lock:
            reply = self._script.popleft() if self._script else self._default
            return reply, self._latency, self._model_override

    def _seen_model(self, model: str) -> None:
        with self._lock:
            self._last_model = model

    def _listed_models(self) -> list[str]:
        with self._lock:
            names = [self._last_model or DEFAULT_MODEL]
            if self._model_override and self._model_override not in names:
                names.append(self._model_override)
            return names


def _render(
    route: _Route,
    model_id: str | None,
    reply: Reply,
    request: RecordedRequest,
    number: int,
    override: str | None,
    fake: FakeOpenAIServer,
) -> tuple[int, bytes]:
    if reply.body is not None:
        return reply.status, reply.body
    body = request.json if isinstance(request.json, dict) else None
    requested = model_id if route == "model" else (body or {}).get("model")
    if not reply.is_success:
        return reply.status, _scripted_error(reply, requested if isinstance(requested, str) else None)
    if route == "model":
        assert model_id is not None
        fake._seen_model(model_id)
        return reply.status, _dump(_model_object(model_id))
    if route == "models":
        return reply.status, _dump({"object": "list", "data": [_model_object(m) for m in fake._listed_models()]})
    if body is None:
        message = "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)"  # noqa: E501 - the API's own wording
        return 400, _error_body(message, "invalid_request_error", None)
    if not isinstance(requested, str) or not requested:
        return 400, _error_body("you must provide a model parameter", "invalid_request_error", None, param="model")
    if body.get("stream"):
        return 400, _error_body(
            "FakeOpenAIServer does not support stream=true", "invalid_request_error", None, param="stream"
        )
    fake._seen_model(requested)
    answered = reply.model or override or requested
    if route == "chat":
        return reply.status, _dump(_chat_completion(body, reply, answered, number))
    return reply.status, _dump(_response_object(body, reply, answered, number))


def _chat_completion(body: dict[str, Any], reply: Reply, model: str, number: int) -> dict[str, Any]:
    messages = body.get("messages")
    items = messages if isinstance(messages, list) else []
    content = _content(reply, _last_user_text(items))
    prompt_tokens = sum(_words(_text_of(item)) for item in items)
    completion_tokens = _words(reply.refusal if reply.refusal is not None else content) + reply.reasoning_tokens
    choices: list[dict[str, Any]] = []
    if not reply.empty_choices:
        choices.append(
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None if reply.refusal is not None else content,
                    "refusal": reply.refusal,
                    "annotations": [],
                },
                "finish_reason": reply.finish_reason,
                "logprobs": None,
            }
        )
    completion: dict[str, Any] = {
        "id": f"chatcmpl-{number}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": reply.reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "system_fingerprint": "fp_arcanos_fake",
        "service_tier": "default",
    }
    if "metadata" in body and (body["metadata"] is None or isinstance(body["metadata"], dict)):
        completion["metadata"] = body["metadata"]
    return completion


def _response_object(body: dict[str, Any], reply: Reply, model: str, number: int) -> dict[str, Any]:
    raw_input = body.get("input")
    items: list[Any] = [{"role": "user", "content": raw_input}] if isinstance(raw_input, str) else _as_list(raw_input)
    instructions = body.get("instructions")
    content = _content(reply, _last_user_text(items))
    input_tokens = sum(_words(_text_of(item)) for item in items)
    if isinstance(instructions, str):
        input_tokens += _words(instructions)
    output_tokens = _words(reply.refusal if reply.refusal is not None else content) + reply.reasoning_tokens
    incomplete_reason = {"length": "max_output_tokens", "content_filter": "content_filter"}.get(reply.finish_reason)
    status = "incomplete" if incomplete_reason else "completed"
    part: dict[str, Any] = (
        {"type": "refusal", "refusal": reply.refusal}
        if reply.refusal is not None
        else {"type": "output_text", "text": content, "annotations": [], "logprobs": []}
    )
    output: list[dict[str, Any]] = []
    if not reply.empty_choices:
        output.append(
            {"type": "message", "id": f"msg_{number}", "status": status, "role": "assistant", "content": [part]}
        )
    created_at = int(time.time())
    metadata = body.get("metadata")
    reasoning = body.get("reasoning")
    text = body.get("text")
    return {
        "id": f"resp_{number}",
        "object": "response",
        "created_at": created_at,
        "status": status,
        "completed_at": None if incomplete_reason else created_at,
        "error": None,
        "incomplete_details": {"reason": incomplete_reason} if incomplete_reason else None,
        "instructions": instructions if isinstance(instructions, (str, list)) else None,
        "max_output_tokens": _int_or_none(body.get("max_output_tokens")),
        "model": model,
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True) is not False,
        "previous_response_id": _str_or_none(body.get("previous_response_id")),
        "reasoning": (
            {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")}
            if isinstance(reasoning, dict)
            else None
        ),
        "service_tier": "default",
        "store": body.get("store", True) is not False,
        "temperature": _number_or(body.get("temperature"), 1.0),
        "text": text if isinstance(text, dict) else {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": _as_list(body.get("tools")),
        "top_p": _number_or(body.get("top_p"), 1.0),
        "truncation": body.get("truncation") if body.get("truncation") in ("auto", "disabled") else "disabled",
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": reply.reasoning_tokens},
            "total_tokens": input_tokens + output_tokens,
        },
        "metadata": metadata if isinstance(metadata, dict) else {},
    }


def _model_object(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": _MODEL_CREATED, "owned_by": "arcanos-fake"}


_DEFAULT_ERROR_MESSAGES = {
    400: "Invalid request.",
    401: "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
    403: "You are not allowed to perform this request.",
    404: "The requested resource does not exist.",
    409: "The request conflicts with the current state of the resource.",
    422: "The request could not be processed.",
    429: "Rate limit reached for requests. Please try again later.",
}


def _scripted_error(reply: Reply, model: str | None) -> bytes:
    status, code = reply.status, reply.error_code
    if code is None and status == 401:
        code = "invalid_api_key"
    elif code is None and status == 429:
        code = "rate_limit_exceeded"
    error_type = reply.error_type or _default_error_type(status, code)
    message = reply.error_message
    if message is None:
        if code == "insufficient_quota":
            message = "You exceeded your current quota, please check your plan and billing details."
        elif code == "model_not_found":
            message = f"The model `{model or 'unknown'}` does not exist or you do not have access to it."
        elif status >= 500:
            message = "The server had an error while processing your request. Sorry about that!"
        else:
            message = _DEFAULT_ERROR_MESSAGES.get(status, f"Request failed with status {status}.")
    return _error_body(message, error_type, code)


def _default_error_type(status: int, code: str | None) -> str:
    if status >= 500:
        return "server_error"
    if status == 429:
        return "insufficient_quota" if code == "insufficient_quota" else "requests"
    return "invalid_request_error"


def _error_body(message: str, error_type: str, code: str | None, *, param: str | None = None) -> bytes:
    return _dump({"error": {"message": message, "type": error_type, "param": param, "code": code}})


def _route(method: str, path: str) -> tuple[_Route | None, str | None]:
    if method == "POST" and path == "/v1/chat/completions":
        return "chat", None
    if method == "POST" and path == "/v1/responses":
        return "responses", None
    if method == "GET" and path == "/v1/models":
        return "models", None
    if method == "GET" and path.startswith("/v1/models/") and len(path) > len("/v1/models/"):
        # Fine-tuned ids contain colons and may arrive percent-encoded; slashes stay part of the id.
        return "model", unquote(path[len("/v1/models/") :])
    return None, None


def _normalized_path(target: str) -> str:
    path = urlsplit(target).path
    return path.rstrip("/") or "/"


def _content(reply: Reply, last_user_text: str) -> str:
    if reply.content is not None:
        return reply.content
    return f"[fake] {last_user_text[:80]}".rstrip()


def _last_user_text(items: Iterable[Any]) -> str:
    last = ""
    for item in items:
        if isinstance(item, dict) and item.get("role", "user") == "user" and "content" in item:
            last = _text_of(item)
    return last


def _text_of(item: Any) -> str:
    """Return the text of a message in either API's shape (string content or a list of text parts)."""
    if not isinstance(item, dict):
        return ""
    content = item.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _words(text: str | None) -> int:
    return len(text.split()) if text else 0


def _dump(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _number_or(value: Any, default: float) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return default
