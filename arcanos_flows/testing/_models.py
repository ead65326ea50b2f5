"""The Models API in the fake OpenAI server: ``GET /v1/models`` and ``GET /v1/models/{model}``.

A lookup answers the id it was asked for (fine-tuned ids contain colons and may arrive percent-encoded;
slashes stay part of the id). The list names the last model a request named (the server's
``DEFAULT_MODEL`` before any did) and the model override, if any.
"""

from __future__ import annotations

from typing import Any

from arcanos_flows.testing._http import dump_json
from arcanos_flows.testing._routes import Call, Route

__all__ = ["MODEL_CREATED", "ROUTES", "model_object"]

MODEL_CREATED = 1_700_000_000
"""The ``created`` timestamp of every model."""


def model_object(model_id: str) -> dict[str, Any]:
    """Return the ``model`` object of ``model_id``.

    Examples:
        >>> model_object("gpt-5.1")
        {'id': 'gpt-5.1', 'object': 'model', 'created': 1700000000, 'owned_by': 'arcanos-fake'}
    """
    return {"id": model_id, "object": "model", "created": MODEL_CREATED, "owned_by": "arcanos-fake"}


def _list_models(call: Call) -> tuple[int, bytes]:
    models = [model_object(model) for model in call.server._listed_models()]
    return call.reply.status, dump_json({"object": "list", "data": models})


def _retrieve_model(call: Call) -> tuple[int, bytes]:
    model_id = call.params["model"]
    call.server._seen_model(model_id)
    return call.reply.status, dump_json(model_object(model_id))


ROUTES: tuple[Route, ...] = (
    Route("GET", r"/v1/models", _list_models),
    Route("GET", r"/v1/models/(?P<model>.+)", _retrieve_model),
)
"""The list of models and a model's lookup."""
