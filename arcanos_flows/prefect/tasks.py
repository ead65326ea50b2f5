"""Prefect tasks: reasoning steps on the enforced model, sync and async, and explicit maintenance notifications.

Every step exists twice: :func:`run_reasoning` / :func:`run_simple_prompt` block (a thread of the task runner makes
the request), :func:`arun_reasoning` / :func:`arun_simple_prompt` are awaited in async flows (the running event
loop makes it, through an :class:`~arcanos_flows.client.AsyncArcanosClient` of that loop). Both run the same code
around the request and behave alike: task-run names, retries, hooks, run identity, usage logs, caching. An async
flow that awaits a sync step (``await run_reasoning(...)``) runs its async twin, with the same options.

Retries live in one layer per failure kind: inside a task the SDK makes one attempt per try
(``max_retries=0``) and Prefect retries the transient classes (``rate_limit``, ``timeout``, ``connection``,
``upstream_error``) with exponential backoff and jitter; every other failure fails the task at once. When the
endpoint says how long to wait (``Retry-After``, ``retry-after-ms``, ``x-ratelimit-reset-*``; see
:func:`requested_wait`), the next try waits at least that long, unless it is longer than
``ARCANOS_MAX_RETRY_AFTER``: then the step fails at once, stating the wait asked. A failed step is reported once,
after its last try, by :func:`arcanos_flows.prefect.hooks.task_on_failure`.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import email.utils
import math
import os
import re
import threading
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, ParamSpec, TypeVar

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun
from prefect.context import TaskRunContext, get_run_context
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger

from arcanos_flows.client import DEFAULT_OUTPUT_RETRIES, ArcanosPythonClient, AsyncArcanosClient
from arcanos_flows.core.errors import (
    TRANSIENT_CLASSES,
    ConfigurationError,
    IncidentClass,
    InvalidOutputError,
    classify,
)
from arcanos_flows.core.metadata import MetadataValue
from arcanos_flows.core.results import ReasoningResult, Usage
from arcanos_flows.core.settings import CREDENTIALS_BLOCK_VARIABLE, ArcanosSettings
from arcanos_flows.incidents.model import Incident, attach_incident, attached_incident
from arcanos_flows.incidents.notifier import MaintenanceNotifier
from arcanos_flows.prefect import hooks
from arcanos_flows.prefect.budget import RunBudget, current_budget
from arcanos_flows.prefect.caching import REASONING_CACHE
from arcanos_flows.prefect.credentials import ArcanosCredentials, resolve_settings
from arcanos_flows.prefect.runs import append_note, incident_id_for, request_identity, run_context, state_exception

__all__ = [
    "DEFAULT_STEP_CACHE_EXPIRATION",
    "DEFAULT_TASK_RETRIES",
    "arun_reasoning",
    "arun_simple_prompt",
    "notify_maintenance",
    "requested_wait",
    "retry_transient_failures",
    "run_reasoning",
    "run_simple_prompt",
    "shared_async_client",
    "shared_client",
    "with_cache",
    "with_retries",
]

DEFAULT_TASK_RETRIES = 3
"""Prefect retries of a reasoning step on transient failures: 4 tries in all."""

DEFAULT_STEP_CACHE_EXPIRATION = timedelta(days=1)
"""How long a cached step stays valid unless told otherwise (``ARCANOS_STEP_CACHE_EXPIRATION``'s default)."""

SOURCE = "arcanos_flows.tasks"
P = ParamSpec("P")
R = TypeVar("R")
_clients: dict[ArcanosSettings, ArcanosPythonClient] = {}
_clients_lock = threading.Lock()


def _task_settings(settings: ArcanosSettings) -> ArcanosSettings:
    # Inside tasks the SDK makes one attempt per try: Prefect's task retries are the only retry layer.
    return settings.model_copy(update={"max_retries": 0})


def shared_client(settings: ArcanosSettings) -> ArcanosPythonClient:
    """The process-wide client for these settings, built once: every task shares its connection pool.

    Inside tasks the SDK does not retry (``max_retries=0``); Prefect's task retries do.

    Examples:
        >>> settings = ArcanosSettings(openai_api_key="sk-example-0000", fine_tuned_model="ft:gpt-5.1:a::x",
        ...                            _env_file=None)
        >>> shared_client(settings) is shared_client(settings)
        True
    """
    key = _task_settings(settings)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            notifier = MaintenanceNotifier(key, source=SOURCE)
            client = _clients[key] = ArcanosPythonClient(key, notifier=notifier)
        return client


async def shared_async_client(settings: ArcanosSettings) -> AsyncArcanosClient:
    """The async client for these settings on the running event loop: built once per loop, closed with it.

    Connections belong to the loop that opened them, so each loop has its own client (and pool): the async tasks
    awaited in one flow run share one; a task sent to a thread by ``.submit()`` runs on a loop of its own. The
    clients of a loop are closed when ``asyncio.run`` (or anything that shuts down the loop's async generators)
    ends it. Inside tasks the SDK does not retry (``max_retries=0``); Prefect's task retries do.

    Examples:
        >>> import asyncio
        >>> settings = ArcanosSettings(openai_api_key="sk-example-0000", fine_tuned_model="ft:gpt-5.1:a::x",
        ...                            _env_file=None)
        >>> async def one_per_loop() -> AsyncArcanosClient:
        ...     client = await shared_async_client(settings)
        ...     assert client is await shared_async_client(settings)
        ...     return client
        >>> asyncio.run(one_per_loop()) is asyncio.run(one_per_loop())  # one client per event loop
        False
    """
    key = _task_settings(settings)
    loop = asyncio.get_running_loop()
    with _clients_lock:
        # A loop closed without shutting down its async generators left its clients here; nothing can close them.
        for closed in [other for other in _async_clients if other.is_closed()]:
            del _async_clients[closed]
        on_loop = _async_clients.get(loop)
        first_on_loop = on_loop is None
        if on_loop is None:
            on_loop = _async_clients[loop] = _LoopClients(_closed_with(loop))
        client = on_loop.clients.get(key)
        if client is None:
            notifier = MaintenanceNotifier(key, source=SOURCE)
            client = on_loop.clients[key] = AsyncArcanosClient(key, notifier=notifier)
    if first_on_loop:
        # Started on the loop, the generator is the loop's to close when it shuts down (asyncio.run does): then it
        # closes the clients. (The idea of Prefect's add_event_loop_shutdown_callback, which keys its generators by
        # the id of a local function; on Python 3.10 that id can be reused, and one loop's callback replace another.)
        await on_loop.closer.__anext__()
    return client


@dataclass
class _LoopClients:
    """The clients of one event loop, and the async generator that closes them when the loop shuts down."""

    closer: AsyncGenerator[None, None]
    clients: dict[ArcanosSettings, AsyncArcanosClient] = field(default_factory=dict)


_async_clients: dict[asyncio.AbstractEventLoop, _LoopClients] = {}


async def _closed_with(loop: asyncio.AbstractEventLoop) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        with _clients_lock:
            on_loop = _async_clients.pop(loop, None)
        for client in on_loop.clients.values() if on_loop is not None else ():
            with contextlib.suppress(Exception):
                await client.aclose()


def with_retries(step_task: Task[P, R], settings: ArcanosSettings) -> Task[P, R]:
    """The task with the retry policy of ``ARCANOS_TASK_RETRIES`` and ``ARCANOS_TASK_RETRY_DELAY``.

    The decorators' defaults are 3 retries from a 2 s delay; flows apply the configured policy with this. Works
    for the sync and the async tasks alike.

    Examples:
        >>> settings = ArcanosSettings(openai_api_key="sk-example-0000", fine_tuned_model="ft:gpt-5.1:a::x",
        ...                            task_retries=1, _env_file=None)
        >>> with_retries(run_reasoning, settings).retries, with_retries(arun_reasoning, settings).retries
        (1, 1)
    """
    return step_task.with_options(retries=settings.task_retries, retry_delay_seconds=settings.task_retry_delay)


def with_cache(step_task: Task[P, R], *, expiration: timedelta | None = DEFAULT_STEP_CACHE_EXPIRATION) -> Task[P, R]:
    """The reasoning task with opt-in caching: the same question is answered from Prefect's result storage.

    Applies :data:`arcanos_flows.prefect.caching.REASONING_CACHE` (the key covers the enforced model, the API, the
    messages and the generation options; never the metadata, step name, credentials or run ids) with
    ``persist_result=True``. A cache hit makes no request: the task run ends in Prefect's ``Cached`` state with
    the stored :class:`ReasoningResult`. Failed steps are never cached. Pass ``refresh_cache=True`` to
    ``.with_options`` of the result to ask again and overwrite the stored answer. The sync and the async tasks
    share the key: an answer stored by one is a hit for the other.

    Args:
        step_task: ``run_reasoning``, ``run_simple_prompt``, ``arun_reasoning`` or ``arun_simple_prompt`` (or one
            of them after :func:`with_retries`).
        expiration: How long a stored answer is used; ``None``: until it is deleted from result storage.

    Returns:
        A copy of the task with caching on.

    Examples:
        >>> from datetime import timedelta
        >>> cached = with_cache(run_reasoning, expiration=timedelta(hours=6))
        >>> cached.persist_result, cached.cache_expiration
        (True, datetime.timedelta(seconds=21600))
        >>> with_cache(arun_reasoning).cache_policy is cached.cache_policy
        True
    """
    return step_task.with_options(cache_policy=REASONING_CACHE, persist_result=True, cache_expiration=expiration)


# --- waits the endpoint asks for -------------------------------------------------------------------------------

_WAIT_STATUSES = frozenset({429, 503})
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|us|µs|μs|ns|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ns": 1e-9}


def _seconds(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _duration(text: str) -> float | None:
    # OpenAI's x-ratelimit-reset-* values are Go durations: "20ms", "1s", "1.5s", "6m0s", "1h2m3s".
    text = text.strip()
    parts = list(_DURATION_PART.finditer(text))
    if not parts or "".join(part.group(0) for part in parts) != text:
        return _seconds(text)
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in (part.groups() for part in parts))


def _until(http_date: str, now: datetime | None) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(http_date)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


def requested_wait(status: int, headers: Mapping[str, str], *, now: datetime | None = None) -> float | None:
    """Seconds an endpoint's 429 or 503 answer asks the client to wait before it tries again, from its headers.

    ``retry-after-ms`` (milliseconds) first, then ``Retry-After`` (seconds, or an HTTP date); on a 429 without
    them, OpenAI's ``x-ratelimit-reset-requests`` / ``x-ratelimit-reset-tokens`` (``20ms``, ``1s``, ``6m0s``): the
    longest reset of the limits used up (``x-ratelimit-remaining-*`` of ``0``), or of both when neither says so.

    Args:
        status: The answer's HTTP status; only a 429 or a 503 asks for a wait.
        headers: The answer's headers, names in any case.
        now: What an HTTP-date ``Retry-After`` is counted from; the current time when omitted.

    Returns:
        The wait in seconds (0 or more); ``None`` when the answer asks for none that can be read.

    Examples:
        >>> requested_wait(429, {"Retry-After": "3"}), requested_wait(503, {"retry-after-ms": "250"})
        (3.0, 0.25)
        >>> requested_wait(429, {"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "6m0s",
        ...                      "x-ratelimit-remaining-requests": "0", "x-ratelimit-remaining-tokens": "9000"})
        1.0
        >>> from datetime import datetime, timezone
        >>> requested_wait(429, {"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"},
        ...                now=datetime(2026, 10, 21, 7, 27, 30, tzinfo=timezone.utc))
        30.0
        >>> requested_wait(500, {"Retry-After": "3"}) is None, requested_wait(429, {}) is None
        (True, True)
    """
    if status not in _WAIT_STATUSES:
        return None
    named = {name.lower(): value for name, value in headers.items()}
    milliseconds = _seconds(named.get("retry-after-ms", ""))
    if milliseconds is not None:
        return milliseconds / 1000
    retry_after = named.get("retry-after")
    if retry_after is not None:
        wait = _seconds(retry_after)
        if wait is None:
            wait = _until(retry_after, now)
        if wait is not None:
            return wait
    if status != 429:
        return None
    resets = {
        kind: reset
        for kind in ("requests", "tokens")
        if (reset := _duration(named.get(f"x-ratelimit-reset-{kind}", ""))) is not None
    }
    used_up = [reset for kind, reset in resets.items() if named.get(f"x-ratelimit-remaining-{kind}", "").strip() == "0"]
    return max(used_up or resets.values(), default=None)


def _wait_asked_by(error: BaseException) -> float | None:
    """The wait the answer behind a transient failure asked for; ``None`` for other failures."""
    if classify(error).incident_class not in TRANSIENT_CLASSES:
        return None  # insufficient_quota (a 429 too) is never retried, whatever it asks
    response = getattr(error, "response", None)
    status, headers = getattr(response, "status_code", None), getattr(response, "headers", None)
    if not isinstance(status, int) or not isinstance(headers, Mapping):
        return None
    return requested_wait(status, headers)


@dataclass(frozen=True)
class _ServerWait:
    """What a failed try's answer asked: wait ``seconds``, so no request before ``not_before`` (monotonic)."""

    seconds: float
    not_before: float
    over_cap: bool


_SERVER_WAIT = "__arcanos_server_wait__"
"""The attribute of a failed try's exception holding its :class:`_ServerWait` (for :func:`retry_transient_failures`)."""

# Why the retried try waits the rest itself, instead of Prefect's retry delay doing it: Prefect 3.9 takes a retry's
# delay in the task engine's `handle_retry` from `retry_delay_seconds`, a list fixed when the task is built (a
# callable is called once, with the number of retries), and then applies `retry_jitter_factor`, a clamped Poisson
# draw that can shorten it (to ~0.63x at 0.5). No per-failure delay reaches it, and jitter would undercut any delay
# slipped in. Sleeping in `retry_condition_fn` would come on top of Prefect's delay (waiting too long) and block the
# event loop of async tasks. So the retry condition notes when the next request may leave (below), and the retried
# try waits whatever Prefect's own delay left of it: the request goes after max(Prefect's backoff, the server's wait),
# and not a moment earlier.
_not_before: dict[uuid.UUID, float] = {}
_waits_lock = threading.Lock()


def retry_transient_failures(task: Task[..., Any], task_run: TaskRun, state: State) -> bool:
    """``retry_condition_fn``: retry only ``rate_limit``, ``timeout``, ``connection`` and ``upstream_error``.

    For the reasoning tasks it also listens to the endpoint: a try whose 429 or 503 asked for a wait longer than
    ``ARCANOS_MAX_RETRY_AFTER`` is not retried, and after a shorter one the next try waits at least what was asked.
    (For your own tasks it decides by class only.)

    Examples:
        >>> from prefect import task
        >>> @task(retries=3, retry_condition_fn=retry_transient_failures)
        ... def step(): ...
    """
    error = state_exception(state)
    if error is None or classify(error).incident_class not in TRANSIENT_CLASSES:
        return False
    asked = getattr(error, _SERVER_WAIT, None)
    if isinstance(asked, _ServerWait):
        if asked.over_cap:
            return False
        with _waits_lock:
            _not_before[task_run.id] = asked.not_before
    return True


def _refuse_to_wait(error: Exception, asked: _ServerWait, cap: float) -> None:
    """State in the exception and its incident the wait asked, over the cap, for which the step is not retried."""
    note = (
        f"the endpoint asked to wait {asked.seconds:g} s before trying again, longer than ARCANOS_MAX_RETRY_AFTER "
        f"({cap:g} s): not retried"
    )
    if error.args and isinstance(error.args[0], str):
        error.args = (f"{note}; {error.args[0]}", *error.args[1:])
    message = getattr(error, "message", None)
    if isinstance(message, str):
        with contextlib.suppress(AttributeError, TypeError):
            error.message = f"{note}; {message}"  # type: ignore[attr-defined]
    incident = attached_incident(error)
    if incident is not None:
        # Put first, so that the 4 KiB cap of a reason never cuts it off.
        attach_incident(
            error, Incident.model_validate({**incident.model_dump(), "reason": f"{note}; {incident.reason}"})
        )


# --- one try of a step, sync or async ---------------------------------------------------------------------------


def _log_usage(result: ReasoningResult, step: str) -> None:
    usage = result.usage
    get_run_logger().info(
        "reasoning[%s] answered by %s: %d input / %d output (%d reasoning, %d cached) tokens%s in %.0f ms, "
        "request %s, %d attempt(s)",
        step,
        result.model,
        usage.input_tokens,
        usage.output_tokens,
        usage.reasoning_tokens,
        usage.cached_tokens,
        "" if usage.cost_usd is None else f", ${usage.cost_usd:.6f}",
        result.latency_ms,
        result.request_id,
        result.attempts,
    )


def _settings_for(task_run: TaskRun | None, credentials: ArcanosCredentials | None) -> ArcanosSettings:
    try:
        return resolve_settings(credentials)
    except ConfigurationError:
        if task_run is not None and credentials is not None:
            # The step's incident still goes to the webhook of the credentials it was given, if those are valid.
            with contextlib.suppress(Exception):
                notifier = MaintenanceNotifier(credentials.get_notifier_settings(), source=SOURCE)
                hooks.bind_notifier(task_run.id, notifier)
        raise


@dataclass
class _Try:
    """One try of a reasoning step in its task run: what the sync and the async tasks do around the request."""

    step: str
    settings: ArcanosSettings
    task_run: TaskRun | None

    @classmethod
    def begin(cls, step: str, credentials: ArcanosCredentials | None) -> _Try:
        task_run = _current_task_run()
        return cls(step, _settings_for(task_run, credentials), task_run)

    @classmethod
    async def abegin(cls, step: str, credentials: ArcanosCredentials | None) -> _Try:
        task_run = _current_task_run()
        if credentials is None and os.environ.get(CREDENTIALS_BLOCK_VARIABLE):
            # Loading the named block is a Prefect API call: made in a thread, the event loop runs on meanwhile.
            settings = await asyncio.to_thread(_settings_for, task_run, credentials)
        else:
            settings = _settings_for(task_run, credentials)
        return cls(step, settings, task_run)

    @property
    def earlier(self) -> int:
        """HTTP attempts of the earlier tries of this step: one each (the SDK does not retry inside tasks)."""
        run = self.task_run
        return run.run_count - 1 if run is not None and run.run_count > 1 else 0

    def bind(self, notifier: MaintenanceNotifier) -> None:
        if self.task_run is not None:
            hooks.bind_notifier(self.task_run.id, notifier)

    def wait_left(self) -> float:
        """Seconds this try still waits before its request, after the retry delay Prefect already waited.

        The longer of two waits: what the endpoint asked of the failed try before it, and the rest of the exponential
        backoff. Prefect's retry delay is the base delay, a plain number the UI can show (a list of delays shows as
        ``NaN``); try ``k`` waits ``base x 2^(k-2)`` in all, so this try waits ``base x (2^(k-2) - 1)`` more.
        """
        if self.task_run is None:
            return 0.0
        with _waits_lock:
            not_before = _not_before.pop(self.task_run.id, None)
        asked = 0.0 if not_before is None else not_before - time.monotonic()
        backoff = _backoff_rest(self.earlier)
        left = max(asked, backoff)
        if left <= 0:
            return 0.0
        reason = "as the endpoint asked" if asked >= backoff else "exponential backoff"
        get_run_logger().info("reasoning[%s] waits %.3f s more before trying again (%s)", self.step, left, reason)
        return left

    def failed(self, error: Exception) -> None:
        """Count the earlier tries, note the wait the answer asked for, and name the incident on the last try.

        On the last try the error names the incident the task hook will send (``[incident <id> (<class>)]``), so the
        failed task run's state message shows it.
        """
        incident = attached_incident(error)
        if self.earlier and incident is not None and incident.attempts:
            attach_incident(error, incident.model_copy(update={"attempts": self.earlier + incident.attempts}))
        seconds = _wait_asked_by(error)
        asked: _ServerWait | None = None
        if seconds is not None:
            cap = self.settings.max_retry_after
            asked = _ServerWait(seconds, time.monotonic() + seconds, over_cap=seconds > cap)
            with contextlib.suppress(AttributeError, TypeError):  # exceptions with __slots__ cannot carry it
                setattr(error, _SERVER_WAIT, asked)
            if asked.over_cap:
                _refuse_to_wait(error, asked, cap)
        if self._last_try(error, asked):
            self._name_incident(error)

    def _last_try(self, error: Exception, asked: _ServerWait | None) -> bool:
        task_context = TaskRunContext.get()
        if self.task_run is None or task_context is None:
            return False
        retries = task_context.task.retries or 0
        transient = classify(error).incident_class in TRANSIENT_CLASSES and not (asked is not None and asked.over_cap)
        return not transient or self.task_run.run_count > retries

    def _name_incident(self, error: Exception) -> None:
        # The id is the one the task hook delivers under (deterministic: flow run, task run, class).
        if self.task_run is None:
            return
        incident_class = classify(error).incident_class
        incident_id = incident_id_for(self.task_run.flow_run_id, self.task_run.id, incident_class.value)
        append_note(error, f"[incident {incident_id} ({incident_class})]")

    def answered(self, result: ReasoningResult) -> ReasoningResult:
        if self.task_run is not None:
            hooks.bind_notifier(self.task_run.id, None)
        if self.earlier:
            result = result.model_copy(update={"attempts": self.earlier + result.attempts})
        _log_usage(result, self.step)
        return result


def _backoff_rest(earlier: int) -> float:
    """The part of the exponential backoff before try ``earlier + 1`` that Prefect's (base) retry delay did not wait."""
    task_context = TaskRunContext.get()
    base = getattr(task_context.task, "retry_delay_seconds", None) if task_context else None
    if earlier < 2 or not isinstance(base, (int, float)) or isinstance(base, bool) or base <= 0:
        return 0.0
    rest: float = float(base) * (2 ** (earlier - 1) - 1)
    return rest


def _current_task_run() -> TaskRun | None:
    task_context = TaskRunContext.get()
    return task_context.task_run if task_context else None


def _run(call: str, step: str, credentials: ArcanosCredentials | None, **arguments: Any) -> ReasoningResult:
    budget = _check_budget(call, step)
    attempt = _Try.begin(step, credentials)
    client = shared_client(attempt.settings)
    attempt.bind(client.notifier)
    time.sleep(attempt.wait_left())
    method = client.run_reasoning if call == "reasoning" else client.run_simple_prompt
    try:
        result = method(**arguments, identity=request_identity(), notify=False)
    except Exception as exc:
        _spent_on_failure(budget, exc)
        attempt.failed(exc)
        raise
    if budget is not None:
        budget.record(result.usage)
    return attempt.answered(result)


def _check_budget(call: str, step: str) -> RunBudget | None:
    """The run's budget, if one is open; raises before any request when it is spent."""
    budget = current_budget()
    if budget is not None:
        budget.check(f"{'reasoning' if call == 'reasoning' else 'prompt'}[{step}]")
    return budget


def _spent_on_failure(budget: RunBudget | None, error: Exception) -> None:
    # Answers that did not validate were billed: their tokens count against the budget too.
    if budget is not None and isinstance(error, InvalidOutputError) and error.usage_tokens:
        budget.record(Usage(total_tokens=error.usage_tokens))


async def _arun(call: str, step: str, credentials: ArcanosCredentials | None, **arguments: Any) -> ReasoningResult:
    budget = _check_budget(call, step)
    attempt = await _Try.abegin(step, credentials)
    client = await shared_async_client(attempt.settings)
    attempt.bind(client.notifier)
    await asyncio.sleep(attempt.wait_left())
    method = client.run_reasoning if call == "reasoning" else client.run_simple_prompt
    try:
        result = await method(**arguments, identity=request_identity(), notify=False)
    except Exception as exc:
        _spent_on_failure(budget, exc)
        attempt.failed(exc)
        raise
    if budget is not None:
        budget.record(result.usage)
    return attempt.answered(result)


# --- the tasks ----------------------------------------------------------------------------------------------------

_STEP_OPTIONS: dict[str, Any] = {
    "retries": DEFAULT_TASK_RETRIES,
    # The base delay, a number (the UI shows a list of delays as NaN); the task waits the rest of the exponential
    # backoff itself (`_Try.wait_left`): 2, 4, 8 s before tries 2, 3, 4.
    "retry_delay_seconds": 2,
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": retry_transient_failures,
    "on_failure": [hooks.task_on_failure],
    "result_serializer": "json",
    # Each call is a fresh, billed question: nothing is cached or written to result storage unless a flow opts in
    # (with_cache).
    "cache_policy": NO_CACHE,
    "persist_result": False,
}
_REASONING = {"name": "arcanos-reasoning", "task_run_name": "reasoning[{step}]", **_STEP_OPTIONS}
_PROMPT = {"name": "arcanos-simple-prompt", "task_run_name": "prompt[{step}]", **_STEP_OPTIONS}
_ASYNC_TWINS: dict[Callable[..., Any], Callable[..., Coroutine[Any, Any, Any]]] = {}
"""The function of each sync step's async twin, by the sync step's function."""


def _in_async_context() -> bool:
    # Prefect's rule for its own sync/async pairs (`async_dispatch`): the body of an async flow or task, or a running
    # event loop outside any run; and only where this thread runs that loop (a sync helper sent to a thread by an
    # async flow blocks as usual).
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    try:
        context = get_run_context()
    except MissingContextError:
        return True
    running = getattr(context, "task", None) or getattr(context, "flow", None)
    return bool(getattr(running, "isasync", True))


class _AwaitableStep(Task[P, R]):
    """A sync reasoning task that async flows may also await: there, calling it runs its async twin.

    The twin is the same task (name, run name, retries, hooks, caching, all options) with the async function, so
    ``await run_reasoning(...)`` in an async flow is ``await arun_reasoning(...)``: nothing blocks the event loop,
    and no request is ever sent before it is awaited. ``.submit()`` and ``.map()`` run the sync task in the task
    runner's threads, in any flow.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task; in an async flow or task, return the coroutine of its async twin instead."""
        twin = _ASYNC_TWINS.get(self.fn)
        if twin is not None and _in_async_context():
            return self._twin(twin)(*args, **kwargs)
        return super().__call__(*args, **kwargs)

    def _twin(self, fn: Callable[..., Coroutine[Any, Any, Any]]) -> Task[..., Any]:
        # Task.with_options builds a new task from the options of the one it is called on; on a copy whose function
        # is the async one, that is this task's async twin (built at each call: options set since count too).
        template: Any = copy.copy(self)
        template.fn = fn
        twin: Task[..., Any] = Task.with_options(template)
        return twin

    def with_options(self, **options: Any) -> _AwaitableStep[P, R]:
        """A copy with other options (see :meth:`prefect.Task.with_options`), still awaitable in async flows."""
        copy_ = super().with_options(**options)
        copy_.__class__ = type(self)  # Task.with_options builds a plain Task; this class adds no state
        return copy_  # type: ignore[return-value]


def _awaitable_step(
    twin: Task[..., Coroutine[Any, Any, Any]], **options: Any
) -> Callable[[Callable[P, R]], _AwaitableStep[P, R]]:
    def decorate(fn: Callable[P, R]) -> _AwaitableStep[P, R]:
        _ASYNC_TWINS[fn] = twin.fn
        return _AwaitableStep(fn, **options)

    return decorate


@task(**_REASONING)
async def arun_reasoning(
    messages: Sequence[Mapping[str, Any]],
    metadata: Mapping[str, MetadataValue] | None = None,
    step: str = "step",
    *,
    reasoning_effort: str | None = None,
    max_output_tokens: int | None = None,
    response_format: Mapping[str, Any] | None = None,
    timeout: float | None = None,
    credentials: ArcanosCredentials | None = None,
    output_type: Any = None,
    output_retries: int = DEFAULT_OUTPUT_RETRIES,
) -> ReasoningResult:
    """:func:`run_reasoning` for async flows: the same step, awaited, its request made by the running event loop.

    Arguments, result, task-run name, retries, hooks, request metadata and usage log are :func:`run_reasoning`'s;
    :func:`with_retries` and :func:`with_cache` apply alike. Several steps awaited together
    (``asyncio.gather``) run at once on one connection pool (:func:`shared_async_client`); ``.submit()`` returns
    a future (the task then runs on an event loop of its own, in a thread of the task runner).

    Examples:
        >>> import asyncio
        >>> from prefect import flow
        >>> @flow
        ... async def audit(areas: list[str]) -> list[str]:
        ...     results = await asyncio.gather(*(
        ...         arun_reasoning([{"role": "user", "content": f"Audit the {area} layer."}], step=area)
        ...         for area in areas
        ...     ))
        ...     return [result.content for result in results]
        >>> arun_reasoning.isasync, arun_reasoning.task_run_name
        (True, 'reasoning[{step}]')
    """
    return await _arun(
        "reasoning",
        step,
        credentials,
        messages=messages,
        metadata=metadata,
        reasoning_effort=reasoning_effort,
        max_output_tokens=max_output_tokens,
        response_format=response_format,
        timeout=timeout,
        output_type=output_type,
        output_retries=output_retries,
    )


@task(**_PROMPT)
async def arun_simple_prompt(
    text: str,
    metadata: Mapping[str, MetadataValue] | None = None,
    step: str = "prompt",
    *,
    system: str | None = None,
    credentials: ArcanosCredentials | None = None,
    output_type: Any = None,
    output_retries: int = DEFAULT_OUTPUT_RETRIES,
) -> ReasoningResult:
    """:func:`run_simple_prompt` for async flows: one user-turn prompt, awaited.

    Everything but the I/O is :func:`run_simple_prompt`'s (see :func:`arun_reasoning`).

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... async def status() -> str:
        ...     return (await arun_simple_prompt("Status of the confirmation layers?")).content
        >>> arun_simple_prompt.name, arun_simple_prompt.isasync
        ('arcanos-simple-prompt', True)
    """
    return await _arun(
        "prompt",
        step,
        credentials,
        text=text,
        metadata=metadata,
        system=system,
        output_type=output_type,
        output_retries=output_retries,
    )


@_awaitable_step(arun_reasoning, **_REASONING)
def run_reasoning(
    messages: Sequence[Mapping[str, Any]],
    metadata: Mapping[str, MetadataValue] | None = None,
    step: str = "step",
    *,
    reasoning_effort: str | None = None,
    max_output_tokens: int | None = None,
    response_format: Mapping[str, Any] | None = None,
    timeout: float | None = None,
    credentials: ArcanosCredentials | None = None,
    output_type: Any = None,
    output_retries: int = DEFAULT_OUTPUT_RETRIES,
) -> ReasoningResult:
    """One reasoning step on ``ARCANOS_FINE_TUNED_MODEL``, as a Prefect task.

    The request metadata is ``metadata`` plus ``confirmation_token`` (from settings, unless given) plus the Prefect
    identity of the run (``prefect.flow_run_id``, ``prefect.task_run_id``, ``prefect.flow``, ``prefect.deployment``).
    Called in an async flow, it runs :func:`arun_reasoning` with the same options: ``await run_reasoning(...)``
    works there, and nothing is sent before it is awaited.

    Args:
        messages: Chat messages (``role`` and non-empty ``content``).
        metadata: Audit metadata for this step.
        step: The step's name; the task run is named ``reasoning[<step>]``.
        reasoning_effort: Reasoning effort (``low``, ``medium``, ``high``...).
        max_output_tokens: Output budget, reasoning included.
        response_format: Chat Completions ``response_format``.
        timeout: Seconds per HTTP attempt.
        credentials: An :class:`ArcanosCredentials` block; else ``ARCANOS_CREDENTIALS_BLOCK``, else the environment.
        output_type: A pydantic model (or any type pydantic validates): ``result.output`` is the validated answer
            (see :meth:`ArcanosPythonClient.run_reasoning <arcanos_flows.client.ArcanosPythonClient.run_reasoning>`).
        output_retries: Re-asks after an answer that does not validate (each billed, counted in ``usage``).

    Returns:
        The :class:`ReasoningResult`, with usage, request id and attempts.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def audit(token: str) -> str:
        ...     result = run_reasoning(
        ...         [{"role": "system", "content": "You are the Arcanos maintenance AI."},
        ...          {"role": "user", "content": "List the current confirmation layers."}],
        ...         metadata={"confirmation_token": token},
        ...         step="layers",
        ...     )
        ...     return result.content
    """
    return _run(
        "reasoning",
        step,
        credentials,
        messages=messages,
        metadata=metadata,
        reasoning_effort=reasoning_effort,
        max_output_tokens=max_output_tokens,
        response_format=response_format,
        timeout=timeout,
        output_type=output_type,
        output_retries=output_retries,
    )


@_awaitable_step(arun_simple_prompt, **_PROMPT)
def run_simple_prompt(
    text: str,
    metadata: Mapping[str, MetadataValue] | None = None,
    step: str = "prompt",
    *,
    system: str | None = None,
    credentials: ArcanosCredentials | None = None,
    output_type: Any = None,
    output_retries: int = DEFAULT_OUTPUT_RETRIES,
) -> ReasoningResult:
    """One user-turn prompt on the enforced model, as a Prefect task.

    In an async flow it runs :func:`arun_simple_prompt`, as :func:`run_reasoning` does :func:`arun_reasoning`.

    Args:
        text: The user's question.
        metadata: Audit metadata.
        step: The step's name; the task run is named ``prompt[<step>]``.
        system: Optional system message.
        credentials: An :class:`ArcanosCredentials` block, as for :func:`run_reasoning`.
        output_type: As for :func:`run_reasoning`.
        output_retries: As for :func:`run_reasoning`.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def status() -> str:
        ...     return run_simple_prompt("Status of the confirmation layers?").content
    """
    return _run(
        "prompt",
        step,
        credentials,
        text=text,
        metadata=metadata,
        system=system,
        output_type=output_type,
        output_retries=output_retries,
    )


@task(name="arcanos-notify-maintenance", task_run_name="notify[{incident_class}]")
def notify_maintenance(
    reason: str,
    incident_class: IncidentClass | str = IncidentClass.DEGRADED,
    context: Mapping[str, Any] | None = None,
    *,
    credentials: ArcanosCredentials | None = None,
) -> Incident:
    """Send an explicit incident, e.g. when a flow decides its results are degraded.

    Args:
        reason: What is wrong, for the maintenance assistant.
        incident_class: The class to report (``degraded`` by default).
        context: Extra context; the Prefect run context is added.
        credentials: Where the webhook settings come from, as for :func:`run_reasoning`.

    Returns:
        The incident, as delivered, spooled or printed.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def research():
        ...     notify_maintenance("2 of 5 investigations failed; synthesis is partial", context={"failed": 2})
    """
    if credentials is not None:
        notifier = MaintenanceNotifier(credentials.get_notifier_settings(), source=SOURCE)
    else:
        notifier = hooks.environment_notifier()
    task_context = TaskRunContext.get()
    task_run = task_context.task_run if task_context else None
    prefect_context = run_context(task_run=task_run)
    incident = Incident(
        incident_id=incident_id_for(
            prefect_context.get("flow_run_id"), task_run.id if task_run else None, str(incident_class)
        ),
        incident_class=IncidentClass(incident_class),
        reason=reason,
        error_type=f"{SOURCE}.notify_maintenance",
        source=SOURCE,
        context={**dict(context or {}), **prefect_context},
    )
    return hooks.report(incident, notifier)
