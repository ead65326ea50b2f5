"""The model-enforced reasoning client, sync and async: core and incidents, no Prefect.

One model, from ``ARCANOS_FINE_TUNED_MODEL``; every failure is classified, reported through the notifier and
re-raised. :class:`ArcanosPythonClient` blocks; :class:`AsyncArcanosClient` is its twin for event loops. Both are
re-exported by :mod:`arcanos_flows`.

Examples:
    >>> from arcanos_flows.client import model_matches
    >>> model_matches("ft:gpt-5.1:arcanos::abc", "ft:gpt-5.1:arcanos::abc")
    True
"""

from arcanos_flows.client._async import AsyncArcanosClient
from arcanos_flows.client._base import SOURCE, model_matches
from arcanos_flows.client._output import DEFAULT_OUTPUT_RETRIES, OutputSpec, output_spec
from arcanos_flows.client._sync import ArcanosPythonClient
from arcanos_flows.client._telemetry import instrument, uninstrument

__all__ = [
    "DEFAULT_OUTPUT_RETRIES",
    "SOURCE",
    "ArcanosPythonClient",
    "AsyncArcanosClient",
    "OutputSpec",
    "instrument",
    "model_matches",
    "output_spec",
    "uninstrument",
]
