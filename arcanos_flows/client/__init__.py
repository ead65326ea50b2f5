"""The model-enforced reasoning client: core and incidents, no Prefect.

One model, from ``ARCANOS_FINE_TUNED_MODEL``; every failure is classified, reported through the notifier and
re-raised. Re-exported by :mod:`arcanos_flows`.

Examples:
    >>> from arcanos_flows.client import model_matches
    >>> model_matches("ft:gpt-5.1:arcanos::abc", "ft:gpt-5.1:arcanos::abc")
    True
"""

from arcanos_flows.client._sync import SOURCE, ArcanosPythonClient, model_matches

__all__ = ["SOURCE", "ArcanosPythonClient", "model_matches"]
