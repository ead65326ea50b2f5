"""arcanos-flows: model-enforced GPT-5.1 reasoning for Prefect 3 flows, with failures never lost.

The client and the notifier work without Prefect; the Prefect layer lives in ``arcanos_flows.tasks``,
``arcanos_flows.hooks`` and the flows. Names are imported on first use, so ``import arcanos_flows``
(and the CLI) stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from arcanos_flows._version import __version__

if TYPE_CHECKING:
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

_EXPORTS = {
    "ArcanosPythonClient": "arcanos_flows.client",
    "ArcanosError": "arcanos_flows.errors",
    "ConfigurationError": "arcanos_flows.errors",
    "EmptyCompletionError": "arcanos_flows.errors",
    "IncidentClass": "arcanos_flows.errors",
    "IncompleteCompletionError": "arcanos_flows.errors",
    "InvalidReasoningInput": "arcanos_flows.errors",
    "ModelEnforcementError": "arcanos_flows.errors",
    "RefusalError": "arcanos_flows.errors",
    "UpstreamResponseError": "arcanos_flows.errors",
    "Incident": "arcanos_flows.incidents",
    "FlushReport": "arcanos_flows.notifier",
    "MaintenanceNotifier": "arcanos_flows.notifier",
    "ReasoningResult": "arcanos_flows.results",
    "Usage": "arcanos_flows.results",
    "ArcanosSettings": "arcanos_flows.settings",
    "NotifierSettings": "arcanos_flows.settings",
}

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


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'arcanos_flows' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
