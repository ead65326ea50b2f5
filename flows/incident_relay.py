"""Deployable entrypoint of the incident relay (``flows/incident_relay.py:incident_relay_flow`` in prefect.yaml).

The flow lives in the package (:mod:`arcanos_flows.flows.relay`) so workers that installed arcanos-flows have it.
"""

from arcanos_flows.flows.relay import incident_relay_flow

__all__ = ["incident_relay_flow"]

if __name__ == "__main__":
    import sys

    incident_relay_flow(sys.argv[1])
