"""The Batch API in the fake OpenAI server: batches of Chat Completions or Responses requests run from a file.

``POST /v1/batches`` takes an uploaded ``batch`` file (``_files``) of ``BatchRequestInput`` lines and answers
a ``Batch`` in ``validating``; ``GET /v1/batches/{id}`` shows it move on, ``GET /v1/batches`` lists the
batches newest first, ``POST /v1/batches/{id}/cancel`` cancels one. Nothing runs in the background: a batch
is brought up to date whenever a request reads it, from the time elapsed since its creation.

**Timeline.** Over the batch's ``delay`` (``FakeOpenAIServer(batch_delay=...)``, :attr:`BatchControls.delay`),
it is ``validating`` for the first 10 %, ``in_progress`` for the next 80 % (its rows finishing one by one, in
file order, at even intervals), ``finalizing`` for the last 10 %, then ``completed``. The input is checked as
the API checks it (file of purpose ``batch``, at most :attr:`BatchControls.max_requests` lines and
:attr:`FileStore.max_batch_bytes` bytes, each line JSON with a unique ``custom_id``, ``method`` ``POST``, the
batch's ``url`` and a ``body``); a bad input turns the batch ``failed`` when validation ends, with ``errors``
naming the lines. A cancel makes it ``cancelling``, then ``cancelled`` 10 % of the delay later.

**Rows.** Each row is answered exactly as a direct request with the same body would be (the same renderer,
structured output, usage counting words as tokens, the server's ``model_override``), unless
:class:`BatchControls` scripts it otherwise. When the batch ends, rows answered 2xx go to the output file, the
others (error statuses, ``error`` objects, rows never run because the batch expired or was cancelled, with
codes ``batch_expired`` and ``batch_cancelled``) to the error file; a file with no row is not created. Row
ids: ``batch_req_<batch>_<line>``, request ids ``req_batch_<batch>_<line>``, completion ids
``chatcmpl-<batch * 1,000,000 + line>`` (``resp_…`` on the Responses API). Rows are not HTTP requests: the
server does not record or count them, and they take none of its scripted replies or ``reply_when`` rules.

Fields without a value are left out of a ``Batch`` (the API sends ``null``, which its OpenAPI schema does not
allow); the SDK reads both as ``None``.

Examples:
    >>> import json, urllib.request
    >>> from arcanos_flows.testing import FakeOpenAIServer
    >>> def call(server, method, path, body=None):
    ...     data = None if body is None else json.dumps(body).encode()
    ...     request = urllib.request.Request(server.base_url + path, data=data, method=method)
    ...     with urllib.request.urlopen(request) as response:
    ...         return json.load(response)
    >>> line = {"custom_id": "step-1", "method": "POST", "url": "/v1/chat/completions",
    ...         "body": {"model": "gpt-5.1", "messages": [{"role": "user", "content": "Any news?"}]}}
    >>> with FakeOpenAIServer(batch_delay=0) as server:
    ...     stored = server.files.add(json.dumps(line).encode(), purpose="batch")
    ...     batch = call(server, "POST", "/batches", {"input_file_id": stored.id,
    ...                  "endpoint": "/v1/chat/completions", "completion_window": "24h"})
    ...     done = call(server, "GET", "/batches/" + batch["id"])
    ...     row = json.loads(server.files.get(done["output_file_id"]).data)
    >>> batch["status"], done["status"], done["request_counts"]
    ('validating', 'completed', {'total': 1, 'completed': 1, 'failed': 0})
    >>> row["custom_id"], row["response"]["body"]["choices"][0]["message"]["content"]
    ('step-1', '[fake] Any news?')
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from arcanos_flows.testing import _chat, _responses
from arcanos_flows.testing._errors import error_body
from arcanos_flows.testing._files import FileStore
from arcanos_flows.testing._http import dump_json, parse_json
from arcanos_flows.testing._replies import RecordedRequest, Reply
from arcanos_flows.testing._routes import CHAT_COMPLETIONS_PATH, RESPONSES_PATH, Call, Route, find_route

__all__ = [
    "BATCH_ENDPOINTS",
    "COMPLETION_WINDOW",
    "DEFAULT_BATCH_DELAY",
    "MAX_BATCH_REQUESTS",
    "MAX_METADATA_KEYS",
    "ROUTES",
    "BatchControls",
]

MAX_BATCH_REQUESTS = 50_000
"""The most requests one batch may hold; :attr:`BatchControls.max_requests` starts at it."""

MAX_METADATA_KEYS = 16
"""The most ``metadata`` keys a batch may carry (keys up to 64 characters, values up to 512)."""

COMPLETION_WINDOW = "24h"
"""The only ``completion_window`` the API takes."""

BATCH_ENDPOINTS = (CHAT_COMPLETIONS_PATH, RESPONSES_PATH)
"""The endpoints a batch of the fake may run."""

DEFAULT_BATCH_DELAY = 0.5
"""Seconds from a batch's creation to its completion, unless told otherwise."""

_WINDOW_SECONDS = 24 * 3600
_ROW_NUMBERS = 1_000_000
_VALIDATING = 0.1
_RUNNING = 0.8
_ENDING = {"completed", "expired", "cancelled"}
_TERMINAL = _ENDING | {"failed"}
_UNFINISHED_MESSAGES = {
    "batch_expired": "This request could not be executed before the completion window expired.",
    "batch_cancelled": "This request was not executed because the batch was cancelled.",
}


def _row_routes() -> dict[str, Route]:
    """The route answering each batch endpoint's rows: the one answering direct requests."""
    routes: dict[str, Route] = {}
    for path in BATCH_ENDPOINTS:
        found = find_route((*_chat.ROUTES, *_responses.ROUTES), "POST", path)
        if found is None:
            raise RuntimeError(f"no route answers POST {path}")
        routes[path] = found[0]
    return routes


_ROW_ROUTES = _row_routes()


@dataclass(frozen=True)
class _Row:
    line: int
    custom_id: str
    body: dict[str, Any]
    raw: bytes


@dataclass(frozen=True)
class _Plan:
    """What the next batch does instead of completing: expire or stall after ``finished`` rows, or fail."""

    kind: Literal["expire", "stall", "fail"]
    finished: int | None = None
    error: dict[str, Any] | None = None


@dataclass
class _RowScript:
    reply: Reply | None
    error_code: str | None
    times: int | None


@dataclass(eq=False)
class _Batch:
    number: int
    endpoint: str
    input_file_id: str
    metadata: dict[str, str] | None
    delay: float
    started: float
    wall: float
    rows: list[_Row]
    errors: list[dict[str, Any]]
    plan: _Plan | None
    model: str | None
    status: str = "validating"
    stamps: dict[str, int] = field(default_factory=dict)
    results: list[dict[str, Any]] = field(default_factory=list)
    cancelled: float | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None

    @property
    def id(self) -> str:
        return f"batch_{self.number}"

    def stamp(self, name: str, at: float) -> None:
        self.stamps[name] = int(self.wall + (at - self.started))

    def finish_time(self, index: int) -> float:
        return self.started + self.delay * (_VALIDATING + _RUNNING * (index + 1) / len(self.rows))

    def finish_limit(self) -> int:
        if self.plan is None or self.plan.kind == "fail":
            return len(self.rows)
        finished = len(self.rows) // 2 if self.plan.finished is None else self.plan.finished
        return min(finished, len(self.rows))


def _failed(row: dict[str, Any]) -> bool:
    response = row["response"]
    return row["error"] is not None or response is None or not 200 <= response["status_code"] < 300


def _usage(results: list[dict[str, Any]]) -> dict[str, Any]:
    input_tokens = output_tokens = cached = reasoning = 0
    for row in results:
        body = row["response"]["body"] if not _failed(row) else None
        usage = body.get("usage") if isinstance(body, dict) else None
        if not isinstance(usage, dict):
            continue
        if "prompt_tokens" in usage:  # Chat Completions
            input_tokens += usage.get("prompt_tokens", 0)
            output_tokens += usage.get("completion_tokens", 0)
            cached += (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
            reasoning += (usage.get("completion_tokens_details") or {}).get("reasoning_tokens", 0)
        else:  # Responses
            input_tokens += usage.get("input_tokens", 0)
            output_tokens += usage.get("output_tokens", 0)
            cached += (usage.get("input_tokens_details") or {}).get("cached_tokens", 0)
            reasoning += (usage.get("output_tokens_details") or {}).get("reasoning_tokens", 0)
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": input_tokens + output_tokens,
    }


def _line_error(code: str, message: str, line: int | None, param: str | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param, "line": line}


def _check_line(text: str, number: int, endpoint: str, seen: set[str]) -> _Row | dict[str, Any]:
    """Return the row of one input line, or the error the API reports for it."""
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError):
        parsed = None
    if not isinstance(parsed, dict):
        return _line_error("invalid_json_line", "This line is not parseable as valid JSON.", number)
    custom_id = parsed.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return _line_error(
            "missing_required_parameter", "Missing required parameter: 'custom_id'.", number, "custom_id"
        )
    if custom_id in seen:
        message = f"The custom_id '{custom_id}' is a duplicate: the custom_id of each request must be unique."
        return _line_error("duplicate_custom_id", message, number, "custom_id")
    seen.add(custom_id)
    if parsed.get("method") != "POST":
        return _line_error("invalid_method", "The method of every request in a batch must be 'POST'.", number, "method")
    if parsed.get("url") != endpoint:
        message = f"The URL provided for this request does not match the batch endpoint {endpoint}."
        return _line_error("url_mismatch", message, number, "url")
    body = parsed.get("body")
    if not isinstance(body, dict):
        return _line_error("missing_required_parameter", "Missing required parameter: 'body'.", number, "body")
    return _Row(number, custom_id, body, text.encode("utf-8"))


class BatchControls:
    """The batches of a fake server (``server.batches``): their settings, counters and scripted misbehaviour.

    Rows answer as direct requests would unless scripted: :meth:`fail_rows` (an HTTP error status),
    :meth:`error_rows` (an ``error`` object, no response), :meth:`answer_with_model`,
    :meth:`answer_invalid_json` and, for anything else a :class:`Reply` says, :meth:`reply_rows`. A row script
    is keyed by ``custom_id``, applies to the next ``times`` rows of that id (any batch; default once, so a
    retried batch succeeds) and replaces an earlier script of the same id. Whole batches are scripted in
    creation order: :meth:`expire_next`, :meth:`stall_next`, :meth:`fail_next_validation` each apply to one
    batch, the next one created.

    Args:
        files: Where input files are read and output files stored.
        delay: Seconds from a batch's creation to its completion (:attr:`delay`).

    Examples:
        >>> controls = BatchControls(FileStore(), delay=0.1)
        >>> controls.fail_rows({"step-3": 500})
        >>> controls.answer_with_model({"step-2": "gpt-4o"})
        >>> controls.expire_next(finished=1)
        >>> controls.created, controls.delay, controls.max_requests
        (0, 0.1, 50000)
    """

    def __init__(self, files: FileStore, *, delay: float = DEFAULT_BATCH_DELAY) -> None:
        _check_delay(delay)
        self._lock = threading.Lock()
        self._files = files
        self._delay = delay
        self._max_requests = MAX_BATCH_REQUESTS
        self._batches: dict[str, _Batch] = {}
        self._counter = 0
        self._created = 0
        self._plans: deque[_Plan] = deque()
        self._row_scripts: dict[str, _RowScript] = {}

    @property
    def delay(self) -> float:
        """Seconds from a batch's creation to its completion, for batches created from now on (settable)."""
        with self._lock:
            return self._delay

    @delay.setter
    def delay(self, seconds: float) -> None:
        _check_delay(seconds)
        with self._lock:
            self._delay = seconds

    @property
    def max_requests(self) -> int:
        """The most requests a batch may hold (settable; :data:`MAX_BATCH_REQUESTS` at first)."""
        with self._lock:
            return self._max_requests

    @max_requests.setter
    def max_requests(self, count: int) -> None:
        with self._lock:
            self._max_requests = count

    @property
    def created(self) -> int:
        """How many batches ``POST /v1/batches`` created (those failing validation too) since start or :meth:`clear`."""
        with self._lock:
            return self._created

    def reply_rows(self, rows: Mapping[str, Reply], *, times: int | None = 1) -> None:
        """Answer the rows of these ``custom_id`` with these replies, as a direct request would be answered.

        An error reply gives the row ``response.status_code`` and the error envelope as ``body``; a success
        reply its content, model, refusal... (``delay``, ``headers`` and the like do not apply to a row).

        Args:
            rows: ``custom_id`` to reply.
            times: How many rows of each id the script answers (``None``: all, until :meth:`clear`).

        Raises:
            ValueError: ``times`` below 1, or a reply that hangs up (use :meth:`error_rows`).

        Examples:
            >>> BatchControls(FileStore()).reply_rows({"step-1": Reply.refused()}, times=None)
        """
        if any(reply.drop_connection for reply in rows.values()):
            raise ValueError("reply_rows: a row cannot hang up; use error_rows for a row without a response")
        self._script({custom_id: (reply, None) for custom_id, reply in rows.items()}, times)

    def fail_rows(self, rows: Mapping[str, int], *, times: int | None = 1) -> None:
        """Answer the rows of these ``custom_id`` with an HTTP error status and the API's error body.

        Args:
            rows: ``custom_id`` to status (400-599), e.g. ``{"step-3": 500}``.
            times: How many rows of each id fail (``None``: all, until :meth:`clear`).

        Examples:
            >>> BatchControls(FileStore()).fail_rows({"step-3": 500, "step-4": 429})
        """
        self.reply_rows({custom_id: Reply.error(status) for custom_id, status in rows.items()}, times=times)

    def error_rows(self, rows: Mapping[str, str], *, times: int | None = 1) -> None:
        """Give the rows of these ``custom_id`` no response but an ``error`` object with this code.

        Args:
            rows: ``custom_id`` to ``error.code``, e.g. ``{"step-4": "server_error"}``.
            times: How many rows of each id fail (``None``: all, until :meth:`clear`).

        Examples:
            >>> BatchControls(FileStore()).error_rows({"step-4": "server_error"})
        """
        self._script({custom_id: (None, code) for custom_id, code in rows.items()}, times)

    def answer_with_model(self, rows: Mapping[str, str], *, times: int | None = 1) -> None:
        """Answer the rows of these ``custom_id`` with another model than the one their body names.

        Args:
            rows: ``custom_id`` to the answering model, e.g. ``{"step-2": "gpt-4o"}``.
            times: How many rows of each id (``None``: all, until :meth:`clear`).

        Examples:
            >>> BatchControls(FileStore()).answer_with_model({"step-2": "gpt-4o"})
        """
        self.reply_rows({custom_id: Reply.other_model(model) for custom_id, model in rows.items()}, times=times)

    def answer_invalid_json(self, custom_ids: Iterable[str], *, times: int | None = 1) -> None:
        """Answer the rows of these ``custom_id`` with prose where their body asks for JSON (``Reply.invalid_json()``).

        Args:
            custom_ids: The rows.
            times: How many rows of each id (``None``: all, until :meth:`clear`).

        Examples:
            >>> BatchControls(FileStore()).answer_invalid_json(["step-5"])
        """
        self.reply_rows(dict.fromkeys(custom_ids, Reply.invalid_json()), times=times)

    def expire_next(self, *, finished: int | None = None) -> None:
        """Make the next batch created expire at the end of its delay, with only ``finished`` rows run.

        The rows run stay in the output (or error) file; the others go to the error file with
        ``error.code`` ``batch_expired``.

        Args:
            finished: How many rows run before it expires, in file order (default: half, rounded down).

        Raises:
            ValueError: ``finished`` below 0.

        Examples:
            >>> BatchControls(FileStore()).expire_next(finished=2)
        """
        if finished is not None and finished < 0:
            raise ValueError(f"expire_next: finished must be >= 0, got {finished}")
        with self._lock:
            self._plans.append(_Plan("expire", finished))

    def stall_next(self, *, finished: int = 0) -> None:
        """Make the next batch created stop after ``finished`` rows and stay ``in_progress`` until cancelled.

        A cancel then keeps exactly those rows, whatever the timing.

        Args:
            finished: How many rows run, in file order.

        Raises:
            ValueError: ``finished`` below 0.

        Examples:
            >>> BatchControls(FileStore()).stall_next(finished=3)
        """
        if finished < 0:
            raise ValueError(f"stall_next: finished must be >= 0, got {finished}")
        with self._lock:
            self._plans.append(_Plan("stall", finished))

    def fail_next_validation(
        self,
        *,
        code: str = "invalid_request",
        message: str = "The batch input file failed validation.",
        line: int | None = None,
    ) -> None:
        """Make the next batch created go ``failed`` when validation ends, with this error, whatever its input.

        Args:
            code: ``errors.data[0].code``.
            message: ``errors.data[0].message``.
            line: ``errors.data[0].line``.

        Examples:
            >>> BatchControls(FileStore()).fail_next_validation(code="token_limit_exceeded")
        """
        with self._lock:
            self._plans.append(_Plan("fail", error=_line_error(code, message, line)))

    def clear(self) -> None:
        """Forget the batches, the files, every script and the :attr:`created` count (ids keep counting).

        Examples:
            >>> controls = BatchControls(FileStore())
            >>> controls.stall_next()
            >>> controls.clear()
        """
        with self._lock:
            self._batches.clear()
            self._plans.clear()
            self._row_scripts.clear()
            self._created = 0
        self._files.clear()

    # --- Used by the routes ------------------------------------------------------------------------------------

    def _script(self, rows: Mapping[str, tuple[Reply | None, str | None]], times: int | None) -> None:
        if times is not None and times < 1:
            raise ValueError(f"times must be at least 1, got {times}")
        with self._lock:
            for custom_id, (reply, code) in rows.items():
                self._row_scripts[custom_id] = _RowScript(reply, code, times)

    def _create(self, input_file_id: str, endpoint: str, metadata: dict[str, str] | None) -> dict[str, Any]:
        now = time.monotonic()
        stored = self._files.get(input_file_id)
        max_bytes = self._files.max_batch_bytes
        with self._lock:
            self._counter += 1
            self._created += 1
            plan = self._plans.popleft() if self._plans else None
            rows: list[_Row] = []
            if plan is not None and plan.error is not None:
                errors = [plan.error]
            elif stored is None:
                errors = [_line_error("invalid_file", f"No such File object: {input_file_id}", None, "input_file_id")]
            elif stored.purpose != "batch":
                message = f"The input file {input_file_id} has purpose '{stored.purpose}'; a batch needs 'batch'."
                errors = [_line_error("invalid_file_purpose", message, None, "input_file_id")]
            elif len(stored.data) > max_bytes:
                message = f"The input file is {len(stored.data)} bytes, more than the {max_bytes} a batch may have."
                errors = [_line_error("file_too_large", message, None, "input_file_id")]
            else:
                rows, errors = self._read_input(stored.data, endpoint)
            model = rows[0].body.get("model") if rows else None
            batch = _Batch(
                number=self._counter,
                endpoint=endpoint,
                input_file_id=input_file_id,
                metadata=metadata,
                delay=self._delay,
                started=now,
                wall=time.time(),
                rows=rows,
                errors=errors,
                plan=plan,
                model=model if isinstance(model, str) else None,
            )
            self._batches[batch.id] = batch
            return self._object(batch)

    def _read_input(self, data: bytes, endpoint: str) -> tuple[list[_Row], list[dict[str, Any]]]:
        lines = data.decode("utf-8", "replace").split("\n")
        while lines and not lines[-1].strip():
            lines.pop()
        if not lines:
            return [], [_line_error("empty_file", "The batch input file is empty.", None)]
        if len(lines) > self._max_requests:
            message = f"The batch input file has {len(lines)} requests, more than the limit of {self._max_requests}."
            return [], [_line_error("too_many_tasks", message, None)]
        rows: list[_Row] = []
        errors: list[dict[str, Any]] = []
        seen: set[str] = set()
        for number, text in enumerate(lines, start=1):
            checked = _check_line(text.rstrip("\r"), number, endpoint, seen)
            if isinstance(checked, _Row):
                rows.append(checked)
            else:
                errors.append(checked)
        return ([], errors) if errors else (rows, [])

    def _get(self, batch_id: str, call: Call) -> dict[str, Any] | None:
        with self._lock:
            batch = self._batches.get(batch_id)
            if batch is None:
                return None
            self._advance(batch, time.monotonic(), call)
            return self._object(batch)

    def _list(self, after: str | None, limit: int, call: Call) -> dict[str, Any]:
        now = time.monotonic()
        with self._lock:
            newest_first = sorted(self._batches.values(), key=lambda batch: batch.number, reverse=True)
            if after is not None:
                ids = [batch.id for batch in newest_first]
                newest_first = newest_first[ids.index(after) + 1 :] if after in ids else []
            page = newest_first[:limit]
            for batch in page:
                self._advance(batch, now, call)
            listing: dict[str, Any] = {
                "object": "list",
                "data": [self._object(batch) for batch in page],
                "has_more": len(newest_first) > limit,
            }
            if page:
                listing["first_id"], listing["last_id"] = page[0].id, page[-1].id
            return listing

    def _cancel(self, batch_id: str, call: Call) -> dict[str, Any] | str | None:
        """Cancel a batch: its object (``cancelling``), the status it cannot be cancelled in, or ``None`` if unknown."""
        now = time.monotonic()
        with self._lock:
            batch = self._batches.get(batch_id)
            if batch is None:
                return None
            self._advance(batch, now, call)
            if batch.status in ("validating", "in_progress"):
                batch.status, batch.cancelled = "cancelling", now
                batch.stamp("cancelling_at", now)
            elif batch.status != "cancelling":
                return batch.status
            return self._object(batch)

    # --- Progress ----------------------------------------------------------------------------------------------

    def _advance(self, batch: _Batch, now: float, call: Call) -> None:
        """Bring ``batch`` up to ``now``: run the rows due, move the status on, write the files when it ends."""
        delay = batch.delay
        if batch.status == "cancelling" and batch.cancelled is not None:
            ends = batch.cancelled + delay * _VALIDATING
            if now >= ends:
                self._end(batch, "cancelled", ends)
            return
        if batch.status == "validating":
            validated = batch.started + delay * _VALIDATING
            if now < validated:
                return
            if batch.errors:
                batch.status = "failed"
                batch.stamp("failed_at", validated)
                return
            batch.status = "in_progress"
            batch.stamp("in_progress_at", validated)
        if batch.status in _TERMINAL:
            return
        limit = batch.finish_limit()
        while len(batch.results) < limit and batch.finish_time(len(batch.results)) <= now:
            batch.results.append(self._answer(batch, batch.rows[len(batch.results)], call))
        deadline = batch.started + delay
        if batch.plan is not None and batch.plan.kind == "expire":
            if now >= deadline:
                self._end(batch, "expired", deadline)
            return
        if len(batch.results) < len(batch.rows):
            return  # still running, or stalled
        finalizing = batch.started + delay * (_VALIDATING + _RUNNING)
        if batch.status == "in_progress" and now >= finalizing:
            batch.status = "finalizing"
            batch.stamp("finalizing_at", finalizing)
        if batch.status == "finalizing" and now >= deadline:
            self._end(batch, "completed", deadline)

    def _answer(self, batch: _Batch, row: _Row, call: Call) -> dict[str, Any]:
        """Run one row as a direct request to the batch's endpoint, unless a script says otherwise."""
        script = self._row_scripts.get(row.custom_id)
        if script is not None and script.times is not None:
            script.times -= 1
            if script.times == 0:
                del self._row_scripts[row.custom_id]
        answer: dict[str, Any] = {"id": f"batch_req_{batch.number}_{row.line}", "custom_id": row.custom_id}
        if script is not None and script.error_code is not None:
            message = f"The request failed with error {script.error_code}."
            return {**answer, "response": None, "error": {"code": script.error_code, "message": message}}
        reply = script.reply if script is not None and script.reply is not None else Reply()
        number = batch.number * _ROW_NUMBERS + row.line
        request = RecordedRequest("POST", batch.endpoint, {}, row.raw, row.body, time.monotonic())
        status, payload = _ROW_ROUTES[batch.endpoint].answer(
            Call(request, number, reply, call.model_override, {}, call.server)
        )
        body = parse_json(payload)
        response = {
            "status_code": status,
            "request_id": f"req_batch_{batch.number}_{row.line}",
            "body": body if body is not None else payload.decode("utf-8", "replace"),
        }
        return {**answer, "response": response, "error": None}

    def _end(self, batch: _Batch, status: str, at: float) -> None:
        """End ``batch`` with ``status`` at ``at``: its output and error files are written then."""
        unfinished = batch.rows[len(batch.results) :]
        code = {"expired": "batch_expired", "cancelled": "batch_cancelled"}.get(status)
        answered = [row for row in batch.results if not _failed(row)]
        failed = [row for row in batch.results if _failed(row)]
        if code is not None:
            error = {"code": code, "message": _UNFINISHED_MESSAGES[code]}
            failed += [
                {
                    "id": f"batch_req_{batch.number}_{row.line}",
                    "custom_id": row.custom_id,
                    "response": None,
                    "error": error,
                }
                for row in unfinished
            ]
        if answered:
            data = b"".join(dump_json(row) + b"\n" for row in answered)
            batch.output_file_id = self._files.add(data, filename=f"{batch.id}_output.jsonl", purpose="batch_output").id
        if failed:
            data = b"".join(dump_json(row) + b"\n" for row in failed)
            batch.error_file_id = self._files.add(data, filename=f"{batch.id}_error.jsonl", purpose="batch_output").id
        batch.status = status
        batch.stamp(f"{status}_at", at)

    def _object(self, batch: _Batch) -> dict[str, Any]:
        """The ``Batch`` object of ``batch`` as it stands."""
        counted = "in_progress_at" in batch.stamps
        failed = sum(1 for row in batch.results if _failed(row))
        created_at = int(batch.wall)
        answer: dict[str, Any] = {
            "id": batch.id,
            "object": "batch",
            "endpoint": batch.endpoint,
            "input_file_id": batch.input_file_id,
            "completion_window": COMPLETION_WINDOW,
            "status": batch.status,
            "created_at": created_at,
            "expires_at": created_at + _WINDOW_SECONDS,
            "request_counts": {
                "total": len(batch.rows) if counted else 0,
                "completed": len(batch.results) - failed,
                "failed": failed,
            },
            "usage": _usage(batch.results),
            "metadata": batch.metadata,
        }
        if batch.model is not None:
            answer["model"] = batch.model
        if batch.status == "failed":
            answer["errors"] = {"object": "list", "data": list(batch.errors)}
        answer.update(batch.stamps)
        if batch.output_file_id is not None:
            answer["output_file_id"] = batch.output_file_id
        if batch.error_file_id is not None:
            answer["error_file_id"] = batch.error_file_id
        return answer


def _check_delay(seconds: float) -> None:
    if not seconds >= 0:
        raise ValueError(f"the batch delay must be >= 0 seconds, got {seconds}")


# --- Routes ----------------------------------------------------------------------------------------------------


def _controls(call: Call) -> BatchControls:
    controls = getattr(call.server, "batches", None)
    if not isinstance(controls, BatchControls):
        raise TypeError(f"{type(call.server).__name__} has no BatchControls at .batches")
    return controls


def _bad_request(message: str, param: str | None, code: str | None = "invalid_value") -> tuple[int, bytes]:
    return 400, error_body(message, "invalid_request_error", code, param=param)


def _batch_not_found(batch_id: str) -> tuple[int, bytes]:
    return 404, error_body(f"No such Batch object: {batch_id}", "invalid_request_error", None, param="batch_id")


def _metadata_problem(metadata: Any) -> str | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        return "Invalid type for 'metadata': expected an object."
    if len(metadata) > MAX_METADATA_KEYS:
        return f"Invalid 'metadata': too many properties ({len(metadata)}); at most {MAX_METADATA_KEYS} are allowed."
    for key, value in metadata.items():
        if len(key) > 64:
            return f"Invalid 'metadata': the key '{key[:64]}...' is longer than 64 characters."
        if not isinstance(value, str):
            return f"Invalid type for 'metadata.{key}': expected a string."
        if len(value) > 512:
            return f"Invalid 'metadata.{key}': the value is longer than 512 characters."
    return None


def _create(call: Call) -> tuple[int, bytes]:
    body = call.body
    if body is None:
        return _bad_request("The body of your request is not a JSON object.", None, None)
    for param in ("input_file_id", "endpoint", "completion_window"):
        if not isinstance(body.get(param), str) or not body[param]:
            return _bad_request(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")
    if body["endpoint"] not in BATCH_ENDPOINTS:
        supported = " and ".join(f"'{path}'" for path in BATCH_ENDPOINTS)
        return _bad_request(f"Invalid value: '{body['endpoint']}'. Supported values are: {supported}.", "endpoint")
    if body["completion_window"] != COMPLETION_WINDOW:
        message = f"Invalid value: '{body['completion_window']}'. Supported values are: '{COMPLETION_WINDOW}'."
        return _bad_request(message, "completion_window")
    problem = _metadata_problem(body.get("metadata"))
    if problem is not None:
        return _bad_request(problem, "metadata")
    batch = _controls(call)._create(body["input_file_id"], body["endpoint"], body.get("metadata"))
    return call.reply.status, dump_json(batch)


def _retrieve(call: Call) -> tuple[int, bytes]:
    batch = _controls(call)._get(call.params["batch_id"], call)
    if batch is None:
        return _batch_not_found(call.params["batch_id"])
    return call.reply.status, dump_json(batch)


def _list(call: Call) -> tuple[int, bytes]:
    query = parse_qs(urlsplit(call.request.path).query)
    limit_text = query.get("limit", ["20"])[-1]
    try:
        limit = int(limit_text)
    except ValueError:
        limit = 0
    if not 1 <= limit <= 100:
        return _bad_request(f"Invalid 'limit': expected an integer from 1 to 100, got '{limit_text}'.", "limit")
    after = query.get("after", [None])[-1]
    return call.reply.status, dump_json(_controls(call)._list(after, limit, call))


def _cancel(call: Call) -> tuple[int, bytes]:
    found = _controls(call)._cancel(call.params["batch_id"], call)
    if found is None:
        return _batch_not_found(call.params["batch_id"])
    if isinstance(found, str):
        return 409, error_body(f"Cannot cancel a batch with status '{found}'.", "invalid_request_error", None)
    return call.reply.status, dump_json(found)


_BATCH_ID = r"(?P<batch_id>[^/]+)"

ROUTES: tuple[Route, ...] = (
    Route("POST", r"/v1/batches", _create),
    Route("GET", r"/v1/batches", _list),
    Route("GET", rf"/v1/batches/{_BATCH_ID}", _retrieve),
    Route("POST", rf"/v1/batches/{_BATCH_ID}/cancel", _cancel),
)
"""Creation, listing, lookup and cancellation of a batch."""
