"""What the sync and the async client share; they keep only their I/O.

:class:`ClientCore` holds the configuration, checks a call and builds its request before anything is sent, reads
the answer into a :class:`~arcanos_flows.core.results.ReasoningResult` (the model check included), and turns a
failure into a scrubbed exception carrying its incident. Sending the request and delivering the incident are
the two steps each client does its own way.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx2

from arcanos_flows.client._gateway import (
    attach_route,
    attached_route,
    read_route,
    route_context,
    sdk_client,
    verified_name,
)
from arcanos_flows.client._scrub import scrub
from arcanos_flows.core.errors import ConfigurationError, IncidentClass, InvalidReasoningInput, ModelEnforcementError
from arcanos_flows.core.messages import check_messages, check_options, fingerprint
from arcanos_flows.core.metadata import MetadataValue, build_metadata
from arcanos_flows.core.pickling import keep_picklable
from arcanos_flows.core.ratelimit import shared_limiter
from arcanos_flows.core.redaction import redact, redact_logs, register_token
from arcanos_flows.core.results import GatewayRoute, ReasoningResult
from arcanos_flows.core.settings import ArcanosSettings
from arcanos_flows.core.upstream import (
    Api,
    Exchange,
    read_chat,
    read_responses,
    request_body,
    request_id_of,
)
from arcanos_flows.incidents.model import Incident, attach_incident, prompt_excerpt
from arcanos_flows.incidents.notifier import MaintenanceNotifier

__all__ = ["SOURCE", "Call", "ClientCore", "PreparedRequest", "RawResponse", "model_matches", "simple_prompt_messages"]

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


@dataclass
class Call:
    """One call on its way: what its failure report needs, filled in as the call gets further.

    Examples:
        >>> Call([{"role": "user", "content": "Status?"}], notify=True).metadata is None
        True
    """

    messages: object
    notify: bool
    metadata: dict[str, str] | None = None


@dataclass(frozen=True)
class PreparedRequest:
    """A checked call, ready to send: ``create(**body, **options)`` on the ``api`` named.

    Examples:
        >>> PreparedRequest("chat", {"model": "ft:m"}, {}, {}).api
        'chat'
    """

    api: Api
    body: dict[str, Any]
    options: dict[str, Any]
    metadata: dict[str, str]


class RawResponse(Protocol):
    """What is read of the SDK's ``with_raw_response`` answer: the HTTP response and how many retries it took.

    Examples:
        >>> class Answered:
        ...     http_response = httpx2.Response(200)
        ...     retries_taken = 1
        >>> def attempts(raw: RawResponse) -> int:
        ...     return raw.retries_taken + 1
        >>> attempts(Answered())
        2
    """

    @property
    def http_response(self) -> httpx2.Response: ...

    @property
    def retries_taken(self) -> int: ...


def simple_prompt_messages(text: str, system: str | None) -> list[Mapping[str, Any]]:
    """The messages of ``run_simple_prompt``: an optional system message, then ``text`` as the user turn.

    Raises:
        InvalidReasoningInput: ``text`` is not a non-empty string.

    Examples:
        >>> simple_prompt_messages("Status?", "Be terse.")
        [{'role': 'system', 'content': 'Be terse.'}, {'role': 'user', 'content': 'Status?'}]
    """
    messages: list[Mapping[str, Any]] = []
    if system is not None:
        messages.append({"role": "system", "content": system})
    if not isinstance(text, str) or not text.strip():
        shown = "a blank string" if isinstance(text, str) else type(text).__name__
        raise InvalidReasoningInput(f"text: must be a non-empty string, not {shown}")
    messages.append({"role": "user", "content": text})
    return messages


class ClientCore:
    """Everything of a reasoning client but its I/O; base of the sync and the async client.

    Construction fails fast on bad configuration (after reporting a ``configuration`` incident, synchronously).

    Args:
        settings: Settings to use; read from the environment and ``.env`` when omitted.
        notifier: Where incidents go; built from the same settings when omitted.

    Examples:
        >>> from arcanos_flows.client import ArcanosPythonClient, AsyncArcanosClient
        >>> issubclass(ArcanosPythonClient, ClientCore) and issubclass(AsyncArcanosClient, ClientCore)
        True
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
        self.requested_model = self.settings.requested_model
        self.pricing = self.settings.pricing
        self.rate_limiter = shared_limiter(self.settings)

    def _sdk_options(self) -> dict[str, Any]:
        """The SDK client's options but its ``http_client`` (see :attr:`_azure_sdk` for which client)."""
        return sdk_client(self.settings)[1]

    @property
    def _azure_sdk(self) -> bool:
        """Whether the SDK's Azure client is built (``ARCANOS_GATEWAY=azure`` with an api-version)."""
        return sdk_client(self.settings)[0] == "azure"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, api={self.settings.openai_api!r})"

    def _prepare(
        self,
        call: Call,
        *,
        metadata: Mapping[str, MetadataValue] | None,
        reasoning_effort: str | None,
        max_output_tokens: int | None,
        response_format: Mapping[str, Any] | None,
        timeout: float | None,
        identity: Mapping[str, str | None] | None,
        model: object,
    ) -> PreparedRequest:
        """Check the call and build its request; nothing is sent before this returns."""
        if model is not None:
            raise ModelEnforcementError(
                f"run_reasoning() does not take model={model!r}: every request uses "
                f"ARCANOS_FINE_TUNED_MODEL ({self.model})",
                expected_model=self.model,
                actual_model=str(model),
            )
        checked = check_messages(call.messages)
        check_options(
            reasoning_effort=reasoning_effort,
            max_output_tokens=max_output_tokens,
            response_format=response_format,
            timeout=timeout,
        )
        call.metadata = build_metadata(
            metadata, defaults={"confirmation_token": self.settings.confirmation_token}, identity=identity
        )
        register_token(call.metadata.get("confirmation_token"))  # a caller's own token is as secret as the setting
        api = self.settings.openai_api
        body = request_body(
            api,
            model=self.requested_model,
            messages=checked,
            metadata=call.metadata if self.settings.store else None,
            reasoning_effort=reasoning_effort,
            max_output_tokens=max_output_tokens,
            response_format=response_format,
        )
        return PreparedRequest(api, body, {"timeout": timeout} if timeout is not None else {}, call.metadata)

    def _result(self, request: PreparedRequest, raw: RawResponse, started: float) -> ReasoningResult:
        """Read what came back into a result; another model answering is the first thing refused."""
        latency_ms = (time.perf_counter() - started) * 1000
        http = raw.http_response
        route = read_route(http.headers, self.settings)
        exchange = Exchange(request_id_of(http.headers), http.status_code, raw.retries_taken + 1)
        try:
            reader = read_chat if request.api == "chat" else read_responses
            answered_model, outcome = reader(http.content, http.headers.get("content-type", ""), exchange)
            model = self._verified(answered_model, route, exchange)
            if isinstance(outcome, Exception):
                raise outcome
        except Exception as exc:
            attach_route(exc, route)  # the gateway's call id and what it reported go into the incident
            raise
        return ReasoningResult(
            content=outcome.content,
            model=model,
            response_id=redact(outcome.response_id),
            request_id=exchange.request_id,
            finish_reason=outcome.finish_reason,
            usage=outcome.usage.priced(self.pricing),
            metadata=request.metadata,
            stored=request.body.get("store") is True,
            latency_ms=round(latency_ms, 3),
            attempts=exchange.attempts,
            api=request.api,
            gateway=route,
        )

    def _verified(self, answered_model: str, route: GatewayRoute | None, exchange: Exchange) -> str:
        """The model that answered, checked: the body's, or what LiteLLM reports (the body names the alias there)."""
        facts: dict[str, Any] = {
            "expected_model": self.model,
            "request_id": exchange.request_id,
            "http_status": exchange.http_status,
            "attempts": exchange.attempts,
        }
        asked = f"{self.model} was requested" + (
            f" as {self.requested_model}" if self.requested_model != self.model else ""
        )
        if route is not None and route.gateway == "litellm" and route.reported_model is not None:
            model = verified_name(route.reported_model, self.model)
            if answered_model != self.requested_model and not model_matches(self.model, answered_model):
                # LiteLLM names the body after the request (the alias): a body naming a third model contradicts the
                # header, and the header alone is not trusted over it.
                raise ModelEnforcementError(
                    f"{asked} but the answer's body names {answered_model} while x-litellm-model-name reports "
                    f"{route.reported_model} (request {exchange.request_id}); a LiteLLM proxy names the body after the "
                    "request, so this answer did not come through one as configured: arcanos-flows never accepts it",
                    actual_model=answered_model,
                    **facts,
                )
            if model_matches(self.model, model):
                return model
            if route.fallbacks:
                raise ModelEnforcementError(
                    f"{asked} but a fallback answered: LiteLLM fell back {route.fallbacks} time(s) to model group "
                    f"{route.model_group or 'unknown'}, deployment {route.deployment or 'unknown'}, which reports "
                    f"{route.reported_model} (x-litellm-model-name; request {exchange.request_id}); arcanos-flows "
                    "never accepts another model: fix the router's fallbacks of that group",
                    actual_model=model,
                    **facts,
                )
            raise ModelEnforcementError(
                f"{asked} but LiteLLM reports {route.reported_model} answered (x-litellm-model-name, deployment "
                f"{route.deployment or 'unknown'}; request {exchange.request_id}); arcanos-flows never accepts "
                "another model: point the alias at the enforced model in the proxy's model_list",
                actual_model=model,
                **facts,
            )
        if self.settings.gateway == "litellm":
            raise ModelEnforcementError(
                f"{asked} with ARCANOS_GATEWAY=litellm, but the answer carries no x-litellm-model-name header: "
                f"which model answered cannot be verified (request {exchange.request_id}); point OPENAI_BASE_URL "
                "at the LiteLLM proxy, or set ARCANOS_GATEWAY=none for an endpoint that keeps the answer's model",
                actual_model=answered_model,
                **facts,
            )
        if not model_matches(self.model, answered_model):
            through = f" (Azure deployment {self.requested_model})" if self.settings.gateway == "azure" else ""
            raise ModelEnforcementError(
                f"{self.model} was requested{through} but {answered_model} answered (request {exchange.request_id}); "
                "arcanos-flows never accepts another model",
                actual_model=answered_model,
                **facts,
            )
        return answered_model

    def _fallback_warning(self, request: PreparedRequest, result: ReasoningResult) -> Incident | None:
        """The warning a gateway fallback that the enforced model answered amounts to; ``None`` without one."""
        route = result.gateway
        if route is None or not route.fallbacks:
            return None
        return Incident(
            incident_class=IncidentClass.GATEWAY_FALLBACK,
            severity="warning",
            reason=(
                f"LiteLLM fell back {route.fallbacks} time(s) for {route.requested_model}: model group "
                f"{route.model_group or 'unknown'}, deployment {route.deployment or 'unknown'} answered with the "
                f"enforced model {result.model} (request {result.request_id}); the call succeeded, but the primary "
                "deployment failed and needs attention"
            ),
            error_type=f"{SOURCE}.gateway_fallback",
            source=SOURCE,
            model=self.model,
            metadata=request.metadata,
            request_id=result.request_id,
            http_status=200,
            attempts=result.attempts,
            context={"api": request.api, "gateway": route_context(route)},
        )

    def _warn(self, incident: Incident) -> None:
        """Deliver a warning incident (blocking); never raises: the call it is about succeeded."""
        try:
            self.notifier.notify(incident)
        except Exception as problem:
            logger.error("Could not report a %s warning: %s", incident.incident_class.value, redact(str(problem)))

    def _failed(self, error: Exception, call: Call) -> Incident | None:
        """Scrub the exception and attach its incident; return the incident when it is to be delivered.

        Whatever goes wrong while scrubbing or reporting, the caller must still get the original exception.
        """
        try:
            scrub(error)
            keep_picklable(error)  # a library imported since (distributed) may have replaced the reduction
            incident = self._incident(error, call)
            attach_incident(error, incident)
        except Exception as problem:
            self._could_not_report(error, problem)
            return None
        return incident if call.notify else None

    def _deliver(self, error: Exception, incident: Incident) -> None:
        """Send the incident through the notifier (blocking: network, retries, backoff); never raises."""
        try:
            self.notifier.notify(incident)
        except Exception as problem:
            self._could_not_report(error, problem)

    @staticmethod
    def _could_not_report(error: Exception, problem: Exception) -> None:
        logger.error("Could not report %s: %s", type(error).__name__, redact(str(problem)))

    def _incident(self, error: Exception, call: Call) -> Incident:
        count, digest = fingerprint(call.messages)
        context: dict[str, Any] = {"api": self.settings.openai_api}
        route = attached_route(error)
        if route is not None:
            context["gateway"] = route_context(route)
        if self.settings.incident_include_prompt and call.messages is not None:
            # Opted in: the (redacted, bounded) messages help whoever debugs the failure. Only messages
            # that passed the input contract are shown; malformed ones are described by the reason.
            with contextlib.suppress(InvalidReasoningInput):
                context.update(prompt_excerpt(check_messages(call.messages)))
        return Incident.from_exception(
            error,
            source=SOURCE,
            model=self.model,
            metadata=call.metadata or {},
            message_count=count,
            messages_sha256=digest,
            context=context,
        )


def _configured_or_printing_notifier() -> MaintenanceNotifier:
    try:
        return MaintenanceNotifier(source=SOURCE)
    except ConfigurationError:
        return MaintenanceNotifier.to_stdout()
