"""Reading what a request asks: the text of its messages, its last user turn, and words counted as tokens.

Chat Completions carry ``messages``; Responses carry ``input``, a string or a list of items. Both shapes
put a message's text in ``content``, a string or a list of parts with ``text``. Everything here is
lenient: a field of the wrong type reads as empty, never as an error.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from arcanos_flows.testing._schema import JsonSchemaFormat

__all__ = ["answer_text", "as_list", "last_user_text", "text_of", "user_text", "words"]


def user_text(body: Any) -> str:
    """Return the last user message of a Chat Completions or Responses request body ('' for anything else).

    Args:
        body: The request body as parsed JSON (anything: only a dict is read).

    Returns:
        The text of the last user turn.

    Examples:
        >>> user_text({"messages": [{"role": "user", "content": "Hi"}]}), user_text({"input": "Hello"})
        ('Hi', 'Hello')
    """
    body = body if isinstance(body, dict) else {}
    if "messages" in body:
        return last_user_text(as_list(body["messages"]))
    raw_input = body.get("input")
    if isinstance(raw_input, str):
        return raw_input
    return last_user_text(as_list(raw_input))


def last_user_text(items: Iterable[Any]) -> str:
    """Return the text of the last user message among ``items`` (a message without ``role`` is the user's)."""
    last = ""
    for item in items:
        if isinstance(item, dict) and item.get("role", "user") == "user" and "content" in item:
            last = text_of(item)
    return last


def text_of(item: Any) -> str:
    """Return the text of a message in either API's shape (string content or a list of text parts).

    Examples:
        >>> text_of({"content": [{"type": "input_text", "text": "a"}, {"type": "input_image"}, {"text": "b"}]})
        'a b'
    """
    if not isinstance(item, dict):
        return ""
    content = item.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def answer_text(content: str | None, asked: str, output_format: JsonSchemaFormat | None = None) -> str:
    """Return the assistant text of an answer: ``content`` when scripted, else derived from ``asked`` (the user's text).

    Scripted content is sent as is, whatever the format. Derived text is ``[fake] <asked>``, or, when the
    request asks for structured output (``output_format``), a compact JSON document matching its schema.

    Examples:
        >>> answer_text(None, "Status?"), answer_text("All clear.", "Status?")
        ('[fake] Status?', 'All clear.')
        >>> from arcanos_flows.testing._schema import JsonSchemaFormat
        >>> answer_text(None, "Status?", JsonSchemaFormat("Status", {"type": "object", "properties": {"ok": {}}}))
        '{"ok":"[fake] ok of Status"}'
    """
    if content is not None:
        return content
    if output_format is not None:
        return output_format.answer(asked)
    return f"[fake] {asked[:80]}".rstrip()


def words(text: str | None) -> int:
    """Count the words of ``text``: the fake's token count."""
    return len(text.split()) if text else 0


def as_list(value: Any) -> list[Any]:
    """Return ``value`` if it is a list, else an empty list."""
    return value if isinstance(value, list) else []
