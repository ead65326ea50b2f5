"""Deployable entrypoint of the batch flow (``flows/reasoning_batch.py:reasoning_batch_flow`` in prefect.yaml).

The flow lives in the package (:mod:`arcanos_flows.flows.batch`) so workers that installed arcanos-flows have it.
"""

from arcanos_flows.flows.batch import reasoning_batch_flow

__all__ = ["reasoning_batch_flow"]
