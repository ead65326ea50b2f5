"""How the fake OpenAI server finds the endpoint a request is for, and what every endpoint shares.

An endpoint is a :class:`Route`: a method, a path pattern and a renderer that turns a :class:`Call`
(the request, its number, the reply picked for it) into a status and a body. Each API module
(``_chat``, ``_responses``, ``_models``, ``_files``, ``_batches``) exports its ``ROUTES``; the server answers from their
concatenation (``openai_server._ROUTES``), so a new endpoint is a new module with its own ``ROUTES``.
A raw-body or error :class:`~arcanos_flows.testing._replies.Reply` is answered here, the same way for
every route; renderers only see successful replies that leave the body to them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from arcanos_flows.testing._errors import error_body, scripted_error
from arcanos_flows.testing._http import dump_json
from arcanos_flows.testing._replies import RecordedRequest, Reply

__all__ = [
    "CHAT_COMPLETIONS_PATH",
    "COMPLETION_PATHS",
    "RESPONSES_PATH",
    "Call",
    "Renderer",
    "Route",
    "ServerState",
    "completion_route",
    "find_route",
    "is_completion_path",
    "normalized_path",
]

CHAT_COMPLETIONS_PATH = "/v1/chat/completions"
RESPONSES_PATH = "/v1/responses"
COMPLETION_PATHS = frozenset({CHAT_COMPLETIONS_PATH, RESPONSES_PATH})
"""The completion endpoints: their POSTs are what :attr:`FakeOpenAIServer.completion_requests` and the stats count."""
_AZURE_COMPLETION_PATH = re.compile(
    r"/openai/(?:deployments/[^/]+/(?:chat/completions|responses)|responses|v1/(?:chat/completions|responses))"
)

_INVALID_JSON = "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)"  # noqa: E501 - the API's own wording


class ServerState(Protocol):
    """What a renderer may ask of the server answering (a :class:`FakeOpenAIServer`)."""

    def _seen_model(self, model: str) -> None: ...

    def _listed_models(self) -> list[str]: ...

    def _answering_model(self, requested: str, reply: Reply, override: str | None) -> str: ...

    def _body_model(self, requested: str, answered: str) -> str: ...


@dataclass(frozen=True)
class Call:
    """One API request being answered, as a route's renderer sees it.

    Attributes:
        request: The request.
        number: Its number over the server's life (``x-request-id: req_<number>``), reused by completion ids.
        reply: The reply picked for it.
        model_override: The server's model override when the reply was picked.
        params: The named groups of the route's path pattern, percent-decoded (e.g. ``model``).
        server: The server answering.
    """

    request: RecordedRequest
    number: int
    reply: Reply
    model_override: str | None
    params: Mapping[str, str]
    server: ServerState

    @property
    def body(self) -> dict[str, Any] | None:
        """The request body when it is a JSON object, else ``None``."""
        parsed = self.request.json
        return parsed if isinstance(parsed, dict) else None


Renderer = Callable[[Call], tuple[int, bytes]]
"""Turns a call whose reply is a success without a raw body into the status and body to send."""


@dataclass(frozen=True)
class Route:
    """An endpoint of the fake server: the requests it answers and how.

    Attributes:
        method: The HTTP method it answers.
        path: A regular expression the whole normalized path (no query, no trailing slash) must match;
            its named groups become :attr:`Call.params` (a group named ``model`` names the model an
            error reply quotes, instead of the body's ``model``).
        render: Makes the answer to a successful reply (:meth:`answer` handles the rest).

    Examples:
        >>> route = Route("GET", r"/v1/models/(?P<model>.+)", lambda call: (200, b"{}"))
        >>> route.match("GET", "/v1/models/ft%3Agpt-4o"), route.match("POST", "/v1/models/x")
        ({'model': 'ft:gpt-4o'}, None)
    """

    method: str
    path: str
    render: Renderer
    _pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # DOTALL: ids may contain anything once percent-decoded, and the pattern must match the whole path.
        object.__setattr__(self, "_pattern", re.compile(self.path, re.DOTALL))

    def match(self, method: str, path: str) -> dict[str, str] | None:
        """Return the path parameters (percent-decoded) when this route answers ``method path``, else ``None``."""
        if method != self.method:
            return None
        found = self._pattern.fullmatch(path)
        if found is None:
            return None
        return {name: unquote(value) for name, value in found.groupdict().items()}

    def answer(self, call: Call) -> tuple[int, bytes]:
        """Answer ``call``: a raw body as scripted, an error reply in the error envelope, else :attr:`render`."""
        reply = call.reply
        if reply.body is not None:
            return reply.status, reply.body
        if not reply.is_success:
            requested = call.params["model"] if "model" in call.params else (call.body or {}).get("model")
            return reply.status, scripted_error(reply, requested if isinstance(requested, str) else None)
        return self.render(call)


def find_route(routes: Iterable[Route], method: str, path: str) -> tuple[Route, dict[str, str]] | None:
    """Return the first route answering ``method path`` (a normalized path) and its parameters, or ``None``."""
    for route in routes:
        params = route.match(method, path)
        if params is not None:
            return route, params
    return None


def completion_route(
    path: str, build: Callable[[dict[str, Any], Reply, str, int], dict[str, Any]], *, pattern: str | None = None
) -> Route:
    """Return the route of a completion endpoint: a POST to ``path`` checked as the real API checks it.

    A body that is not a JSON object, names no model or asks ``stream=true`` gets a 400; otherwise the
    requested model is remembered (``GET /v1/models`` lists it) and ``build(body, reply, model, number)``
    makes the answer, ``model`` being the one the body names: the one that answers (the reply's, else the
    override, else the requested one, through the server's aliases), or in LiteLLM gateway mode the requested name.

    Args:
        path: The endpoint's path.
        build: Makes the answer object.
        pattern: A path pattern to match instead of ``path``; a group named ``deployment`` (an Azure deployment in
            the URL) names the model asked for, and the body need not name one.

    Returns:
        The route.
    """

    def render(call: Call) -> tuple[int, bytes]:
        body = call.body
        if body is None:
            return 400, error_body(_INVALID_JSON, "invalid_request_error", None)
        requested = call.params.get("deployment") or body.get("model")
        if not isinstance(requested, str) or not requested:
            return 400, error_body("you must provide a model parameter", "invalid_request_error", None, param="model")
        if body.get("stream"):
            return 400, error_body(
                "FakeOpenAIServer does not support stream=true", "invalid_request_error", None, param="stream"
            )
        call.server._seen_model(requested)
        answered = call.server._answering_model(requested, call.reply, call.model_override)
        shown = call.server._body_model(requested, answered)
        return call.reply.status, dump_json(build(body, call.reply, shown, call.number))

    return Route("POST", pattern or re.escape(path), render)


def is_completion_path(path: str) -> bool:
    """Whether a normalized path is a completion endpoint (OpenAI's, or an Azure-shaped one).

    Examples:
        >>> is_completion_path("/v1/responses"), is_completion_path("/openai/deployments/prod/chat/completions")
        (True, True)
        >>> is_completion_path("/v1/models")
        False
    """
    return path in COMPLETION_PATHS or _AZURE_COMPLETION_PATH.fullmatch(path) is not None


def normalized_path(target: str) -> str:
    """Return the path of a request target without its query and trailing slashes.

    Examples:
        >>> normalized_path("/v1/models/?limit=1"), normalized_path("/")
        ('/v1/models', '/')
    """
    path = urlsplit(target).path
    return path.rstrip("/") or "/"
