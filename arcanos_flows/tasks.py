"""Deprecated path: use :mod:`arcanos_flows.prefect.tasks` (public names also in :mod:`arcanos_flows.prefect`).

Kept for this release so that existing imports keep working; it warns once, at import.
"""

import warnings
from typing import Any

from arcanos_flows.prefect.tasks import *  # noqa: F403 - the whole public surface, as before the move
from arcanos_flows.prefect.tasks import __all__ as __all__

warnings.warn(
    "arcanos_flows.tasks is deprecated; import from arcanos_flows.prefect.tasks",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str) -> Any:
    import arcanos_flows.prefect.tasks as moved

    return getattr(moved, name)
