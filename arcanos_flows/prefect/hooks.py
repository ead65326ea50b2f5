"""Prefect state hooks: failures and crashes become exactly one maintenance incident per root cause.

Attach them to your own tasks and flows::

    from prefect import flow, task
    from arcanos_flows.prefect import hooks

    @task(on_failure=[hooks.task_on_failure])
    def fetch(): ...

    @flow(on_failure=[hooks.flow_on_failure], on_crashed=[hooks.flow_on_crashed])
    def nightly(): ...

A task's ``on_failure`` fires once, after its last retry, so retried attempts send nothing. A flow that fails
because of a task that already reported sends no second incident; a flow that fails for another reason sends a
``flow_failed`` incident, and a crash a ``crashed`` one. Incident ids derive from the run and the root cause
(:func:`arcanos_flows.prefect.runs.incident_id_for`), so the automation relay reporting the same crash re-uses the same
``webhook-id``. Hooks never raise into Prefect; an undeliverable incident waits in the spool.

How the flow's hook knows a task reported: :func:`task_on_failure` attaches the incident it delivered to the
exception (:func:`arcanos_flows.incidents.attach_incident`), under the task run's deterministic id. The exception
travels with the task's state, pickled when the task ran in another process (a Dask worker), and the incident with it
(:mod:`arcanos_flows.core.pickling`); an attached incident whose id is the deterministic id of the run it names was
delivered by a run hook, whichever process ran it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Awaitable
from typing import Any, TypedDict

from prefect import Flow, Task
from prefect.client.schemas.objects import FlowRun, State, TaskRun
from prefect.exceptions import FailedRun, MissingContextError, UnfinishedRun
from prefect.logging import get_run_logger

from arcanos_flows.core.errors import BudgetExceededError, ConfigurationError, IncidentClass, classify
from arcanos_flows.core.pickling import keep_picklable
from arcanos_flows.core.settings import NotifierSettings
from arcanos_flows.incidents.model import Incident, attach_incident, attached_incident
from arcanos_flows.incidents.notifier import MaintenanceNotifier
from arcanos_flows.prefect.events import emit_incident_event
from arcanos_flows.prefect.runs import failed_state_exceptions, incident_id_for, run_context, state_exception

__all__ = [
    "SOURCES",
    "bind_notifier",
    "delivery_of",
    "flow_on_cancellation",
    "flow_on_crashed",
    "flow_on_failure",
    "raised_in_flow_run",
    "record_delivery",
    "report",
    "task_on_failure",
]

SOURCE = "arcanos_flows.hooks"
"""The notifier's source; each incident names the hook that caught the failure (:data:`SOURCES`)."""
SOURCES: dict[str, str] = {
    "task": "arcanos_flows.hooks.task_on_failure",
    IncidentClass.FLOW_FAILED.value: "arcanos_flows.hooks.flow_on_failure",
    IncidentClass.BUDGET_EXCEEDED.value: "arcanos_flows.hooks.flow_on_failure",
    IncidentClass.CRASHED.value: "arcanos_flows.hooks.flow_on_crashed",
    IncidentClass.CANCELLED.value: "arcanos_flows.hooks.flow_on_cancellation",
}
"""The ``source`` of the incidents each hook sends: where the failure was caught (the client's own incidents, outside
Prefect, say ``arcanos_flows.client``)."""
logger = logging.getLogger("arcanos_flows.hooks")

_lock = threading.Lock()
_task_notifiers: dict[uuid.UUID, MaintenanceNotifier] = {}
_deliveries: OrderedDict[uuid.UUID, str] = OrderedDict()
"""How the hooks of this process delivered each incident they sent (:func:`delivery_of`)."""
# Incidents the task hooks of this process delivered, by flow run: what stands in for the root cause when a flow fails
# on a Prefect exception that carries no task's exception (see `_already_reported`). Bounded, since a long-lived
# `serve` process sees many runs and only the most recent ones can still fail.
_reported_in_flow_run: OrderedDict[str, set[uuid.UUID]] = OrderedDict()
_REMEMBERED_FLOW_RUNS = 1024
# Every incident the hooks and the batch task of this process raised for a flow run, in order, with its class and
# delivery: what the flow run's failure message lists (`raised_in_flow_run`).
_raised: OrderedDict[str, dict[uuid.UUID, tuple[str, str]]] = OrderedDict()


def bind_notifier(task_run_id: uuid.UUID, notifier: MaintenanceNotifier | None) -> None:
    """Make :func:`task_on_failure` report this task run through ``notifier`` (``None`` unbinds).

    The reasoning tasks bind the notifier of the settings they ran with, so a task given explicit
    credentials reports to the webhook of those credentials. The hook unbinds it when it reports.

    Examples:
        Inside your own task, send its failure to another webhook::

            from prefect import runtime, task

            @task(on_failure=[task_on_failure])
            def fetch():
                bind_notifier(uuid.UUID(runtime.task_run.id), MaintenanceNotifier(other_settings))
                ...
    """
    with _lock:
        if notifier is None:
            _task_notifiers.pop(task_run_id, None)
        else:
            _task_notifiers[task_run_id] = notifier


def environment_notifier() -> MaintenanceNotifier:
    """The notifier configured for this process: the credentials block or environment, else stdout.

    The webhook and secret come from the block named by ``ARCANOS_CREDENTIALS_BLOCK`` when set, else from
    the environment and ``.env``; a configuration problem is logged and incidents are printed instead.

    Examples:
        ::

            environment_notifier().webhook_url   # 'https://maintenance.example.com/incidents'
    """
    from arcanos_flows.prefect.credentials import load_notifier_settings, register_environment_secrets

    # Loading the named block registers its secrets; the environment's API key is registered here, so that what is
    # reported afterwards (a user's exception quoting the key) is redacted in a process that never loaded settings.
    register_environment_secrets()
    try:
        settings: NotifierSettings = load_notifier_settings()
        return MaintenanceNotifier(settings, source=SOURCE)
    except ConfigurationError as exc:
        logger.error("Maintenance notifier misconfigured (%s); printing incidents to stdout", exc)
        return MaintenanceNotifier.to_stdout()


def report(incident: Incident, notifier: MaintenanceNotifier | None = None) -> Incident:
    """Deliver a run incident (webhook or stdout, spooled when undeliverable) and emit its Prefect event.

    Never raises.

    Args:
        incident: The incident, its ``context`` naming the runs it concerns.
        notifier: Where to deliver it; :func:`environment_notifier` when omitted.

    Returns:
        The incident as delivered, spooled or printed.

    Examples:
        ::

            report(Incident(incident_class="degraded", reason="synthesis is partial", error_type="my_flow",
                            context=run_context()))
    """
    delivered = (notifier or environment_notifier()).notify(incident)
    emit_incident_event(delivered)
    return delivered


def _remember_task_failure(incident: Incident) -> None:
    # Only failed tasks are root causes the flow may fail on; a `degraded` notification is not one.
    flow_run_id = incident.context.get("flow_run_id")
    if flow_run_id:
        with _lock:
            _reported_in_flow_run.setdefault(str(flow_run_id), set()).add(incident.incident_id)
            _reported_in_flow_run.move_to_end(str(flow_run_id))
            while len(_reported_in_flow_run) > _REMEMBERED_FLOW_RUNS:
                _reported_in_flow_run.popitem(last=False)


def _delivered_by_a_run_hook(incident: Incident) -> bool:
    # A run hook (or the relay) delivers under the deterministic id of the run the incident names; the client
    # attaches an incident with a random id whether it delivered it or not (`notify=False`), so only the id tells.
    context = incident.context
    run_ids = (context.get("flow_run_id"), context.get("task_run_id"))
    if any(run_ids) and incident.incident_id == incident_id_for(*run_ids, incident.incident_class.value):
        return True
    # A batch's failed rows: one incident per class and batch, whichever try of the task re-attached to it.
    batch_id = context.get("batch_id")
    return bool(batch_id) and incident.incident_id == incident_id_for(
        context.get("flow_run_id"), batch_id, incident.incident_class.value
    )


def _reported_incident(error: BaseException | None) -> Incident | None:
    # The exception, or what it was raised from or while handling, carries the incident a run hook delivered for it.
    # (Exceptions are walked once each: a cause chain may loop.)
    walked: set[int] = set()
    while error is not None and id(error) not in walked:
        walked.add(id(error))
        incident = attached_incident(error)
        if incident is not None and _delivered_by_a_run_hook(incident):
            return incident
        error = error.__cause__ or error.__context__
    return None


def _already_reported(flow_run: FlowRun, state: State, error: BaseException | None) -> uuid.UUID | None:
    """The id of the incident that already reported the root cause of this flow run's failure, if one did."""
    # The failure carries the incident delivered for it: on the flow's exception (or its causes), or, when the flow
    # failed on failed task states it returned, on theirs. It crossed the process boundary with them.
    for cause in [error] if error is not None else failed_state_exceptions(state):
        incident = _reported_incident(cause)
        if incident is not None:
            return incident.incident_id
    # Prefect's exceptions for a run that did not finish (a task whose upstream failed) or that failed without an
    # exception carry no task's exception, hence no incident: those the task hooks of this process delivered for the
    # flow run's tasks stand in for it.
    if error is None or isinstance(error, (UnfinishedRun, FailedRun)):
        with _lock:
            reported = _reported_in_flow_run.get(str(flow_run.id))
        return next(iter(reported)) if reported else None
    return None


def task_on_failure(task: Task[Any, Any], task_run: TaskRun, state: State) -> Awaitable[None] | None:
    """``on_failure`` hook for tasks: one incident after the last retry, with the Prefect context.

    In an async task run (an event loop runs in this thread) it returns a coroutine, which Prefect awaits: the
    delivery (retries, then the spool, when the webhook is down) runs in a worker thread, and the event loop serves
    the flow's other steps meanwhile. Elsewhere it reports before it returns.

    Examples:
        >>> from prefect import task
        >>> @task(retries=2, on_failure=[task_on_failure])
        ... def fetch_sources(): ...
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        _report_task_failure(task_run, state)
        return None
    return asyncio.to_thread(_report_task_failure, task_run, state)


def _report_task_failure(task_run: TaskRun, state: State) -> None:
    try:
        with _lock:
            notifier = _task_notifiers.pop(task_run.id, None)
        error = state_exception(state)
        if isinstance(error, BudgetExceededError):
            # A spent budget is the run's root cause, not this step's: the flow's hook reports it, once for the run.
            logger.info("Task run %s was not started: %s", task_run.name, error)
            return
        base = attached_incident(error) if error is not None else None
        if base is None:
            base = (
                Incident.from_exception(error, source=SOURCE)
                if error is not None
                else Incident(
                    incident_class=IncidentClass.UNKNOWN,
                    reason=state.message or "task failed",
                    error_type="prefect.Failed",
                    source=SOURCE,
                )
            )
        context = {**base.context, **run_context(task_run=task_run, state=state)}
        incident = Incident.model_validate(
            {
                **base.model_dump(),
                "incident_id": incident_id_for(context.get("flow_run_id"), task_run.id, base.incident_class.value),
                "source": SOURCES["task"],
                "context": context,
            }
        )
        notifier = notifier or environment_notifier()
        delivered = report(incident, notifier)
        if error is not None:
            # Whoever gets this exception next (the flow's hook, possibly in another process) sees it was reported.
            attach_incident(error, delivered)
            # Prefect pickles it next (back to the flow from a Dask worker, into result storage): with the reduction
            # that keeps the incident and leaves the exception's chain behind, whatever was imported since the client.
            keep_picklable(error)
        _remember_task_failure(delivered)
        outcome = notifier.delivery_of(delivered)
        record_delivery(delivered.incident_id, outcome, delivered)
        _log_delivery(task_run, delivered, outcome)
    except Exception:
        logger.exception("arcanos-flows could not report the failure of task run %s", getattr(task_run, "id", "?"))


def record_delivery(incident_id: uuid.UUID, outcome: str, incident: Incident | None = None) -> None:
    """Remember how an incident about a run was delivered, for :func:`delivery_of` and :func:`raised_in_flow_run`.

    Examples:
        >>> record_delivery(uuid.UUID(int=7), "spooled")
        >>> delivery_of(uuid.UUID(int=7))
        'spooled'
    """
    flow_run_id = incident.context.get("flow_run_id") if incident is not None else None
    with _lock:
        _deliveries[incident_id] = outcome
        while len(_deliveries) > 10 * _REMEMBERED_FLOW_RUNS:
            _deliveries.popitem(last=False)
        if incident is not None and flow_run_id:
            _raised.setdefault(str(flow_run_id), {})[incident_id] = (incident.incident_class.value, outcome)
            _raised.move_to_end(str(flow_run_id))
            while len(_raised) > _REMEMBERED_FLOW_RUNS:
                _raised.popitem(last=False)


def raised_in_flow_run(flow_run_id: uuid.UUID | str | None) -> list[tuple[uuid.UUID, str, str]]:
    """The incidents this process's hooks and batch tasks raised for a flow run: ``(id, class, delivery)``, in order.

    Examples:
        >>> raised_in_flow_run(None)
        []
    """
    if flow_run_id is None:
        return []
    with _lock:
        raised = _raised.get(str(flow_run_id), {})
        return [(incident_id, incident_class, outcome) for incident_id, (incident_class, outcome) in raised.items()]


def delivery_of(incident_id: uuid.UUID | str | None) -> str | None:
    """How this process's hooks delivered an incident (``delivered``, ``spooled``, ``stdout``), if they sent it.

    Examples:
        >>> delivery_of(None) is None
        True
    """
    if incident_id is None:
        return None
    with _lock:
        return _deliveries.get(uuid.UUID(str(incident_id)))


def _log_delivery(task_run: TaskRun, incident: Incident, outcome: str) -> None:
    """Say in the task run's own logs (its page in the UI) what became of its incident."""
    message = "Incident %s (%s) %s"
    arguments = (incident.incident_id, incident.incident_class, outcome)
    try:
        get_run_logger().log(logging.WARNING if outcome == "spooled" else logging.INFO, message, *arguments)
    except MissingContextError:  # a hook called outside a run (a test, a user's own call)
        logger.info(message + " for task run %s", *arguments, task_run.name)


class _UpstreamFacts(TypedDict, total=False):
    """The upstream facts a flow incident copies from the exception's own incident, when there is one."""

    request_id: str | None
    http_status: int | None


def _budget_error(error: BaseException | None) -> BudgetExceededError | None:
    walked: set[int] = set()
    while error is not None and id(error) not in walked:
        walked.add(id(error))
        if isinstance(error, BudgetExceededError):
            return error
        error = error.__cause__ or error.__context__
    return None


def _flow_incident(
    flow: Flow[Any, Any], flow_run: FlowRun, state: State, incident_class: IncidentClass, error: BaseException | None
) -> Incident:
    context = run_context(flow_run=flow_run, state=state, flow_name=flow.name)
    budget = _budget_error(error)
    if budget is not None and incident_class is IncidentClass.FLOW_FAILED:
        # The run stopped on its budget: that is the incident, with what was spent and the limit.
        incident_class, error = IncidentClass.BUDGET_EXCEEDED, budget
        context.update(budget_limit_name=budget.limit_name, budget_limit=budget.limit, budget_spent=budget.spent)
    if error is not None:
        context["cause_class"] = classify(error).incident_class.value
        base = Incident.from_exception(error, source=SOURCE, incident_class=incident_class)
        reason, error_type = base.reason, base.error_type
        facts: _UpstreamFacts = {"request_id": base.request_id, "http_status": base.http_status}
    else:
        reason = state.message or f"flow run entered {state.name}"
        error_type, facts = f"prefect.{state.name}", {}
    return Incident(
        incident_id=incident_id_for(flow_run.id, None, incident_class.value),
        incident_class=incident_class,
        reason=reason,
        error_type=error_type,
        source=SOURCES.get(incident_class.value, SOURCE),
        context=context,
        **facts,
    )


def flow_on_failure(flow: Flow[Any, Any], flow_run: FlowRun, state: State) -> None:
    """``on_failure`` hook for flows: a ``flow_failed`` incident unless a task already reported the root cause.

    Examples:
        >>> from prefect import flow
        >>> @flow(on_failure=[flow_on_failure])
        ... def nightly(): ...
    """
    try:
        error = state_exception(state)
        already = _already_reported(flow_run, state, error)
        if already is not None:
            logger.info("Flow run %s failed on a root cause already reported as incident %s", flow_run.name, already)
            return
        # The notifier first: building it registers the process's secrets, which the incident's reason is redacted of.
        notifier = environment_notifier()
        report(_flow_incident(flow, flow_run, state, IncidentClass.FLOW_FAILED, error), notifier)
    except Exception:
        logger.exception("arcanos-flows could not report the failure of flow run %s", getattr(flow_run, "id", "?"))


def flow_on_crashed(flow: Flow[Any, Any], flow_run: FlowRun, state: State) -> None:
    """``on_crashed`` hook for flows: a ``crashed`` incident (process killed, infrastructure lost).

    Prefect runs it in the runner or worker that watched the crashed process.

    Examples:
        >>> from prefect import flow
        >>> @flow(on_crashed=[flow_on_crashed])
        ... def nightly(): ...
    """
    try:
        notifier = environment_notifier()
        report(_flow_incident(flow, flow_run, state, IncidentClass.CRASHED, None), notifier)
    except Exception:
        logger.exception("arcanos-flows could not report the crash of flow run %s", getattr(flow_run, "id", "?"))


def flow_on_cancellation(flow: Flow[Any, Any], flow_run: FlowRun, state: State) -> None:
    """``on_cancellation`` hook for flows whose cancellation is a failure (e.g. an unattended schedule).

    Not attached to the bundled flows: a person cancelling a run is not an incident.

    Examples:
        >>> from prefect import flow
        >>> @flow(on_cancellation=[flow_on_cancellation])
        ... def must_finish(): ...
    """
    try:
        notifier = environment_notifier()
        report(_flow_incident(flow, flow_run, state, IncidentClass.CANCELLED, None), notifier)
    except Exception:
        logger.exception("arcanos-flows could not report the cancellation of flow run %s", getattr(flow_run, "id", "?"))
