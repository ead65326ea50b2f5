"""Prefect tasks: reasoning steps on the enforced model, and explicit maintenance notifications.

Retries live in one layer per failure kind: inside a task the SDK makes one attempt per try
(``max_retries=0``) and Prefect retries the transient classes (``rate_limit``, ``timeout``, ``connection``,
``upstream_error``) with exponential backoff and jitter; every other failure fails the task at once. A failed
step is reported once, after its last try, by :func:`arcanos_flows.prefect.hooks.task_on_failure`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any, ParamSpec, TypeVar

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun
from prefect.context import TaskRunContext
from prefect.logging import get_run_logger
from prefect.tasks import exponential_backoff

from arcanos_flows.client import ArcanosPythonClient
from arcanos_flows.core.errors import TRANSIENT_CLASSES, ConfigurationError, IncidentClass, classify
from arcanos_flows.core.metadata import MetadataValue
from arcanos_flows.core.results import ReasoningResult
from arcanos_flows.core.settings import ArcanosSettings
from arcanos_flows.incidents.model import Incident, attach_incident, attached_incident
from arcanos_flows.incidents.notifier import MaintenanceNotifier
from arcanos_flows.prefect import hooks
from arcanos_flows.prefect.caching import REASONING_CACHE
from arcanos_flows.prefect.credentials import ArcanosCredentials, resolve_settings
from arcanos_flows.prefect.runs import incident_id_for, request_identity, run_context, state_exception

__all__ = [
    "DEFAULT_STEP_CACHE_EXPIRATION",
    "DEFAULT_TASK_RETRIES",
    "notify_maintenance",
    "retry_transient_failures",
    "run_reasoning",
    "run_simple_prompt",
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


def shared_client(settings: ArcanosSettings) -> ArcanosPythonClient:
    """The process-wide client for these settings, built once: every task shares its connection pool.

    Inside tasks the SDK does not retry (``max_retries=0``); Prefect's task retries do.

    Examples:
        >>> settings = ArcanosSettings(openai_api_key="sk-example-0000", fine_tuned_model="ft:gpt-5.1:a::x",
        ...                            _env_file=None)
        >>> shared_client(settings) is shared_client(settings)
        True
    """
    key = settings.model_copy(update={"max_retries": 0})
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            notifier = MaintenanceNotifier(key, source=SOURCE)
            client = _clients[key] = ArcanosPythonClient(key, notifier=notifier)
        return client


def with_retries(step_task: Task[P, R], settings: ArcanosSettings) -> Task[P, R]:
    """The task with the retry policy of ``ARCANOS_TASK_RETRIES`` and ``ARCANOS_TASK_RETRY_DELAY``.

    The decorators' defaults are 3 retries from a 2 s delay; flows apply the configured policy with this.

    Examples:
        >>> settings = ArcanosSettings(openai_api_key="sk-example-0000", fine_tuned_model="ft:gpt-5.1:a::x",
        ...                            task_retries=1, _env_file=None)
        >>> with_retries(run_reasoning, settings).retries
        1
    """
    return step_task.with_options(
        retries=settings.task_retries,
        retry_delay_seconds=exponential_backoff(backoff_factor=settings.task_retry_delay),
    )


def with_cache(step_task: Task[P, R], *, expiration: timedelta | None = DEFAULT_STEP_CACHE_EXPIRATION) -> Task[P, R]:
    """The reasoning task with opt-in caching: the same question is answered from Prefect's result storage.

    Applies :data:`arcanos_flows.prefect.caching.REASONING_CACHE` (the key covers the enforced model, the API, the
    messages and the generation options; never the metadata, step name, credentials or run ids) with
    ``persist_result=True``. A cache hit makes no request: the task run ends in Prefect's ``Cached`` state with
    the stored :class:`ReasoningResult`. Failed steps are never cached. Pass ``refresh_cache=True`` to
    ``.with_options`` of the result to ask again and overwrite the stored answer.

    Args:
        step_task: ``run_reasoning`` or ``run_simple_prompt`` (or either after :func:`with_retries`).
        expiration: How long a stored answer is used; ``None``: until it is deleted from result storage.

    Returns:
        A copy of the task with caching on.

    Examples:
        >>> from datetime import timedelta
        >>> cached = with_cache(run_reasoning, expiration=timedelta(hours=6))
        >>> cached.persist_result, cached.cache_expiration
        (True, datetime.timedelta(seconds=21600))
    """
    return step_task.with_options(cache_policy=REASONING_CACHE, persist_result=True, cache_expiration=expiration)


def retry_transient_failures(task: Task[..., Any], task_run: TaskRun, state: State) -> bool:
    """``retry_condition_fn``: retry only ``rate_limit``, ``timeout``, ``connection`` and ``upstream_error``.

    Examples:
        >>> from prefect import task
        >>> @task(retries=3, retry_condition_fn=retry_transient_failures)
        ... def step(): ...
    """
    error = state_exception(state)
    return error is not None and classify(error).incident_class in TRANSIENT_CLASSES


def _log_usage(result: ReasoningResult, step: str) -> None:
    usage = result.usage
    get_run_logger().info(
        "reasoning[%s] answered by %s: %d input / %d output (%d reasoning, %d cached) tokens in %.0f ms, "
        "request %s, %d attempt(s)",
        step,
        result.model,
        usage.input_tokens,
        usage.output_tokens,
        usage.reasoning_tokens,
        usage.cached_tokens,
        result.latency_ms,
        result.request_id,
        result.attempts,
    )


def _run(
    call: str,
    step: str,
    credentials: ArcanosCredentials | None,
    **arguments: Any,
) -> ReasoningResult:
    task_context = TaskRunContext.get()
    task_run = task_context.task_run if task_context else None
    try:
        settings = resolve_settings(credentials)
    except ConfigurationError:
        if task_run is not None and credentials is not None:
            # The step's incident still goes to the webhook of the credentials it was given, if those are valid.
            with contextlib.suppress(Exception):
                notifier = MaintenanceNotifier(credentials.get_notifier_settings(), source=SOURCE)
                hooks.bind_notifier(task_run.id, notifier)
        raise
    client = shared_client(settings)
    if task_run is not None:
        hooks.bind_notifier(task_run.id, client.notifier)
    method = client.run_reasoning if call == "reasoning" else client.run_simple_prompt
    # Earlier tries of this step made one HTTP attempt each (the SDK does not retry inside tasks).
    earlier = task_run.run_count - 1 if task_run is not None and task_run.run_count > 1 else 0
    try:
        result = method(**arguments, identity=request_identity(), notify=False)
    except Exception as exc:
        incident = attached_incident(exc)
        if earlier and incident is not None and incident.attempts:
            attach_incident(exc, incident.model_copy(update={"attempts": earlier + incident.attempts}))
        raise
    if task_run is not None:
        hooks.bind_notifier(task_run.id, None)
    if earlier:
        result = result.model_copy(update={"attempts": earlier + result.attempts})
    _log_usage(result, step)
    return result


_STEP_OPTIONS: dict[str, Any] = {
    "retries": DEFAULT_TASK_RETRIES,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": retry_transient_failures,
    "on_failure": [hooks.task_on_failure],
    "result_serializer": "json",
    # Each call is a fresh, billed question: nothing is cached or written to result storage unless a flow opts in
    # (with_cache).
    "cache_policy": NO_CACHE,
    "persist_result": False,
}


@task(name="arcanos-reasoning", task_run_name="reasoning[{step}]", **_STEP_OPTIONS)
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
) -> ReasoningResult:
    """One reasoning step on ``ARCANOS_FINE_TUNED_MODEL``, as a Prefect task.

    The request metadata is ``metadata`` plus ``confirmation_token`` (from settings, unless given) plus the Prefect
    identity of the run (``prefect.flow_run_id``, ``prefect.task_run_id``, ``prefect.flow``, ``prefect.deployment``).

    Args:
        messages: Chat messages (``role`` and non-empty ``content``).
        metadata: Audit metadata for this step.
        step: The step's name; the task run is named ``reasoning[<step>]``.
        reasoning_effort: Reasoning effort (``low``, ``medium``, ``high``...).
        max_output_tokens: Output budget, reasoning included.
        response_format: Chat Completions ``response_format``.
        timeout: Seconds per HTTP attempt.
        credentials: An :class:`ArcanosCredentials` block; else ``ARCANOS_CREDENTIALS_BLOCK``, else the environment.

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
    )


@task(name="arcanos-simple-prompt", task_run_name="prompt[{step}]", **_STEP_OPTIONS)
def run_simple_prompt(
    text: str,
    metadata: Mapping[str, MetadataValue] | None = None,
    step: str = "prompt",
    *,
    system: str | None = None,
    credentials: ArcanosCredentials | None = None,
) -> ReasoningResult:
    """One user-turn prompt on the enforced model, as a Prefect task.

    Args:
        text: The user's question.
        metadata: Audit metadata.
        step: The step's name; the task run is named ``prompt[<step>]``.
        system: Optional system message.
        credentials: An :class:`ArcanosCredentials` block, as for :func:`run_reasoning`.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def status() -> str:
        ...     return run_simple_prompt("Status of the confirmation layers?").content
    """
    return _run("prompt", step, credentials, text=text, metadata=metadata, system=system)


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
