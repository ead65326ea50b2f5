"""The requests a research run makes, for the sides of the bench that do not use arcanos-flows.

The prompts are the research flow's own (:mod:`arcanos_flows.flows.research.prompts`: plan, one investigation per
question, a synthesis of all findings), so the raw SDK, the naive Prefect flow
and the research flow send the same requests.
"""

from __future__ import annotations

import uuid

from arcanos_flows.flows.research.prompts import investigation_messages, plan_messages, synthesis_messages

__all__ = [
    "API_KEY",
    "AUDIT",
    "MODEL",
    "investigation_messages",
    "metadata",
    "plan_messages",
    "questions",
    "synthesis_messages",
]

MODEL = "ft:gpt-5.1:arcanos::bench"
API_KEY = "sk-bench-0123456789abcdef"
AUDIT = {"ticket": "BENCH-1", "requested_by": "bench"}


def questions(count: int) -> list[str]:
    """``count`` distinct research questions."""
    return [f"What does confirmation layer {number} of the Arcanos backend check?" for number in range(1, count + 1)]


def metadata() -> dict[str, str]:
    """Audit metadata plus the four run-identity keys the research flow adds to every request."""
    return {
        **AUDIT,
        "prefect.flow_run_id": str(uuid.uuid4()),
        "prefect.task_run_id": str(uuid.uuid4()),
        "prefect.flow": "arcanos-research",
        "prefect.deployment": "",
    }
