"""Where a call runs, in Prefect terms: request metadata keys, incident context and deterministic incident ids."""

from __future__ import annotations

import contextlib
import threading
import uuid
from typing import Any

from prefect.client.schemas.objects import FlowRun, State, TaskRun
from prefect.context import FlowRunContext, TaskRunContext
from prefect.settings import get_current_settings
from prefect.utilities.collections import visit_collection

from arcanos_flows.core.redaction import redact

__all__ = [
    "INCIDENT_NAMESPACE",
    "append_note",
    "failed_state_exceptions",
    "incident_id_for",
    "request_identity",
    "run_context",
    "state_exception",
    "ui_url_for",
]

INCIDENT_NAMESPACE = uuid.UUID("6f1c1d3e-5a34-4b8e-9d57-a7c0f1a0c0de")
"""UUIDv5 namespace of run incident ids; changing it would break de-duplication across versions."""

_deployment_names: dict[uuid.UUID, str] = {}
_lock = threading.Lock()


def incident_id_for(
    flow_run_id: uuid.UUID | str | None, task_run_id: uuid.UUID | str | None, incident_class: str
) -> uuid.UUID:
    """The incident id of a run's root cause: the same whoever reports it (hook, spool replay, automation relay).

    Examples:
        >>> a = incident_id_for("8a4c...", None, "crashed")
        >>> a == incident_id_for("8a4c...", None, "crashed"), a == incident_id_for("8a4c...", None, "flow_failed")
        (True, False)
    """
    return uuid.uuid5(INCIDENT_NAMESPACE, f"{flow_run_id or '-'}/{task_run_id or '-'}/{incident_class}")


def append_note(error: BaseException, note: str) -> None:
    """Add ``note`` to an exception's text once, so the state message Prefect builds from it shows the note.

    Both ``args[0]`` (what ``str()`` shows) and a ``message`` attribute (the SDK's exceptions keep one) get it.

    Examples:
        >>> error = ValueError("refused")
        >>> append_note(error, "[incident 1]"); append_note(error, "[incident 1]")
        >>> str(error)
        'refused [incident 1]'
    """
    if error.args and isinstance(error.args[0], str) and note not in error.args[0]:
        error.args = (f"{error.args[0]} {note}", *error.args[1:])
    message = getattr(error, "message", None)
    if isinstance(message, str) and note not in message:
        with contextlib.suppress(AttributeError, TypeError):  # exceptions with __slots__ or a read-only message
            error.message = f"{message} {note}"  # type: ignore[attr-defined]


def state_exception(state: State) -> BaseException | None:
    """The exception a failed or crashed state holds, or ``None``; works in sync and async runs alike.

    Prefect's ``State.result`` returns a coroutine when called from an async flow or task, so hooks and
    ``retry_condition_fn`` of async runs would otherwise see no exception at all.

    Examples:
        >>> from prefect.states import Failed
        >>> state_exception(Failed(data=TimeoutError("upstream slow")))
        TimeoutError('upstream slow')
    """
    data = getattr(state, "data", None)
    if isinstance(data, BaseException):
        return data
    try:
        outcome = _outcome(state)
    except Exception as exc:
        return exc
    return outcome if isinstance(outcome, BaseException) else None


def _outcome(state: State) -> Any:
    # `_sync` is consumed at run time by Prefect's `@async_dispatch` wrapper, which its typed overloads omit.
    return state.result(raise_on_failure=False, _sync=True)  # type: ignore[call-overload]


def failed_state_exceptions(state: State) -> list[BaseException]:
    """The exceptions of the failed or crashed states a failed flow state holds (a flow that returned them).

    A flow that returns failed futures or states (rather than raising) fails with a state that holds them, and no
    exception of its own: what went wrong is in theirs, wherever their tasks ran (a Dask worker sends its task's
    state back with the exception).

    Examples:
        >>> from prefect.states import Completed, Failed
        >>> failed_state_exceptions(Failed(data=[Completed(data=1), Failed(data=TimeoutError("upstream slow"))]))
        [TimeoutError('upstream slow')]
    """
    try:
        outcome = _outcome(state)
    except Exception:
        return []
    held: list[State] = []

    def collect(expression: Any) -> Any:
        if isinstance(expression, State) and (expression.is_failed() or expression.is_crashed()):
            held.append(expression)
        return expression

    visit_collection(outcome, visit_fn=collect, return_data=False)
    return [error for error in map(state_exception, held) if error is not None]


def ui_url_for(flow_run_id: uuid.UUID | str) -> str | None:
    """A link to the flow run in the Prefect UI, when ``PREFECT_UI_URL`` (or an API URL it derives from) is set.

    Examples:
        >>> from prefect.settings import PREFECT_UI_URL, temporary_settings
        >>> with temporary_settings({PREFECT_UI_URL: "https://prefect.example.com"}):
        ...     ui_url_for("0d6c2a7e-5d2e-4e8f-9d0b-6c3a1f2e4b5c")
        'https://prefect.example.com/runs/flow-run/0d6c2a7e-5d2e-4e8f-9d0b-6c3a1f2e4b5c'
    """
    base = get_current_settings().ui_url
    return f"{base.rstrip('/')}/runs/flow-run/{flow_run_id}" if base else None


def _deployment_name(deployment_id: uuid.UUID | None) -> str | None:
    if deployment_id is None:
        return None
    with _lock:
        if deployment_id in _deployment_names:
            return _deployment_names[deployment_id]
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            name = client.read_deployment(deployment_id).name
    except Exception:
        return None
    with _lock:
        _deployment_names[deployment_id] = name
    return name


def request_identity() -> dict[str, str]:
    """Metadata keys naming the current Prefect run, added to every OpenAI request made inside it.

    Returns:
        ``prefect.flow_run_id``, ``prefect.task_run_id``, ``prefect.flow`` and ``prefect.deployment`` (those that
        apply); empty outside Prefect.

    Examples:
        >>> request_identity()  # outside any flow or task run
        {}
    """
    identity: dict[str, str] = {}
    flow_context = FlowRunContext.get()
    task_context = TaskRunContext.get()
    flow_run = flow_context.flow_run if flow_context else None
    if flow_run is not None:
        identity["prefect.flow_run_id"] = str(flow_run.id)
    if task_context is not None:
        identity["prefect.task_run_id"] = str(task_context.task_run.id)
        if flow_run is None and task_context.task_run.flow_run_id:
            identity["prefect.flow_run_id"] = str(task_context.task_run.flow_run_id)
    if flow_context is not None and flow_context.flow is not None:
        identity["prefect.flow"] = flow_context.flow.name[:512]
    deployment = _deployment_name(flow_run.deployment_id) if flow_run is not None else None
    if deployment:
        identity["prefect.deployment"] = deployment[:512]
    return identity


def run_context(
    *,
    flow_run: FlowRun | None = None,
    task_run: TaskRun | None = None,
    state: State | None = None,
    flow_name: str | None = None,
) -> dict[str, Any]:
    """The Prefect context an incident carries: run ids and names, deployment, attempts, final state, UI link.

    Without arguments it describes the current flow run, if any.

    Examples:
        >>> from prefect.states import Crashed
        >>> run_context(state=Crashed(message="process killed"), flow_name="arcanos-research")
        {'flow_name': 'arcanos-research', 'final_state': 'Crashed', 'state_message': 'process killed'}
    """
    if flow_run is None:
        flow_context = FlowRunContext.get()
        if flow_context is not None:
            flow_run = flow_context.flow_run
            flow_name = flow_name or (flow_context.flow.name if flow_context.flow else None)
    context: dict[str, Any] = {}
    if flow_run is not None:
        context.update(
            flow_run_id=str(flow_run.id),
            flow_run_name=flow_run.name,
            deployment_id=str(flow_run.deployment_id) if flow_run.deployment_id else None,
            deployment_name=_deployment_name(flow_run.deployment_id),
            ui_url=ui_url_for(flow_run.id),
        )
    elif task_run is not None and task_run.flow_run_id:
        context.update(flow_run_id=str(task_run.flow_run_id), ui_url=ui_url_for(task_run.flow_run_id))
    if flow_name:
        context["flow_name"] = flow_name
    if task_run is not None:
        context.update(task_run_id=str(task_run.id), task_run_name=task_run.name, attempts=task_run.run_count)
    elif flow_run is not None:
        context["attempts"] = flow_run.run_count
    if state is not None:
        context["final_state"] = state.name
        if state.message:
            context["state_message"] = redact(state.message)[:1024]
    return {key: value for key, value in context.items() if value is not None}
