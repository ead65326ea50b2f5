"""Chat Completions in the fake OpenAI server: ``POST /v1/chat/completions`` and the ``chat.completion`` it answers."""

from __future__ import annotations

import time
from typing import Any

from arcanos_flows.testing._replies import Reply
from arcanos_flows.testing._routes import CHAT_COMPLETIONS_PATH, Route, completion_route
from arcanos_flows.testing._schema import requested_format
from arcanos_flows.testing._text import answer_text, last_user_text, text_of, words

__all__ = ["ROUTES", "chat_completion"]


def chat_completion(body: dict[str, Any], reply: Reply, model: str, number: int) -> dict[str, Any]:
    """Return the ``chat.completion`` object answering a Chat Completions request.

    Args:
        body: The request body.
        reply: The reply to render (a success without a raw body).
        model: The model that answers.
        number: The request's number: the completion id is ``chatcmpl-<number>``.

    Returns:
        The completion, usage counting words as tokens.

    Examples:
        >>> body = {"model": "gpt-5.1", "messages": [{"role": "user", "content": "Any news?"}]}
        >>> completion = chat_completion(body, Reply(), "gpt-5.1", 7)
        >>> completion["id"], completion["choices"][0]["message"]["content"], completion["usage"]["total_tokens"]
        ('chatcmpl-7', '[fake] Any news?', 5)
    """
    messages = body.get("messages")
    items = messages if isinstance(messages, list) else []
    content = answer_text(reply.content, last_user_text(items), requested_format(body))
    prompt_tokens = sum(words(text_of(item)) for item in items)
    completion_tokens = words(reply.refusal if reply.refusal is not None else content) + reply.reasoning_tokens
    choices: list[dict[str, Any]] = []
    if not reply.empty_choices:
        choices.append(
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None if reply.refusal is not None else content,
                    "refusal": reply.refusal,
                    "annotations": [],
                },
                "finish_reason": reply.finish_reason,
                "logprobs": None,
            }
        )
    completion: dict[str, Any] = {
        "id": f"chatcmpl-{number}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": reply.reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "system_fingerprint": "fp_arcanos_fake",
        "service_tier": "default",
    }
    if "metadata" in body and (body["metadata"] is None or isinstance(body["metadata"], dict)):
        completion["metadata"] = body["metadata"]
    return completion


ROUTES: tuple[Route, ...] = (completion_route(CHAT_COMPLETIONS_PATH, chat_completion),)
"""The Chat Completions endpoint."""
