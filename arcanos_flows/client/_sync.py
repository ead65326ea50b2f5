"""The model-enforced reasoning client: one fine-tuned model, no fallback, every failure reported.

Works in a plain script or notebook; nothing here imports Prefect.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import ssl
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx2
import openai

from arcanos_flows.core.errors import ConfigurationError, InvalidReasoningInput, ModelEnforcementError
from arcanos_flows.core.messages import Message, check_messages, check_options, fingerprint
from arcanos_flows.core.metadata import MetadataValue, build_metadata
from arcanos_flows.core.ratelimit import shared_limiter
from arcanos_flows.core.redaction import REDACTED, redact, redact_data, redact_logs
from arcanos_flows.core.results import ReasoningResult
from arcanos_flows.core.settings import ArcanosSettings
from arcanos_flows.core.upstream import (
    IDENTITY_ENCODING,
    Exchange,
    bound_response_body,
    read_chat,
    read_responses,
    request_body,
    request_id_of,
)
from arcanos_flows.incidents.model import Incident, attach_incident, prompt_excerpt
from arcanos_flows.incidents.notifier import MaintenanceNotifier

__all__ = ["ArcanosPythonClient", "model_matches"]

SOURCE = "arcanos_flows.client"
logger = logging.getLogger("arcanos_flows.client")
# The loggers that show what an upstream sent (request ids, response headers) at DEBUG.
_UPSTREAM_LOGGERS = ("openai._base_client", "httpx2", "httpcore2.http11", "httpcore2.connection")
_DATED_SNAPSHOT = re.compile(r"-\d{4}-\d{2}-\d{2}$")


def model_matches(configured: str, answered: str) -> bool:
    """Whether ``answered`` is the configured model.

    Equal ids match; so does a dated snapshot (``gpt-5.1-2025-11-13``) of a bare alias (``gpt-5.1``).
    A fine-tuned id (``ft:...``) or an already dated id must match exactly.

    Examples:
        >>> model_matches("gpt-5.1", "gpt-5.1-2025-11-13")
        True
        >>> model_matches("ft:gpt-5.1:arcanos::abc", "gpt-5.1")
        False
    """
    if answered == configured:
        return True
    if configured.startswith("ft:") or _DATED_SNAPSHOT.search(configured):
        return False
    return answered.startswith(configured) and _DATED_SNAPSHOT.fullmatch(answered[len(configured) :]) is not None


@functools.lru_cache(maxsize=1)
def _tls_context() -> ssl.SSLContext:
    # Building an SSLContext loads the CA store (~100 ms with OpenSSL 3); one per process is enough,
    # as contexts are safe to share between clients and threads. SSL_CERT_FILE / SSL_CERT_DIR are
    # read once, by the first client.
    return httpx2.create_ssl_context()


def _refuse_retrying_exhausted_quota(response: httpx2.Response) -> None:
    # The SDK retries every 429, but `insufficient_quota` cannot succeed until someone pays; the SDK's
    # documented `x-should-retry` header tells it so, without touching its internals.
    if response.status_code != 429:
        return
    response.read()
    try:
        error = response.json().get("error", {})
        exhausted = "insufficient_quota" in (error.get("code"), error.get("type"))
    except (ValueError, AttributeError, RecursionError):
        return
    if exhausted:
        response.headers["x-should-retry"] = "false"


_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "api-key", "x-api-key"})


def _without_credentials(request: httpx2.Request) -> httpx2.Request:
    headers = [
        (name, REDACTED if name.lower() in _CREDENTIAL_HEADERS else redact(value))
        for name, value in request.headers.items()
    ]
    return httpx2.Request(request.method, request.url, headers=headers, content=request.content)


def _scrub(error: BaseException) -> None:
    # The same exception object is re-raised; it only loses secrets. Its text may hold what an upstream echoed
    # (in a message, a body, a refusal, a model name, a request id); and the SDK's `request` carries the API key in
    # its Authorization header, which Prefect would pickle into result storage with a failed run. Both are replaced
    # by redacted copies built through httpx2's public constructors.
    cleaned = tuple(redact(arg) if isinstance(arg, str) else arg for arg in error.args)
    if cleaned != error.args:
        error.args = cleaned
    for attribute, value in list(vars(error).items()):
        if isinstance(value, (str, dict, list)):
            scrubbed = redact_data(value)
            if scrubbed != value:
                with contextlib.suppress(AttributeError, TypeError):  # a read-only property of the same name
                    setattr(error, attribute, scrubbed)
    request = getattr(error, "request", None)
    if isinstance(request, httpx2.Request):
        try:
            safe_request = _without_credentials(request)
        except httpx2.RequestNotRead:
            safe_request = httpx2.Request(request.method, request.url)
        with contextlib.suppress(AttributeError, TypeError):
            error.request = safe_request  # type: ignore[attr-defined]
        response = getattr(error, "response", None)
        if isinstance(response, httpx2.Response):
            with contextlib.suppress(AttributeError, TypeError, httpx2.ResponseNotRead):
                error.response = httpx2.Response(  # type: ignore[attr-defined]
                    response.status_code,
                    headers=[(name, redact(value)) for name, value in response.headers.items()],
                    content=redact(response.content.decode("utf-8", "replace")).encode("utf-8"),
                    request=safe_request,
                )


class ArcanosPythonClient:
    """Runs reasoning on ``ARCANOS_FINE_TUNED_MODEL`` and nothing else.

    Construction fails fast on bad configuration (after reporting a ``configuration`` incident). Every
    failure of a call is classified, reported through the notifier, and the original exception is
    re-raised. With ``ARCANOS_REQUESTS_PER_MINUTE`` set, every HTTP attempt (SDK retries included) first
    waits for a slot of the process-wide :attr:`rate_limiter` (:mod:`arcanos_flows.core.ratelimit`).

    Args:
        settings: Settings to use; read from the environment and ``.env`` when omitted.
        notifier: Where incidents go; built from the same settings when omitted.

    Examples:
        >>> from arcanos_flows.testing import FakeOpenAIServer
        >>> with FakeOpenAIServer() as server:
        ...     settings = ArcanosSettings(openai_api_key="sk-test-0000", fine_tuned_model="ft:gpt-5.1:arcanos::x",
        ...                                openai_base_url=server.base_url, _env_file=None)
        ...     with ArcanosPythonClient(settings) as client:
        ...         result = client.run_reasoning([
        ...             {"role": "system", "content": "You are the Arcanos maintenance AI."},
        ...             {"role": "user", "content": "List the current confirmation layers."},
        ...         ], metadata={"intent": "audit"})
        >>> result["model"], result.metadata
        ('ft:gpt-5.1:arcanos::x', {'intent': 'audit'})
    """

    def __init__(self, settings: ArcanosSettings | None = None, *, notifier: MaintenanceNotifier | None = None) -> None:
        try:
            self.settings = settings if settings is not None else ArcanosSettings()
        except ConfigurationError as exc:
            (notifier or _configured_or_printing_notifier()).notify(Incident.from_exception(exc, source=SOURCE))
            raise
        self.notifier = notifier if notifier is not None else MaintenanceNotifier(self.settings, source=SOURCE)
        redact_logs(*_UPSTREAM_LOGGERS)
        self.model = self.settings.fine_tuned_model
        self.rate_limiter = shared_limiter(self.settings)
        # The limiter waits in a request hook, before the attempt takes a connection or starts its timeout.
        request_hooks: list[Any] = [self.rate_limiter] if self.rate_limiter is not None else []
        self._openai = openai.OpenAI(
            api_key=self.settings.openai_api_key.get_secret_value(),
            base_url=self.settings.openai_base_url,
            timeout=self.settings.request_timeout,
            max_retries=self.settings.max_retries,
            default_headers=dict(IDENTITY_ENCODING),
            # Bounding comes first, so that no other hook can read an unbounded body.
            http_client=openai.DefaultHttpxClient(
                verify=_tls_context(),
                event_hooks={
                    "request": request_hooks,
                    "response": [bound_response_body, _refuse_retrying_exhausted_quota],
                },
            ),
        )

    def __enter__(self) -> ArcanosPythonClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._openai.close()

    def __repr__(self) -> str:
        return f"ArcanosPythonClient(model={self.model!r}, api={self.settings.openai_api!r})"

    def run_reasoning(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        metadata: Mapping[str, MetadataValue] | None = None,
        reasoning_effort: str | None = None,
        max_output_tokens: int | None = None,
        response_format: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        notify: bool = True,
        identity: Mapping[str, str | None] | None = None,
        model: None = None,
    ) -> ReasoningResult:
        """Ask the enforced model one question.

        Args:
            messages: Chat messages: ``role`` in system/developer/user/assistant, non-empty ``content``.
            metadata: Audit metadata; ``confirmation_token`` is added from settings unless given here.
                At most 16 keys in total, keys of at most 64 and values of at most 512 characters.
            reasoning_effort: ``none``, ``minimal``, ``low``, ``medium``, ``high`` or ``xhigh``.
            max_output_tokens: Output budget, reasoning included.
            response_format: Chat Completions ``response_format`` (translated for the Responses API).
            timeout: Seconds per HTTP attempt, overriding ``ARCANOS_REQUEST_TIMEOUT``.
            notify: Report failures through the notifier; ``False`` when the caller reports them (the incident
                is still built and attached to the exception, see :func:`arcanos_flows.incidents.attached_incident`).
            identity: Metadata keys naming where the call runs (the Prefect layer passes run ids); they count
                against the 16-key limit.
            model: Not accepted: every request uses ``ARCANOS_FINE_TUNED_MODEL``. Any value raises
                :class:`ModelEnforcementError`.

        Returns:
            The typed result; ``result["content"]`` is the answer.

        Raises:
            InvalidReasoningInput: Bad messages, metadata or options, before any request.
            ModelEnforcementError: A model was passed, or another model answered.
            openai.APIError: What the SDK raised (rate limits, timeouts, 4xx/5xx), unchanged.
            UpstreamResponseError: A 2xx whose body is not a valid completion.
            EmptyCompletionError: No choices, or empty content.
            IncompleteCompletionError: The output budget ran out.
            RefusalError: The model refused.
        """
        request_metadata: dict[str, str] | None = None
        try:
            if model is not None:
                raise ModelEnforcementError(
                    f"run_reasoning() does not take model={model!r}: every request uses "
                    f"ARCANOS_FINE_TUNED_MODEL ({self.model})",
                    expected_model=self.model,
                    actual_model=str(model),
                )
            checked = check_messages(messages)
            check_options(
                reasoning_effort=reasoning_effort,
                max_output_tokens=max_output_tokens,
                response_format=response_format,
                timeout=timeout,
            )
            request_metadata = build_metadata(
                metadata, defaults={"confirmation_token": self.settings.confirmation_token}, identity=identity
            )
            return self._complete(
                checked,
                request_metadata,
                reasoning_effort=reasoning_effort,
                max_output_tokens=max_output_tokens,
                response_format=response_format,
                timeout=timeout,
            )
        except Exception as exc:
            self._handle_failure(exc, messages, request_metadata, notify=notify)
            raise

    def run_simple_prompt(
        self,
        text: str,
        *,
        metadata: Mapping[str, MetadataValue] | None = None,
        system: str | None = None,
        notify: bool = True,
        identity: Mapping[str, str | None] | None = None,
    ) -> ReasoningResult:
        """Ask one user-turn question, optionally with a system message.

        Arguments other than ``text`` and ``system`` are those of :meth:`run_reasoning`.

        Examples:
            >>> from arcanos_flows.testing import FakeOpenAIServer
            >>> with FakeOpenAIServer() as server:
            ...     settings = ArcanosSettings(openai_api_key="sk-test-0000", fine_tuned_model="ft:gpt-5.1:a::x",
            ...                                openai_base_url=server.base_url, _env_file=None)
            ...     answer = ArcanosPythonClient(settings).run_simple_prompt("Status?")["content"]
            >>> bool(answer)
            True
        """
        messages: list[Mapping[str, Any]] = []
        if system is not None:
            messages.append({"role": "system", "content": system})
        if not isinstance(text, str) or not text.strip():
            shown = "a blank string" if isinstance(text, str) else type(text).__name__
            error = InvalidReasoningInput(f"text: must be a non-empty string, not {shown}")
            self._handle_failure(error, None, None, notify=notify)
            raise error
        messages.append({"role": "user", "content": text})
        return self.run_reasoning(messages, metadata=metadata, notify=notify, identity=identity)

    def _complete(
        self,
        messages: list[Message],
        request_metadata: dict[str, str],
        *,
        reasoning_effort: str | None,
        max_output_tokens: int | None,
        response_format: Mapping[str, Any] | None,
        timeout: float | None,
    ) -> ReasoningResult:
        api = self.settings.openai_api
        body = request_body(
            api,
            model=self.model,
            messages=messages,
            metadata=request_metadata if self.settings.store else None,
            reasoning_effort=reasoning_effort,
            max_output_tokens=max_output_tokens,
            response_format=response_format,
        )
        options: dict[str, Any] = {"timeout": timeout} if timeout is not None else {}
        started = time.perf_counter()
        if api == "chat":
            raw = self._openai.chat.completions.with_raw_response.create(**body, **options)
        else:
            raw = self._openai.responses.with_raw_response.create(**body, **options)
        latency_ms = (time.perf_counter() - started) * 1000
        http = raw.http_response
        exchange = Exchange(request_id_of(http.headers), http.status_code, raw.retries_taken + 1)
        reader = read_chat if api == "chat" else read_responses
        answered_model, outcome = reader(http.content, http.headers.get("content-type", ""), exchange)
        if not model_matches(self.model, answered_model):
            raise ModelEnforcementError(
                f"{self.model} was requested but {answered_model} answered (request {exchange.request_id}); "
                "arcanos-flows never accepts another model",
                expected_model=self.model,
                actual_model=answered_model,
                request_id=exchange.request_id,
                http_status=exchange.http_status,
                attempts=exchange.attempts,
            )
        if isinstance(outcome, Exception):
            raise outcome
        return ReasoningResult(
            content=outcome.content,
            model=outcome.model,
            response_id=redact(outcome.response_id),
            request_id=exchange.request_id,
            finish_reason=outcome.finish_reason,
            usage=outcome.usage,
            metadata=request_metadata,
            stored=body.get("store") is True,
            latency_ms=round(latency_ms, 3),
            attempts=exchange.attempts,
            api=api,
        )

    def _handle_failure(
        self, error: Exception, messages: object, request_metadata: dict[str, str] | None, *, notify: bool
    ) -> None:
        # Whatever goes wrong while scrubbing or reporting, the caller must still get the original exception.
        try:
            _scrub(error)
            incident = self._incident(error, messages, request_metadata)
            attach_incident(error, incident)
            if notify:
                self.notifier.notify(incident)
        except Exception as problem:
            logger.error("Could not report %s: %s", type(error).__name__, redact(str(problem)))

    def _incident(self, error: Exception, messages: object, request_metadata: dict[str, str] | None) -> Incident:
        count, digest = fingerprint(messages)
        context: dict[str, Any] = {"api": self.settings.openai_api}
        if self.settings.incident_include_prompt and messages is not None:
            # Opted in: the (redacted, bounded) messages help whoever debugs the failure. Only messages
            # that passed the input contract are shown; malformed ones are described by the reason.
            with contextlib.suppress(InvalidReasoningInput):
                context.update(prompt_excerpt(check_messages(messages)))
        return Incident.from_exception(
            error,
            source=SOURCE,
            model=self.model,
            metadata=request_metadata or {},
            message_count=count,
            messages_sha256=digest,
            context=context,
        )


def _configured_or_printing_notifier() -> MaintenanceNotifier:
    try:
        return MaintenanceNotifier(source=SOURCE)
    except ConfigurationError:
        return MaintenanceNotifier.to_stdout()
