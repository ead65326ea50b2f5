"""Deprecated path of :mod:`arcanos_flows.flows.maintenance`, kept for this release; it warns at import."""

from arcanos_flows._moved import moved_to
from arcanos_flows.flows.maintenance import *  # noqa: F403 - the whole public surface, as before the move
from arcanos_flows.flows.maintenance import __all__ as __all__

__getattr__ = moved_to(__name__, "arcanos_flows.flows.maintenance")
