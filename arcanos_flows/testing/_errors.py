"""Error bodies of the fake OpenAI server: the OpenAI error envelope, and what a scripted error says by default.

Every non-2xx answer is ``{"error": {"message", "type", "param", "code"}}``, as the real API sends it.
A :class:`~arcanos_flows.testing._replies.Reply` that leaves ``error_code``, ``error_type`` or
``error_message`` unset gets the values the real API would send for its status.
"""

from __future__ import annotations

from arcanos_flows.testing._http import dump_json
from arcanos_flows.testing._replies import Reply

__all__ = ["DEFAULT_ERROR_MESSAGES", "default_error_type", "error_body", "scripted_error"]

DEFAULT_ERROR_MESSAGES = {
    400: "Invalid request.",
    401: "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
    403: "You are not allowed to perform this request.",
    404: "The requested resource does not exist.",
    409: "The request conflicts with the current state of the resource.",
    422: "The request could not be processed.",
    429: "Rate limit reached for requests. Please try again later.",
}
"""``error.message`` of a scripted 4xx error without a message, by status (other statuses get a generic one)."""


def error_body(message: str, error_type: str, code: str | None, *, param: str | None = None) -> bytes:
    """Return the OpenAI error envelope as body bytes.

    Args:
        message: ``error.message``.
        error_type: ``error.type``.
        code: ``error.code``.
        param: ``error.param``, the request field at fault.

    Returns:
        The body.

    Examples:
        >>> error_body("Invalid request.", "invalid_request_error", None)
        b'{"error": {"message": "Invalid request.", "type": "invalid_request_error", "param": null, "code": null}}'
    """
    return dump_json({"error": {"message": message, "type": error_type, "param": param, "code": code}})


def scripted_error(reply: Reply, model: str | None) -> bytes:
    """Return the error body of a non-2xx :class:`Reply`, filling in what it leaves unset as the real API would.

    Args:
        reply: The scripted reply.
        model: The model the request named (quoted by ``model_not_found``), or ``None``.

    Returns:
        The body.
    """
    status, code = reply.status, reply.error_code
    if code is None and status == 401:
        code = "invalid_api_key"
    elif code is None and status == 429:
        code = "rate_limit_exceeded"
    error_type = reply.error_type or default_error_type(status, code)
    message = reply.error_message
    if message is None:
        if code == "insufficient_quota":
            message = "You exceeded your current quota, please check your plan and billing details."
        elif code == "model_not_found":
            message = f"The model `{model or 'unknown'}` does not exist or you do not have access to it."
        elif status >= 500:
            message = "The server had an error while processing your request. Sorry about that!"
        else:
            message = DEFAULT_ERROR_MESSAGES.get(status, f"Request failed with status {status}.")
    return error_body(message, error_type, code)


def default_error_type(status: int, code: str | None) -> str:
    """Return the ``error.type`` the real API sends with ``status`` and ``code``.

    Examples:
        >>> default_error_type(503, None), default_error_type(429, "insufficient_quota"), default_error_type(400, None)
        ('server_error', 'insufficient_quota', 'invalid_request_error')
    """
    if status >= 500:
        return "server_error"
    if status == 429:
        return "insufficient_quota" if code == "insufficient_quota" else "requests"
    return "invalid_request_error"
