"""arcanos-flows: model-enforced GPT-5.1 reasoning for Prefect 3 flows, with failures never lost.

The client and the notifier work without Prefect; the Prefect layer lives in
``arcanos_flows.tasks`` and ``arcanos_flows.hooks``.
"""

from arcanos_flows._version import __version__
from arcanos_flows.client import ArcanosPythonClient
from arcanos_flows.errors import (
    ArcanosError,
    ConfigurationError,
    EmptyCompletionError,
    IncidentClass,
    IncompleteCompletionError,
    InvalidReasoningInput,
    ModelEnforcementError,
    RefusalError,
    UpstreamResponseError,
)
from arcanos_flows.incidents import Incident
from arcanos_flows.notifier import FlushReport, MaintenanceNotifier
from arcanos_flows.results import ReasoningResult, Usage
from arcanos_flows.settings import ArcanosSettings, NotifierSettings

__all__ = [
    "ArcanosError",
    "ArcanosPythonClient",
    "ArcanosSettings",
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
