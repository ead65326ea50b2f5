"""The fake OpenAI server as a gateway: LiteLLM-like headers, or Azure OpenAI's paths, query and key header.

``FakeOpenAIServer(gateway="litellm")`` answers on OpenAI's paths as a LiteLLM proxy does: the body's ``model`` is
the name the request carried, and the model that answered is reported in ``x-litellm-model-name`` (with the
``openai/`` provider prefix), beside ``x-litellm-model-group``, ``x-litellm-model-id``,
``x-litellm-attempted-fallbacks``, ``x-litellm-call-id`` and the upstream's id as ``llm_provider-x-request-id``.
``FakeOpenAIServer(gateway="azure")`` answers on Azure OpenAI's paths instead (:data:`AZURE_ROUTES`), with the
checks Azure makes before anything else (:func:`azure_refusal`).
"""

from __future__ import annotations

import uuid
from typing import Literal

from arcanos_flows.testing._chat import chat_completion
from arcanos_flows.testing._http import dump_json
from arcanos_flows.testing._replies import RecordedRequest, Reply
from arcanos_flows.testing._responses import response_object
from arcanos_flows.testing._routes import Route, completion_route

__all__ = ["AZURE_ROUTES", "GATEWAYS", "Gateway", "azure_refusal", "litellm_headers"]

Gateway = Literal["litellm", "azure"]
GATEWAYS: tuple[Gateway, ...] = ("litellm", "azure")
"""The gateways the fake server can act as."""

PRIMARY_DEPLOYMENT = "primary-deployment"
"""The ``x-litellm-model-id`` of an answer that did not fall back."""

_DEPLOYMENT = r"/openai/deployments/(?P<deployment>[^/]+)"
AZURE_ROUTES: tuple[Route, ...] = (
    completion_route("", chat_completion, pattern=_DEPLOYMENT + r"/chat/completions"),
    completion_route("", response_object, pattern=_DEPLOYMENT + r"/responses"),
    completion_route("/openai/responses", response_object),
    completion_route("/openai/v1/chat/completions", chat_completion),
    completion_route("/openai/v1/responses", response_object),
)
"""Azure OpenAI's completion endpoints: by deployment (``?api-version=``), Responses, and the ``/openai/v1`` API."""


def _azure_error(status: int, code: str, message: str) -> tuple[int, bytes]:
    return status, dump_json({"error": {"code": code, "message": message}})


def azure_refusal(request: RecordedRequest, path: str) -> tuple[int, bytes] | None:
    """What Azure answers before routing: 401 without an ``api-key`` header, 404 without ``api-version``.

    The ``/openai/v1`` API needs no ``api-version``, and takes the key as ``api-key`` or as a bearer token.

    Args:
        request: The request.
        path: Its normalized path.

    Returns:
        The status and body of the refusal, or ``None`` when the request may go on.

    Examples:
        >>> path = "/openai/deployments/prod/chat/completions"
        >>> azure_refusal(RecordedRequest("POST", path, {"api-key": "k"}, b"", None, 0), path)[0]
        404
    """
    v1 = path.startswith("/openai/v1/")
    bearer = request.headers.get("authorization", "").startswith("Bearer ")
    if not request.headers.get("api-key") and not (v1 and bearer):
        return _azure_error(
            401,
            "401",
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key "
            "for an active subscription and use a correct regional API endpoint for your resource.",
        )
    if not v1 and "api-version=" not in request.path.partition("?")[2]:
        return _azure_error(404, "404", "Resource not found")
    return None


def litellm_headers(requested: str, reply: Reply, answered: str, number: int) -> dict[str, str]:
    """The headers a LiteLLM proxy adds to a successful completion (the upstream's id among them).

    Args:
        requested: The name the request carried (the proxy's ``model_name``).
        reply: The reply (its ``fallbacks``, ``deployment`` and ``model_group``).
        answered: The model that answered.
        number: The request's number: the upstream's id is ``req_<number>``.

    Returns:
        The headers.

    Examples:
        >>> headers = litellm_headers("arcanos", Reply.fallback(deployment="backup"), "ft:m", 3)
        >>> headers["x-litellm-model-name"], headers["x-litellm-attempted-fallbacks"], headers["x-litellm-model-id"]
        ('openai/ft:m', '1', 'backup')
    """
    group = reply.model_group or (f"{requested}-fallback" if reply.fallbacks else requested)
    return {
        "x-litellm-model-name": f"openai/{answered}",
        "x-litellm-model-group": group,
        "x-litellm-model-id": reply.deployment or PRIMARY_DEPLOYMENT,
        "x-litellm-attempted-fallbacks": str(reply.fallbacks),
        "x-litellm-attempted-retries": "0",
        "x-litellm-call-id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"arcanos-fake-litellm/{number}")),
        "llm_provider-x-request-id": f"req_{number}",
    }
