"""The incident relay: the server-side twin of the flow hooks, for runs whose process could not report.

A flow run that is SIGKILLed outside any runner, or whose machine vanished, runs no hook. The automations
installed by :func:`arcanos_flows.prefect.automations.install_automations` mark such a run ``Crashed`` and start
:func:`incident_relay_flow` for every arcanos run that ends ``Crashed`` or ``Failed``. The relay reads the run
back from the Prefect API and reports what no hook reported, under the same deterministic incident id
(:func:`arcanos_flows.prefect.runs.incident_id_for`) a hook would have used, so the receiver sees one ``webhook-id``.

The relay flow is deliberately not tagged ``arcanos``: its own failures must not trigger it again.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from prefect import flow
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventRelatedFilter
from prefect.logging import get_run_logger

from arcanos_flows.core.errors import IncidentClass
from arcanos_flows.incidents.model import Incident
from arcanos_flows.prefect import hooks
from arcanos_flows.prefect.automations import RELAY_FLOW_NAME
from arcanos_flows.prefect.events import INCIDENT_EVENT_PREFIX
from arcanos_flows.prefect.runs import incident_id_for, run_context

__all__ = ["RELAY_FLOW_NAME", "SOURCE", "incident_relay_flow", "reported_incident_events"]

SOURCE = "arcanos_flows.relay"

# Incident events are stamped when the incident is built, a little after the run was created; the margin
# absorbs clock skew between the machine that reported and the server.
_CLOCK_SKEW = timedelta(hours=1)


def reported_incident_events(
    client: SyncPrefectClient, flow_run: FlowRun, incident_class: IncidentClass | None = None
) -> list[str]:
    """Names of the ``arcanos.incident.*`` events already emitted about this flow run (or its task runs).

    Args:
        client: A Prefect API client.
        flow_run: The run the incidents would name as a related resource.
        incident_class: Only events of this class; ``None`` counts every class.

    Returns:
        Event names, newest first (empty when nothing reported this run).
    """
    prefix = f"{INCIDENT_EVENT_PREFIX}.{incident_class.value if incident_class else ''}"
    occurred = EventOccurredFilter()
    if flow_run.created is not None:
        occurred = EventOccurredFilter(since=flow_run.created - _CLOCK_SKEW)
    page = client.read_events(
        filter=EventFilter(
            occurred=occurred,
            event=EventNameFilter(prefix=[prefix]),
            related=EventRelatedFilter(id=[f"prefect.flow-run.{flow_run.id}"]),
        ),
        limit=10,
    )
    return [event.event for event in page.events]


def _flow_name(client: SyncPrefectClient, flow_run: FlowRun) -> str | None:
    try:
        return client.read_flow(flow_run.flow_id).name
    except Exception:
        return None


@flow(name=RELAY_FLOW_NAME, log_prints=False, retries=0)
def incident_relay_flow(flow_run_id: str) -> Incident | None:
    """Report a crashed or failed flow run that no hook reported; started by the arcanos automation.

    A ``Crashed`` run becomes a ``crashed`` incident; a ``Failed`` run becomes a ``flow_failed`` incident unless
    an ``arcanos.incident.*`` event related to it already exists (a task or flow hook reported the root cause).
    A run already reported with the same class, or in any other state, is left alone.

    Args:
        flow_run_id: The id of the flow run to report (the automation fills it in from the triggering event).

    Returns:
        The incident delivered (or spooled), or ``None`` when there was nothing to report.

    Examples:
        Run it by hand for a run the automation missed::

            from arcanos_flows.flows.relay import incident_relay_flow

            incident_relay_flow("0d6c2a7e-5d2e-4e8f-9d0b-6c3a1f2e4b5c")
    """
    logger = get_run_logger()
    # Built first: loading the notifier's settings registers this process's secrets, so that a state message quoting
    # the API key (a user's exception) is redacted in the incident built from it.
    notifier = hooks.environment_notifier()
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(uuid.UUID(str(flow_run_id)))
        state = run.state
        if state is None or state.type not in (StateType.CRASHED, StateType.FAILED):
            logger.info(
                "Flow run %s is %s, neither crashed nor failed: nothing to report",
                run.name,
                state.name if state else "without state",
            )
            return None
        incident_class = IncidentClass.CRASHED if state.type == StateType.CRASHED else IncidentClass.FLOW_FAILED
        # A crash is reported once per run; a failure is already covered by any incident about the run (the
        # task or flow hook reported its root cause).
        already = reported_incident_events(
            client, run, IncidentClass.CRASHED if incident_class == IncidentClass.CRASHED else None
        )
        if already:
            logger.info("Flow run %s %s: already reported (%s)", run.name, state.name, ", ".join(sorted(set(already))))
            return None
        flow_name = _flow_name(client, run)

    context = run_context(flow_run=run, state=state, flow_name=flow_name)
    context["reported_by"] = RELAY_FLOW_NAME
    incident = Incident(
        incident_id=incident_id_for(run.id, None, incident_class.value),
        incident_class=incident_class,
        reason=state.message or f"flow run entered {state.name}",
        error_type=f"prefect.{state.name}",
        source=SOURCE,
        context=context,
    )
    delivered = hooks.report(incident, notifier)
    logger.info("Reported %s incident %s for flow run %s", incident_class.value, delivered.incident_id, run.name)
    return delivered
