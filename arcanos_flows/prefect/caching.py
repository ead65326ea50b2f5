"""Opt-in caching of reasoning steps through Prefect's cache policies.

A reasoning step is a billed question; asking the same question again (a re-run after an unrelated failure, a
report regenerated) can reuse the stored answer instead. Nothing is cached unless a flow opts in, with
:func:`arcanos_flows.prefect.tasks.with_cache` or ``research_flow(cache=True)``.

What makes two steps the same question is :class:`ReasoningCachePolicy`'s key: the enforced model, the API,
the messages and the generation options. The audit metadata, the step's name, the credentials, the timeout
and the run ids are left out, so the same question asked by another run, under another step name or with
another confirmation token hits the cache. Prefect writes a result only when a step completes, so a failure is
never cached and the next run asks again.

What is written: the step's :class:`~arcanos_flows.core.results.ReasoningResult` as JSON (the answer, model,
response and request ids, usage and the request's metadata, confirmation token included; never the API key),
in a Prefect result record named by the key, in Prefect's result storage (``PREFECT_LOCAL_STORAGE_PATH``,
``~/.prefect/storage`` by default, or ``PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK``). Prefect also writes the
exception of a step that failed (type and redacted message, as JSON) under a random name, which no key ever reads.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext

from arcanos_flows.client import output_spec
from arcanos_flows.core.errors import ConfigurationError, InvalidReasoningInput
from arcanos_flows.core.messages import check_messages, check_options, plain_json
from arcanos_flows.prefect.credentials import resolve_settings

__all__ = ["KEY_PREFIX", "REASONING_CACHE", "ReasoningCachePolicy", "reasoning_cache_key"]

KEY_PREFIX = "arcanos-reasoning-"
"""Cache keys (and the names of the stored result records) start with this."""

_KEY_VERSION = 1


def reasoning_cache_key(
    model: str,
    api: str,
    messages: Any,
    *,
    reasoning_effort: str | None = None,
    max_output_tokens: int | None = None,
    response_format: Mapping[str, Any] | None = None,
    output_type: Any = None,
) -> str:
    """The cache key of one reasoning question: a SHA-256 of what decides the answer, and nothing else.

    Args:
        model: The enforced model (``ARCANOS_FINE_TUNED_MODEL``).
        api: ``chat`` or ``responses``.
        messages: The messages, as given to ``run_reasoning``.
        reasoning_effort: The reasoning effort option.
        max_output_tokens: The output budget option.
        response_format: The ``response_format`` option.
        output_type: The ``output_type`` option: its strict schema and name are part of the question.

    Returns:
        ``arcanos-reasoning-<sha256 hex>``.

    Raises:
        InvalidReasoningInput: The messages or options break the input contract.

    Examples:
        >>> ask = [{"role": "user", "content": "List the confirmation layers."}]
        >>> key = reasoning_cache_key("ft:gpt-5.1:arcanos::x", "chat", ask)
        >>> key == reasoning_cache_key("ft:gpt-5.1:arcanos::x", "chat", ask), key.startswith(KEY_PREFIX)
        (True, True)
        >>> key == reasoning_cache_key("ft:gpt-5.1:arcanos::x", "chat", ask, reasoning_effort="high")
        False
    """
    check_options(
        reasoning_effort=reasoning_effort,
        max_output_tokens=max_output_tokens,
        response_format=response_format,
        timeout=None,
    )
    typed = output_spec(output_type) if output_type is not None else None
    if typed is not None:
        response_format = typed.response_format
    question = {
        "version": _KEY_VERSION,
        "model": model,
        "api": api,
        "messages": check_messages(messages),
        "reasoning_effort": reasoning_effort,
        "max_output_tokens": max_output_tokens,
        "response_format": plain_json(response_format) if response_format is not None else None,
        **({"output_type": typed.name} if typed is not None else {}),
    }
    canonical = json.dumps(question, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return KEY_PREFIX + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass
class ReasoningCachePolicy(CachePolicy):
    """The cache policy of the reasoning tasks: same model, API, messages and options, same answer.

    Works for ``run_reasoning`` (its ``messages``) and ``run_simple_prompt`` (its ``text`` and ``system``,
    as the messages they become). The model and API come from the step's settings (its ``credentials``, else
    the environment). When the settings or the inputs are invalid there is no key, so nothing is cached and
    the step fails as it would without caching.

    Examples:
        >>> from datetime import timedelta
        >>> from arcanos_flows.prefect.tasks import run_reasoning
        >>> cached = run_reasoning.with_options(
        ...     cache_policy=REASONING_CACHE, persist_result=True, cache_expiration=timedelta(days=1)
        ... )
    """

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        """The key of the step's question, or ``None`` (not cached) when settings or inputs are invalid."""
        try:
            settings = resolve_settings(inputs.get("credentials"))
            if "messages" in inputs:
                messages = inputs["messages"]
            else:
                system, text = inputs.get("system"), inputs.get("text")
                messages = ([{"role": "system", "content": system}] if system is not None else []) + [
                    {"role": "user", "content": text}
                ]
            return reasoning_cache_key(
                settings.fine_tuned_model,
                settings.openai_api,
                messages,
                reasoning_effort=inputs.get("reasoning_effort"),
                max_output_tokens=inputs.get("max_output_tokens"),
                response_format=inputs.get("response_format"),
                output_type=inputs.get("output_type"),
            )
        except (ConfigurationError, InvalidReasoningInput):
            return None


REASONING_CACHE = ReasoningCachePolicy()
"""The policy instance :func:`arcanos_flows.prefect.tasks.with_cache` applies."""
