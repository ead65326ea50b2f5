"""Deprecated path: use :mod:`arcanos_flows.prefect.credentials` (public names also in :mod:`arcanos_flows.prefect`).

Kept for this release so that existing imports keep working; it warns once, at import.
"""

import warnings
from typing import Any

from arcanos_flows.prefect.credentials import *  # noqa: F403 - the whole public surface, as before the move
from arcanos_flows.prefect.credentials import __all__ as __all__

warnings.warn(
    "arcanos_flows.credentials is deprecated; import from arcanos_flows.prefect.credentials",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str) -> Any:
    import arcanos_flows.prefect.credentials as moved

    return getattr(moved, name)
