"""arcanos-flows: model-enforced GPT-5.1 reasoning for Prefect 3 flows, with failures never lost.

The client and the notifier work without Prefect; the Prefect layer (tasks, hooks, the flow decorator and the
bundled flows) is :mod:`arcanos_flows.prefect`, the fake servers for tests :mod:`arcanos_flows.testing`. Names are
imported on first use, so ``import arcanos_flows`` (and the CLI) stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from arcanos_flows._lazy import lazy_exports
from arcanos_flows._version import __version__

if TYPE_CHECKING:
    from arcanos_flows.client import ArcanosPythonClient, AsyncArcanosClient
    from arcanos_flows.client.batch import BatchStep
    from arcanos_flows.client.batch_client import BatchClient
    from arcanos_flows.core.errors import (
        ArcanosError,
        BatchError,
        ConfigurationError,
        EmptyCompletionError,
        IncidentClass,
        IncompleteCompletionError,
        InvalidReasoningInput,
        ModelEnforcementError,
        RefusalError,
        UpstreamResponseError,
    )
    from arcanos_flows.core.results import ReasoningResult, Usage
    from arcanos_flows.core.settings import ArcanosSettings, NotifierSettings
    from arcanos_flows.incidents.model import Incident
    from arcanos_flows.incidents.notifier import FlushReport, MaintenanceNotifier

_EXPORTS = {
    "ArcanosPythonClient": "arcanos_flows.client",
    "AsyncArcanosClient": "arcanos_flows.client",
    "BatchClient": "arcanos_flows.client.batch_client",
    "BatchStep": "arcanos_flows.client.batch",
    "ArcanosError": "arcanos_flows.core.errors",
    "BatchError": "arcanos_flows.core.errors",
    "ConfigurationError": "arcanos_flows.core.errors",
    "EmptyCompletionError": "arcanos_flows.core.errors",
    "IncidentClass": "arcanos_flows.core.errors",
    "IncompleteCompletionError": "arcanos_flows.core.errors",
    "InvalidReasoningInput": "arcanos_flows.core.errors",
    "ModelEnforcementError": "arcanos_flows.core.errors",
    "RefusalError": "arcanos_flows.core.errors",
    "UpstreamResponseError": "arcanos_flows.core.errors",
    "Incident": "arcanos_flows.incidents.model",
    "FlushReport": "arcanos_flows.incidents.notifier",
    "MaintenanceNotifier": "arcanos_flows.incidents.notifier",
    "ReasoningResult": "arcanos_flows.core.results",
    "Usage": "arcanos_flows.core.results",
    "ArcanosSettings": "arcanos_flows.core.settings",
    "NotifierSettings": "arcanos_flows.core.settings",
}

__all__ = [
    "ArcanosError",
    "ArcanosPythonClient",
    "ArcanosSettings",
    "AsyncArcanosClient",
    "BatchClient",
    "BatchError",
    "BatchStep",
    "ConfigurationError",
    "EmptyCompletionError",
    "FlushReport",
    "Incident",
    "IncidentClass",
    "IncompleteCompletionError",
    "InvalidReasoningInput",
    "MaintenanceNotifier",
    "ModelEnforcementError",
    "NotifierSettings",
    "ReasoningResult",
    "RefusalError",
    "UpstreamResponseError",
    "Usage",
    "__version__",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
