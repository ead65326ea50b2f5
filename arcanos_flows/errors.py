"""The project's exceptions, at their public path.

They are defined in :mod:`arcanos_flows.core.errors` and named ``arcanos_flows.errors.<Class>`` everywhere
outside: an incident's ``error_type`` (receivers match on it), tracebacks and pickles all use this path, which
stays stable whatever moves inside the package.

Examples:
    >>> from arcanos_flows.errors import ModelEnforcementError
    >>> ModelEnforcementError.__module__
    'arcanos_flows.errors'
"""

from arcanos_flows.core.errors import *  # noqa: F403 - every public name, defined there
from arcanos_flows.core.errors import __all__ as __all__
