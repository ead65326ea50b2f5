"""The Batch API's input and output, without I/O: JSONL lines built and checked, rows read like direct answers.

:func:`build_batch_input` turns reasoning steps into the batch's input file: one ``BatchRequestInput`` line per step,
``custom_id`` the step's name, the enforced model and the audit metadata (with the run's identity) in every body,
built by the same code as a direct request. Every limit is checked before anything is uploaded: no step, more than
50,000, a step that does not pass the direct request's checks, a file over 200 MB. The input's fingerprint (a SHA-256
of the requests, without the submitting task run's id) goes into the batch's metadata, so a retried task or a rerun
of the same flow run finds the batch it already created instead of paying for the same requests twice.

:func:`read_batch_row` reads one line of the output or error file into a :class:`BatchRow`: a
:class:`~arcanos_flows.core.results.ReasoningResult` checked exactly as a direct answer is (the model that answered
first, then empty, length-cut and refused answers, then ``output_type``), or the
:class:`~arcanos_flows.core.errors.BatchRowError` that says why the row failed, classed like a direct failure.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from arcanos_flows.client._base import model_matches
from arcanos_flows.client._output import describe
from arcanos_flows.core.errors import (
    ArcanosError,
    BatchRowError,
    IncidentClass,
    InvalidOutputError,
    InvalidReasoningInput,
    ModelEnforcementError,
    UpstreamResponseError,
    status_class,
)
from arcanos_flows.core.messages import check_messages, check_options
from arcanos_flows.core.metadata import MetadataValue, build_metadata
from arcanos_flows.core.pricing import Pricing
from arcanos_flows.core.redaction import redact
from arcanos_flows.core.results import ReasoningResult
from arcanos_flows.core.upstream import Api, Exchange, read_chat, read_responses, request_body

__all__ = [
    "BATCH_ENDPOINTS",
    "BATCH_PRICE_FACTOR",
    "COMPLETION_WINDOW",
    "FINGERPRINT_KEY",
    "MAX_BATCH_FILE_BYTES",
    "MAX_BATCH_REQUESTS",
    "BatchInput",
    "BatchRow",
    "BatchStep",
    "batch_pricing",
    "build_batch_input",
    "read_batch_row",
]

MAX_BATCH_REQUESTS = 50_000
"""The most requests one batch may hold (the API's limit)."""
MAX_BATCH_FILE_BYTES = 200 * 1024 * 1024
"""The largest input file the Batch API takes (200 MB)."""
COMPLETION_WINDOW: Literal["24h"] = "24h"
"""The only completion window the Batch API offers."""
BATCH_ENDPOINTS: dict[str, str] = {"chat": "/v1/chat/completions", "responses": "/v1/responses"}
"""The batch endpoint of each API (``ARCANOS_OPENAI_API``)."""
FINGERPRINT_KEY = "arcanos_fingerprint"
"""The batch metadata key holding the input's fingerprint; a rerun lists batches and re-attaches by it."""
BATCH_PRICE_FACTOR = 0.5
"""Batch requests cost half the direct price (OpenAI's published discount), applied to ``ARCANOS_PRICE_*``."""

_CUSTOM_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-\[\]]{0,63}")
# Keys of a body's metadata that name who submitted it, not what it asks: a retry or rerun submits from another task
# run, and must still find the same batch.
_SUBMITTER_KEY = "prefect.task_run_id"


class OutputParser(Protocol):
    """What reads a typed answer: the client's ``OutputSpec`` (``name``, ``parse``)."""

    @property
    def name(self) -> str: ...

    def parse(self, content: str) -> Any: ...


class BatchStep(BaseModel):
    """One reasoning step of a batch: its name (the row's ``custom_id``), its messages and its own options.

    Attributes:
        step: The step's name, unique in the batch: 1 to 64 letters, digits and ``._:-[]``.
        messages: The step's messages, as ``run_reasoning`` takes them.
        metadata: Audit metadata of this step, merged over the batch's.
        reasoning_effort: Optional reasoning effort.
        max_output_tokens: Optional output budget.

    Examples:
        >>> BatchStep(step="q-1", messages=[{"role": "user", "content": "Which layers?"}]).step
        'q-1'
    """

    model_config = ConfigDict(frozen=True)

    step: str
    messages: list[dict[str, Any]] = Field(min_length=1)
    metadata: dict[str, MetadataValue] | None = None
    reasoning_effort: str | None = None
    max_output_tokens: int | None = None


@dataclass(frozen=True)
class BatchInput:
    """A batch's input file, checked and ready to upload.

    Attributes:
        api: ``chat`` or ``responses``.
        endpoint: The batch's endpoint (``/v1/chat/completions`` or ``/v1/responses``).
        data: The JSONL file, one request per line.
        custom_ids: The steps, in file order.
        metadata: Each step's metadata as sent (its audit metadata and the run's identity).
        fingerprint: SHA-256 of the requests without the submitting task run's id.
    """

    api: Api
    endpoint: str
    data: bytes
    custom_ids: tuple[str, ...]
    metadata: Mapping[str, dict[str, str]]
    fingerprint: str
    stored: bool


@dataclass(frozen=True)
class BatchRow:
    """One row of a finished batch: its step, and either its checked result or why it failed.

    Examples:
        >>> BatchRow("q-1", None, None).ok
        False
    """

    custom_id: str
    result: ReasoningResult | None
    error: ArcanosError | None

    @property
    def ok(self) -> bool:
        """Whether the row answered and passed every check."""
        return self.result is not None


def batch_pricing(pricing: Pricing | None) -> Pricing | None:
    """The batch prices: the configured prices at :data:`BATCH_PRICE_FACTOR`; ``None`` without prices.

    Examples:
        >>> batch_pricing(Pricing(input_per_mtok=2.0, output_per_mtok=8.0)).output_per_mtok
        4.0
    """
    if pricing is None:
        return None
    cached = pricing.cached_input_per_mtok
    return Pricing(
        input_per_mtok=pricing.input_per_mtok * BATCH_PRICE_FACTOR,
        cached_input_per_mtok=None if cached is None else cached * BATCH_PRICE_FACTOR,
        output_per_mtok=pricing.output_per_mtok * BATCH_PRICE_FACTOR,
    )


def _step_of(index: int, step: object) -> BatchStep:
    if isinstance(step, BatchStep):
        return step
    if isinstance(step, Mapping):
        unknown = sorted(str(key) for key in step if key not in BatchStep.model_fields)
        plain = isinstance(step.get("step"), str) and isinstance(step.get("metadata"), (Mapping, type(None)))
        if not unknown and plain and "messages" in step:
            # Every field is checked below as a direct request checks it (messages, options, metadata): building
            # the model without validating it first spares a pydantic pass per step of a 50,000-step batch.
            return BatchStep.model_construct(**step)
        if unknown:
            raise InvalidReasoningInput(
                f"steps[{index}]: unknown key {unknown[0]!r} (a step has {', '.join(BatchStep.model_fields)})"
            )
        try:
            return BatchStep.model_validate(dict(step))
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            where = ".".join(str(part) for part in first["loc"])
            raise InvalidReasoningInput(f"steps[{index}].{where}: {first['msg']}") from None
    raise InvalidReasoningInput(f"steps[{index}]: must be a BatchStep or a mapping, not {type(step).__name__}")


def build_batch_input(
    steps: Sequence[BatchStep | Mapping[str, Any]],
    *,
    model: str,
    api: Api,
    store: bool,
    metadata: Mapping[str, MetadataValue] | None = None,
    defaults: Mapping[str, str | None] | None = None,
    identity: Mapping[str, str | None] | None = None,
    response_format: Mapping[str, Any] | None = None,
    max_requests: int = MAX_BATCH_REQUESTS,
    max_file_bytes: int = MAX_BATCH_FILE_BYTES,
) -> BatchInput:
    """Build and check a batch's input file; nothing is uploaded before this returns.

    Args:
        steps: The steps, as :class:`BatchStep` or mappings of its fields.
        model: The enforced model, written into every body.
        api: Which API the batch runs on.
        store: Whether bodies carry the metadata (``ARCANOS_STORE``), as direct requests do.
        metadata: Audit metadata of every step (a step's own metadata is merged over it).
        defaults: Metadata used where neither gives the key (the confirmation token).
        identity: The Prefect run's identity keys (``prefect.flow_run_id``, ...).
        response_format: The response format of every step (``output_type``'s strict schema).
        max_requests: Most steps (the API's 50,000).
        max_file_bytes: Largest file (the API's 200 MB).

    Raises:
        InvalidReasoningInput: Naming the step and what is wrong: no steps, too many, a duplicate or bad name,
            messages, options or metadata a direct request would refuse, or a file over the size limit.

    Examples:
        >>> batch = build_batch_input([{"step": "q-1", "messages": [{"role": "user", "content": "Hi"}]}],
        ...                           model="ft:m", api="chat", store=True, metadata={"run": "nightly"})
        >>> batch.endpoint, batch.custom_ids, json.loads(batch.data)["body"]["metadata"]
        ('/v1/chat/completions', ('q-1',), {'run': 'nightly'})
    """
    if isinstance(steps, (str, bytes, Mapping)) or not isinstance(steps, Sequence):
        raise InvalidReasoningInput(f"steps: must be a list of steps, not {type(steps).__name__}")
    if not steps:
        raise InvalidReasoningInput("steps: a batch needs at least one step")
    if len(steps) > max_requests:
        raise InvalidReasoningInput(
            f"steps: {len(steps)} steps; a batch holds at most {max_requests} requests (split them into batches)"
        )
    endpoint = BATCH_ENDPOINTS[api]
    submitter = _submitter_marker(identity) if store else b""
    lines: list[bytes] = []
    custom_ids: list[str] = []
    sent: dict[str, dict[str, str]] = {}
    digest = hashlib.sha256(f"{endpoint}\n".encode())
    size = 0
    for index, given in enumerate(steps):
        step = _step_of(index, given)
        where = f"steps[{index}] ({step.step!r})" if isinstance(step.step, str) else f"steps[{index}]"
        if not _CUSTOM_ID.fullmatch(step.step):
            raise InvalidReasoningInput(
                f"steps[{index}].step: {step.step[:80]!r} is not a step name: 1 to 64 letters, digits and ._:-[] "
                "(it is the row's custom_id)"
            )
        if step.step in sent:
            raise InvalidReasoningInput(f"{where}: the step name is used twice; each row needs its own custom_id")
        try:
            checked = check_messages(step.messages)
            check_options(
                reasoning_effort=step.reasoning_effort,
                max_output_tokens=step.max_output_tokens,
                response_format=response_format,
                timeout=None,
            )
            merged = {**(metadata or {}), **(step.metadata or {})}
            step_metadata = build_metadata(merged, defaults=defaults, identity=identity)
        except InvalidReasoningInput as exc:
            raise InvalidReasoningInput(f"{where}: {exc}") from None
        body = request_body(
            api,
            model=model,
            messages=checked,
            metadata=step_metadata if store else None,
            reasoning_effort=step.reasoning_effort,
            max_output_tokens=step.max_output_tokens,
            response_format=response_format,
        )
        line = _json_line({"custom_id": step.step, "method": "POST", "url": endpoint, "body": body})
        size += len(line) + 1
        if len(line) + 1 > max_file_bytes:
            raise InvalidReasoningInput(
                f"{where}: its request is {len(line) + 1} bytes, over the batch input limit of {max_file_bytes} bytes"
            )
        if size > max_file_bytes:
            raise InvalidReasoningInput(
                f"steps: the input file would exceed {max_file_bytes} bytes at {where}; split the steps into batches"
            )
        lines.append(line)
        custom_ids.append(step.step)
        sent[step.step] = step_metadata
        # The fingerprint leaves out who submitted (a retry or rerun submits from another task run): the line with the
        # task run's id blanked, rather than a second serialisation of every request.
        digest.update((line.replace(submitter, b"") if submitter else line) + b"\n")
    return BatchInput(
        api=api,
        endpoint=endpoint,
        data=b"\n".join(lines) + b"\n",
        custom_ids=tuple(custom_ids),
        metadata=sent,
        fingerprint=digest.hexdigest(),
        stored=store,
    )


def _json_line(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode("utf-8")


def _submitter_marker(identity: Mapping[str, str | None] | None) -> bytes:
    """The bytes of a line that name the submitting task run (``"prefect.task_run_id":"<id>"``), if any."""
    task_run_id = (identity or {}).get(_SUBMITTER_KEY)
    return _json_line({_SUBMITTER_KEY: task_run_id})[1:-1] if task_run_id else b""


_ROW_CODES = {
    "batch_expired": IncidentClass.BATCH_EXPIRED,
    "batch_cancelled": IncidentClass.BATCH_CANCELLED,
}


def read_batch_row(
    line: bytes | str,
    *,
    api: Api,
    model: str,
    pricing: Pricing | None = None,
    metadata: Mapping[str, dict[str, str]] | None = None,
    stored: bool = True,
    output: OutputParser | None = None,
) -> BatchRow:
    """Read one line of a batch's output or error file, checked as a direct answer would be.

    Args:
        line: The JSONL line (``BatchRequestOutput``).
        api: The batch's API.
        model: The enforced model: a row another model answered is a ``model_enforcement`` failure.
        pricing: Batch prices (:func:`batch_pricing`) for the row's cost.
        metadata: Each step's metadata as sent (recorded on its result).
        stored: Whether the requests asked the API to store them.
        output: The ``output_type`` parser, when the batch asked for typed answers.

    Raises:
        UpstreamResponseError: The line is not a batch output row at all.

    Examples:
        >>> row = read_batch_row('{"custom_id": "q-1", "response": null, '
        ...                      '"error": {"code": "batch_expired", "message": "not run"}}', api="chat", model="ft:m")
        >>> row.custom_id, row.error.incident_class.value
        ('q-1', 'batch_expired')
    """
    try:
        data = json.loads(line)
        custom_id = str(data["custom_id"])
    except (ValueError, KeyError, TypeError):
        raise UpstreamResponseError("a line of the batch's output is not a batch output row") from None
    response = data.get("response") if isinstance(data.get("response"), dict) else None
    error: dict[str, Any] = data["error"] if isinstance(data.get("error"), dict) else {}
    if response is None:
        code = str(error.get("code") or "")
        message = redact(str(error.get("message") or "the row has neither a response nor an error"))
        row_class = _ROW_CODES.get(code, IncidentClass.UPSTREAM_ERROR)
        not_run = BatchRowError(f"{custom_id}: {message}", custom_id=custom_id, incident_class=row_class, attempts=0)
        return BatchRow(custom_id, None, not_run)
    status = int(response.get("status_code") or 0)
    request_id = response.get("request_id")
    request_id = redact(str(request_id)) if request_id else None
    body = response.get("body")
    if not 200 <= status < 300:
        detail: dict[str, Any] = body["error"] if isinstance(body, dict) and isinstance(body.get("error"), dict) else {}
        row_class = status_class(status, detail.get("code"), detail.get("type"))
        message = redact(str(detail.get("message") or f"HTTP {status}"))
        refused = BatchRowError(
            f"{custom_id}: HTTP {status}: {message}",
            custom_id=custom_id,
            incident_class=row_class,
            request_id=request_id,
            http_status=status,
        )
        return BatchRow(custom_id, None, refused)
    exchange = Exchange(request_id, status, 1)
    reader = read_chat if api == "chat" else read_responses
    try:
        answered_model, outcome = reader(body if isinstance(body, dict) else {}, "application/json", exchange)
    except ArcanosError as exc:
        return BatchRow(custom_id, None, _for_row(exc, custom_id))
    if not model_matches(model, answered_model):
        another = ModelEnforcementError(
            f"{custom_id}: {model} was requested but {answered_model} answered (request {request_id}); "
            "arcanos-flows never accepts another model",
            expected_model=model,
            actual_model=answered_model,
            request_id=request_id,
            http_status=status,
            attempts=1,
        )
        return BatchRow(custom_id, None, _for_row(another, custom_id))
    if isinstance(outcome, Exception):
        return BatchRow(custom_id, None, _for_row(outcome, custom_id))
    result = ReasoningResult(
        content=outcome.content,
        model=outcome.model,
        response_id=redact(outcome.response_id),
        request_id=request_id,
        finish_reason=outcome.finish_reason,
        usage=outcome.usage.priced(pricing),
        metadata=dict((metadata or {}).get(custom_id, {})),
        stored=stored,
        latency_ms=0.0,
        attempts=1,
        api=api,
    )
    if output is not None:
        try:
            typed = output.parse(result.content)
        except ValidationError as exc:
            problem = describe(exc)
            invalid = InvalidOutputError(
                f"{custom_id}: the answer is not a valid {output.name}: {problem}",
                output_type=output.name,
                problem=problem,
                usage_tokens=result.usage.total_tokens,
                request_id=request_id,
                attempts=1,
            )
            return BatchRow(custom_id, None, _for_row(invalid, custom_id))
        result = result.model_copy(update={"output": typed, "output_type": output.name})
    return BatchRow(custom_id, result, None)


def _for_row(error: Exception, custom_id: str) -> ArcanosError:
    """The row's failure as an :class:`ArcanosError` that names its step (``custom_id``)."""
    if isinstance(error, ArcanosError):
        error.custom_id = custom_id  # type: ignore[attr-defined]
        return error
    failure = BatchRowError(
        f"{custom_id}: {redact(str(error))}", custom_id=custom_id, incident_class=IncidentClass.UNKNOWN
    )
    return failure
