"""Incidents as Prefect events: the server-side twin of the webhook, for automations and the UI's event feed.

Each incident is emitted once as ``arcanos.incident.<class>`` whose resource is the incident and whose related
resources are the runs it concerns. The event id is the incident id, so a re-emission of the same root cause
(a hook, then the automation relay) is stored once.
"""

from __future__ import annotations

import logging
from typing import Any

from prefect.events import emit_event

from arcanos_flows.incidents.model import Incident

__all__ = ["INCIDENT_EVENT_PREFIX", "emit_incident_event"]

INCIDENT_EVENT_PREFIX = "arcanos.incident"
logger = logging.getLogger("arcanos_flows.events")


def emit_incident_event(incident: Incident) -> bool:
    """Emit the incident as a Prefect event; never raises.

    Args:
        incident: The incident; its ``context`` names the runs (``flow_run_id``, ``task_run_id``, ...).

    Returns:
        Whether an event was handed to Prefect's events client (``False`` outside any Prefect API).

    Examples:
        Find a run's incidents, as the automation relay does::

            from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter

            EventFilter(
                event=EventNameFilter(prefix=["arcanos.incident."]),
                related=EventRelatedFilter(id=[f"prefect.flow-run.{flow_run_id}"]),
            )
    """
    context = incident.context
    related: list[dict[str, str]] = []
    for role, key, name_key in (
        ("flow-run", "flow_run_id", "flow_run_name"),
        ("task-run", "task_run_id", "task_run_name"),
        ("deployment", "deployment_id", "deployment_name"),
    ):
        if context.get(key):
            resource = {"prefect.resource.id": f"prefect.{role}.{context[key]}", "prefect.resource.role": role}
            if context.get(name_key):
                resource["prefect.resource.name"] = str(context[name_key])
            related.append(resource)
    if context.get("flow_name"):
        related.append({"prefect.resource.id": f"arcanos.flow.{context['flow_name']}", "prefect.resource.role": "flow"})
    payload: dict[str, Any] = incident.model_dump(mode="json")
    try:
        event = emit_event(
            event=f"{INCIDENT_EVENT_PREFIX}.{incident.incident_class.value}",
            resource={
                "prefect.resource.id": f"{INCIDENT_EVENT_PREFIX}.{incident.incident_id}",
                "prefect.resource.name": f"{incident.incident_class.value} incident",
                "arcanos.incident.class": incident.incident_class.value,
            },
            related=related,
            payload=payload,
            id=incident.incident_id,
            occurred=incident.occurred_at,
        )
    except Exception as exc:
        logger.warning("Could not emit the Prefect event of incident %s: %s", incident.incident_id, type(exc).__name__)
        return False
    return event is not None
