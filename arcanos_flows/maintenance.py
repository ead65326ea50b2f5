"""Deprecated path: use :mod:`arcanos_flows.flows.maintenance` (public names also in :mod:`arcanos_flows.prefect`).

Kept for this release so that existing imports keep working; it warns once, at import.
"""

import warnings
from typing import Any

from arcanos_flows.flows.maintenance import *  # noqa: F403 - the whole public surface, as before the move
from arcanos_flows.flows.maintenance import __all__ as __all__

warnings.warn(
    "arcanos_flows.maintenance is deprecated; import from arcanos_flows.flows.maintenance",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str) -> Any:
    import arcanos_flows.flows.maintenance as moved

    return getattr(moved, name)
