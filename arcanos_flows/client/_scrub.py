"""Taking secrets out of an exception before it is re-raised, reported or pickled with a failed run."""

from __future__ import annotations

import contextlib

import httpx2

from arcanos_flows.core.redaction import REDACTED, redact, redact_data

__all__ = ["scrub"]

_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "api-key", "x-api-key"})


def _without_credentials(request: httpx2.Request) -> httpx2.Request:
    headers = [
        (name, REDACTED if name.lower() in _CREDENTIAL_HEADERS else redact(value))
        for name, value in request.headers.items()
    ]
    return httpx2.Request(request.method, request.url, headers=headers, content=request.content)


def scrub(error: BaseException) -> None:
    """Redact, in place, what an exception could leak: its text, its attributes, its request and response.

    The same exception object is re-raised; it only loses secrets. Its text may hold what an upstream echoed
    (in a message, a body, a refusal, a model name, a request id); and the SDK's ``request`` carries the API key
    in its Authorization header, which Prefect would pickle into result storage with a failed run. Both are
    replaced by redacted copies built through httpx2's public constructors.

    Examples:
        >>> error = RuntimeError("upstream echoed sk-proj-abcdefghijklmnop")
        >>> scrub(error)
        >>> error.args
        ('upstream echoed [REDACTED]',)
    """
    if error.__suppress_context__:
        # Shown by nothing, but pickled by reducers that keep the chain (tblib's, which `import distributed`
        # registers for every exception class): the SDK's suppressed context holds the raw request and its key.
        error.__context__ = None
    cause = error.__cause__
    if cause is not None and cause is not error:
        scrub(cause)  # an APIConnectionError's cause is the HTTP client's error, with the request in it
    cleaned = tuple(redact(arg) if isinstance(arg, str) else arg for arg in error.args)
    if cleaned != error.args:
        error.args = cleaned
    for attribute, value in list(vars(error).items()):
        if isinstance(value, (str, dict, list)):
            scrubbed = redact_data(value)
            if scrubbed != value:
                with contextlib.suppress(AttributeError, TypeError):  # a read-only property of the same name
                    setattr(error, attribute, scrubbed)
    request = getattr(error, "request", None)
    if isinstance(request, httpx2.Request):
        try:
            safe_request = _without_credentials(request)
        except httpx2.RequestNotRead:
            safe_request = httpx2.Request(request.method, request.url)
        with contextlib.suppress(AttributeError, TypeError):
            error.request = safe_request  # type: ignore[attr-defined]
        response = getattr(error, "response", None)
        if isinstance(response, httpx2.Response):
            with contextlib.suppress(AttributeError, TypeError, httpx2.ResponseNotRead):
                error.response = httpx2.Response(  # type: ignore[attr-defined]
                    response.status_code,
                    headers=[(name, redact(value)) for name, value in response.headers.items()],
                    content=redact(response.content.decode("utf-8", "replace")).encode("utf-8"),
                    request=safe_request,
                )
