"""The fake OpenAI server's rate-limit mode: a token bucket, OpenAI's rate-limit headers and its 429 answer.

The bucket holds ``capacity`` requests and refills at ``per_minute / 60`` per second; a request finding
it empty is answered 429 ``rate_limit_exceeded`` with ``Retry-After`` and ``retry-after-ms``, and every
API answer carries ``x-ratelimit-*-requests`` headers, as OpenAI's do.
"""

from __future__ import annotations

import math
import time
from typing import Any

from arcanos_flows.testing._errors import error_body
from arcanos_flows.testing._http import format_seconds

__all__ = ["TokenBucket", "duration", "rate_limited_body", "retry_headers"]


class TokenBucket:
    """Holds up to ``capacity`` requests and refills at ``per_minute / 60`` per second (guarded by the server).

    Examples:
        >>> bucket = TokenBucket(60, 1)
        >>> bucket.take(bucket.updated)[0], bucket.take(bucket.updated)[0]
        (True, False)
    """

    def __init__(self, per_minute: float, capacity: float) -> None:
        self.per_minute = per_minute
        self.rate = per_minute / 60
        self.capacity = capacity
        self.tokens = capacity
        self.updated = time.monotonic()

    def take(self, now: float) -> tuple[bool, dict[str, str], float]:
        """Take a request at ``now`` (monotonic): whether it passes, the headers to add, and the wait if not."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        admitted = self.tokens >= 1
        if admitted:
            self.tokens -= 1
        wait = 0.0 if admitted else (1 - self.tokens) / self.rate
        headers = {
            "x-ratelimit-limit-requests": format_seconds(self.per_minute),
            "x-ratelimit-remaining-requests": str(int(self.tokens)),
            "x-ratelimit-reset-requests": duration((self.capacity - self.tokens) / self.rate),
        }
        return admitted, headers, wait


def duration(seconds: float) -> str:
    """Format a delay as OpenAI's rate-limit headers do: ``120ms``, ``1.5s``, ``6m0s``.

    Examples:
        >>> duration(0.12), duration(1.5), duration(360)
        ('120ms', '1.5s', '6m0s')
    """
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{round(rest, 3):g}s"


def retry_headers(wait: float) -> dict[str, str]:
    """Return the headers of a 429 telling the client to wait ``wait`` seconds.

    Examples:
        >>> retry_headers(0.25)
        {'Retry-After': '1', 'retry-after-ms': '250'}
    """
    return {"Retry-After": str(max(1, math.ceil(wait))), "retry-after-ms": str(math.ceil(wait * 1000))}


def rate_limited_body(per_minute: float, model: Any, wait: float) -> bytes:
    """Return the body of a 429 of the rate limit, worded as OpenAI's.

    Args:
        per_minute: The limit.
        model: The model the request named (anything else reads as "the requested model").
        wait: Seconds until a request is admitted again.

    Returns:
        The body.
    """
    limit = format_seconds(per_minute)
    named = model if isinstance(model, str) and model else "the requested model"
    message = (
        f"Rate limit reached for {named} on requests per min (RPM): Limit {limit}, Requested 1. "
        f"Please try again in {duration(wait)}. Visit https://platform.openai.com/account/rate-limits to learn more."
    )
    return error_body(message, "requests", "rate_limit_exceeded")
