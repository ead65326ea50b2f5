"""Incidents: the signed JSON a failure becomes, its delivery, and the spool that keeps it. No Prefect.

:mod:`~arcanos_flows.incidents.model` holds the :class:`Incident` model and its stable JSON form,
:mod:`~arcanos_flows.incidents.notifier` the :class:`MaintenanceNotifier` (signed POST, retries, stdout fallback)
and :mod:`~arcanos_flows.incidents.outbox` the on-disk spool of incidents the webhook did not take. Names are
imported on first use.

Examples:
    >>> from arcanos_flows.errors import ConfigurationError
    >>> from arcanos_flows.incidents import Incident
    >>> Incident.from_exception(ConfigurationError("Missing ...")).error_type
    'arcanos_flows.errors.ConfigurationError'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from arcanos_flows._lazy import lazy_exports

if TYPE_CHECKING:
    from arcanos_flows.incidents.model import (
        INCIDENT_SCHEMA_VERSION,
        MAX_INCIDENT_BYTES,
        MAX_PROMPT_BYTES,
        MAX_REASON_BYTES,
        Incident,
        attach_incident,
        attached_incident,
        prompt_excerpt,
    )
    from arcanos_flows.incidents.notifier import FlushReport, MaintenanceNotifier
    from arcanos_flows.incidents.outbox import Outbox

_MODEL = "arcanos_flows.incidents.model"
_EXPORTS = {
    "INCIDENT_SCHEMA_VERSION": _MODEL,
    "MAX_INCIDENT_BYTES": _MODEL,
    "MAX_PROMPT_BYTES": _MODEL,
    "MAX_REASON_BYTES": _MODEL,
    "Incident": _MODEL,
    "attach_incident": _MODEL,
    "attached_incident": _MODEL,
    "prompt_excerpt": _MODEL,
    "FlushReport": "arcanos_flows.incidents.notifier",
    "MaintenanceNotifier": "arcanos_flows.incidents.notifier",
    "Outbox": "arcanos_flows.incidents.outbox",
}

__all__ = [
    "INCIDENT_SCHEMA_VERSION",
    "MAX_INCIDENT_BYTES",
    "MAX_PROMPT_BYTES",
    "MAX_REASON_BYTES",
    "FlushReport",
    "Incident",
    "MaintenanceNotifier",
    "Outbox",
    "attach_incident",
    "attached_incident",
    "prompt_excerpt",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
