"""The project's exceptions: one base class, each subclass knowing its incident class.

Callers catch by meaning (``except ModelEnforcementError``) the way they catch the OpenAI SDK's
``RateLimitError``; the notifier asks any exception for its incident class through
:func:`arcanos_flows.incidents.classify`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, ClassVar

from arcanos_flows.core.pickling import reduce_exception

if TYPE_CHECKING:
    import openai


__all__ = [
    "TRANSIENT_CLASSES",
    "ArcanosError",
    "BatchError",
    "BatchRowError",
    "BatchTimeoutError",
    "BudgetExceededError",
    "Classification",
    "ConfigurationError",
    "EmptyCompletionError",
    "IncidentClass",
    "IncompleteCompletionError",
    "InvalidOutputError",
    "InvalidReasoningInput",
    "ModelEnforcementError",
    "RefusalError",
    "UpstreamResponseError",
    "classify",
    "status_class",
]


class IncidentClass(str, Enum):
    """What kind of failure an incident reports; the value is the ``incident_class`` JSON field."""

    CONFIGURATION = "configuration"
    AUTHENTICATION = "authentication"
    PERMISSION = "permission"
    RATE_LIMIT = "rate_limit"
    QUOTA_EXHAUSTED = "quota_exhausted"
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    UPSTREAM_ERROR = "upstream_error"
    BAD_REQUEST = "bad_request"
    NOT_FOUND = "not_found"
    MODEL_ENFORCEMENT = "model_enforcement"
    GATEWAY_FALLBACK = "gateway_fallback"
    EMPTY_COMPLETION = "empty_completion"
    INCOMPLETE_COMPLETION = "incomplete_completion"
    REFUSAL = "refusal"
    INVALID_RESPONSE = "invalid_response"
    INVALID_INPUT = "invalid_input"
    INVALID_OUTPUT = "invalid_output"
    BUDGET_EXCEEDED = "budget_exceeded"
    BATCH_FAILED = "batch_failed"
    BATCH_EXPIRED = "batch_expired"
    BATCH_CANCELLED = "batch_cancelled"
    BATCH_TIMEOUT = "batch_timeout"
    UNKNOWN = "unknown"
    # Reported by the Prefect layer (hooks, automation relay, explicit notifications).
    FLOW_FAILED = "flow_failed"
    CRASHED = "crashed"
    CANCELLED = "cancelled"
    DEGRADED = "degraded"

    def __str__(self) -> str:
        return self.value

    @property
    def meaning(self) -> str:
        """What failed, in one line (the reference of the docs lists these).

        Examples:
            >>> IncidentClass.QUOTA_EXHAUSTED.meaning
            "the account's quota or billing limit is used up (429 `insufficient_quota`); never retried"
        """
        return _MEANINGS[self]


_MEANINGS: dict[IncidentClass, str] = {
    IncidentClass.CONFIGURATION: "settings are missing or invalid; raised before any request",
    IncidentClass.AUTHENTICATION: "the endpoint refused the API key (401)",
    IncidentClass.PERMISSION: "the key may not use this model or endpoint (403)",
    IncidentClass.RATE_LIMIT: "over the account's rate limit (429), after the retries",
    IncidentClass.QUOTA_EXHAUSTED: "the account's quota or billing limit is used up (429 `insufficient_quota`); "
    "never retried",
    IncidentClass.TIMEOUT: "no answer within `ARCANOS_REQUEST_TIMEOUT`, or 408, after the retries",
    IncidentClass.CONNECTION: "the endpoint could not be reached or dropped the connection, after the retries",
    IncidentClass.UPSTREAM_ERROR: "the endpoint failed (5xx, 409), after the retries",
    IncidentClass.BAD_REQUEST: "the endpoint refused the request as malformed (400, 422)",
    IncidentClass.NOT_FOUND: "the model or the endpoint does not exist (404)",
    IncidentClass.MODEL_ENFORCEMENT: "a model other than `ARCANOS_FINE_TUNED_MODEL` answered",
    IncidentClass.GATEWAY_FALLBACK: "a warning: the gateway's primary deployment failed and a fallback deployment "
    "of the enforced model answered; the call succeeded",
    IncidentClass.EMPTY_COMPLETION: "an answer with no choices or empty content",
    IncidentClass.INCOMPLETE_COMPLETION: "the answer was cut at the token budget",
    IncidentClass.REFUSAL: "the model refused to answer",
    IncidentClass.INVALID_RESPONSE: "a 200 answer that is not the API's JSON (malformed, wrong shape)",
    IncidentClass.INVALID_INPUT: "the caller's messages, options or metadata are invalid; raised before any request",
    IncidentClass.INVALID_OUTPUT: "the answer did not validate against the requested `output_type`, after the re-asks",
    IncidentClass.BUDGET_EXCEEDED: "a run spent its token or cost budget; no further request was sent",
    IncidentClass.BATCH_FAILED: "a Batch API batch failed as a whole: its input file was refused, or it ended "
    "`failed` (validation errors in the input)",
    IncidentClass.BATCH_EXPIRED: "rows of a batch that did not run within its 24 h completion window (reported once "
    "per batch, with their count and custom ids)",
    IncidentClass.BATCH_CANCELLED: "rows of a batch that did not run because the batch was cancelled",
    IncidentClass.BATCH_TIMEOUT: "a batch was still running when the task's polling limit ran out; it is left "
    "running, and a rerun re-attaches to it",
    IncidentClass.UNKNOWN: "a failure no other class describes",
    IncidentClass.FLOW_FAILED: "a flow run failed for a reason no step reported",
    IncidentClass.CRASHED: "a flow run's process died (killed, out of memory) before it could finish",
    IncidentClass.CANCELLED: "a flow run was cancelled (reported only where `flow_on_cancellation` is attached)",
    IncidentClass.DEGRADED: "an explicit `notify_maintenance`: the flow goes on, with less",
}


TRANSIENT_CLASSES: frozenset[IncidentClass] = frozenset(
    {IncidentClass.RATE_LIMIT, IncidentClass.TIMEOUT, IncidentClass.CONNECTION, IncidentClass.UPSTREAM_ERROR}
)
"""Failures that may succeed when tried again later; every other class fails at once."""


class ArcanosError(Exception):
    """Base class of every arcanos-flows exception.

    Attributes:
        incident_class: The maintenance incident class this failure is reported as.
        request_id: The upstream ``x-request-id`` when a response was received.
        http_status: The upstream HTTP status when a response was received.
        attempts: How many HTTP attempts were made before failing (0 when none was made).

    Every subclass pickles with its class, message and attributes (an attached incident included), so a failure
    crosses a process boundary (a Dask worker, result storage) unchanged.

    Examples:
        >>> try:
        ...     raise ModelEnforcementError("answered by gpt-4o")
        ... except ArcanosError as exc:
        ...     print(exc.incident_class.value)
        model_enforcement
        >>> import pickle
        >>> copy = pickle.loads(pickle.dumps(ModelEnforcementError("answered by gpt-4o", actual_model="gpt-4o")))
        >>> type(copy).__name__, str(copy), copy.actual_model
        ('ModelEnforcementError', 'answered by gpt-4o', 'gpt-4o')
    """

    incident_class: ClassVar[IncidentClass] = IncidentClass.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        request_id: str | None = None,
        http_status: int | None = None,
        attempts: int = 0,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id
        self.http_status = http_status
        self.attempts = attempts

    # Rebuilt from the class, args and attributes without calling __init__ (its arguments are keyword-only and differ
    # by subclass): a failed step's exception crosses processes (Dask, process pools) and goes into result storage
    # pickled, with the incident attached to it (arcanos_flows.core.pickling).
    __reduce__ = reduce_exception


class ConfigurationError(ArcanosError):
    """A required setting is missing or a setting has an invalid value.

    Examples:
        >>> raise ConfigurationError(
        ...     "Missing required environment variable: ARCANOS_FINE_TUNED_MODEL"
        ... )  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        arcanos_flows.errors.ConfigurationError: Missing required environment variable: ...
    """

    incident_class = IncidentClass.CONFIGURATION


class InvalidReasoningInput(ArcanosError, ValueError):
    """Messages, metadata or options break the input contract; raised before any network call.

    Examples:
        >>> str(InvalidReasoningInput("messages[0].role: must be one of ..."))
        'messages[0].role: must be one of ...'
    """

    incident_class = IncidentClass.INVALID_INPUT


class ModelEnforcementError(ArcanosError):
    """Another model was requested, or another model answered, than ``ARCANOS_FINE_TUNED_MODEL``.

    Attributes:
        expected_model: The configured model.
        actual_model: The model that was asked for or that answered.

    Examples:
        >>> err = ModelEnforcementError("wrong model", expected_model="ft:a", actual_model="gpt-4o")
        >>> err.actual_model
        'gpt-4o'
    """

    incident_class = IncidentClass.MODEL_ENFORCEMENT

    def __init__(
        self,
        message: str,
        *,
        expected_model: str | None = None,
        actual_model: str | None = None,
        request_id: str | None = None,
        http_status: int | None = None,
        attempts: int = 0,
    ) -> None:
        super().__init__(message, request_id=request_id, http_status=http_status, attempts=attempts)
        self.expected_model = expected_model
        self.actual_model = actual_model


class UpstreamResponseError(ArcanosError):
    """The upstream answered 2xx with a body that is not a valid completion (malformed, non-JSON, wrong shape).

    Examples:
        >>> UpstreamResponseError("not JSON", http_status=200).http_status
        200
    """

    incident_class = IncidentClass.INVALID_RESPONSE


class EmptyCompletionError(ArcanosError):
    """The completion has no choices, or its content is empty.

    Examples:
        >>> EmptyCompletionError("no choices").incident_class.value
        'empty_completion'
    """

    incident_class = IncidentClass.EMPTY_COMPLETION


class IncompleteCompletionError(ArcanosError):
    """The model stopped at its output-token budget (``finish_reason == "length"`` / ``status == "incomplete"``).

    Examples:
        >>> IncompleteCompletionError("length").incident_class.value
        'incomplete_completion'
    """

    incident_class = IncidentClass.INCOMPLETE_COMPLETION


class RefusalError(ArcanosError):
    """The model refused to answer (or a content filter withheld the answer).

    Attributes:
        refusal: The refusal text the model gave, if any.

    Examples:
        >>> RefusalError("refused", refusal="I can't help with that.").refusal
        "I can't help with that."
    """

    incident_class = IncidentClass.REFUSAL

    def __init__(
        self,
        message: str,
        *,
        refusal: str | None = None,
        request_id: str | None = None,
        http_status: int | None = None,
        attempts: int = 0,
    ) -> None:
        super().__init__(message, request_id=request_id, http_status=http_status, attempts=attempts)
        self.refusal = refusal


class InvalidOutputError(ArcanosError):
    """The answer is not JSON, or does not validate against the ``output_type`` asked for, after every re-ask.

    Attributes:
        output_type: The type asked for, as ``module.QualName``.
        problem: What was wrong with the last answer (pydantic's errors, without the input values).
        usage_tokens: Tokens spent by all the attempts, each of which was billed.

    Examples:
        >>> error = InvalidOutputError("not JSON", output_type="app.Plan", problem="Invalid JSON")
        >>> error.incident_class.value, error.output_type
        ('invalid_output', 'app.Plan')
    """

    incident_class = IncidentClass.INVALID_OUTPUT

    def __init__(
        self,
        message: str,
        *,
        output_type: str | None = None,
        problem: str | None = None,
        usage_tokens: int = 0,
        request_id: str | None = None,
        http_status: int | None = None,
        attempts: int = 0,
    ) -> None:
        super().__init__(message, request_id=request_id, http_status=http_status, attempts=attempts)
        self.output_type = output_type
        self.problem = problem
        self.usage_tokens = usage_tokens


class BatchError(ArcanosError):
    """A Batch API batch failed as a whole: its input was refused at upload or creation, or it ended ``failed``.

    Attributes:
        batch_id: The batch's id (``None`` when it was never created).
        status: The batch's last status (``failed``, ...), when it was created.

    Examples:
        >>> error = BatchError("batch batch_1 failed: line 3: missing custom_id", batch_id="batch_1", status="failed")
        >>> error.incident_class.value, error.batch_id
        ('batch_failed', 'batch_1')
    """

    incident_class = IncidentClass.BATCH_FAILED

    def __init__(
        self,
        message: str,
        *,
        batch_id: str | None = None,
        status: str | None = None,
        request_id: str | None = None,
        http_status: int | None = None,
        attempts: int = 0,
    ) -> None:
        super().__init__(message, request_id=request_id, http_status=http_status, attempts=attempts)
        self.batch_id = batch_id
        self.status = status


class BatchTimeoutError(BatchError):
    """The batch was still running when the task's polling limit ran out; it keeps running, and a rerun re-attaches.

    Examples:
        >>> BatchTimeoutError("still in_progress after 3600 s", batch_id="batch_1").incident_class.value
        'batch_timeout'
    """

    incident_class = IncidentClass.BATCH_TIMEOUT


class BatchRowError(ArcanosError):
    """Why one row of a batch failed, classed as the same failure of a direct request would be.

    Rows are not raised one by one: a batch's failed rows are reported as one incident per class.

    Attributes:
        custom_id: The row's ``custom_id`` (the step).
        incident_class: The row's class: ``model_enforcement``, ``refusal``, ``rate_limit``, ``batch_expired``, ...

    Examples:
        >>> row = BatchRowError("not run", custom_id="step-2", incident_class=IncidentClass.BATCH_EXPIRED)
        >>> row.incident_class.value, row.custom_id
        ('batch_expired', 'step-2')
    """

    def __init__(
        self,
        message: str,
        *,
        custom_id: str,
        incident_class: IncidentClass,
        request_id: str | None = None,
        http_status: int | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(message, request_id=request_id, http_status=http_status, attempts=attempts)
        self.custom_id = custom_id
        self.incident_class = incident_class  # type: ignore[misc]  # per row, unlike the other classes


class BudgetExceededError(ArcanosError):
    """A run spent its budget (total tokens or cost in USD): no further request is sent.

    Attributes:
        limit_name: ``max_total_tokens`` or ``max_cost_usd``.
        limit: The budget.
        spent: What the run had spent when the next step was refused.

    Examples:
        >>> error = BudgetExceededError("over budget", limit_name="max_total_tokens", limit=1000, spent=1040)
        >>> error.incident_class.value, error.spent - error.limit
        ('budget_exceeded', 40)
    """

    incident_class = IncidentClass.BUDGET_EXCEEDED

    def __init__(self, message: str, *, limit_name: str = "", limit: float = 0, spent: float = 0) -> None:
        super().__init__(message)
        self.limit_name = limit_name
        self.limit = limit
        self.spent = spent


@dataclass(frozen=True)
class Classification:
    """What :func:`classify` learns from an exception.

    Attributes:
        incident_class: The incident class.
        http_status: The upstream HTTP status, when a response was received.
        request_id: The upstream ``x-request-id``, when a response was received.
        attempts: HTTP attempts made (0 when unknown or none was made).
    """

    incident_class: IncidentClass
    http_status: int | None = None
    request_id: str | None = None
    attempts: int = 0


_STATUS_CLASSES: dict[int, IncidentClass] = {
    400: IncidentClass.BAD_REQUEST,
    401: IncidentClass.AUTHENTICATION,
    403: IncidentClass.PERMISSION,
    404: IncidentClass.NOT_FOUND,
    408: IncidentClass.TIMEOUT,
    409: IncidentClass.UPSTREAM_ERROR,
    422: IncidentClass.BAD_REQUEST,
    429: IncidentClass.RATE_LIMIT,
}


def status_class(status: int, code: object = None, error_type: object = None) -> IncidentClass:
    """The incident class of an HTTP error status (with the API error's ``code`` and ``type``, when known).

    Used for the SDK's status errors and for a batch's rows answered with an error status alike.

    Examples:
        >>> status_class(503).value, status_class(429, "insufficient_quota").value, status_class(418).value
        ('upstream_error', 'quota_exhausted', 'unknown')
    """
    if status == 429 and "insufficient_quota" in (code, error_type):
        return IncidentClass.QUOTA_EXHAUSTED
    if status >= 500:
        return IncidentClass.UPSTREAM_ERROR
    return _STATUS_CLASSES.get(status, IncidentClass.UNKNOWN)


def _attempts_of(error: openai.APIError) -> int:
    # The SDK stamps each attempt with its retry number; the request on the error is the last attempt.
    try:
        return int(error.request.headers.get("x-stainless-retry-count", "0")) + 1
    except (ValueError, RuntimeError, AttributeError):
        return 1


def classify(error: BaseException) -> Classification:
    """Classify any exception into an incident class, with the HTTP facts it carries.

    Args:
        error: An arcanos-flows exception, an OpenAI SDK exception, or anything else.

    Returns:
        The classification; ``unknown`` for exceptions nothing here knows.

    Examples:
        >>> classify(ConfigurationError("Missing required environment variable: X")).incident_class.value
        'configuration'
        >>> classify(KeyError("x")).incident_class.value
        'unknown'
    """
    if isinstance(error, ArcanosError):
        return Classification(error.incident_class, error.http_status, error.request_id, error.attempts)
    if isinstance(error, json.JSONDecodeError):
        return Classification(IncidentClass.INVALID_RESPONSE)
    # An SDK exception implies the SDK is loaded: classifying never pays for importing it (the CLI's fast path).
    openai = sys.modules.get("openai")
    if openai is None:
        return Classification(IncidentClass.UNKNOWN)
    if isinstance(error, openai.APITimeoutError):
        return Classification(IncidentClass.TIMEOUT, attempts=_attempts_of(error))
    if isinstance(error, openai.APIConnectionError):
        return Classification(IncidentClass.CONNECTION, attempts=_attempts_of(error))
    if isinstance(error, openai.WebSocketConnectionClosedError):
        return Classification(IncidentClass.CONNECTION)
    if isinstance(error, openai.APIStatusError):
        status = error.status_code
        if isinstance(error, openai.OAuthError):
            # A failed token exchange is an authentication problem whatever status the token endpoint used.
            incident_class = IncidentClass.AUTHENTICATION
        else:
            incident_class = status_class(status, error.code, error.type)
        return Classification(incident_class, status, error.request_id, _attempts_of(error))
    if isinstance(error, openai.APIResponseValidationError):
        return Classification(
            IncidentClass.INVALID_RESPONSE,
            error.status_code,
            error.response.headers.get("x-request-id"),
            _attempts_of(error),
        )
    if isinstance(error, openai.LengthFinishReasonError):
        return Classification(IncidentClass.INCOMPLETE_COMPLETION)
    if isinstance(error, openai.ContentFilterFinishReasonError):
        return Classification(IncidentClass.REFUSAL)
    return Classification(IncidentClass.UNKNOWN)


# The public path of every exception class above: incidents name it in ``error_type`` (receivers match on it),
# tracebacks show it and pickles resolve through it (:mod:`arcanos_flows.errors` re-exports these classes).
for _name in __all__:
    if isinstance(globals()[_name], type):
        globals()[_name].__module__ = "arcanos_flows.errors"
del _name
