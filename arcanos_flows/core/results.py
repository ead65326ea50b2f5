"""What a successful reasoning call returns: typed, JSON-serialisable, and readable like the original dict."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ReasoningResult", "Usage"]


class Usage(BaseModel):
    """Tokens one call spent, named the same for Chat Completions and the Responses API.

    Examples:
        >>> Usage(input_tokens=12, output_tokens=30, reasoning_tokens=20, total_tokens=42).output_tokens
        30
    """

    model_config = ConfigDict(frozen=True)

    input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cached_tokens: int = 0
    total_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        """Sum two usages, so a flow can total its steps with ``sum(..., Usage())``."""
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
        )

    def __radd__(self, other: int | Usage) -> Usage:
        """Let the builtin ``sum`` start from ``0``."""
        return self if other == 0 else self + other  # type: ignore[operator]


class ReasoningResult(BaseModel):
    """The answer of the enforced model to one reasoning call.

    ``result["content"]`` works as with the original module's dict; every field is also an attribute.

    Attributes:
        content: The model's answer text.
        model: The model that answered (checked against ``ARCANOS_FINE_TUNED_MODEL``).
        response_id: The completion's id (``chatcmpl-...`` or ``resp_...``).
        request_id: The upstream ``x-request-id``, for support tickets.
        finish_reason: Why generation stopped (``stop`` for a complete answer).
        usage: Tokens spent.
        metadata: The audit metadata of the request, exactly as sent (or as it would have been sent,
            with ``stored=False``).
        stored: Whether the request asked OpenAI to store it (``store=true``, sent with the metadata
            when ``ARCANOS_STORE`` is true and there is metadata to send).
        latency_ms: Wall time of the call including SDK retries, in milliseconds.
        attempts: HTTP attempts the call took (1 without retries).
        api: ``chat`` or ``responses``.

    Examples:
        >>> result = ReasoningResult(content="Three layers.", model="ft:gpt-5.1:arcanos::abc",
        ...                          response_id="chatcmpl-1", api="chat")
        >>> result["content"]
        'Three layers.'
        >>> "content" in result, result.get("missing", "n/a")
        (True, 'n/a')
    """

    model_config = ConfigDict(frozen=True)

    content: str
    model: str
    response_id: str
    request_id: str | None = None
    finish_reason: str | None = "stop"
    usage: Usage = Field(default_factory=Usage)
    metadata: dict[str, str] = Field(default_factory=dict)
    stored: bool = True
    latency_ms: float = 0.0
    attempts: int = 1
    api: Literal["chat", "responses"] = "chat"

    def __getitem__(self, key: str) -> Any:
        """Read a field by name, as the original module's dict result allowed."""
        if key not in type(self).model_fields:
            raise KeyError(key)
        return getattr(self, key)

    def __contains__(self, key: object) -> bool:
        """``"content" in result`` is true, as it was for the original module's dict result."""
        return isinstance(key, str) and key in type(self).model_fields

    def get(self, key: str, default: Any = None) -> Any:
        """Read a field by name with a default, like ``dict.get``."""
        try:
            return self[key]
        except KeyError:
            return default
