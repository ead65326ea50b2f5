"""Maintenance incidents: the typed, documented JSON that every failure becomes.

An incident never carries the prompt (a message count and a SHA-256 instead), the API key or the
webhook secret; its ``reason`` is redacted and capped at 4 KiB before it is serialised.
"""

from __future__ import annotations

import contextlib
import math
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from arcanos_flows.core.errors import IncidentClass, classify
from arcanos_flows.core.redaction import redact, redact_data

__all__ = [
    "INCIDENT_SCHEMA_VERSION",
    "MAX_INCIDENT_BYTES",
    "MAX_PROMPT_BYTES",
    "MAX_REASON_BYTES",
    "Incident",
    "prompt_excerpt",
]

INCIDENT_SCHEMA_VERSION = 1
MAX_REASON_BYTES = 4096
MAX_INCIDENT_BYTES = 16 * 1024
"""An incident's JSON never exceeds this: oversized context and metadata are shortened (marked ``truncated``)."""
MAX_PROMPT_BYTES = 4096
"""Budget of the prompt excerpt an opted-in incident carries (``ARCANOS_INCIDENT_INCLUDE_PROMPT``)."""
_MAX_CONTEXT_VALUE = 1024
_MAX_METADATA_VALUE = 4 * 512
# x-request-id comes from the upstream; a hostile or broken proxy must not be able to bloat incidents.
_MAX_REQUEST_ID = 256
_MIN_PROMPT_PART = 64
# What survives when an incident must shrink to MAX_INCIDENT_BYTES: enough to find the run and the step.
_ESSENTIAL_CONTEXT = (
    "flow_run_id",
    "flow_run_name",
    "flow_name",
    "task_run_id",
    "task_run_name",
    "deployment_name",
    "attempts",
    "final_state",
    "ui_url",
    "api",
)


def _cap_utf8(text: str, limit: int) -> str:
    # Lone surrogates (from undecodable bytes) cannot be serialised; they become U+FFFD-like "?".
    encoded = text.encode("utf-8", "replace")
    if len(encoded) <= limit:
        return encoded.decode("utf-8")
    marker = " …[truncated]"
    return encoded[: limit - len(marker.encode())].decode("utf-8", "ignore") + marker


def _bounded(value: Any, limit: int = _MAX_CONTEXT_VALUE) -> Any:
    # Context comes from callers and Prefect; keep each string short so an incident stays small.
    if isinstance(value, str):
        return _cap_utf8(value, limit)
    if isinstance(value, dict):
        return {_cap_utf8(str(key), 128): _bounded(item, limit) for key, item in list(value.items())[:64]}
    if isinstance(value, list):
        return [_bounded(item, limit) for item in value[:64]]
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # JSON has no NaN or Infinity
    if value is None or isinstance(value, (bool, int, float)):
        return value
    # Anything else is shown as text, redacted again: its str() (bytes, an exception) may hold a secret.
    return _cap_utf8(redact(str(value)), limit)


def _describe(error: BaseException) -> str:
    try:
        return str(error) or type(error).__name__
    except Exception:  # a broken __str__ must not stop the incident
        return type(error).__name__


class Incident(BaseModel):
    """One failure, as the maintenance webhook receives it.

    Attributes:
        type: Always ``arcanos.incident``.
        schema_version: Bumped on incompatible changes.
        incident_id: UUID; also the ``webhook-id`` of every delivery, so receivers can drop duplicates.
        incident_class: What kind of failure (``rate_limit``, ``model_enforcement``, ...).
        severity: ``error`` (something failed; the default) or ``warning`` (the call succeeded degraded, e.g. a
            ``gateway_fallback``); incidents without the field are errors.
        reason: Human-readable cause, redacted, at most 4 KiB.
        error_type: Qualified class name of the exception (``openai.RateLimitError``).
        occurred_at: When it happened, ISO-8601 UTC.
        source: What reported it (``arcanos_flows.client``, ...).
        model: The enforced model, when known.
        metadata: The audit metadata of the failed call.
        request_id: Upstream ``x-request-id``, when a response was received.
        http_status: Upstream HTTP status, when a response was received.
        attempts: HTTP attempts made before giving up.
        message_count: How many messages the failed call had (the text itself is never sent).
        messages_sha256: SHA-256 of the messages' canonical JSON, to correlate without revealing.
        context: Open object for the caller's context (Prefect run ids, ...).

    Examples:
        >>> incident = Incident.from_exception(TimeoutError("upstream slow"), source="notebook")
        >>> incident.incident_class.value, incident.error_type
        ('unknown', 'builtins.TimeoutError')
    """

    model_config = ConfigDict(frozen=True, use_enum_values=False)

    type: Literal["arcanos.incident"] = "arcanos.incident"
    schema_version: int = INCIDENT_SCHEMA_VERSION
    incident_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    incident_class: IncidentClass
    severity: Literal["error", "warning"] = "error"
    reason: str
    error_type: str
    occurred_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    source: str = "arcanos_flows"
    model: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    request_id: str | None = None
    http_status: int | None = None
    attempts: int | None = None
    message_count: int | None = None
    messages_sha256: str | None = None
    context: dict[str, Any] = Field(default_factory=dict)

    @field_validator("reason")
    @classmethod
    def _redact_reason(cls, reason: str) -> str:
        return _cap_utf8(redact(reason), MAX_REASON_BYTES)

    @field_validator("request_id")
    @classmethod
    def _redact_request_id(cls, request_id: str | None) -> str | None:
        return None if request_id is None else _cap_utf8(redact(request_id), _MAX_REQUEST_ID)

    @field_validator("metadata", mode="before")
    @classmethod
    def _redact_metadata(cls, value: Any) -> Any:
        # Valid audit metadata (512 characters, up to 4 bytes each) is shown whole, never cut.
        return _bounded(redact_data(value), _MAX_METADATA_VALUE) if isinstance(value, dict) else value

    @field_validator("context", mode="before")
    @classmethod
    def _redact_context(cls, value: Any) -> Any:
        return _bounded(redact_data(value)) if isinstance(value, dict) else value

    @field_validator("occurred_at")
    @classmethod
    def _utc(cls, moment: datetime) -> datetime:
        return moment.astimezone(timezone.utc) if moment.tzinfo else moment.replace(tzinfo=timezone.utc)

    @model_validator(mode="after")
    def _fit(self) -> Incident:
        # Each field is bounded on its own; together they could still outgrow what a webhook should carry. Shrink
        # the least important parts first, and say so in the incident. (object.__setattr__: the model is frozen,
        # and a validator must return the instance being built.)
        if len(self.to_json()) <= MAX_INCIDENT_BYTES:
            return self
        context = {**_bounded(self.context, 256), "truncated": True}
        object.__setattr__(self, "context", context)
        if len(self.to_json()) > MAX_INCIDENT_BYTES:
            essential = {key: context[key] for key in _ESSENTIAL_CONTEXT if key in context}
            object.__setattr__(self, "context", {**essential, "truncated": True})
            object.__setattr__(self, "metadata", {key: _cap_utf8(value, 128) for key, value in self.metadata.items()})
        if len(self.to_json()) > MAX_INCIDENT_BYTES:
            object.__setattr__(self, "reason", _cap_utf8(self.reason, 1024))
        return self

    @classmethod
    def from_exception(
        cls,
        error: BaseException,
        *,
        source: str = "arcanos_flows",
        incident_class: IncidentClass | None = None,
        **fields: Any,
    ) -> Incident:
        """Build the incident for an exception: class, HTTP facts and a redacted reason.

        Args:
            error: The exception that happened.
            source: What reports it.
            incident_class: Override the classification (e.g. Prefect's ``crashed``).
            **fields: Any other :class:`Incident` field (``model``, ``metadata``, ``context``, ...).

        Examples:
            >>> from arcanos_flows.core.errors import ConfigurationError
            >>> Incident.from_exception(ConfigurationError("Missing ...")).incident_class.value
            'configuration'
        """
        facts = classify(error)
        reason = _describe(error)
        fields.setdefault("request_id", facts.request_id)
        fields.setdefault("http_status", facts.http_status)
        if facts.attempts:
            fields.setdefault("attempts", facts.attempts)
        return cls(
            incident_class=incident_class or facts.incident_class,
            reason=reason,
            error_type=f"{type(error).__module__}.{type(error).__qualname__}",
            source=source,
            **fields,
        )

    def to_json(self) -> str:
        """The incident's stable JSON form, exactly what is POSTed and signed."""
        return self.model_dump_json()


def prompt_excerpt(messages: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What an opted-in incident's ``context`` carries about the prompt: recent messages, redacted, bounded.

    The most recent messages are kept (they usually hold the question that failed), each message's
    content redacted and cut to fit, at most :data:`MAX_PROMPT_BYTES` of content in all; older
    messages that do not fit are counted in ``messages_omitted``.

    Examples:
        >>> prompt_excerpt([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "key sk-abcdefghijkl?"}])
        {'messages': [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'key [REDACTED]?'}], 'messages_omitted': 0}
    """  # noqa: E501 - a doctest line
    kept: list[dict[str, str]] = []
    budget = MAX_PROMPT_BYTES
    for message in reversed(messages):
        if budget < _MIN_PROMPT_PART:
            break
        content = _cap_utf8(redact(str(message.get("content", ""))), min(_MAX_CONTEXT_VALUE, budget))
        budget -= len(content.encode("utf-8"))
        kept.append({"role": str(message.get("role", "")), "content": content})
    kept.reverse()
    return {"messages": kept, "messages_omitted": len(messages) - len(kept)}


_ATTACHED = "_arcanos_incident"


def attach_incident(error: BaseException, incident: Incident) -> None:
    """Record on an exception the incident it amounts to, for whoever reports it later (e.g. a Prefect hook).

    Only an attribute is added (like ``add_note``); the exception stays the object that was raised.
    """
    with contextlib.suppress(AttributeError, TypeError):  # exceptions with __slots__ cannot carry it
        setattr(error, _ATTACHED, incident)


def attached_incident(error: BaseException) -> Incident | None:
    """The incident :func:`attach_incident` recorded on this exception, if any.

    Examples:
        >>> error = RuntimeError("boom")
        >>> attach_incident(error, Incident.from_exception(error))
        >>> attached_incident(error).error_type
        'builtins.RuntimeError'
    """
    incident = getattr(error, _ATTACHED, None)
    return incident if isinstance(incident, Incident) else None
