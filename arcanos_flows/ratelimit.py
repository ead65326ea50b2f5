"""Deprecated path: use :mod:`arcanos_flows.core.ratelimit`.

Kept for this release so that existing imports keep working; it warns once, at import.
"""

import warnings
from typing import Any

from arcanos_flows.core.ratelimit import *  # noqa: F403 - the whole public surface, as before the move
from arcanos_flows.core.ratelimit import __all__ as __all__

warnings.warn(
    "arcanos_flows.ratelimit is deprecated; import from arcanos_flows.core.ratelimit",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str) -> Any:
    import arcanos_flows.core.ratelimit as moved

    return getattr(moved, name)
