"""Structured output: an ``output_type`` becomes a strict JSON schema to send, and the answer a validated instance.

The schema is made strict by the OpenAI SDK's own helper (every property required, ``additionalProperties: false``,
references expanded where needed), then checked for what strict mode cannot express (free-form mappings). A type
whose schema is not an object (``list[str]``, ``int``, a union) is sent wrapped in ``{"result": ...}`` and unwrapped
after validation. An answer that does not validate is asked again, up to ``output_retries`` times, with the
validation problem (never the answer's values) sent back to the model.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from openai.lib._pydantic import to_strict_json_schema
from pydantic import PydanticSchemaGenerationError, TypeAdapter, ValidationError, create_model

from arcanos_flows.core.errors import InvalidOutputError, InvalidReasoningInput
from arcanos_flows.core.results import ReasoningResult, Usage, output_type_name, register_output_type

__all__ = ["DEFAULT_OUTPUT_RETRIES", "OutputAttempts", "OutputSpec", "check_output_options", "describe", "output_spec"]

DEFAULT_OUTPUT_RETRIES = 1
"""Re-asks after an answer that does not validate, by default (each one is billed)."""
MAX_OUTPUT_RETRIES = 5
_NAME = re.compile(r"[^A-Za-z0-9_-]")
REASK = (
    "Your previous answer does not match the required JSON schema: {problem}. "
    "Answer again with only a JSON value that matches the schema."
)
_specs: dict[Any, OutputSpec] = {}
_specs_lock = threading.Lock()


@dataclass(frozen=True)
class OutputSpec:
    """What a call with ``output_type`` sends and how its answer is read.

    Attributes:
        output_type: The type asked for.
        name: Its recorded name (``module.QualName``).
        response_format: The Chat Completions ``response_format`` (translated for the Responses API).
        wrapped: Whether the schema wraps a non-object type in ``{"result": ...}``.
    """

    output_type: Any
    name: str
    response_format: dict[str, Any]
    wrapped: bool
    adapter: TypeAdapter[Any] = field(repr=False)

    def parse(self, content: str) -> Any:
        """The answer as an instance of the type.

        Raises:
            pydantic.ValidationError: Not JSON, or not valid for the type.
        """
        value = self.adapter.validate_json(content)
        return value.result if self.wrapped else value


def output_spec(output_type: Any) -> OutputSpec:
    """The (cached) spec of ``output_type``; raises before any request when it cannot be sent strictly.

    Raises:
        InvalidReasoningInput: Not a type pydantic can validate, or its schema cannot be strict.

    Examples:
        >>> from pydantic import BaseModel
        >>> class Plan(BaseModel):
        ...     questions: list[str]
        >>> spec = output_spec(Plan)
        >>> spec.response_format["json_schema"]["strict"], spec.parse('{"questions": ["Who?"]}').questions
        (True, ['Who?'])
        >>> output_spec(list[str]).parse('{"result": ["a", "b"]}')
        ['a', 'b']
    """
    try:
        with _specs_lock:
            known = _specs.get(output_type)
    except TypeError:  # unhashable: not a type
        known = None
    if known is not None:
        return known
    spec = _build(output_type)
    with _specs_lock:
        _specs[output_type] = spec
    return spec


def _build(output_type: Any) -> OutputSpec:
    name = output_type_name(output_type)
    try:
        adapter: TypeAdapter[Any] = TypeAdapter(output_type)
        schema = adapter.json_schema()
    except (PydanticSchemaGenerationError, TypeError, ValueError) as exc:
        raise InvalidReasoningInput(
            f"output_type: {name} is not a type pydantic can validate and describe as JSON schema "
            f"({type(exc).__name__}); use a pydantic model, a dataclass or a typing type"
        ) from None
    wrapped = schema.get("type") != "object"
    if wrapped:
        adapter = TypeAdapter(create_model("Output", result=(output_type, ...)))
    try:
        strict = to_strict_json_schema(adapter)
    except (TypeError, ValueError) as exc:
        raise InvalidReasoningInput(f"output_type: the JSON schema of {name} cannot be made strict: {exc}") from None
    problem = _not_strict(strict, "$")
    if problem:
        raise InvalidReasoningInput(
            f"output_type: the JSON schema of {name} cannot be strict ({problem}): OpenAI's structured outputs "
            "need every object to list its properties (no free-form dict fields); use a model with named fields"
        )
    title = output_type.__name__ if isinstance(output_type, type) else "output"
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": _NAME.sub("_", title)[:64] or "output", "schema": strict, "strict": True},
    }
    register_output_type(output_type)
    return OutputSpec(output_type, name, response_format, wrapped, adapter)


def _not_strict(schema: Any, path: str) -> str | None:
    """Where the schema asks for something strict mode cannot express, if anywhere."""
    if isinstance(schema, Mapping):
        if schema.get("type") == "object" or "properties" in schema:
            if schema.get("additionalProperties", False) is not False:
                return f"{path} is a mapping with free-form keys"
            if "patternProperties" in schema:
                return f"{path} has patternProperties"
        for key, value in schema.items():
            found = _not_strict(value, f"{path}.{key}")
            if found:
                return found
    elif isinstance(schema, list):
        for index, value in enumerate(schema):
            found = _not_strict(value, f"{path}[{index}]")
            if found:
                return found
    return None


def check_output_options(output_type: Any, output_retries: int, response_format: object) -> OutputSpec | None:
    """Check ``output_type`` and ``output_retries`` before any request; the spec to use, if any.

    Raises:
        InvalidReasoningInput: A bad re-ask count, both ``output_type`` and ``response_format``, or a bad type.
    """
    if (
        isinstance(output_retries, bool)
        or not isinstance(output_retries, int)
        or not (0 <= output_retries <= MAX_OUTPUT_RETRIES)
    ):
        raise InvalidReasoningInput(f"output_retries: must be an integer from 0 to {MAX_OUTPUT_RETRIES}")
    if output_type is None:
        return None
    if response_format is not None:
        raise InvalidReasoningInput(
            "output_type and response_format: give one of them (output_type sends its own strict json_schema)"
        )
    return output_spec(output_type)


def describe(error: ValidationError) -> str:
    """The validation problem in a few words, without the values the answer held (they may be anything)."""
    problems = []
    for entry in error.errors(include_url=False, include_input=False, include_context=False)[:5]:
        where = ".".join(str(part) for part in entry["loc"] if part != "result") or "the answer"
        problems.append(f"{where}: {entry['msg']}")
    more = error.error_count() - len(problems)
    return "; ".join(problems) + (f" (and {more} more)" if more > 0 else "")


@dataclass
class OutputAttempts:
    """The tries of one call with ``output_type``: validates each answer, or builds the re-ask, or gives up."""

    spec: OutputSpec
    messages: Sequence[Mapping[str, Any]]
    left: int
    usage: Usage = field(default_factory=Usage)
    attempts: int = 0
    started: float = field(default_factory=time.perf_counter)

    def settle(self, result: ReasoningResult) -> ReasoningResult | None:
        """The typed result, or ``None`` when the answer is to be asked again (with :attr:`messages`).

        Raises:
            InvalidOutputError: The answer did not validate and no re-ask is left.
        """
        self.usage = self.usage + result.usage
        self.attempts += result.attempts
        try:
            output = self.spec.parse(result.content)
        except ValidationError as exc:
            problem = describe(exc)
            if self.left <= 0:
                raise InvalidOutputError(
                    f"the answer is not a valid {self.spec.name} after {self.attempts} attempt(s): {problem}",
                    output_type=self.spec.name,
                    problem=problem,
                    usage_tokens=self.usage.total_tokens,
                    request_id=result.request_id,
                    attempts=self.attempts,
                ) from None
            self.left -= 1
            self.messages = [
                *self.messages,
                {"role": "assistant", "content": result.content},
                {"role": "user", "content": REASK.format(problem=problem)},
            ]
            return None
        return result.model_copy(
            update={
                "output": output,
                "output_type": self.spec.name,
                "usage": self.usage,
                "attempts": self.attempts,
                "latency_ms": round((time.perf_counter() - self.started) * 1000, 3),
            }
        )
