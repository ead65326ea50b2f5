"""Behind a gateway (``ARCANOS_GATEWAY``): what the gateway reports answered, and how to reach Azure OpenAI.

A LiteLLM proxy rewrites the answer's ``model`` to the name the request carried, so the body cannot say which model
answered; the proxy's own headers do (``x-litellm-model-name``, ``x-litellm-attempted-fallbacks``, ...). This module
reads them into a :class:`~arcanos_flows.core.results.GatewayRoute`; the client (:mod:`arcanos_flows.client._base`)
checks the model it names as it checks a body's. Azure OpenAI takes the deployment in the URL and the key in an
``api-key`` header: :func:`sdk_client` says which SDK client to build and with what.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any, Literal

from arcanos_flows.core.redaction import redact
from arcanos_flows.core.results import GatewayRoute
from arcanos_flows.core.settings import ArcanosSettings
from arcanos_flows.core.upstream import IDENTITY_ENCODING

__all__ = [
    "LITELLM_FALLBACKS_HEADER",
    "LITELLM_MODEL_HEADER",
    "attach_route",
    "attached_route",
    "read_route",
    "route_context",
    "sdk_client",
    "verified_name",
]

LITELLM_MODEL_HEADER = "x-litellm-model-name"
"""The model LiteLLM called (its ``litellm_params.model``, e.g. ``openai/ft:gpt-4o-mini:org::id``)."""
LITELLM_FALLBACKS_HEADER = "x-litellm-attempted-fallbacks"
"""How many fallbacks LiteLLM tried before the answer; more than 0 means the primary deployment failed."""
_LITELLM_GROUP_HEADER = "x-litellm-model-group"
_LITELLM_DEPLOYMENT_HEADER = "x-litellm-model-id"
_LITELLM_CALL_HEADER = "x-litellm-call-id"
# Header values come from whatever answered: bounded and redacted before they reach a result or an incident.
_MAX_HEADER_VALUE = 256
_ROUTE = "_arcanos_gateway_route"


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None or not value.strip():
        return None
    return redact(value.strip()[:_MAX_HEADER_VALUE])


def _count(value: str | None) -> int:
    try:
        return max(0, int(value or "0"))
    except ValueError:
        return 0


def read_route(headers: Mapping[str, str], settings: ArcanosSettings) -> GatewayRoute | None:
    """What the gateway says of an answer, or ``None`` when no gateway is configured or recognised.

    ``auto`` and ``litellm`` read LiteLLM's headers when the answer carries ``x-litellm-model-name``; ``azure``
    records the deployment asked for. ``none`` (and ``auto`` without the header) reads nothing: the body is checked.

    Examples:
        >>> settings = ArcanosSettings(openai_api_key="sk-x", fine_tuned_model="ft:m", gateway_model="arcanos",
        ...                            _env_file=None)
        >>> route = read_route({"x-litellm-model-name": "openai/ft:m", "x-litellm-attempted-fallbacks": "1"}, settings)
        >>> route.reported_model, route.fallbacks
        ('openai/ft:m', 1)
    """
    if settings.gateway == "azure":
        deployment = settings.requested_model
        return GatewayRoute(gateway="azure", requested_model=deployment, deployment=deployment)
    if settings.gateway == "none":
        return None
    reported = _header(headers, LITELLM_MODEL_HEADER)
    if reported is None:
        return None
    return GatewayRoute(
        gateway="litellm",
        requested_model=settings.requested_model,
        reported_model=reported,
        model_group=_header(headers, _LITELLM_GROUP_HEADER),
        deployment=_header(headers, _LITELLM_DEPLOYMENT_HEADER),
        fallbacks=_count(headers.get(LITELLM_FALLBACKS_HEADER)),
        call_id=_header(headers, _LITELLM_CALL_HEADER),
    )


def verified_name(reported: str, configured: str) -> str:
    """The model a LiteLLM report names, without the provider prefix LiteLLM adds (``openai/``).

    The prefix is kept when the configured model itself starts with it (a model id may contain ``/``).

    Examples:
        >>> verified_name("openai/ft:gpt-4o-mini:arcanos::x", "ft:gpt-4o-mini:arcanos::x")
        'ft:gpt-4o-mini:arcanos::x'
        >>> verified_name("openai/gpt-4o-mini", "ft:gpt-4o-mini:arcanos::x")
        'gpt-4o-mini'
        >>> verified_name("gpt-4o-mini", "gpt-4o-mini")
        'gpt-4o-mini'
    """
    provider, slash, rest = reported.partition("/")
    if not slash or not rest or configured.startswith(f"{provider}/"):
        return reported
    return rest


def route_context(route: GatewayRoute) -> dict[str, Any]:
    """The incident ``context["gateway"]`` of a call a gateway routed (what it reports, its call id).

    Examples:
        >>> route_context(GatewayRoute(gateway="litellm", requested_model="arcanos", call_id="c-1"))
        {'name': 'litellm', 'requested_model': 'arcanos', 'fallbacks': 0, 'call_id': 'c-1'}
    """
    shown = {"name": route.gateway, **route.model_dump(exclude={"gateway"}, exclude_none=True)}
    return shown


def attach_route(error: BaseException, route: GatewayRoute | None) -> None:
    """Record on an exception the route of the answer it was raised for, for its incident's context."""
    if route is not None:
        with contextlib.suppress(AttributeError, TypeError):
            setattr(error, _ROUTE, route)


def attached_route(error: BaseException) -> GatewayRoute | None:
    """The route :func:`attach_route` recorded on this exception, if any.

    Examples:
        >>> error = RuntimeError("boom")
        >>> attach_route(error, GatewayRoute(gateway="azure", requested_model="prod"))
        >>> attached_route(error).requested_model
        'prod'
    """
    route = getattr(error, _ROUTE, None)
    return route if isinstance(route, GatewayRoute) else None


def sdk_client(settings: ArcanosSettings) -> tuple[Literal["openai", "azure"], dict[str, Any]]:
    """Which SDK client to build (``OpenAI`` or ``AzureOpenAI``, or their async twins), with its options.

    With ``ARCANOS_GATEWAY=azure`` and ``ARCANOS_AZURE_API_VERSION`` set, the SDK's Azure client sends Chat
    Completions to ``/openai/deployments/{deployment}/chat/completions?api-version=...`` (the deployment is the
    body's ``model``) and Responses to ``/openai/responses?api-version=...``, the key in ``api-key``. Without a
    version, the plain client speaks Azure's ``/openai/v1`` API (the key in ``api-key`` and as a bearer token, as
    Azure's v1 documentation has it). Everything else keeps the plain client at ``OPENAI_BASE_URL``.

    Examples:
        >>> settings = ArcanosSettings(openai_api_key="sk-x", fine_tuned_model="ft:m", gateway="azure",
        ...                            openai_base_url="https://arcanos.openai.azure.com", _env_file=None)
        >>> kind, options = sdk_client(settings)
        >>> kind, options["base_url"]
        ('openai', 'https://arcanos.openai.azure.com/openai/v1')
    """
    key = settings.openai_api_key.get_secret_value()
    options: dict[str, Any] = {
        "api_key": key,
        "timeout": settings.request_timeout,
        "max_retries": settings.max_retries,
        "default_headers": dict(IDENTITY_ENCODING),
    }
    if settings.gateway != "azure":
        return "openai", {**options, "base_url": settings.openai_base_url}
    endpoint = (settings.openai_base_url or "").rstrip("/")
    if settings.azure_api_version is not None:
        return "azure", {**options, "azure_endpoint": endpoint, "api_version": settings.azure_api_version}
    options["default_headers"]["api-key"] = key
    return "openai", {**options, "base_url": f"{endpoint}/openai/v1"}
