"""The Responses API in the fake OpenAI server: ``POST /v1/responses`` and the ``response`` object it answers."""

from __future__ import annotations

import time
from typing import Any

from arcanos_flows.testing._replies import Reply
from arcanos_flows.testing._routes import RESPONSES_PATH, Route, completion_route
from arcanos_flows.testing._schema import requested_format
from arcanos_flows.testing._text import answer_text, as_list, last_user_text, text_of, words

__all__ = ["ROUTES", "response_object"]


def response_object(body: dict[str, Any], reply: Reply, model: str, number: int) -> dict[str, Any]:
    """Return the ``response`` object answering a Responses request.

    Request fields the answer echoes (instructions, tools, temperature...) are copied when well-typed,
    else replaced by the API's defaults. A ``"length"`` or ``"content_filter"`` finish reason makes the
    answer ``incomplete``.

    Args:
        body: The request body.
        reply: The reply to render (a success without a raw body).
        model: The model that answers.
        number: The request's number: the ids are ``resp_<number>`` and ``msg_<number>``.

    Returns:
        The response, usage counting words as tokens.

    Examples:
        >>> body = {"model": "gpt-5.1", "input": "Any news?"}
        >>> response = response_object(body, Reply.length("Partial"), "gpt-5.1", 7)
        >>> response["id"], response["status"], response["incomplete_details"]
        ('resp_7', 'incomplete', {'reason': 'max_output_tokens'})
        >>> response["output"][0]["content"][0]["text"], response["usage"]["total_tokens"]
        ('Partial', 3)
    """
    raw_input = body.get("input")
    items: list[Any] = [{"role": "user", "content": raw_input}] if isinstance(raw_input, str) else as_list(raw_input)
    instructions = body.get("instructions")
    content = answer_text(reply.content, last_user_text(items), requested_format(body))
    input_tokens = sum(words(text_of(item)) for item in items)
    if isinstance(instructions, str):
        input_tokens += words(instructions)
    output_tokens = words(reply.refusal if reply.refusal is not None else content) + reply.reasoning_tokens
    incomplete_reason = {"length": "max_output_tokens", "content_filter": "content_filter"}.get(reply.finish_reason)
    status = "incomplete" if incomplete_reason else "completed"
    part: dict[str, Any] = (
        {"type": "refusal", "refusal": reply.refusal}
        if reply.refusal is not None
        else {"type": "output_text", "text": content, "annotations": [], "logprobs": []}
    )
    output: list[dict[str, Any]] = []
    if not reply.empty_choices:
        output.append(
            {"type": "message", "id": f"msg_{number}", "status": status, "role": "assistant", "content": [part]}
        )
    created_at = int(time.time())
    metadata = body.get("metadata")
    reasoning = body.get("reasoning")
    text = body.get("text")
    return {
        "id": f"resp_{number}",
        "object": "response",
        "created_at": created_at,
        "status": status,
        "completed_at": None if incomplete_reason else created_at,
        "error": None,
        "incomplete_details": {"reason": incomplete_reason} if incomplete_reason else None,
        "instructions": instructions if isinstance(instructions, (str, list)) else None,
        "max_output_tokens": _int_or_none(body.get("max_output_tokens")),
        "model": model,
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True) is not False,
        "previous_response_id": _str_or_none(body.get("previous_response_id")),
        "reasoning": (
            {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")}
            if isinstance(reasoning, dict)
            else None
        ),
        "service_tier": "default",
        "store": body.get("store", True) is not False,
        "temperature": _number_or(body.get("temperature"), 1.0),
        "text": text if isinstance(text, dict) else {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": as_list(body.get("tools")),
        "top_p": _number_or(body.get("top_p"), 1.0),
        "truncation": body.get("truncation") if body.get("truncation") in ("auto", "disabled") else "disabled",
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": reply.reasoning_tokens},
            "total_tokens": input_tokens + output_tokens,
        },
        "metadata": metadata if isinstance(metadata, dict) else {},
    }


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _number_or(value: Any, default: float) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return default


ROUTES: tuple[Route, ...] = (completion_route(RESPONSES_PATH, response_object),)
"""The Responses endpoint."""
