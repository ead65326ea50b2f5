"""A fake OpenAI API on 127.0.0.1: Chat Completions, Responses and Models, with scripted failures.

Answers are deterministic (derived from the request) and shaped like the real API's bodies, so the
real ``openai`` SDK talks to it unchanged; :class:`Reply` scripts what the next requests get
instead: HTTP errors, malformed bodies, refusals, truncation, another model, delays, hang-ups.
Replies are chosen by arrival order (:meth:`FakeOpenAIServer.script`) or by what a request asks
(:meth:`FakeOpenAIServer.reply_when`); an optional requests-per-minute limit answers 429 beyond it,
and ``GET /_stats`` tells another process how many requests arrived and how they were answered.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, cast
from urllib.parse import unquote, urlsplit

from arcanos_flows.testing._http import BackgroundServer, QuietHandler, format_seconds, parse_json

__all__ = ["DEFAULT_MODEL", "STATS_PATH", "FakeOpenAIServer", "RecordedRequest", "Reply"]

DEFAULT_MODEL = "gpt-5.1"
"""The model ``GET /v1/models`` lists before any request has named one."""

STATS_PATH = "/_stats"
"""``GET`` answers the server's counters as JSON (:meth:`FakeOpenAIServer.stats`); ``DELETE`` resets them."""

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
        if _normalized_path(self.path) == STATS_PATH:
            self._serve_stats(fake)
            return
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
            # Counted before answering, so a client that reads /_stats right after its answer sees it counted.
            fake._answered(404)
            self.send_payload(404, payload, headers=headers)
            return
        admitted, limit_headers, wait = fake._admit()
        headers.update(limit_headers)
        if not admitted:
            # Over the limit: answered at once, without taking a scripted reply or a rule's turn.
            retry_headers = {"Retry-After": str(max(1, math.ceil(wait))), "retry-after-ms": str(math.ceil(wait * 1000))}
            model = request.json.get("model") if isinstance(request.json, dict) else None
            payload = _rate_limited_body(fake.requests_per_minute or 0, model, wait)
            fake._answered(429, rate_limited=True)
            self.send_payload(429, payload, headers={**headers, **retry_headers})
            return
        reply, latency, override = fake._reply_for(request)
        if not self.pause(latency + reply.delay) or reply.drop_connection:
            fake._answered(None)
            self.drop_connection()
            return
        status, payload = _render(route, model_id, reply, request, number, override, fake)
        fake._answered(status)
        self.send_payload(
            status,
            payload,
            content_type=reply.content_type or "application/json",
            headers={**headers, **reply.headers},
            content_length=reply.content_length,
            close_delimited=reply.omit_content_length,
        )

    def _serve_stats(self, fake: FakeOpenAIServer) -> None:
        if self.command == "GET":
            self.send_payload(200, _dump(fake.stats()))
        elif self.command == "DELETE":
            fake.reset_stats()
            self.send_payload(204, b"")
        else:
            self.send_payload(405, _error_body("Use GET or DELETE", "invalid_request_error", None))


class FakeOpenAIServer(BackgroundServer):
    """An OpenAI-compatible HTTP server for offline tests, answering from a script.

    Each request to an endpoint takes the reply of the first :meth:`reply_when` rule it matches, else
    the next scripted :class:`Reply`, else the default reply when the script is empty; requests to
    unknown paths get a 404 and leave the script alone. Every answer carries
    ``x-request-id: req_<n>``, ``n`` counting requests from 1 over the server's life (:meth:`clear`
    does not reset it), and completion ids reuse ``n`` (``chatcmpl-<n>``, ``resp_<n>``). A models
    lookup answers the id it was asked for; ``model_override`` and ``Reply.model`` change only which
    model answers completions. ``stream=true`` requests get a 400.

    **Rate-limit mode.** With ``requests_per_minute``, API requests (completions and models lookups)
    draw from a token bucket that holds ``burst`` requests (default: one second's worth,
    ``requests_per_minute / 60``, at least 1) and refills at ``requests_per_minute / 60`` per second,
    so the long-run rate is the limit while short bursts pass, as OpenAI enforces its limits over
    short periods. A request finding the bucket empty is answered at once with 429
    ``rate_limit_exceeded``, ``Retry-After`` (whole seconds, rounded up) and ``retry-after-ms`` (the
    time until a request is admitted again), without taking a scripted reply; it does not draw from
    the bucket. Every API answer then carries ``x-ratelimit-limit-requests``,
    ``x-ratelimit-remaining-requests`` (requests admitted right now) and ``x-ratelimit-reset-requests``
    (time until the bucket is full, e.g. ``120ms``), like OpenAI's headers.

    **Counters.** :meth:`stats` (also ``GET /_stats`` as JSON, for a server in another process;
    ``DELETE /_stats`` resets them) counts the requests received, completions, 429s of the rate
    limit, answers by status and requests by path; ``/_stats`` itself is not counted or recorded.

    Args:
        host: Interface to bind.
        port: Port to bind; 0 picks a free one.
        latency: Seconds added before every answer.
        model_override: Model that answers every completion instead of the requested one.
        requests_per_minute: Answer 429 beyond this many API requests per minute (``None``: no limit).
        burst: Requests the rate limit lets through at once (default: ``requests_per_minute / 60``).

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
        requests_per_minute: float | None = None,
        burst: float | None = None,
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
        # Named so that subclasses keeping rules of their own (under other names) do not collide with these.
        self._reply_rules: list[_ReplyRule] = []
        self._bucket: _TokenBucket | None = None
        self._stats = _Stats()
        self.set_rate_limit(requests_per_minute, burst=burst)

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

    def reply_when(
        self,
        match: str | Callable[[RecordedRequest], bool],
        reply: Reply,
        *,
        times: int | None = None,
    ) -> None:
        """Answer the requests that match with ``reply``, whatever order they arrive in.

        Rules stand until :meth:`clear` (or until used ``times`` times) and are tried in the order they
        were added, before the script; a request no rule matches takes the script or the default reply.
        Parallel steps arrive in any order, so this is how a test fails one chosen step.

        Args:
            match: A substring of the request's last user message (Chat ``messages`` or Responses
                ``input``), or a function of the :class:`RecordedRequest` returning whether it matches.
            reply: The answer to matching requests.
            times: Answer only this many matching requests, then drop the rule (``None``: no end).

        Raises:
            ValueError: ``match`` is an empty string, or ``times`` is below 1.

        Example:
            >>> with FakeOpenAIServer() as server:
            ...     server.reply_when("Investigate: Who confirms?", Reply.error(401), times=1)
            ...     server.reply_when(lambda request: "gpt-4o" in request.body.decode(), Reply.error(404))
        """
        if isinstance(match, str) and not match:
            raise ValueError("reply_when: the marker must be a non-empty string")
        if times is not None and times < 1:
            raise ValueError(f"reply_when: times must be at least 1, got {times}")
        with self._lock:
            self._reply_rules.append(_ReplyRule(match, reply, times))

    @property
    def requests_per_minute(self) -> float | None:
        """The rate limit in requests per minute, or ``None`` (set with :meth:`set_rate_limit`)."""
        with self._lock:
            return self._bucket.per_minute if self._bucket is not None else None

    def set_rate_limit(self, requests_per_minute: float | None, *, burst: float | None = None) -> None:
        """Turn the rate-limit mode on (with a full bucket) or off (``None``).

        Args:
            requests_per_minute: The long-run limit; ``None`` answers every request.
            burst: How many requests pass at once (default: one second's worth, at least 1).

        Raises:
            ValueError: A limit or burst that is not positive.
        """
        bucket = None
        if requests_per_minute is not None:
            if not requests_per_minute > 0:
                raise ValueError(f"requests_per_minute must be > 0, got {requests_per_minute}")
            capacity = max(1.0, requests_per_minute / 60) if burst is None else burst
            if not capacity >= 1:
                raise ValueError(f"burst must be >= 1, got {burst}")
            bucket = _TokenBucket(float(requests_per_minute), float(capacity))
        with self._lock:
            self._bucket = bucket

    @property
    def rate_limited_count(self) -> int:
        """How many requests the rate limit answered with 429 (since the last :meth:`reset_stats`)."""
        with self._lock:
            return self._stats.rate_limited

    def stats(self) -> dict[str, Any]:
        """The counters since start or :meth:`reset_stats`, as ``GET /_stats`` answers them.

        Returns:
            ``requests`` (received, unknown paths included), ``completions`` (POSTs to the completion
            endpoints), ``rate_limited`` (429s of the rate limit), ``statuses`` (answers by status,
            keys are strings), ``dropped`` (connections closed without an answer), ``paths`` (requests
            by path), ``first_request_at`` and ``last_request_at`` (``time.time()`` of the first and
            last request, or ``None``), and ``requests_per_minute`` (the limit, or ``None``).

        Example:
            >>> with FakeOpenAIServer(requests_per_minute=600) as server:
            ...     server.stats()["requests"], server.stats()["requests_per_minute"]
            (0, 600.0)
        """
        with self._lock:
            stats = self._stats.snapshot()
            stats["requests_per_minute"] = self._bucket.per_minute if self._bucket is not None else None
            return stats

    def reset_stats(self) -> None:
        """Zero the counters of :meth:`stats` (recorded requests and the request numbering stay)."""
        with self._lock:
            self._stats = _Stats()

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
        """Forget recorded requests, pending scripted replies and :meth:`reply_when` rules.

        The default reply, the rate limit and the counters of :meth:`stats` stay.
        """
        with self._lock:
            self._requests.clear()
            self._script.clear()
            self._reply_rules.clear()

    def _record(self, request: RecordedRequest) -> int:
        with self._lock:
            self._counter += 1
            self._requests.append(request)
            self._stats.received(request)
            return self._counter

    def _answered(self, status: int | None, *, rate_limited: bool = False) -> None:
        with self._lock:
            self._stats.answered(status, rate_limited=rate_limited)

    def _admit(self) -> tuple[bool, dict[str, str], float]:
        """Take a request from the rate limit: whether it passes, the headers to add, and the wait if not."""
        with self._lock:
            if self._bucket is None:
                return True, {}, 0.0
            return self._bucket.take(time.monotonic())

    def _reply_for(self, request: RecordedRequest) -> tuple[Reply, float, str | None]:
        with self._lock:
            rules = list(self._reply_rules)
        # Predicates run outside the lock: they may read the server (its requests, its properties).
        for rule in rules:
            if not rule.matches(request):
                continue
            with self._lock:
                if rule not in self._reply_rules:
                    continue  # used up by a concurrent request meanwhile
                if rule.times is not None:
                    rule.times -= 1
                    if rule.times == 0:
                        self._reply_rules.remove(rule)
                return rule.reply, self._latency, self._model_override
        return self._take_reply()

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


@dataclass(eq=False)
class _ReplyRule:
    match: str | Callable[[RecordedRequest], bool]
    reply: Reply
    times: int | None

    def matches(self, request: RecordedRequest) -> bool:
        if isinstance(self.match, str):
            return self.match in _request_user_text(request)
        return bool(self.match(request))


class _TokenBucket:
    """Holds up to ``capacity`` requests and refills at ``per_minute / 60`` per second (guarded by the server)."""

    def __init__(self, per_minute: float, capacity: float) -> None:
        self.per_minute = per_minute
        self.rate = per_minute / 60
        self.capacity = capacity
        self.tokens = capacity
        self.updated = time.monotonic()

    def take(self, now: float) -> tuple[bool, dict[str, str], float]:
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        admitted = self.tokens >= 1
        if admitted:
            self.tokens -= 1
        wait = 0.0 if admitted else (1 - self.tokens) / self.rate
        headers = {
            "x-ratelimit-limit-requests": format_seconds(self.per_minute),
            "x-ratelimit-remaining-requests": str(int(self.tokens)),
            "x-ratelimit-reset-requests": _duration((self.capacity - self.tokens) / self.rate),
        }
        return admitted, headers, wait


class _Stats:
    def __init__(self) -> None:
        self.requests = 0
        self.completions = 0
        self.rate_limited = 0
        self.dropped = 0
        self.statuses: Counter[int] = Counter()
        self.paths: Counter[str] = Counter()
        self.first_request_at: float | None = None
        self.last_request_at: float | None = None

    def received(self, request: RecordedRequest) -> None:
        path = _normalized_path(request.path)
        now = time.time()
        self.requests += 1
        self.paths[path] += 1
        if request.method == "POST" and path in _COMPLETION_PATHS:
            self.completions += 1
        if self.first_request_at is None:
            self.first_request_at = now
        self.last_request_at = now

    def answered(self, status: int | None, *, rate_limited: bool) -> None:
        if status is None:
            self.dropped += 1
        else:
            self.statuses[status] += 1
        if rate_limited:
            self.rate_limited += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "completions": self.completions,
            "rate_limited": self.rate_limited,
            "statuses": {str(status): count for status, count in sorted(self.statuses.items())},
            "dropped": self.dropped,
            "paths": dict(sorted(self.paths.items())),
            "first_request_at": self.first_request_at,
            "last_request_at": self.last_request_at,
        }


def _duration(seconds: float) -> str:
    """Format a delay as OpenAI's rate-limit headers do: ``120ms``, ``1.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{round(rest, 3):g}s"


def _rate_limited_body(per_minute: float, model: Any, wait: float) -> bytes:
    limit = format_seconds(per_minute)
    named = model if isinstance(model, str) and model else "the requested model"
    message = (
        f"Rate limit reached for {named} on requests per min (RPM): Limit {limit}, Requested 1. "
        f"Please try again in {_duration(wait)}. Visit https://platform.openai.com/account/rate-limits to learn more."
    )
    return _error_body(message, "requests", "rate_limit_exceeded")


def _request_user_text(request: RecordedRequest) -> str:
    """The last user message of a Chat Completions or Responses request ('' for anything else)."""
    body = request.json if isinstance(request.json, dict) else {}
    if "messages" in body:
        return _last_user_text(_as_list(body["messages"]))
    raw_input = body.get("input")
    if isinstance(raw_input, str):
        return raw_input
    return _last_user_text(_as_list(raw_input))


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
