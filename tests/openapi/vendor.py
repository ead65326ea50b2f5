"""Regenerate ``openai-schemas.json``: the schemas these tests validate against, with everything they reference.

OpenAI's full OpenAPI description is 3.4 MB; the tests need ~300 of its 1400 schemas. Run from the repo root with
the path of a full ``openapi.json`` (openai/openai-openapi, MIT licence)::

    python tests/openapi/vendor.py ../shared/openai-openapi/openapi.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOTS = (
    "CreateChatCompletionRequest",
    "CreateChatCompletionResponse",
    "CreateResponse",
    "Response",
    "Metadata",
    "Model",
    "ListModelsResponse",
    "ErrorResponse",
    "Batch",
    "CreateBatchRequest",
    "OpenAIFile",
    "ListBatchesResponse",
    "DeleteFileResponse",
)
PREFIX = "#/components/schemas/"


def closure(schemas: dict[str, Any]) -> dict[str, Any]:
    """The root schemas and every schema they reach through ``$ref``."""
    seen: set[str] = set()
    pending = list(ROOTS)
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        stack: list[Any] = [schemas[name]]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                ref = node.get("$ref")
                if isinstance(ref, str) and ref.startswith(PREFIX):
                    pending.append(ref.removeprefix(PREFIX))
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)
    return {name: schemas[name] for name in sorted(seen)}


def main(source: str) -> None:
    spec = json.loads(Path(source).read_text(encoding="utf-8"))
    subset = {
        "openapi": spec["openapi"],
        "info": {**spec["info"], "x-vendored": "schema subset for arcanos-flows tests (tests/openapi/vendor.py)"},
        "components": {"schemas": closure(spec["components"]["schemas"])},
    }
    target = Path(__file__).with_name("openai-schemas.json")
    target.write_text(json.dumps(subset, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {len(subset['components']['schemas'])} schemas to {target}")


if __name__ == "__main__":
    main(sys.argv[1])
