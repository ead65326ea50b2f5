"""Deployable entrypoint of the maintenance check (``flows/maintenance_check.py:maintenance_check_flow``).

The flow lives in the package (:mod:`arcanos_flows.flows.maintenance`) so workers that installed arcanos-flows have it.
Run ``python flows/maintenance_check.py`` for one check that prints the model's answer.
"""

from arcanos_flows.flows.maintenance import maintenance_check_flow

__all__ = ["maintenance_check_flow"]

if __name__ == "__main__":
    result = maintenance_check_flow()
    print(f"{result.model} ({result.request_id}): {result.content}")
