"""Validate JSON bodies against ``components.schemas`` of OpenAI's OpenAPI 3.1 description.

The schemas are vendored in ``tests/openapi/openai-schemas.json`` (the schemas the tests use and all they
reference, cut from the official spec by ``tests/openapi/vendor.py``); set ``ARCANOS_OPENAPI_SPEC`` to validate
against a full copy instead. The file is read once, on first use, and one validator per schema name is kept.

Example:
    >>> validate({"id": "m", "object": "model", "created": 0, "owned_by": "me"}, "Model")
"""

from __future__ import annotations

import json
import os
import threading
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

__all__ = ["schema_names", "spec_path", "validate", "validator_for"]

# The spec's internal refs ("#/components/schemas/X") resolve against this made-up base URI.
_SPEC_URI = "urn:arcanos:openai-openapi"
_load_lock = threading.Lock()


def spec_path() -> Path:
    """Where the OpenAPI spec is read from (``ARCANOS_OPENAPI_SPEC`` overrides the default)."""
    override = os.environ.get("ARCANOS_OPENAPI_SPEC")
    if override:
        return Path(override)
    return Path(__file__).resolve().parent / "openapi" / "openai-schemas.json"


@cache
def _spec() -> dict[str, Any]:
    path = spec_path()
    if not path.is_file():
        raise FileNotFoundError(f"OpenAI OpenAPI spec not found at {path} (set ARCANOS_OPENAPI_SPEC)")
    with path.open(encoding="utf-8") as handle:
        return json.load(handle)


@cache
def _registry() -> Registry:
    resource = Resource.from_contents(_spec(), default_specification=DRAFT202012)
    return Registry().with_resource(_SPEC_URI, resource)


def schema_names() -> list[str]:
    """Every name under ``components.schemas``."""
    with _load_lock:
        return sorted(_spec()["components"]["schemas"])


@cache
def _validator(schema_name: str) -> Draft202012Validator:
    if schema_name not in _spec()["components"]["schemas"]:
        raise KeyError(f"no schema {schema_name!r} in {spec_path()}")
    schema = {"$ref": f"{_SPEC_URI}#/components/schemas/{schema_name}"}
    return Draft202012Validator(schema, registry=_registry())


def validator_for(schema_name: str) -> Draft202012Validator:
    """The (cached) validator of ``components.schemas[schema_name]``."""
    # functools.cache does not stop two threads from loading the 3.4 MB spec at the same time.
    with _load_lock:
        return _validator(schema_name)


def validate(instance: Any, schema_name: str) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``instance`` is valid against the named schema.

    Args:
        instance: A decoded JSON value.
        schema_name: A key of ``components.schemas``, e.g. ``"CreateChatCompletionResponse"``.

    Raises:
        jsonschema.ValidationError: The instance is invalid (the most relevant error).
        KeyError: The spec has no such schema.
        FileNotFoundError: The spec file is missing.
    """
    validator_for(schema_name).validate(instance)
