"""The project's exceptions, at their public path.

They are defined in :mod:`arcanos_flows.core.errors` and named ``arcanos_flows.errors.<Class>`` everywhere
outside: an incident's ``error_type`` (receivers match on it), tracebacks and pickles all use this path, which
stays stable whatever moves inside the package.

Example:
    >>> from arcanos_flows.errors import ModelEnforcementError
    >>> ModelEnforcementError.__module__
    'arcanos_flows.errors'
"""

from arcanos_flows.core.errors import (
    TRANSIENT_CLASSES,
    ArcanosError,
    Classification,
    ConfigurationError,
    EmptyCompletionError,
    IncidentClass,
    IncompleteCompletionError,
    InvalidReasoningInput,
    ModelEnforcementError,
    RefusalError,
    UpstreamResponseError,
    classify,
)

__all__ = [
    "TRANSIENT_CLASSES",
    "ArcanosError",
    "Classification",
    "ConfigurationError",
    "EmptyCompletionError",
    "IncidentClass",
    "IncompleteCompletionError",
    "InvalidReasoningInput",
    "ModelEnforcementError",
    "RefusalError",
    "UpstreamResponseError",
    "classify",
]
