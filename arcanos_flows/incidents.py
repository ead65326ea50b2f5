"""Maintenance incidents: the typed, documented JSON that every failure becomes.

An incident never carries the prompt (a message count and a SHA-256 instead), the API key or the
webhook secret; its ``reason`` is redacted and capped at 4 KiB before it is serialised.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from arcanos_flows.errors import IncidentClass, classify
from arcanos_flows.redaction import redact, redact_data

__all__ = ["INCIDENT_SCHEMA_VERSION", "MAX_REASON_BYTES", "Incident"]

INCIDENT_SCHEMA_VERSION = 1
MAX_REASON_BYTES = 4096
_MAX_CONTEXT_VALUE = 1024


def _cap_utf8(text: str, limit: int) -> str:
    encoded = text.encode("utf-8", "replace")
    if len(encoded) <= limit:
        return text
    marker = " …[truncated]"
    return encoded[: limit - len(marker.encode())].decode("utf-8", "ignore") + marker


def _bounded(value: Any) -> Any:
    # Context comes from callers and Prefect; keep each string short so an incident stays small.
    if isinstance(value, str):
        return _cap_utf8(value, _MAX_CONTEXT_VALUE)
    if isinstance(value, dict):
        return {str(key)[:128]: _bounded(item) for key, item in list(value.items())[:64]}
    if isinstance(value, list):
        return [_bounded(item) for item in value[:64]]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return _cap_utf8(str(value), _MAX_CONTEXT_VALUE)


class Incident(BaseModel):
    """One failure, as the maintenance webhook receives it.

    Attributes:
        type: Always ``arcanos.incident``.
        schema_version: Bumped on incompatible changes.
        incident_id: UUID; also the ``webhook-id`` of every delivery, so receivers can drop duplicates.
        incident_class: What kind of failure (``rate_limit``, ``model_enforcement``, ...).
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

    Example:
        >>> incident = Incident.from_exception(TimeoutError("upstream slow"), source="notebook")
        >>> incident.incident_class.value, incident.error_type
        ('unknown', 'builtins.TimeoutError')
    """

    model_config = ConfigDict(frozen=True, use_enum_values=False)

    type: Literal["arcanos.incident"] = "arcanos.incident"
    schema_version: int = INCIDENT_SCHEMA_VERSION
    incident_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    incident_class: IncidentClass
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

    @field_validator("metadata", "context", mode="before")
    @classmethod
    def _redact_mapping(cls, value: Any) -> Any:
        return _bounded(redact_data(value)) if isinstance(value, dict) else value

    @field_validator("occurred_at")
    @classmethod
    def _utc(cls, moment: datetime) -> datetime:
        return moment.astimezone(timezone.utc) if moment.tzinfo else moment.replace(tzinfo=timezone.utc)

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

        Example:
            >>> from arcanos_flows.errors import ConfigurationError
            >>> Incident.from_exception(ConfigurationError("Missing ...")).incident_class.value
            'configuration'
        """
        facts = classify(error)
        reason = str(error) or type(error).__name__
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
