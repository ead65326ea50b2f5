"""Deployable entrypoint of the research flow (``flows/research.py:research_flow`` in prefect.yaml).

The flow lives in the package (:mod:`arcanos_flows.flows.research`) so workers that installed arcanos-flows have it.
Run ``python flows/research.py "a topic"`` for one ad-hoc run that prints the report.
"""

from arcanos_flows.flows.research import research_flow

__all__ = ["research_flow"]

if __name__ == "__main__":
    import sys

    topic = " ".join(sys.argv[1:]) or "The confirmation layers of the Arcanos backend"
    report = research_flow(topic, audit={"source": "flows/research.py"})
    print(report.to_markdown())
