"""Structured output in the fake OpenAI server: the JSON schema a request asks for, and a JSON answer matching it.

A request asks for structured output with a ``json_schema`` format: Chat Completions in
``response_format={"type": "json_schema", "json_schema": {"name": ..., "schema": ...}}``, Responses in
``text={"format": {"type": "json_schema", "name": ..., "schema": ...}}``. :func:`requested_format` reads
it and :func:`fake_json` makes the answer: a small, deterministic instance of the schema, every property
filled in (strict schemas require them all), strings derived from the property name and the question.

What the generator honours: ``$ref`` to ``#``, ``#/$defs/...`` or ``#/definitions/...``; ``anyOf`` and
``oneOf`` (the first option that is not null); ``allOf`` (merged); ``type`` given as a list (the first
that is not ``"null"``); ``enum`` (the first value) and ``const``; string ``minLength``/``maxLength`` and
the formats ``date``, ``date-time``, ``time``, ``email``, ``uri``, ``uuid``, ``hostname``, ``ipv4``,
``ipv6``, ``duration``; numeric ``minimum``/``maximum``/``exclusiveMinimum``/``exclusiveMaximum``/
``multipleOf``; array ``minItems``/``maxItems``/``prefixItems``/``uniqueItems``. Not honoured: ``pattern``,
``not``, ``if``/``then``. An empty or unknown schema gets a string. A schema that refers to itself is
expanded until :data:`MAX_DEPTH` levels of nesting, then given its smallest valid value (null where the
schema allows it, empty arrays where ``minItems`` does).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Any
from urllib.parse import quote

__all__ = ["MAX_DEPTH", "JsonSchemaFormat", "fake_instance", "fake_json", "requested_format"]

MAX_DEPTH = 6
"""Levels of nesting (properties and array items) a recursive schema is expanded to before answering small."""

_GIVE_UP_DEPTH = MAX_DEPTH + 64
"""A schema that needs itself forever (a required, non-nullable self-reference) has no finite instance: null."""

_DEFAULT_ITEMS = 3
_TOPIC_WORDS = 6


@dataclass(frozen=True)
class JsonSchemaFormat:
    """The ``json_schema`` output format of a request: its name and its schema.

    Attributes:
        name: The format's ``name`` (``"answer"`` when missing or not a string).
        schema: The JSON schema the answer must match (``{}`` when missing).

    Examples:
        >>> plan = JsonSchemaFormat("Plan", {"type": "object", "properties": {"done": {"type": "boolean"}}})
        >>> plan.answer("Any news?")
        '{"done":true}'
    """

    name: str
    schema: Any

    def answer(self, asked: str) -> str:
        """Return the compact JSON answer to ``asked`` (the user's text) that matches :attr:`schema`.

        Args:
            asked: The user's question; strings in the answer quote its first words.

        Returns:
            The JSON document (see :func:`fake_json`).

        Examples:
            >>> JsonSchemaFormat("Score", {"type": "integer", "minimum": 5}).answer("")
            '5'
        """
        return fake_json(self.schema, asked, name=self.name)


def requested_format(body: Mapping[str, Any]) -> JsonSchemaFormat | None:
    """Return the ``json_schema`` format a Chat Completions or Responses request asks for, if any.

    Args:
        body: The request body.

    Returns:
        The format, or ``None`` when the request asks for text (or another format, e.g. ``json_object``).

    Examples:
        >>> chat = {"response_format": {"type": "json_schema", "json_schema": {"name": "Plan", "schema": {}}}}
        >>> responses = {"text": {"format": {"type": "json_schema", "name": "Plan", "schema": {"type": "object"}}}}
        >>> requested_format(chat), requested_format(responses)
        (JsonSchemaFormat(name='Plan', schema={}), JsonSchemaFormat(name='Plan', schema={'type': 'object'}))
        >>> requested_format({"text": {"format": {"type": "text"}}}) is None
        True
    """
    chat = body.get("response_format")
    if isinstance(chat, dict) and chat.get("type") == "json_schema":
        spec = chat.get("json_schema")
        return _format_of(spec if isinstance(spec, dict) else {})
    text = body.get("text")
    spec = text.get("format") if isinstance(text, dict) else None
    if isinstance(spec, dict) and spec.get("type") == "json_schema":
        return _format_of(spec)
    return None


def _format_of(spec: Mapping[str, Any]) -> JsonSchemaFormat:
    name = spec.get("name")
    schema = spec.get("schema")
    return JsonSchemaFormat(name if isinstance(name, str) and name else "answer", {} if schema is None else schema)


def fake_json(schema: Any, asked: str = "", *, name: str = "answer") -> str:
    """Return a compact JSON document matching ``schema``, derived from ``asked`` (deterministic).

    Args:
        schema: A JSON schema (a dict, or ``True``/``False``).
        asked: The user's question; strings quote its first words.
        name: What the whole document is called (used when the schema itself is a string or a list).

    Returns:
        The document, without spaces between tokens (strings keep theirs), non-ASCII text kept as is.

    Examples:
        >>> questions = {"type": "array", "items": {"type": "string"}, "maxItems": 2}
        >>> schema = {"type": "object", "properties": {"questions": questions, "risk": {"enum": ["low", "high"]}}}
        >>> print(fake_json(schema, "Why?"))
        {"questions":["[fake] questions 1: what about Why?","[fake] questions 2: what about Why?"],"risk":"low"}
    """
    return json.dumps(fake_instance(schema, asked, name=name), ensure_ascii=False, separators=(",", ":"))


def fake_instance(schema: Any, asked: str = "", *, name: str = "answer") -> Any:
    """Return a small value matching ``schema`` (as parsed JSON), derived from ``asked`` (deterministic).

    Every property is filled in; arrays get three items unless ``minItems``/``maxItems`` say otherwise,
    strings in an array are numbered so they are distinct, and a string whose property (or array) name
    contains ``question`` reads as a question, ending with ``?``.

    Args:
        schema: A JSON schema (a dict, or ``True``/``False``); ``$ref`` resolves against it.
        asked: The user's question; strings quote its first words (``"the request"`` when empty).
        name: What the whole value is called (used when the schema itself is a string or a list).

    Returns:
        The value: dicts, lists, strings, numbers, booleans or ``None``.

    Examples:
        >>> node = {"type": "object", "required": ["name", "next"], "properties": {
        ...     "name": {"type": "string", "maxLength": 20},
        ...     "next": {"anyOf": [{"$ref": "#"}, {"type": "null"}]},
        ...     "score": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 0.5},
        ...     "tags": {"type": "array", "items": {"type": "string", "format": "date"}, "maxItems": 2}}}
        >>> fake_instance(node, "How fast is it?")["name"], fake_instance(node)["score"]
        ('[fake] name of How f', 0.25)
        >>> fake_instance(node)["tags"], fake_instance({}, "Hi")
        (['2024-01-01', '2024-01-02'], '[fake] answer of Hi')
    """
    return _Faker(schema, _topic(asked)).value(schema, _At(name))


def _topic(asked: str) -> str:
    topic = " ".join(asked.split()[:_TOPIC_WORDS])
    return topic.rstrip("?!.:;, ") or "the request"


@dataclass(frozen=True)
class _At:
    """Where in the document a value goes: the name it is known by and how it was reached."""

    name: str
    labels: tuple[int, ...] = ()  # the item numbers of the arrays it is in, outermost first
    depth: int = 0  # levels of nesting (properties and array items)
    refs: tuple[str, ...] = ()  # the $refs expanded on the way
    vary: bool = False  # an item of a uniqueItems array: scalars vary with the item number

    @property
    def label(self) -> str:
        return ".".join(str(number) for number in self.labels)

    @property
    def offset(self) -> int:
        """How far from its first choice a scalar goes: the item number in a unique array, else 0."""
        return self.labels[-1] - 1 if self.vary and self.labels else 0

    @property
    def small(self) -> bool:
        """Whether to answer the smallest valid value: deep inside a schema that refers to itself."""
        return self.depth >= MAX_DEPTH and len(set(self.refs)) < len(self.refs)

    def prop(self, name: str) -> _At:
        return replace(self, name=name, depth=self.depth + 1, vary=False)

    def item(self, number: int, vary: bool) -> _At:
        return replace(self, labels=(*self.labels, number), depth=self.depth + 1, vary=vary)


class _Faker:
    def __init__(self, root: Any, topic: str) -> None:
        self._root = root
        self._topic = topic

    def value(self, schema: Any, at: _At) -> Any:
        if at.depth > _GIVE_UP_DEPTH:
            return None
        if schema is False:
            return None  # nothing matches: the fake cannot do better
        if not isinstance(schema, dict):
            return self._string({}, at)
        if isinstance(schema.get("$ref"), str):
            ref = schema["$ref"]
            resolved = self._resolve(ref)
            merged = {**resolved, **{key: value for key, value in schema.items() if key != "$ref"}}
            return self.value(merged, replace(at, refs=(*at.refs, ref)))
        if "const" in schema:
            return schema["const"]
        enum = schema.get("enum")
        if isinstance(enum, list) and enum:
            return enum[at.offset % len(enum)]
        for keyword in ("anyOf", "oneOf"):
            options = schema.get(keyword)
            if isinstance(options, list) and options:
                rest = {key: value for key, value in schema.items() if key != keyword}
                return self.value({**rest, **self._pick(options, at)}, at)
        parts = schema.get("allOf")
        if isinstance(parts, list) and parts:
            rest = {key: value for key, value in schema.items() if key != "allOf"}
            return self.value(_merge([rest, *(self._unref(part) for part in parts)]), at)
        kind = self._type(schema, at)
        if kind == "null":
            return None
        if kind == "object":
            return self._object(schema, at)
        if kind == "array":
            return self._array(schema, at)
        if kind == "boolean":
            return at.offset % 2 == 0
        if kind in ("integer", "number"):
            return _number(schema, integer=kind == "integer", offset=at.offset)
        return self._string(schema, at)

    def _resolve(self, ref: str) -> Any:
        """The schema ``ref`` points at inside the root (``{}`` for a reference the fake cannot follow)."""
        if not ref.startswith("#"):
            return {}
        target = self._root
        for raw in ref[1:].split("/")[1:]:
            key = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(target, dict) and key in target:
                target = target[key]
            elif isinstance(target, list) and key.isdigit() and int(key) < len(target):
                target = target[int(key)]
            else:
                return {}
        return target if isinstance(target, dict) else {}

    def _unref(self, schema: Any) -> Any:
        if isinstance(schema, dict) and isinstance(schema.get("$ref"), str):
            rest = {key: value for key, value in schema.items() if key != "$ref"}
            return {**self._resolve(schema["$ref"]), **rest}
        return schema

    def _pick(self, options: list[Any], at: _At) -> dict[str, Any]:
        """The option of an ``anyOf``/``oneOf`` to follow: the first that is not null (null when small)."""
        nulls = [option for option in options if _is_null(option)]
        others = [option for option in options if not _is_null(option)]
        chosen = nulls[0] if (at.small and nulls) or not others else others[0]
        return chosen if isinstance(chosen, dict) else {}

    @staticmethod
    def _type(schema: Mapping[str, Any], at: _At) -> str:
        kind = schema.get("type")
        if isinstance(kind, list):
            if at.small and "null" in kind:
                return "null"
            named = [entry for entry in kind if isinstance(entry, str) and entry != "null"]
            return named[0] if named else ("null" if "null" in kind else "string")
        if isinstance(kind, str):
            return kind
        if "properties" in schema:
            return "object"
        if "items" in schema or "prefixItems" in schema:
            return "array"
        if any(key in schema for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")):
            return "number"
        return "string"

    def _object(self, schema: Mapping[str, Any], at: _At) -> dict[str, Any]:
        properties = schema.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        required = schema.get("required")
        required = set(required) if isinstance(required, list) else set()
        result: dict[str, Any] = {}
        for key, sub in properties.items():
            if at.small and key not in required:
                continue
            result[key] = self.value(sub, at.prop(key))
        # Required names without a schema of their own, and room left by minProperties: any value goes.
        extra = schema.get("additionalProperties", True)
        for key in sorted(required - set(properties)):
            result[key] = self.value(extra if isinstance(extra, dict) else {}, at.prop(key))
        least = schema.get("minProperties")
        if isinstance(least, int) and extra is not False:
            number = 1
            while len(result) < least:
                key = f"{at.name}_{number}"
                if key not in result:
                    result[key] = self.value(extra if isinstance(extra, dict) else {}, at.prop(key))
                number += 1
        return result

    def _array(self, schema: Mapping[str, Any], at: _At) -> list[Any]:
        prefix = schema.get("prefixItems")
        items = schema.get("items")
        if isinstance(items, list):  # draft 4-7 tuples
            prefix, items = items, schema.get("additionalItems", {})
        prefix = prefix if isinstance(prefix, list) else []
        least = schema.get("minItems")
        least = least if isinstance(least, int) and least > 0 else 0
        most = schema.get("maxItems")
        most = most if isinstance(most, int) and most >= 0 else None
        count = least if at.small else max(len(prefix), _DEFAULT_ITEMS if not prefix else 0)
        if items is False:
            count = min(count, len(prefix))
        count = max(least, count if most is None else min(count, most))
        unique = schema.get("uniqueItems") is True
        result: list[Any] = []
        for index in range(count):
            sub = prefix[index] if index < len(prefix) else (items if items is not None else {})
            result.append(self.value(sub, at.item(index + 1, unique)))
        return result

    def _string(self, schema: Mapping[str, Any], at: _At) -> str:
        formatted = _formatted(schema.get("format"), at)
        if formatted is not None:
            return formatted
        label = at.label
        tag = f" {label}" if label else ""
        question = "question" in at.name.lower()
        text = f"[fake] {at.name}{tag}" + (f": what about {self._topic}" if question else f" of {self._topic}")
        end = "?" if question else ""
        least = schema.get("minLength")
        least = least if isinstance(least, int) and least > 0 else 0
        most = schema.get("maxLength")
        if isinstance(most, int) and most >= 0 and len(text) + len(end) > most:
            # Cut short: the item number first, so that items stay distinct.
            text = f"{label} {text}" if label else text
            end = end if most >= 1 else ""
            text = text[: max(0, most - len(end))]
        if len(text) + len(end) < least:
            text += "." * (least - len(text) - len(end))
        return text + end


def _is_null(option: Any) -> bool:
    return isinstance(option, dict) and (option.get("type") == "null" or option.get("const", ...) is None)


def _merge(schemas: list[Any]) -> dict[str, Any]:
    """The schemas of an ``allOf`` as one: properties and required names united, other keywords first wins."""
    merged: dict[str, Any] = {}
    properties: dict[str, Any] = {}
    required: list[Any] = []
    for schema in schemas:
        if not isinstance(schema, dict):
            continue
        for key, value in schema.items():
            if key == "properties" and isinstance(value, dict):
                properties = {**value, **properties}
            elif key == "required" and isinstance(value, list):
                required += [name for name in value if name not in required]
            else:
                merged.setdefault(key, value)
    if properties:
        merged["properties"] = properties
    if required:
        merged["required"] = required
    return merged


def _formatted(name: Any, at: _At) -> str | None:
    """A valid string of the format ``name``, varying with the item number; ``None`` for other formats."""
    number = at.labels[-1] if at.labels else 1
    suffix = "-" + at.label.replace(".", "-") if at.labels else ""
    day = date(2024, 1, 1) + timedelta(days=number - 1)
    values = {
        "date": day.isoformat(),
        "date-time": f"{day.isoformat()}T00:00:00Z",
        "time": "12:00:00Z",
        "email": f"fake{suffix}@example.com",
        "uri": f"https://example.com/fake/{quote(at.name)}{suffix}",
        "url": f"https://example.com/fake/{quote(at.name)}{suffix}",
        "uuid": f"00000000-0000-4000-8000-{number:012d}",
        "hostname": f"fake{suffix}.example.com",
        "ipv4": f"192.0.2.{number % 254 + 1}",
        "ipv6": f"2001:db8::{number % 65535 + 1:x}",
        "duration": f"P{number}D",
    }
    return values.get(name) if isinstance(name, str) else None


def _number(schema: Mapping[str, Any], *, integer: bool, offset: int) -> int | float:
    """A number within the schema's bounds: 1 (plus ``offset``) when allowed, else the nearest allowed value."""
    low, low_open = _bound(schema, "minimum", "exclusiveMinimum", max)
    high, high_open = _bound(schema, "maximum", "exclusiveMaximum", min)
    step = schema.get("multipleOf")
    step = step if isinstance(step, (int, float)) and not isinstance(step, bool) and step > 0 else None

    def allowed(value: float) -> bool:
        above = low is None or value > low or (value == low and not low_open)
        below = high is None or value < high or (value == high and not high_open)
        fits = step is None or math.isclose(value / step, round(value / step))
        return above and below and fits

    candidates: list[float] = [1 + offset]
    if low is not None:
        candidates += [low + offset, low + 1 + offset, low + offset + 0.5, low]
    if high is not None:
        candidates += [high, high - 1, high - 0.5]
    if low is not None and high is not None:
        candidates.append((low + high) / 2)
    if step is not None:
        candidates = [n * step for value in candidates for n in (math.ceil(value / step), math.floor(value / step))]
    if integer:
        candidates = [float(n) for value in candidates for n in (math.ceil(value), math.floor(value))]
    for value in candidates:
        if allowed(value):
            return int(value) if integer or float(value).is_integer() else value
    return int(candidates[0]) if integer else candidates[0]


def _bound(
    schema: Mapping[str, Any], closed: str, opened: str, tighter: Callable[[float, float], float]
) -> tuple[float | None, bool]:
    """A bound of the schema and whether it is exclusive (draft 2020 numbers or draft 4 booleans)."""
    inclusive = schema.get(closed)
    inclusive = inclusive if _is_number(inclusive) else None
    exclusive = schema.get(opened)
    if exclusive is True:  # draft 4: the closed keyword is the bound, exclusive
        return inclusive, inclusive is not None
    exclusive = exclusive if _is_number(exclusive) else None
    if inclusive is None or exclusive is None:
        return (exclusive, True) if exclusive is not None else (inclusive, False)
    bound = tighter(inclusive, exclusive)
    return bound, bound == exclusive


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
