"""The input contract for reasoning calls: messages and generation options, checked before any request.

A violation raises :class:`~arcanos_flows.errors.InvalidReasoningInput` naming the offending index and
field, so a bad step fails at once instead of spending a request.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypedDict, get_args

from typing_extensions import NotRequired

from arcanos_flows.core.errors import InvalidReasoningInput
from arcanos_flows.core.metadata import is_utf8_encodable

__all__ = [
    "ROLES",
    "Message",
    "ReasoningEffort",
    "check_messages",
    "check_options",
    "fingerprint",
    "plain_json",
]

Role = Literal["system", "developer", "user", "assistant"]
ROLES: tuple[str, ...] = get_args(Role)
ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh"]
_EFFORTS: tuple[str, ...] = get_args(ReasoningEffort)
_RESPONSE_FORMATS = ("text", "json_object", "json_schema")


_MAX_JSON_DEPTH = 64


def _json_problem(value: Any, where: str, depth: int = 0) -> str | None:
    """Why ``value`` is not plain JSON data (naming the path of the first offending part), or ``None``."""
    if depth > _MAX_JSON_DEPTH:
        return f"{where}: nested more than {_MAX_JSON_DEPTH} levels deep"
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        return (
            None if is_utf8_encodable(value) else f"{where}: contains a lone surrogate, which is not valid Unicode text"
        )
    if isinstance(value, int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{where}: {float(value)!r} is not a JSON number"
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str) or not is_utf8_encodable(key):
                return f"{where}: keys must be strings, not {type(key).__name__}"
            problem = _json_problem(item, f"{where}.{key}", depth + 1)
            if problem:
                return problem
        return None
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            problem = _json_problem(item, f"{where}[{index}]", depth + 1)
            if problem:
                return problem
        return None
    return f"{where}: {type(value).__name__} is not JSON data (use dicts, lists, strings, numbers, booleans, None)"


def plain_json(value: Any) -> Any:
    """A copy of checked JSON data as plain dicts and lists, exactly what will be serialised.

    Examples:
        >>> plain_json({"type": "json_schema", "json_schema": {"name": "n", "strict": (True,)}})
        {'type': 'json_schema', 'json_schema': {'name': 'n', 'strict': [True]}}
    """
    if isinstance(value, Mapping):
        return {str.__str__(key): plain_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_json(item) for item in value]
    if isinstance(value, str):
        return str.__str__(value)
    return value


class Message(TypedDict):
    """One chat message: ``{"role": "user", "content": "..."}`` (``name`` optional)."""

    role: Role
    content: str
    name: NotRequired[str]


def check_messages(messages: Any) -> list[Message]:
    """Check the messages of one reasoning call and return them as plain dicts.

    Args:
        messages: A non-empty sequence of mappings with ``role`` in system/developer/user/assistant and
            a non-empty string ``content`` (optionally a string ``name``).

    Returns:
        A copy of the messages as a list of dicts, safe to send.

    Raises:
        InvalidReasoningInput: Naming the offending index and field.

    Examples:
        >>> check_messages([{"role": "user", "content": "Hello"}])
        [{'role': 'user', 'content': 'Hello'}]
        >>> check_messages([{"role": "robot", "content": "Hi"}])  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        arcanos_flows.errors.InvalidReasoningInput: messages[0].role: ...
    """
    if isinstance(messages, (str, bytes, bytearray, memoryview, Mapping)) or not isinstance(messages, Sequence):
        raise InvalidReasoningInput(
            f"messages: must be a non-empty list of {{'role', 'content'}} mappings, not {type(messages).__name__}"
        )
    if not messages:
        raise InvalidReasoningInput("messages: must contain at least one message")
    checked: list[Message] = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise InvalidReasoningInput(f"messages[{index}]: must be a mapping, not {type(message).__name__}")
        unknown = sorted(str(key) for key in message if key not in ("role", "content", "name"))
        if unknown:
            raise InvalidReasoningInput(
                f"messages[{index}].{unknown[0]}: unsupported field (allowed: role, content, name)"
            )
        if "role" not in message:
            raise InvalidReasoningInput(f"messages[{index}].role: missing (one of {', '.join(ROLES)})")
        role = message["role"]
        if not isinstance(role, str) or role not in ROLES:
            shown = repr(role) if isinstance(role, str) else type(role).__name__
            raise InvalidReasoningInput(f"messages[{index}].role: must be one of {', '.join(ROLES)}, not {shown}")
        if "content" not in message:
            raise InvalidReasoningInput(f"messages[{index}].content: missing (a non-empty string)")
        content = message["content"]
        if not isinstance(content, str) or not content.strip():
            shown = "a blank string" if isinstance(content, str) else type(content).__name__
            raise InvalidReasoningInput(f"messages[{index}].content: must be a non-empty string, not {shown}")
        if not is_utf8_encodable(content):
            raise InvalidReasoningInput(
                f"messages[{index}].content: contains a lone surrogate, which is not valid Unicode text "
                "(decode the source bytes with errors='replace')"
            )
        # Plain str copies: a str subclass (an enum) must not reach the wire or the fingerprint.
        item: Message = {"role": ROLES[ROLES.index(role)], "content": str.__str__(content)}  # type: ignore[typeddict-item]
        if "name" in message:
            name = message["name"]
            if not isinstance(name, str) or not name or not is_utf8_encodable(name):
                raise InvalidReasoningInput(f"messages[{index}].name: must be a non-empty string of valid Unicode")
            item["name"] = str.__str__(name)
        checked.append(item)
    return checked


def check_options(
    *,
    reasoning_effort: str | None,
    max_output_tokens: int | None,
    response_format: Mapping[str, Any] | None,
    timeout: float | None,
) -> None:
    """Check the generation options of one reasoning call.

    Raises:
        InvalidReasoningInput: Naming the option and what it accepts.

    Examples:
        >>> check_options(reasoning_effort="high", max_output_tokens=2048, response_format=None, timeout=30)
    """
    if reasoning_effort is not None and reasoning_effort not in _EFFORTS:
        raise InvalidReasoningInput(f"reasoning_effort: must be one of {', '.join(_EFFORTS)}, not {reasoning_effort!r}")
    if max_output_tokens is not None and (
        isinstance(max_output_tokens, bool) or not isinstance(max_output_tokens, int) or max_output_tokens < 1
    ):
        raise InvalidReasoningInput(f"max_output_tokens: must be a positive integer, not {max_output_tokens!r}")
    if response_format is not None:
        if not isinstance(response_format, Mapping) or response_format.get("type") not in _RESPONSE_FORMATS:
            raise InvalidReasoningInput(
                f"response_format: must be a mapping whose 'type' is one of {', '.join(_RESPONSE_FORMATS)}"
            )
        schema = response_format.get("json_schema")
        if response_format["type"] == "json_schema" and not (
            isinstance(schema, Mapping) and isinstance(schema.get("name"), str) and schema["name"]
        ):
            raise InvalidReasoningInput(
                "response_format.json_schema: must be a mapping with 'name' and 'schema' "
                "(the Chat Completions shape; it is translated for the Responses API)"
            )
        # Checked here, not left to the SDK: a set or a NaN deep inside would otherwise fail while the
        # request is being serialised, as a TypeError or ValueError that names nothing.
        problem = _json_problem(response_format, "response_format")
        if problem:
            raise InvalidReasoningInput(problem)
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 3600
    ):
        raise InvalidReasoningInput(f"timeout: must be a number of seconds in (0, 3600], not {timeout!r}")


def fingerprint(messages: Any) -> tuple[int | None, str | None]:
    """Describe messages without revealing them: their count and the SHA-256 of their canonical JSON.

    Examples:
        >>> count, digest = fingerprint([{"role": "user", "content": "Hi"}])
        >>> count, len(digest)
        (1, 64)
    """
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
        return None, None
    try:
        canonical = json.dumps(list(messages), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError):
        return None, None
    return len(messages), hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()
