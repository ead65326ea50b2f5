"""A fake OpenAI API on 127.0.0.1: Chat Completions, Responses, Models, Files and Batches, with scripted failures.

Answers are deterministic (derived from the request; a compact JSON document matching the schema
when a request asks for a ``json_schema`` format) and shaped like the real API's bodies, so the
real ``openai`` SDK talks to it unchanged; :class:`Reply` scripts what the next requests get
instead: HTTP errors, malformed bodies, refusals, truncation, another model, delays, hang-ups.
Replies are chosen by arrival order (:meth:`FakeOpenAIServer.script`) or by what a request asks
(:meth:`FakeOpenAIServer.reply_when`); an optional requests-per-minute limit answers 429 beyond it,
and ``GET /_stats`` tells another process how many requests arrived and how they were answered.

This module holds the server and its request handler; the rest lives in private modules beside it:
``_replies`` (:class:`Reply`, reply rules, :class:`RecordedRequest`), ``_routes`` (the endpoint table's
:class:`~arcanos_flows.testing._routes.Route` and what every endpoint shares), one module per API
(``_chat``, ``_responses``, ``_models``, ``_files``, ``_batches``), ``_errors`` (error bodies), ``_limits``
(the rate limit), ``_stats`` (the counters), ``_text`` (reading a request's messages) and ``_schema``
(structured output: a JSON answer matching the ``json_schema`` format a request asks for). A new endpoint
is a module exporting ``ROUTES``, added to ``_ROUTES`` below.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, cast
from urllib.parse import urlsplit

from arcanos_flows.testing import _batches, _chat, _files, _models, _responses
from arcanos_flows.testing._batches import BatchControls
from arcanos_flows.testing._errors import error_body
from arcanos_flows.testing._files import FileStore
from arcanos_flows.testing._gateways import AZURE_ROUTES, GATEWAYS, Gateway, azure_refusal, litellm_headers
from arcanos_flows.testing._http import BackgroundServer, QuietHandler, dump_json, parse_json
from arcanos_flows.testing._limits import TokenBucket, rate_limited_body, retry_headers
from arcanos_flows.testing._replies import RecordedRequest, Reply, ReplyRule
from arcanos_flows.testing._routes import Call, Route, find_route, is_completion_path, normalized_path
from arcanos_flows.testing._stats import Stats

__all__ = ["DEFAULT_MODEL", "STATS_PATH", "FakeOpenAIServer", "RecordedRequest", "Reply"]

DEFAULT_MODEL = "gpt-5.1"
"""The model ``GET /v1/models`` lists before any request has named one."""

STATS_PATH = "/_stats"
"""``GET`` answers the server's counters as JSON (:meth:`FakeOpenAIServer.stats`); ``DELETE`` resets them."""

_ROUTES: tuple[Route, ...] = (*_chat.ROUTES, *_responses.ROUTES, *_models.ROUTES, *_files.ROUTES, *_batches.ROUTES)
"""The endpoints the server answers, tried in order; any other request gets a 404."""


class _OpenAIHandler(QuietHandler):
    """Answers one connection's requests for a :class:`FakeOpenAIServer` (``self.server.owner``)."""

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
        path = normalized_path(self.path)
        if path == STATS_PATH:
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
        gateway = fake.gateway
        found = find_route(AZURE_ROUTES if gateway == "azure" else _ROUTES, self.command, path)
        headers = {"x-request-id": f"req_{number}"}
        refusal = azure_refusal(request, path) if gateway == "azure" and found is not None else None
        if refusal is not None:
            fake._answered(refusal[0])
            self.send_payload(refusal[0], refusal[1], headers={"apim-request-id": f"req_{number}"})
            return
        if found is None:
            # Unknown paths are not API calls: they leave the script alone and always answer 404.
            message = f"Invalid URL ({self.command} {urlsplit(self.path).path})"
            payload = error_body(message, "invalid_request_error", None)
            # Counted before answering, so a client that reads /_stats right after its answer sees it counted.
            fake._answered(404)
            self.send_payload(404, payload, headers=headers)
            return
        route, params = found
        admitted, limit_headers, wait = fake._admit()
        headers.update(limit_headers)
        if not admitted:
            # Over the limit: answered at once, without taking a scripted reply or a rule's turn.
            model = request.json.get("model") if isinstance(request.json, dict) else None
            payload = rate_limited_body(fake.requests_per_minute or 0, model, wait)
            fake._answered(429, rate_limited=True)
            self.send_payload(429, payload, headers={**headers, **retry_headers(wait)})
            return
        reply, latency, override = fake._reply_for(request)
        if not self.pause(latency + reply.delay) or reply.drop_connection:
            fake._answered(None)
            self.drop_connection()
            return
        status, payload = route.answer(Call(request, number, reply, override, params, fake))
        if gateway == "litellm":
            # The proxy relays the upstream's id under its own name, and adds what it knows of the call.
            del headers["x-request-id"]
            completion = is_completion_path(path)
            headers.update(fake._litellm_headers(request, reply, override, number, status, completion=completion))
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
            self.send_payload(200, dump_json(fake.stats()))
        elif self.command == "DELETE":
            fake.reset_stats()
            self.send_payload(204, b"")
        else:
            self.send_payload(405, error_body("Use GET or DELETE", "invalid_request_error", None))


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

    **Gateway mode.** ``gateway="litellm"`` acts as a LiteLLM proxy in front of the API: ``aliases`` map the names
    requests carry to the models behind them (its ``model_list``); the body's ``model`` is the requested name, and
    ``x-litellm-model-name`` reports ``openai/<model that answered>`` (``Reply.other_model``'s, else the override,
    else the alias's model); answers carry ``x-litellm-model-group``, ``x-litellm-model-id``,
    ``x-litellm-attempted-fallbacks`` (``Reply.fallback`` scripts a fallback), ``x-litellm-call-id`` and the
    upstream's id as ``llm_provider-x-request-id`` instead of ``x-request-id``. ``gateway="azure"`` answers on Azure
    OpenAI's paths instead of OpenAI's: ``/openai/deployments/{deployment}/chat/completions`` (and ``/responses``)
    and ``/openai/responses`` with an ``api-version`` query, and ``/openai/v1/...``; a request without an
    ``api-key`` header gets a 401 (on ``/openai/v1`` a bearer token does too), one without ``api-version`` a 404.
    The deployment answers with the model ``aliases`` maps it to, as Azure names the underlying model.

    **Files and batches.** ``/v1/files`` and ``/v1/batches`` keep uploads and batches in memory; a batch
    runs its rows as direct requests would be answered and completes ``batch_delay`` seconds after its
    creation. :attr:`files` (a ``FileStore``) holds the files and :attr:`batches` (a ``BatchControls``)
    sets the delay, counts the batches created and scripts failed rows, other models, expiry, stalls and
    failed validation.

    Args:
        host: Interface to bind.
        port: Port to bind; 0 picks a free one.
        latency: Seconds added before every answer.
        model_override: Model that answers every completion instead of the requested one.
        requests_per_minute: Answer 429 beyond this many API requests per minute (``None``: no limit).
        burst: Requests the rate limit lets through at once (default: ``requests_per_minute / 60``).
        batch_delay: Seconds from a batch's creation to its completion (``batches.delay``, settable).
        gateway: Act as a ``litellm`` proxy or as ``azure`` OpenAI (``None``: OpenAI's API).
        aliases: Names requests carry (a gateway alias, an Azure deployment) and the model behind each.

    Attributes:
        files: The uploaded files and the batches' output files.
        batches: The batches' settings, counters and scripts.

    Examples:
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
        batch_delay: float = _batches.DEFAULT_BATCH_DELAY,
        gateway: Gateway | None = None,
        aliases: Mapping[str, str] | None = None,
    ) -> None:
        if gateway is not None and gateway not in GATEWAYS:
            raise ValueError(f"gateway must be one of {', '.join(GATEWAYS)} or None, got {gateway!r}")
        super().__init__(host=host, port=port)
        self._gateway: Gateway | None = gateway
        self._aliases = dict(aliases or {})
        self.files = FileStore()
        self.batches = BatchControls(self.files, delay=batch_delay)
        self._lock = threading.Lock()
        self._latency = latency
        self._model_override = model_override
        self._script: deque[Reply] = deque()
        self._default = Reply.ok()
        self._requests: list[RecordedRequest] = []
        self._counter = 0
        self._last_model: str | None = None
        # Named so that subclasses keeping rules of their own (under other names) do not collide with these.
        self._reply_rules: list[ReplyRule] = []
        self._bucket: TokenBucket | None = None
        self._stats = Stats()
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
    def gateway(self) -> Gateway | None:
        """The gateway the server acts as (``litellm``, ``azure``), or ``None`` for OpenAI's API."""
        return self._gateway

    @property
    def aliases(self) -> dict[str, str]:
        """The names requests carry and the model behind each (a copy; set with :meth:`alias`)."""
        with self._lock:
            return dict(self._aliases)

    def alias(self, name: str, model: str) -> None:
        """Route requests naming ``name`` (a gateway alias, an Azure deployment) to ``model``.

        Examples:
            >>> with FakeOpenAIServer(gateway="litellm") as server:
            ...     server.alias("arcanos", "ft:gpt-4o-mini:arcanos::x")
            ...     server.aliases
            {'arcanos': 'ft:gpt-4o-mini:arcanos::x'}
        """
        with self._lock:
            self._aliases[name] = model

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

        Examples:
            >>> with FakeOpenAIServer() as server:
            ...     server.reply_when("Investigate: Who confirms?", Reply.error(401), times=1)
            ...     server.reply_when(lambda request: "gpt-4o" in request.body.decode(), Reply.error(404))
        """
        if isinstance(match, str) and not match:
            raise ValueError("reply_when: the marker must be a non-empty string")
        if times is not None and times < 1:
            raise ValueError(f"reply_when: times must be at least 1, got {times}")
        with self._lock:
            self._reply_rules.append(ReplyRule(match, reply, times))

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
            bucket = TokenBucket(float(requests_per_minute), float(capacity))
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

        Examples:
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
            self._stats = Stats()

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
            if request.method == "POST" and is_completion_path(normalized_path(request.path))
        ]

    def clear(self) -> None:
        """Forget recorded requests, pending scripted replies, :meth:`reply_when` rules, files and batches.

        The default reply, the rate limit and the counters of :meth:`stats` stay; files and batches go with
        their scripts (``batches.clear()``).
        """
        with self._lock:
            self._requests.clear()
            self._script.clear()
            self._reply_rules.clear()
        self.batches.clear()

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

    def _answering_model(self, requested: str, reply: Reply, override: str | None) -> str:
        with self._lock:
            return reply.model or override or self._aliases.get(requested, requested)

    def _body_model(self, requested: str, answered: str) -> str:
        # A LiteLLM proxy rewrites the answer's model to the name the request carried.
        return requested if self._gateway == "litellm" else answered

    def _litellm_headers(
        self,
        request: RecordedRequest,
        reply: Reply,
        override: str | None,
        number: int,
        status: int,
        *,
        completion: bool,
    ) -> dict[str, str]:
        requested = request.json.get("model") if isinstance(request.json, dict) else None
        answered = completion and 200 <= status < 300 and reply.body is None
        if not answered or not isinstance(requested, str):
            # Errors and raw bodies: the proxy's call id and the upstream's request id, nothing about a model.
            headers = litellm_headers("", reply, "", number)
            return {name: headers[name] for name in ("x-litellm-call-id", "llm_provider-x-request-id")}
        return litellm_headers(requested, reply, self._answering_model(requested, reply, override), number)

    def _seen_model(self, model: str) -> None:
        with self._lock:
            self._last_model = model

    def _listed_models(self) -> list[str]:
        with self._lock:
            names = [self._last_model or DEFAULT_MODEL]
            if self._model_override and self._model_override not in names:
                names.append(self._model_override)
            return names
