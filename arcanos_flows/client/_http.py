"""The HTTP clients under the SDK: one TLS context per process, and the event hooks every attempt passes through.

A sync ``httpx2.Client`` calls its hooks; an ``httpx2.AsyncClient`` awaits them, so each hook has a coroutine
twin doing the same checks. In both, the rate limiter waits in a request hook, before the attempt takes a
connection or starts its timeout, and bounding the body is the first response hook, so that no other hook can
read an unbounded body.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import httpx2

from arcanos_flows.core.ratelimit import RequestRateLimiter
from arcanos_flows.core.upstream import bound_response_body, bound_response_body_async

__all__ = ["async_event_hooks", "event_hooks", "tls_context"]

SyncHook = Callable[[Any], None]
AsyncHook = Callable[[Any], Awaitable[None]]


@functools.lru_cache(maxsize=1)
def tls_context() -> ssl.SSLContext:
    """The process's TLS context, shared by every client.

    Building an SSLContext loads the CA store (~100 ms with OpenSSL 3); one per process is enough, as contexts are
    safe to share between clients, threads and event loops. SSL_CERT_FILE / SSL_CERT_DIR are read once, by the
    first client.

    Examples:
        >>> tls_context() is tls_context()
        True
    """
    return httpx2.create_ssl_context()


def _quota_exhausted(response: httpx2.Response) -> None:
    # The SDK retries every 429, but `insufficient_quota` cannot succeed until someone pays; the SDK's
    # documented `x-should-retry` header tells it so, without touching its internals. The body is read.
    try:
        error = response.json().get("error", {})
        exhausted = "insufficient_quota" in (error.get("code"), error.get("type"))
    except (ValueError, AttributeError, RecursionError):
        return
    if exhausted:
        response.headers["x-should-retry"] = "false"


def _refuse_retrying_exhausted_quota(response: httpx2.Response) -> None:
    if response.status_code == 429:
        response.read()
        _quota_exhausted(response)


async def _refuse_retrying_exhausted_quota_async(response: httpx2.Response) -> None:
    if response.status_code == 429:
        await response.aread()
        _quota_exhausted(response)


def event_hooks(limiter: RequestRateLimiter | None) -> dict[str, list[SyncHook]]:
    """The ``event_hooks`` of a sync client: wait for the limiter, bound the body, refuse retrying a spent quota.

    Examples:
        >>> [len(hooks) for hooks in event_hooks(RequestRateLimiter(60)).values()]
        [1, 2]
    """
    return {
        "request": [limiter] if limiter is not None else [],
        "response": [bound_response_body, _refuse_retrying_exhausted_quota],
    }


def async_event_hooks(limiter: RequestRateLimiter | None) -> dict[str, list[AsyncHook]]:
    """The ``event_hooks`` of an async client: the coroutine twins of :func:`event_hooks`, in the same order.

    Examples:
        >>> [len(hooks) for hooks in async_event_hooks(None).values()]
        [0, 2]
    """
    return {
        "request": [limiter.request_hook_async] if limiter is not None else [],
        "response": [bound_response_body_async, _refuse_retrying_exhausted_quota_async],
    }
