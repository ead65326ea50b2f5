"""What the fake OpenAI server answers and what it was asked: :class:`Reply`, reply rules, :class:`RecordedRequest`.

A :class:`Reply` scripts one answer (a status, a body's parts, a delay, a hang-up); a :class:`ReplyRule`
picks one for the requests it matches, whatever their order; a :class:`RecordedRequest` is a request as
the server received it. The server (:mod:`arcanos_flows.testing.openai_server`) queues and picks them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from arcanos_flows.testing._http import format_seconds
from arcanos_flows.testing._text import user_text

__all__ = ["RecordedRequest", "Reply", "ReplyRule"]

_NOT_JSON = "Here is the plan: 1. Who?"
"""The content of :meth:`Reply.invalid_json`: prose where JSON was asked for."""

_MISMATCHED_JSON = '{"unexpected": true}'
"""The content of :meth:`Reply.schema_mismatch`: JSON, but of no schema a typed step asks for."""


@dataclass(frozen=True)
class Reply:
    """What the fake server answers to one request.

    The default ``Reply()`` is a normal, successful answer for whatever endpoint is hit. Fields
    override parts of it; ``body`` replaces the whole body. Use the class-method factories for the
    common cases (``ok``, ``error``, ``malformed``, ``non_json``, ``wrong_shape``, ``empty_choices``,
    ``length``, ``refusal``, ``other_model``, ``slow``, ``drop``, for typed steps ``invalid_json`` and
    ``schema_mismatch``, behind a gateway ``fallback``) and :func:`dataclasses.replace` to
    combine them (e.g. a delayed error). ``Reply.refusal(...)`` and ``Reply.empty_choices()`` share
    their names with fields: called on the class they are factories (also spelled ``refused`` and
    ``no_choices``), read on an instance they are the field values.

    Attributes:
        status: HTTP status; anything outside 2xx answers the OpenAI error envelope.
        headers: Extra response headers (they replace same-named defaults).
        delay: Seconds to wait before answering, on top of the server-wide latency.
        content: The assistant text, sent as is whatever the requested format; ``None`` derives it from the
            last user message (``[fake] <message>``, or, when the request asks for a ``json_schema``
            format, a compact JSON document matching the schema).
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
        fallbacks: In LiteLLM gateway mode, the fallbacks reported as attempted (``x-litellm-attempted-fallbacks``).
        deployment: In LiteLLM gateway mode, the deployment reported as answering (``x-litellm-model-id``;
            ``None``: the primary's).
        model_group: In LiteLLM gateway mode, the model group reported (``x-litellm-model-group``; ``None``: the
            requested name, or ``<name>-fallback`` when ``fallbacks`` is set).

    Examples:
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
    fallbacks: int = 0
    deployment: str | None = None
    model_group: str | None = None

    def __post_init__(self) -> None:
        if not 100 <= self.status <= 599:
            raise ValueError(f"status must be an HTTP status code, got {self.status}")
        if self.delay < 0:
            raise ValueError(f"delay must be >= 0, got {self.delay}")
        if self.reasoning_tokens < 0:
            raise ValueError(f"reasoning_tokens must be >= 0, got {self.reasoning_tokens}")
        if self.content_length is not None and self.content_length < 0:
            raise ValueError(f"content_length must be >= 0, got {self.content_length}")
        if self.fallbacks < 0:
            raise ValueError(f"fallbacks must be >= 0, got {self.fallbacks}")

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
    def invalid_json(cls) -> Reply:
        """A 200 whose message content is not JSON, as a model ignoring the requested ``json_schema`` format writes.

        Returns:
            The reply.

        Examples:
            >>> Reply.invalid_json().content
            'Here is the plan: 1. Who?'
        """
        return cls(content=_NOT_JSON)

    @classmethod
    def schema_mismatch(cls) -> Reply:
        """A 200 whose message content is valid JSON that does not match the requested schema.

        The content, ``{"unexpected": true}``, has none of the properties a non-trivial schema asks for.

        Returns:
            The reply.

        Examples:
            >>> import json
            >>> json.loads(Reply.schema_mismatch().content)
            {'unexpected': True}
        """
        return cls(content=_MISMATCHED_JSON)

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
    def fallback(
        cls,
        model: str | None = None,
        *,
        deployment: str = "fallback-deployment",
        group: str | None = None,
        attempts: int = 1,
    ) -> Reply:
        """A normal 200 that a LiteLLM-like gateway reports as answered by a fallback deployment.

        Only a server in LiteLLM gateway mode (``FakeOpenAIServer(gateway="litellm")``) reports it, in
        ``x-litellm-attempted-fallbacks``, ``x-litellm-model-id`` and ``x-litellm-model-group``; elsewhere it is a
        normal answer (by ``model`` when given).

        Args:
            model: The model the fallback deployment runs; ``None``: the same model as the primary.
            deployment: The fallback deployment's id.
            group: The fallback's model group (``None``: ``<requested name>-fallback``).
            attempts: How many fallbacks were attempted (at least 1).

        Returns:
            The reply.

        Examples:
            >>> reply = Reply.fallback("gpt-4o-mini", deployment="backup-eu")
            >>> reply.model, reply.fallbacks, reply.deployment
            ('gpt-4o-mini', 1, 'backup-eu')
        """
        if attempts < 1:
            raise ValueError(f"a fallback reply needs attempts >= 1, got {attempts}")
        return cls(model=model, fallbacks=attempts, deployment=deployment, model_group=group)

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

    Examples:
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


@dataclass(eq=False)
class ReplyRule:
    """A :meth:`FakeOpenAIServer.reply_when` rule: which requests it answers, with what, how many more times."""

    match: str | Callable[[RecordedRequest], bool]
    reply: Reply
    times: int | None

    def matches(self, request: RecordedRequest) -> bool:
        """Whether ``request`` is one this rule answers (a marker is looked for in its last user message)."""
        if isinstance(self.match, str):
            return self.match in user_text(request.json)
        return bool(self.match(request))
