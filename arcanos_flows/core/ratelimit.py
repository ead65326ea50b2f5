"""Client-side rate limiting: keep a process under the account's requests per minute.

``ARCANOS_REQUESTS_PER_MINUTE`` turns it on. Every client of the process that talks to the same endpoint with
the same API key shares one :class:`RequestRateLimiter`, which every HTTP attempt passes through (SDK retries
included) as an ``httpx`` request event hook: requests leave evenly spaced, one every ``60 / rpm`` seconds,
instead of bursting into 429s and backing off. Sync and async clients draw from the same limiter: a thread
sleeps until its slot, a coroutine awaits it (:meth:`RequestRateLimiter.aacquire`) and leaves the event loop
free. The limit is per process; see README ("Rate limits") for limiting several processes that share one key.

Nothing here imports Prefect or the SDK.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from arcanos_flows.core.settings import ArcanosSettings

__all__ = ["DEFAULT_ENDPOINT", "RequestRateLimiter", "shared_limiter"]

DEFAULT_ENDPOINT = "https://api.openai.com/v1"
"""The endpoint the SDK uses when ``OPENAI_BASE_URL`` is not set."""

logger = logging.getLogger("arcanos_flows.ratelimit")

_limiters: dict[tuple[str, str, float], RequestRateLimiter] = {}
_limiters_lock = threading.Lock()


class RequestRateLimiter:
    """Lets requests through at most ``requests_per_minute`` per minute, evenly spaced; thread-safe.

    Each caller reserves the next free slot and waits until it (outside any lock): a thread sleeps
    (:meth:`acquire`), a coroutine awaits (:meth:`aacquire`), and both draw from the same slots, so callers
    leave in the order they arrived, one every :attr:`interval` seconds. ``burst`` requests may leave at once
    after an idle period; the long-run rate never exceeds the limit.

    Args:
        requests_per_minute: The limit.
        burst: How many requests may leave back to back (1: strictly evenly spaced).
        clock: A monotonic clock in seconds (for tests).
        sleep: How a thread waits (for tests); coroutines always await ``asyncio.sleep``.

    Examples:
        >>> limiter = RequestRateLimiter(600)           # one request every 100 ms
        >>> limiter.interval
        0.1
        >>> limiter.acquire(), limiter.acquire() > 0     # the first leaves at once, the second waits
        (0.0, True)
    """

    def __init__(
        self,
        requests_per_minute: float,
        *,
        burst: int = 1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = time.sleep,
    ) -> None:
        if not requests_per_minute > 0:
            raise ValueError(f"requests_per_minute must be > 0, got {requests_per_minute}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst}")
        self.requests_per_minute = float(requests_per_minute)
        self.burst = burst
        self.interval = 60.0 / self.requests_per_minute
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        # Generic cell rate algorithm: the theoretical time of the next request, if requests were evenly spaced.
        self._next = float("-inf")
        self._tolerance = (burst - 1) * self.interval
        self.requests = 0
        self.waited = 0.0

    def reserve(self) -> float:
        """Take the next free slot without waiting.

        Returns:
            Seconds from now until the slot; the caller must not send before then.
        """
        with self._lock:
            now = self._clock()
            due = max(self._next, now)
            start = max(now, due - self._tolerance)
            self._next = due + self.interval
            delay = start - now
            self.requests += 1
            self.waited += delay
            return delay

    def acquire(self) -> float:
        """Wait for the next free slot.

        Returns:
            Seconds waited.
        """
        delay = self.reserve()
        if delay > 0:
            logger.debug("rate limit %g/min: waiting %.3f s", self.requests_per_minute, delay)
            self._sleep(delay)
        return delay

    async def aacquire(self) -> float:
        """Wait for the next free slot without blocking the event loop: the slot is taken as in :meth:`acquire`.

        Returns:
            Seconds waited.

        Examples:
            >>> import asyncio
            >>> limiter = RequestRateLimiter(120)  # one request every 0.5 s
            >>> first = asyncio.run(limiter.aacquire())
            >>> second = asyncio.run(limiter.aacquire())  # awaited the next slot
            >>> first, 0 < second <= 0.5
            (0.0, True)
        """
        delay = self.reserve()
        if delay > 0:
            logger.debug("rate limit %g/min: awaiting %.3f s", self.requests_per_minute, delay)
            await asyncio.sleep(delay)
        return delay

    def __call__(self, request: Any) -> None:
        """The ``httpx`` request event hook: wait for a slot before the request is sent."""
        self.acquire()

    async def request_hook_async(self, request: Any) -> None:
        """The ``httpx2.AsyncClient`` request event hook (a coroutine): await a slot before the request is sent.

        Examples:
            >>> import asyncio
            >>> limiter = RequestRateLimiter(600)
            >>> asyncio.run(limiter.request_hook_async(None)); limiter.requests
            1
        """
        await self.aacquire()

    def __repr__(self) -> str:
        return f"RequestRateLimiter(requests_per_minute={self.requests_per_minute:g}, burst={self.burst})"


def shared_limiter(settings: ArcanosSettings) -> RequestRateLimiter | None:
    """The process-wide limiter for these settings' endpoint and API key, or ``None`` when the limit is off.

    Clients built from settings that differ in anything else (timeouts, retries, webhook) share it, so all the
    requests a process makes with one key count against one limit.

    Examples:
        >>> settings = ArcanosSettings(openai_api_key="sk-example-0000", fine_tuned_model="ft:gpt-5.1:a::x",
        ...                            requests_per_minute=600, _env_file=None)
        >>> shared_limiter(settings) is shared_limiter(settings.model_copy(update={"max_retries": 0}))
        True
    """
    per_minute = settings.requests_per_minute
    if per_minute is None:
        return None
    endpoint = settings.openai_base_url or DEFAULT_ENDPOINT
    # The key itself is not kept here: a digest tells keys apart just as well.
    account = hashlib.sha256(settings.openai_api_key.get_secret_value().encode()).hexdigest()
    key = (endpoint, account, float(per_minute))
    with _limiters_lock:
        limiter = _limiters.get(key)
        if limiter is None:
            limiter = _limiters[key] = RequestRateLimiter(per_minute)
        return limiter
