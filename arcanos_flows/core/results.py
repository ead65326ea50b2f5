"""What a successful reasoning call returns: typed, JSON-serialisable, and readable like the original dict."""

from __future__ import annotations

import importlib
import threading
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationInfo, field_serializer, field_validator

from arcanos_flows.core.pricing import Pricing
from arcanos_flows.core.redaction import redact_data

__all__ = ["GatewayRoute", "ReasoningResult", "Usage", "output_type_name", "register_output_type"]


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
    cost_usd: float | None = None
    """What the tokens cost in USD, from the ``ARCANOS_PRICE_*`` settings; ``None`` when no price is set."""

    def priced(self, pricing: Pricing | None) -> Usage:
        """This usage with its cost at ``pricing`` (``None`` without prices).

        Examples:
            >>> from arcanos_flows.core.pricing import Pricing
            >>> prices = Pricing(input_per_mtok=1, output_per_mtok=8)
            >>> Usage(input_tokens=2_000, output_tokens=500).priced(prices).cost_usd
            0.006
        """
        if pricing is None:
            return self.model_copy(update={"cost_usd": None})
        cost = pricing.cost(
            input_tokens=self.input_tokens, cached_tokens=self.cached_tokens, output_tokens=self.output_tokens
        )
        return self.model_copy(update={"cost_usd": cost})

    def __add__(self, other: Usage) -> Usage:
        """Sum two usages, so a flow can total its steps with ``sum(..., Usage())``.

        The cost is the sum of both; unknown (``None``) when a usage that spent tokens has no cost.

        Examples:
            >>> (Usage(total_tokens=10, cost_usd=0.01) + Usage(total_tokens=5, cost_usd=0.02)).cost_usd
            0.03
            >>> (Usage(total_tokens=10, cost_usd=0.01) + Usage(total_tokens=5)).cost_usd is None
            True
        """
        costs = [usage.cost_usd for usage in (self, other) if usage.cost_usd is not None or usage.total_tokens]
        cost = None if not costs or None in costs else round(sum(c for c in costs if c is not None), 10)
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
            cost_usd=cost,
        )

    def __radd__(self, other: int | Usage) -> Usage:
        """Let the builtin ``sum`` start from ``0``."""
        return self if other == 0 else self + other  # type: ignore[operator]


class GatewayRoute(BaseModel):
    """How a gateway in front of OpenAI routed one call (``ARCANOS_GATEWAY``): what it was asked, what it reports.

    Attributes:
        gateway: ``litellm`` or ``azure``.
        requested_model: The name the request carried (``ARCANOS_GATEWAY_MODEL``: alias or Azure deployment).
        reported_model: What the gateway reports answered, as sent (LiteLLM's ``x-litellm-model-name``,
            e.g. ``openai/ft:...``); the verified model is the result's ``model``.
        model_group: The group that answered (LiteLLM's ``x-litellm-model-group``; after a fallback, the fallback's).
        deployment: The deployment that answered (LiteLLM's ``x-litellm-model-id``; the Azure deployment name).
        fallbacks: Fallbacks the gateway attempted before this answer (``x-litellm-attempted-fallbacks``); more
            than 0 means the primary deployment failed.
        call_id: The gateway's id of the call (``x-litellm-call-id``), to find it in the gateway's logs.

    Examples:
        >>> route = GatewayRoute(gateway="litellm", requested_model="arcanos", fallbacks=1, deployment="backup")
        >>> route.fallbacks, route.deployment
        (1, 'backup')
    """

    model_config = ConfigDict(frozen=True)

    gateway: Literal["litellm", "azure"]
    requested_model: str
    reported_model: str | None = None
    model_group: str | None = None
    deployment: str | None = None
    fallbacks: int = 0
    call_id: str | None = None


class ReasoningResult(BaseModel):
    """The answer of the enforced model to one reasoning call.

    ``result["content"]`` works as with the original module's dict; every field is also an attribute.

    Attributes:
        content: The model's answer text.
        model: The model that answered (checked against ``ARCANOS_FINE_TUNED_MODEL``); behind a gateway, the model
            it reports answered (never the alias the request carried).
        response_id: The completion's id (``chatcmpl-...`` or ``resp_...``).
        request_id: The upstream ``x-request-id`` (behind LiteLLM, the upstream's, ``llm_provider-x-request-id``),
            for support tickets.
        finish_reason: Why generation stopped (``stop`` for a complete answer).
        usage: Tokens spent.
        metadata: The audit metadata of the request, exactly as sent (or as it would have been sent,
            with ``stored=False``).
        stored: Whether the request asked OpenAI to store it (``store=true``, sent with the metadata
            when ``ARCANOS_STORE`` is true and there is metadata to send).
        latency_ms: Wall time of the call including SDK retries, in milliseconds.
        attempts: HTTP attempts the call took (1 without retries).
        api: ``chat`` or ``responses``.
        output_type: With ``output_type=`` asked for, the type's name (``module.QualName``).
        output: With ``output_type=`` asked for, the answer validated as that type (``content`` stays the text).
        gateway: Behind a gateway (``ARCANOS_GATEWAY``), how it routed the call: the alias asked for, the deployment
            that answered, the fallbacks it attempted; ``None`` without one.

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
    output_type: str | None = None
    output: Any = None
    gateway: GatewayRoute | None = None

    @field_serializer("metadata")
    def _masked_metadata(self, metadata: dict[str, str]) -> Any:
        # Serialised (result storage, `--json`, artifacts), the metadata shows no secret: the confirmation token and
        # any registered secret are masked. The object itself keeps what was sent.
        return redact_data(metadata)

    @field_validator("output")
    @classmethod
    def _typed_again(cls, output: Any, info: ValidationInfo) -> Any:
        # A result read back from JSON (Prefect's result serializer, a cache hit) holds the output as plain data:
        # validated again as its type, it is the same typed instance the step returned.
        name = info.data.get("output_type")
        output_type = _resolve_output_type(name) if name else None
        if output_type is None or output is None:
            return output
        if isinstance(output_type, type) and isinstance(output, output_type):
            return output
        return _adapter(output_type).validate_python(output)

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


_output_types: dict[str, Any] = {}
_adapters: dict[Any, TypeAdapter[Any]] = {}
_registry_lock = threading.Lock()


def output_type_name(output_type: Any) -> str:
    """The name a result records for its ``output_type``: ``module.QualName`` of a class, else the type's repr.

    Examples:
        >>> output_type_name(Usage), output_type_name(list[str])
        ('arcanos_flows.core.results.Usage', 'list[str]')
    """
    if isinstance(output_type, type):
        return f"{output_type.__module__}.{output_type.__qualname__}"
    return repr(output_type)


def register_output_type(output_type: Any) -> str:
    """Remember ``output_type`` by its name, so results read back in this process become instances again.

    Returns:
        The name (see :func:`output_type_name`).

    Examples:
        >>> register_output_type(Usage)
        'arcanos_flows.core.results.Usage'
    """
    name = output_type_name(output_type)
    with _registry_lock:
        _output_types[name] = output_type
    return name


def _adapter(output_type: Any) -> TypeAdapter[Any]:
    with _registry_lock:
        adapter = _adapters.get(output_type)
    if adapter is None:
        adapter = TypeAdapter(output_type)
        with _registry_lock:
            _adapters[output_type] = adapter
    return adapter


def _resolve_output_type(name: str) -> Any:
    # Registered in this process (any type, a local class included), else a class importable by its name (another
    # process reading the result). Anything else stays plain data.
    with _registry_lock:
        known = _output_types.get(name)
    if known is not None:
        return known
    if "<locals>" in name or "." not in name:
        return None
    for split in range(name.count("."), 0, -1):
        module_name, qualname = ".".join(name.split(".")[:split]), ".".join(name.split(".")[split:])
        try:
            found: Any = importlib.import_module(module_name)
        except ImportError:
            continue
        for part in qualname.split("."):
            found = getattr(found, part, None)
        if isinstance(found, type):
            register_output_type(found)
            return found
        return None
    return None
